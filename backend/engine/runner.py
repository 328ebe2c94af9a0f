"""The composition root for backtest and replay: data in, pipeline run, run folder out.

This is the I/O shell around the pure core. Backtest and replay call the same ``execute``;
they differ only in where the bars and the model come from (the lake and fresh training,
or the run folder's recorded inputs and bundle).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from backend.audit.decisions import decision_log_sha256
from backend.config.canonical import canonical_json, content_hash, sha256_hex
from backend.config.schema import LakeDataSpec, RunSpec, SharedDataSpec
from backend.data import lake
from backend.data.shared_loader import default_shared_dir, import_shared
from backend.data.simulator import simulate_ohlcv
from backend.engine.clock import SimulatedClock, WallClock
from backend.engine.core import Engine, Stamp
from backend.engine.events import MarketMatrix
from backend.engine.pipeline import Pipeline
from backend.errors import DataError
from backend.features.build import build_features
from backend.features.labels import forward_return_labels
from backend.home import Home
from backend.models.bundle import ModelBundle
from backend.models.train import predict_bundle, train_walk_forward

Progress = Callable[[str], None]
BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Outcome:
    """What ``execute`` produced: the engine after the run, and the per-bar series."""

    engine: Engine
    matrix: MarketMatrix
    equity: np.ndarray
    states: np.ndarray
    decisions: pl.DataFrame
    decision_log_sha256: str
    state_trace_sha256: str
    timings: dict[str, float]


def simulated_source(spec: RunSpec) -> str:
    """Return the lake source name of a simulated series: one per (seed, window, symbols)."""
    key = canonical_json([spec.seed, spec.data.timeframe, spec.data.start_ms, spec.data.days, list(spec.symbols)])
    return f"sim-{sha256_hex(key)[:12]}"


def load_bars(spec: RunSpec, home: Home, progress: Progress) -> tuple[pl.DataFrame, dict[str, str]]:
    """Make sure the lake holds the run's bars, read them, and return them with the lake snapshot."""
    data = spec.data
    if isinstance(data, SharedDataSpec):
        shared = default_shared_dir()
        if shared is None:
            raise DataError("data.kind=shared needs the recorded data folder ../shared/data (or set ACTS_SHARED_DATA)")
        result = import_shared(shared, home.lake, spec.symbols, data.timeframe)
        progress(f"shared data: {result['rows']} rows for {len(result['symbols'])} symbols in the lake")
        source = data.source
    elif isinstance(data, LakeDataSpec):
        source = data.source
    else:
        source = simulated_source(spec)
        n_bars = data.days * 86_400_000 // data.bar_ms
        if not lake.lake_files(home.lake, source, data.timeframe, spec.symbols, data.start_ms, data.end_ms):
            progress(f"simulating {len(spec.symbols)} symbols x {n_bars} bars of {data.timeframe}")
            frame = simulate_ohlcv(spec.symbols, spec.universe.clusters, data.timeframe, data.start_ms, n_bars, spec.seed)
            lake.write_ohlcv(home.lake, frame.with_columns(pl.lit(source).alias("source")), data.timeframe)
    files = lake.lake_files(home.lake, source, data.timeframe, spec.symbols, data.start_ms, data.end_ms)
    bars = lake.read_ohlcv(home.lake, source, data.timeframe, spec.symbols, data.start_ms, data.end_ms)
    return bars.select(BAR_COLUMNS), lake.snapshot(files, home.lake)


def train_bundle(pipeline: Pipeline, bars: pl.DataFrame, snapshot: dict[str, str], progress: Progress) -> ModelBundle:
    """Train the walk-forward bundle for ``pipeline`` on ``bars``."""
    spec = pipeline.spec
    features = build_features(bars, spec.features)
    cost = 2.0 * (spec.execution.taker_fee_bps + spec.execution.slippage_bps) / 10_000.0
    labels = forward_return_labels(bars, spec.training.label.horizon_bars, cost, spec.data.bar_ms)
    dataset = features.join(labels, on=["ts", "symbol"], how="left")
    lineage = {
        "spec_hash": pipeline.spec_hash,
        "features": canonical_json(spec.features),
        "feature_set_hash": content_hash(spec.features),
        "training": canonical_json(spec.training),
        "label_round_trip_cost": cost,
        "lake_snapshot": snapshot,
        "inputs_sha256": frame_sha256(bars),
    }
    return train_walk_forward(
        dataset, pipeline.feature_names, spec.universe.clusters, spec.model, spec.training, spec.seed, lineage, progress
    )


