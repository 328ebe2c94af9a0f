"""Benchmark: replay of a 30-symbol x 1-year 5-minute backtest against the backtest itself.

Runs ``acts backtest run=bench`` once into a temporary home (a child process: simulates the lake,
trains, runs the spine), then replays its folder in this process with ``backend.runs.replay.replay``.
The replay's clock records the spine's checkpoints, so the replay's spine seconds (features and
predictions, event loop, decision log: the same span as the backtest's ``spine_seconds``) are
reported next to the replay's whole wall time (which adds reading and verifying the folder).
Target (issue 6): replay at least as fast as the backtest. Prints the figures as JSON.
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
sys.path.insert(0, str(REPO))

from backend.clock import WallClock  # noqa: E402
from backend.runs.replay import replay  # noqa: E402


class RecordingClock(WallClock):
    """A wall clock that remembers every monotonic reading (execute takes four: start, prepared, looped, finished)."""

    def __init__(self) -> None:
        self.readings: list[float] = []

    def monotonic(self) -> float:
        value = super().monotonic()
        self.readings.append(value)
        return value


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="acts-bench-replay-") as tmp:
        home, run_dir = Path(tmp) / "home", Path(tmp) / "run"
        started = time.perf_counter()
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [str(REPO / ".venv/bin/acts"), "backtest", "run=bench", f"hydra.run.dir={run_dir}", *sys.argv[1:]],
            check=True,
            env=dict(os.environ, ACTS_HOME=str(home)),
            stdout=subprocess.DEVNULL,
        )
        backtest_command = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        backtest_cpu = after.ru_utime + after.ru_stime - child.ru_utime - child.ru_stime
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        clock = RecordingClock()
        started, cpu = time.perf_counter(), time.process_time()
        report = replay(run_dir, wall=clock)
        replay_wall, replay_cpu = time.perf_counter() - started, time.process_time() - cpu
    r = clock.readings
    replay_spine = r[-1] - r[0]
    result = {
        "benchmark": "replay of backtest run=bench (30 symbols x 365 days x 5m)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "events": summary["events"],
        "decisions": summary["decisions"],
        "fills": summary["fills"],
        "campaigns": summary["campaigns"],
        "backtest": {
            "spine_seconds": summary["spine_seconds"],
            "timings": summary["timings"],
            "train_seconds": summary["train_seconds"],
            "wall_seconds": summary["wall_seconds"],
            "command_wall_seconds": round(backtest_command, 2),
            "command_cpu_seconds": round(backtest_cpu, 2),
        },
        "replay": {
            "spine_seconds": round(replay_spine, 3),
            "timings": {
                "features_and_predictions": round(r[1] - r[0], 4),
                "event_loop": round(r[2] - r[1], 4),
                "decision_log": round(r[3] - r[2], 4),
            },
            "wall_seconds": round(replay_wall, 3),
            "cpu_seconds": round(replay_cpu, 2),
            "identical": report.identical,
        },
        "replay_spine_vs_backtest_spine": round(replay_spine / summary["spine_seconds"], 3),
        "replay_wall_vs_backtest_wall": round(replay_wall / summary["wall_seconds"], 3),
        "target_met": replay_wall <= summary["wall_seconds"],
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
