"""Run every benchmark (``make bench``), one process each, and print their figures.

Each script prints its own JSON or table; record the figures in docs/benchmarks.md with the date
and the machine. Heavy ones (training: several minutes) run last. model_quality.py is separate:
it needs ../shared/data and runs for about ten minutes (``python bench/model_quality.py --write``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = (
    "bench_components.py",
    "bench_profiles.py",
    "bench_sandbox.py",
    "bench_features.py",
    "bench_ingest.py",
    "bench_backtest.py",
    "bench_spine.py",
    "bench_strategy.py",
    "bench_paper.py",
    "bench_kraken.py",
    "bench_training.py",
    "bench_predict.py",
    "bench_replay.py",
    "bench_bundles.py",
    "bench_console.py",
)


def main() -> int:
    failed = []
    for name in ORDER:
        script = HERE / name
        if not script.exists():
            continue
        print(f"==> {name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
