"""Benchmark: the whole spine over 30 symbols x 365 days of 5-minute bars (``acts backtest run=bench``).

Runs the real command in a child process (so its peak memory is measured alone: ``wait4`` gives that
child's own usage), twice: the first run also simulates the lake, the second reads it. CPU seconds are the
child's user + system time (the figure to compare on a loaded machine). Prints the figures as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(home: Path, run_dir: Path, overrides: list[str]) -> dict[str, object]:
    env = dict(os.environ, ACTS_HOME=str(home))
    started = time.perf_counter()
    child = subprocess.Popen(
        [str(REPO / ".venv/bin/acts"), "backtest", "run=bench", f"hydra.run.dir={run_dir}", *overrides],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    # This child's own usage (getrusage(RUSAGE_CHILDREN) would give the peak of every child so far).
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"acts backtest failed with status {child.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
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
        "cpu_user_seconds": round(usage.ru_utime, 2),
        "cpu_system_seconds": round(usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
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
