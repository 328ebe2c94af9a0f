"""Benchmark: the whole spine over 30 symbols x 365 days of 5-minute bars (``acts backtest run=bench``).

Runs the real command in a child process (so its peak memory is measured alone), twice: the
first run also simulates the lake, the second reads it. Prints the figures as JSON and returns them.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(home: Path, run_dir: Path, overrides: list[str]) -> dict[str, object]:
    env = dict(os.environ, ACTS_HOME=str(home))
    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = usage.ru_maxrss
    subprocess.run(
        [str(REPO / ".venv/bin/acts"), "backtest", "run=bench", f"hydra.run.dir={run_dir}", *overrides],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = after.ru_maxrss
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "events": summary["events"],
        "decisions": summary["decisions"],
        "fills": summary["fills"],
        "spine_seconds": summary["spine_seconds"],
        "events_per_second": summary["events_per_second"],
        "timings": summary["timings"],
        "train_seconds": summary["train_seconds"],
        "command_wall_seconds": round(wall, 2),
        "command_cpu_seconds": round(cpu, 2),
        "load_average": os.getloadavg(),
        "peak_rss_mib": round(max(peak_kib, before) / 1024, 1),
        "decision_log_sha256": summary["decision_log_sha256"],
    }


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="acts-bench-") as tmp:
        home = Path(tmp) / "home"
        cold = run_once(home, Path(tmp) / "run1", sys.argv[1:])
        warm = run_once(home, Path(tmp) / "run2", sys.argv[1:])
    result = {
        "benchmark": "backtest run=bench (30 symbols x 365 days x 5m)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "cold_lake": cold,
        "warm_lake": warm,
        "deterministic": cold["decision_log_sha256"] == warm["decision_log_sha256"],
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
