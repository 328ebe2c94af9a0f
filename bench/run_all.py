"""Run every benchmark and print its figures (``make bench``). Record them in docs/benchmarks.md."""

from __future__ import annotations

import json

import bench_backtest
import bench_components


def main() -> None:
    results = {"components": bench_components.main(), "backtest": bench_backtest.main()}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