def frame_sha256(frame: pl.DataFrame) -> str:
    """Hash a frame's content (column names and values), independent of file format."""
    parts = [canonical_json(frame.columns).encode()]
    for name, dtype in frame.schema.items():
        column = frame[name]
        if dtype == pl.String:
            parts.append("\x1f".join(column.to_list()).encode())
        else:
            parts.append(column.to_numpy().tobytes())
    return sha256_hex(b"\x1e".join(parts))


def _matrix(values: pl.DataFrame, column: str, t_idx: np.ndarray, s_idx: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.full(shape, np.nan)
    out[t_idx, s_idx] = values[column].to_numpy()
    return out


def market_matrix(pipeline: Pipeline, bars: pl.DataFrame, bundle: ModelBundle, num_threads: int) -> MarketMatrix:
    """Build features and predictions and align everything to ``(time, symbol)`` matrices."""
    spec = pipeline.spec
    symbols = spec.symbols
    features = build_features(bars, spec.features)
    predictions = predict_bundle(bundle, features, spec.universe.clusters, num_threads)
    times = np.unique(bars["ts"].to_numpy())
    shape = (len(times), len(symbols))
    code = {s: i for i, s in enumerate(symbols)}

    def index(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        t_idx = np.searchsorted(times, frame["ts"].to_numpy())
        s_idx = frame["symbol"].replace_strict(code, return_dtype=pl.Int64).to_numpy()
        return t_idx, s_idx

    bt, bs = index(features)
    pt, ps = index(predictions)
    has_bar = np.zeros(shape, dtype=bool)
    has_bar[bt, bs] = True
    return MarketMatrix(
        ts_ms=times,
        symbols=symbols,
        open=_matrix(features, "open", bt, bs, shape),
        close=_matrix(features, "close", bt, bs, shape),
        has_bar=has_bar,
        pred={name: _matrix(predictions, name, pt, ps, shape) for name in ("p_up", "expected_return")},
        feat={name: _matrix(features, name, bt, bs, shape) for name in pipeline.feature_names},
    )


def execute(pipeline: Pipeline, bars: pl.DataFrame, bundle: ModelBundle, wall: WallClock) -> Outcome:
    """Run the spine over ``bars`` with ``bundle``: the one path backtest and replay share."""
    spec = pipeline.spec
    started = wall.monotonic()
    matrix = market_matrix(pipeline, bars, bundle, spec.training.num_threads)
    prepared = wall.monotonic()
    stamp = Stamp(pipeline.spec_hash, pipeline.profile_version, bundle.version)
    ordermin = {a.symbol: a.ordermin for a in spec.universe.assets}
    engine = Engine(
        spec.symbols,
        spec.universe.clusters,
        ordermin,
        pipeline.graph,
        spec.risk,
        spec.execution,
        stamp,
        SimulatedClock(int(matrix.ts_ms[0])),
    )
    equity = np.empty(len(matrix.ts_ms))
    states = np.empty(matrix.has_bar.shape, dtype=np.int8)
    for batch in matrix.batches():
        equity[batch.index] = engine.on_batch(batch)
        states[batch.index] = engine.state.state
    looped = wall.monotonic()
    decisions = engine.log.frame()
    digest = decision_log_sha256(decisions)
    finished = wall.monotonic()
    timings = {
        "features_and_predictions": prepared - started,
        "event_loop": looped - prepared,
        "decision_log": finished - looped,
    }
    return Outcome(engine, matrix, equity, states, decisions, digest, sha256_hex(states.tobytes()), timings)


def write_json(path: Path, value: object) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
