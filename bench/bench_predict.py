"""Batch prediction benchmark (issue 4: at least 1 million rows per second).

Trains the ``run=bench`` bundle (30 symbols x 365 days of 5-minute bars, 4 walk-forward folds, the
three targets) serially, builds its features, then times ``predict_bundle`` over every out-of-sample
row, which scores each row with the fold's global booster and its symbol's specialist and blends
them, per output:

- one output (``p_up``: global + specialist, 140 trees a row);
- the two outputs flat_holding_v1 reads (``p_up``, ``expected_return``);
- all three outputs campaign_v1 reads (adds ``p_recovery``).

Each is timed with the compiled forest (what ``predict_bundle`` runs) and, for reference, with
LightGBM's own ``Booster.predict`` doing the same work (the previous implementation), and the two
are checked to be bit-identical. "rows/s" counts feature rows with every requested output blended;
"booster-rows/s" counts one booster scoring one row. Prints JSON.

    .venv/bin/python bench/bench_predict.py
"""

from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from backend.config.compose import compose_spec
from backend.engine.pipeline import compile_pipeline
from backend.features.build import build_features
from backend.home import Home
from backend.models import forest
from backend.models.bundle import TARGETS, ModelBundle
from backend.models.train import _matrix, _spans, _with_context, predict_bundle
from backend.runs.runner import load_bars, train_bundle

def lightgbm_reference(bundle: ModelBundle, features: pl.DataFrame, clusters: dict[str, str], targets: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The previous implementation: LightGBM's predict per booster, blended per symbol with numpy."""
    frame = _with_context(features.filter(pl.col("symbol").is_in(list(bundle.symbols))), bundle.symbols, bundle.clusters, clusters)
    columns = [*bundle.feature_names, "symbol_code", "cluster_code"]
    out: dict[str, list[np.ndarray]] = {t: [] for t in targets}
    for window, end in _spans(bundle, False):
        span = frame.filter(pl.col("ts").is_between(window.test_start_ms, end, closed="left"))
        matrix = _matrix(span, columns)
        codes = span["symbol_code"].to_numpy()
        for target in targets:
            blended = lgb.Booster(model_str=bundle.model(window.index, "global", target).text).predict(matrix, num_threads=2)
            for code, symbol in enumerate(bundle.symbols):
                own = bundle.find(window.index, symbol, target)
                rows = codes == code
                if own is not None and rows.any():
                    mine = lgb.Booster(model_str=own.text).predict(matrix[rows][:, : len(bundle.feature_names)], num_threads=2)
                    blended[rows] = (1.0 - bundle.specialist_weight) * blended[rows] + bundle.specialist_weight * mine
            out[target].append(blended)
    return {t: np.concatenate(v) for t, v in out.items()}


def boosters_per_row(bundle: ModelBundle, targets: tuple[str, ...]) -> float:
    """Mean boosters that score one row for ``targets`` (a missing specialist scores nothing)."""
    per_fold = [sum(1 + sum(bundle.find(w.index, s, t) is not None for s in bundle.symbols) / len(bundle.symbols)
                    for t in targets if bundle.find(w.index, "global", t) is not None) for w in bundle.folds]  # fmt: skip
    return float(np.mean(per_fold))


def main() -> dict[str, object]:
    spec = compose_spec(["run=bench", "training.ray.enabled=false"])
    pipeline = compile_pipeline(spec)
    with tempfile.TemporaryDirectory(prefix="acts-bench-predict-") as tmp:
        home = Home(Path(tmp))
        bars, snapshot = load_bars(spec, home, lambda _m: None)
        started = time.perf_counter()
        bundle = train_bundle(pipeline, bars, snapshot, lambda _m: None, home)
        train_seconds = time.perf_counter() - started
    features = build_features(bars, spec.features, spec.universe.clusters)
    forest.warm()
    results: dict[str, object] = {
        "benchmark": "predict_bundle over every out-of-sample row of run=bench (30 symbols x 365 days x 5m, 4 folds)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "load_average_at_start": os.getloadavg()[0],
        "train_seconds": round(train_seconds, 1),
        "features": len(bundle.feature_names),
    }
    for name, targets in (("one_output", TARGETS[:1]), ("two_outputs", TARGETS[:2]), ("three_outputs", TARGETS)):
        best, cpu = float("inf"), float("inf")
        for _ in range(2):
            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            predicted = predict_bundle(bundle, features, spec.universe.clusters, 2, targets=targets)
            best = min(best, time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = min(cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        started = time.perf_counter()
        reference = lightgbm_reference(bundle, features, spec.universe.clusters, targets)
        lightgbm_seconds = time.perf_counter() - started
        rows = predicted.height
        per_row = boosters_per_row(bundle, targets)
        results[name] = {
            "targets": list(targets),
            "rows": rows,
            "seconds": round(best, 3),
            "cpu_seconds": round(cpu, 3),
            "rows_per_second": round(rows / best),
            "boosters_per_row": round(per_row, 2),
            "booster_rows_per_second": round(rows * per_row / best),
            "lightgbm_seconds": round(lightgbm_seconds, 3),
            "lightgbm_rows_per_second": round(rows / lightgbm_seconds),
            "speedup_over_lightgbm": round(lightgbm_seconds / best, 2),
            # Both are in (ts, symbol) order: fold spans follow each other in time.
            "bit_identical_to_lightgbm": all(predicted[t].to_numpy().tobytes() == reference[t].tobytes() for t in targets),
        }
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
