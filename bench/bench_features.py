"""Feature benchmark (issue 4): the full feature set over 30 symbols x 1 year of 5-minute bars.

Target: under 10 seconds. Simulates the bars (not timed), then times ``build_features`` with
``conf/features/full_v1.yaml`` over 3,153,600 rows, best of ``--repeat`` passes (default 2). Prints JSON,
with the process CPU time of each pass and the load average (the machine is shared: wall time
moves with the other jobs, CPU time much less).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import polars as pl

from backend.config.compose import compose_spec
from backend.data.simulator import simulate_ohlcv
from backend.features.build import build_features

BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")


def main(repeat: int = 2) -> dict[str, float]:
    spec = compose_spec(["run=bench", "features=full_v1", "data.days=365"])
    n_bars = spec.data.days * 86_400_000 // spec.data.bar_ms
    bars = simulate_ohlcv(spec.symbols, spec.universe.clusters, "5m", spec.data.start_ms, n_bars, spec.seed)
    bars = bars.select(BAR_COLUMNS)
    timings, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        out = build_features(bars, spec.features, spec.universe.clusters)
        timings.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    names = [f.name for f in spec.features.features]
    late = out.filter(pl.col("ts") >= spec.data.start_ms + 7 * 86_400_000)
    results = {
        "symbols": len(spec.symbols),
        "rows": out.height,
        "features": len(names),
        "builders": len({f.builder for f in spec.features.features}),
        "features_seconds_best": round(min(timings), 3),
        "features_seconds_all": [round(t, 3) for t in timings],
        "cpu_seconds_all": [round(t, 3) for t in cpu],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "rows_per_second": round(out.height / min(timings)),
        "null_share_after_first_week": round(late.select(pl.col(names).null_count()).sum_horizontal()[0] / (late.height * len(names)), 6),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "target_seconds": 10.0,
    }
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    main(parser.parse_args().repeat)
