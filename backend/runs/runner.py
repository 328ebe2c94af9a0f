"""The composition of a run: bars in, a model trained or loaded, the engine's loop run, results out.

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
from backend.clock import WallClock
from backend.config.canonical import canonical_json, content_hash, sha256_hex
from backend.config.schema import LakeDataSpec, Mode, RunSpec, SharedDataSpec
from backend.data import lake
from backend.data.shared_loader import default_shared_dir, import_shared
from backend.data.simulator import simulate_ohlcv
from backend.data.training_feed import prepare_lake_source
from backend.engine.core import Engine
from backend.engine.economics import EdgeBasis, calibrate_edge
from backend.engine.events import MarketMatrix
from backend.engine.loop import Spine, run_spine
from backend.engine.pipeline import PREDICTION_OUTPUTS, Pipeline
from backend.errors import DataError, ModelError
from backend.features.build import build_features
from backend.features.labels import forward_return_labels, recovery_labels
from backend.home import Home, acts_home
from backend.bundles.use import InstalledBundle
from backend.models.bundle import ModelBundle
from backend.models.parallel import ray_temp_dir
from backend.models.registry import ModelRegistry
from backend.models.train import predict_bundle, train_walk_forward

Progress = Callable[[str], None]
BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")
# Modes that act on the market (or shadow it): they may only use a promoted model.
PROMOTED_ONLY_MODES = (Mode.PAPER, Mode.SHADOW, Mode.LIVE)
# Training settings that change where or whether models are trained, never the models themselves.
_EXECUTION_ONLY = {"ray", "promotion", "schedule", "inject_failure"}


@dataclass(frozen=True)
class Outcome:
    """What ``execute`` produced: the engine after the run, and the per-bar series (equity, gross exposure, states)."""

    engine: Engine
    matrix: MarketMatrix
    equity: np.ndarray
    exposure: np.ndarray
    states: np.ndarray
    decisions: pl.DataFrame
    decision_log_sha256: str
    state_trace_sha256: str
    timings: dict[str, float]


def simulated_source(spec: RunSpec) -> str:
    """Return the lake source name of a simulated series: one per (seed, window, symbols)."""
    key = [spec.seed, spec.data.timeframe, spec.data.start_ms, spec.data.days, list(spec.symbols)]
    # A planted signal makes another series; without one the name (and every existing lake) stays as it was.
    signal = getattr(spec.data, "signal_bps", 0.0)
    key = canonical_json(key + [signal] if signal else key)
    return f"sim-{sha256_hex(key)[:12]}"


def load_bars(spec: RunSpec, home: Home, progress: Progress) -> tuple[pl.DataFrame, dict[str, str]]:
    """Make sure the lake holds the run's bars, read them, and return them with the lake snapshot.

    A lake run first applies the training data policy (:func:`backend.data.training_feed.prepare_lake_source`): it may top the
    lake up from its provider when ``ALLOW_PROVIDER_CALLS_DURING_TRAINING=true``.

    Raises
    ------
    ConfigError
        When a lake run's data settings are invalid.
    DataError
        When shared data is missing, a top-up fails, or the lake lacks a symbol's bars.
    """
    data = spec.data
    if isinstance(data, SharedDataSpec):
        shared = default_shared_dir()
        if shared is None:
            raise DataError("data.kind=shared needs the recorded data folder ../shared/data (or set ACTS_SHARED_DATA)")
        result = import_shared(shared, home.lake, spec.symbols, data.timeframe)
        progress(f"shared data: {result['rows']} rows for {len(result['symbols'])} symbols in the lake")
        source = data.source
    elif isinstance(data, LakeDataSpec):
        prepare_lake_source(data, [a for a in spec.universe.assets if a.symbol in spec.symbols], home.root, progress)
        source = data.source
    else:
        source = simulated_source(spec)
        n_bars = data.days * 86_400_000 // data.bar_ms
        if not lake.lake_files(home.lake, source, data.timeframe, spec.symbols, data.start_ms, data.end_ms):
            progress(f"simulating {len(spec.symbols)} symbols x {n_bars} bars of {data.timeframe}")
            frame = simulate_ohlcv(
                spec.symbols, spec.universe.clusters, data.timeframe, data.start_ms, n_bars, spec.seed, signal_bps=data.signal_bps
            )
            lake.write_ohlcv(home.lake, frame.with_columns(pl.lit(source).alias("source")), data.timeframe)
    files = lake.lake_files(home.lake, source, data.timeframe, spec.symbols, data.start_ms, data.end_ms)
    bars = lake.read_ohlcv(home.lake, source, data.timeframe, spec.symbols, data.start_ms, data.end_ms, BAR_COLUMNS)
    return bars, lake.snapshot(files, home.lake)


def round_trip_cost(spec: RunSpec) -> float:
    """Return the label cost: fees and slippage in and out, as a fraction.

    Slippage counts at the model's half-spread: its size term depends on an order not yet sized.
    """
    return 2.0 * (spec.execution.taker_fee_bps + spec.execution.slippage.half_spread_bps) / 10_000.0


def edge_basis(spec: RunSpec, bundle: ModelBundle) -> EdgeBasis:
    """Return what the engine prices decisions with: the label horizon in time, and the cost the model's labels are net of.

    The cost is the bundle's own (its lineage records the label cost it was trained with); a bundle without that
    record was trained under this spec's execution costs.
    """
    label_cost = float(bundle.lineage.get("label_round_trip_cost", round_trip_cost(spec)))  # type: ignore[arg-type]
    return EdgeBasis(spec.training.label.horizon_bars * spec.data.bar_ms, label_cost)


def training_dataset(spec: RunSpec, bars: pl.DataFrame) -> pl.DataFrame:
    """Return features joined with every label (up, return, recovery and adverse depth), by ``(ts, symbol)``."""
    features = build_features(bars, spec.features, spec.universe.clusters)
    label = spec.training.label
    recovery = spec.training.recovery
    labels = forward_return_labels(bars, label.horizon_bars, round_trip_cost(spec), spec.data.bar_ms)
    recover = recovery_labels(bars, label.horizon_bars, recovery.lookback_bars, recovery.recover_fraction, spec.data.bar_ms)
    return features.join(labels, on=["ts", "symbol"], how="left").join(
        recover.select("ts", "symbol", "label_recover", "adverse_depth"), on=["ts", "symbol"], how="left"
    )


def model_training_json(spec: RunSpec) -> str:
    """Return the canonical JSON of the training settings that shape the models (not Ray, gates or schedule)."""
    return canonical_json({k: v for k, v in spec.training.model_dump(mode="json").items() if k not in _EXECUTION_ONLY})


def train_bundle(
    pipeline: Pipeline,
    bars: pl.DataFrame,
    snapshot: dict[str, str],
    progress: Progress,
    home: Home | None = None,
    dataset: pl.DataFrame | None = None,
    installed: InstalledBundle | None = None,
    now_ms: Callable[[], int] | None = None,
) -> ModelBundle:
    """Return the bundle for ``pipeline``: trained walk-forward on ``bars``, the promoted one, or the installed one.

    With ``model.source=promoted`` the registry's promoted bundle is loaded (and verified) instead
    of training; with ``model.source=bundle`` ``installed`` supplies the home's installed bundle.
    With ``model.source=cached`` the home's training cache supplies a model trained on the same bars
    under the same training settings, or the model is trained and cached (registered at ``now_ms()``).
    Paper, shadow and live modes accept only those. ``dataset`` is :func:`training_dataset` of
    ``bars`` when the caller has it already.

    Raises
    ------
    ModelError
        When a market-facing mode asks to train, when no model is promoted, when the promoted
        bundle needs features the run does not compute, or when ``model.source=bundle`` comes
        without ``installed``.
    """
    spec = pipeline.spec
    home = home if home is not None else Home(acts_home())
    if spec.model.source == "bundle":
        if installed is None:
            raise ModelError("model.source=bundle needs the home's installed bundles (backend.bundles.use.installed_source)")
        return installed(pipeline, progress)
    if spec.model.source == "promoted":
        bundle = ModelRegistry.of_home(home).promoted_bundle()
        missing = sorted(set(bundle.feature_names) - set(pipeline.feature_names))
        if missing:
            raise ModelError(f"promoted model {bundle.version} needs features this run does not compute: {missing}")
        progress(f"using promoted model {bundle.version}")
        return bundle
    if spec.mode in PROMOTED_ONLY_MODES:
        raise ModelError(
            f"mode {spec.mode.value} runs only on a promoted model: set model.source=promoted (was {spec.model.source!r})"
        )
    lineage = {
        "spec_hash": pipeline.spec_hash,
        "features": canonical_json(spec.features),
        "feature_set_hash": content_hash(spec.features),
        "training": model_training_json(spec),
        "label_round_trip_cost": round_trip_cost(spec),
        "lake_snapshot": snapshot,
        "inputs_sha256": frame_sha256(bars),
    }
    cache = training_cache(home) if spec.model.source == "cached" else None
    key = training_key(pipeline, lineage) if cache is not None else ""
    if cache is not None and (hit := cached_version(cache, key)) is not None:
        progress(f"using cached model {hit}: trained on the same bars under the same training settings")
        return cache.bundle(hit)
    dataset = dataset if dataset is not None else training_dataset(spec, bars)
    bundle = train_walk_forward(
        dataset,
        pipeline.feature_names,
        spec.universe.clusters,
        spec.model,
        spec.training,
        spec.seed,
        lineage,
        progress,
        ray_temp_dir(home.root),
    )
    if cache is not None:
        cache.register(bundle, {"training_key": key}, now_ms() if now_ms is not None else 0, "trained (training cache)")
    return bundle


def training_cache(home: Home) -> ModelRegistry:
    """Return the home's training cache: a model registry of its own (``registry/cache``), apart from the promoted line."""
    return ModelRegistry(home.root / "registry" / "cache")


def training_key(pipeline: Pipeline, lineage: dict[str, object]) -> str:
    """Return what identifies a walk-forward training: the bars, features, labels and settings, not the run around them.

    The risk profile, the strategy and the run's name do not shape the models, so they are left out (the lineage
    less its ``spec_hash``); the model parameters and the seed do.
    """
    spec = pipeline.spec
    shaping = {k: v for k, v in lineage.items() if k != "spec_hash"}
    model = spec.model.model_dump(mode="json", exclude={"source"})
    return content_hash({"lineage": shaping, "model": model, "seed": spec.seed, "clusters": spec.universe.clusters})


def cached_version(cache: ModelRegistry, key: str) -> str | None:
    """Return the cached model version trained under ``key``, or None."""
    for record in cache.records():
        if record["training_key"] == key:
            return str(record["version"])
    return None


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


@dataclass(frozen=True)
class Placement:
    """Where a frame's rows go in a ``(time, symbol)`` matrix.

    ``block`` is ``(first_row, rows)`` when the frame, sorted by ``(ts, symbol)``, fills a contiguous run
    of whole timestamps (every symbol present): then a column is a plain reshape, with no scatter.
    """

    t_idx: np.ndarray
    s_idx: np.ndarray
    block: tuple[int, int] | None


def place(frame: pl.DataFrame, times: np.ndarray, code: dict[str, int]) -> Placement:
    """Locate ``frame``'s rows (sorted by ``(ts, symbol)``) in the matrix of ``times`` x ``code``."""
    t_idx = np.searchsorted(times, frame["ts"].to_numpy())
    s_idx = frame["symbol"].replace_strict(code, return_dtype=pl.Int64).to_numpy()
    n, width = len(t_idx), len(code)
    rows = n // width
    dense = (
        n > 0
        and n == rows * width
        and bool((s_idx.reshape(rows, width) == np.arange(width)).all())
        and bool((t_idx.reshape(rows, width) == (t_idx[0] + np.arange(rows))[:, None]).all())
    )
    return Placement(t_idx, s_idx, (int(t_idx[0]), rows) if dense else None)


def align_column(values: pl.DataFrame, column: str, where: Placement, shape: tuple[int, int]) -> np.ndarray:
    """Return ``values[column]`` as a ``shape`` matrix placed by ``where``; cells without a row are NaN."""
    data = values[column].to_numpy()
    out = np.full(shape, np.nan)
    if where.block is None:
        out[where.t_idx, where.s_idx] = data
    else:
        first, rows = where.block
        out[first : first + rows] = data.reshape(rows, shape[1])
    return out


def realised_matrix(spec: RunSpec, bars: pl.DataFrame, times: np.ndarray, symbols: tuple[str, ...], label_cost: float) -> np.ndarray:
    """Return the net label return of every ``(time, symbol)`` cell (NaN where the horizon is not observed).

    Only the out-of-fold edge calibration reads it, and only for rows realised before the fold it prices.
    """
    labels = forward_return_labels(bars, spec.training.label.horizon_bars, label_cost, spec.data.bar_ms)
    code = {s: i for i, s in enumerate(symbols)}
    return align_column(labels.fill_null(np.nan), "label_return", place(labels, times, code), (len(times), len(symbols)))


def realised_from_close(spec: RunSpec, close: np.ndarray, times: np.ndarray, label_cost: float) -> np.ndarray:
    """Return :func:`realised_matrix` from the ``(time, symbol)`` close matrix (NaN where no bar), bit for bit.

    The label's future close is the same symbol's close exactly ``horizon_bars x bar_ms`` later, as in
    :func:`backend.features.labels.forward_return_labels`, found by time instead of by a join; the logs are
    polars' (the same kernel the labels use) and the differences the same IEEE operations, so every
    cell is the label's value, and NaN where the label is null or the cell has no bar.
    """
    horizon_ms = spec.training.label.horizon_bars * spec.data.bar_ms
    later = np.searchsorted(times, times + horizon_ms)
    found = later < len(times)
    found[found] = times[later[found]] == times[found] + horizon_ms
    log_close = pl.DataFrame({"close": close.reshape(-1)}).select(pl.col("close").log()).to_series().to_numpy()
    log_close = log_close.reshape(close.shape)
    out = np.full(close.shape, np.nan)
    out[found] = (log_close[later[found]] - log_close[found]) - label_cost
    return out


def market_matrix(pipeline: Pipeline, bars: pl.DataFrame, bundle: ModelBundle, num_threads: int) -> MarketMatrix:
    """Build features and predictions and align everything to ``(time, symbol)`` matrices.

    Besides the model outputs, ``pred`` holds ``fold`` (the walk-forward fold that predicted each cell) and
    ``edge``: the expected net return calibrated out of fold (:func:`backend.engine.economics.calibrate_edge`),
    which the engine prices decisions with (ADR-027). Each frame is dropped once it is aligned (ADR-081).
    """
    spec = pipeline.spec
    symbols = spec.symbols
    features = build_features(bars, spec.features, spec.universe.clusters)
    # A promoted or installed model predicts forward: its last fold's boosters cover every bar after its last test span.
    predictions = predict_bundle(
        bundle,
        features,
        spec.universe.clusters,
        num_threads,
        forward=spec.model.source in ("promoted", "bundle"),
        targets=pipeline.prediction_targets,
    )
    times = np.unique(bars["ts"].to_numpy())
    shape = (len(times), len(symbols))
    code = {s: i for i, s in enumerate(symbols)}
    predictions_at = place(predictions, times, code)
    pred = {name: align_column(predictions, name, predictions_at, shape) for name in (*PREDICTION_OUTPUTS, "fold")}
    del predictions, predictions_at
    bars_at = place(features, times, code)
    has_bar = np.zeros(shape, dtype=bool)
    has_bar[bars_at.t_idx, bars_at.s_idx] = True
    columns = {name: align_column(features, name, bars_at, shape) for name in ("open", "close", "volume", *pipeline.feature_names)}
    del features, bars_at
    edge = edge_basis(spec, bundle)
    realised = realised_from_close(spec, columns["close"], times, edge.label_cost)
    pred["edge"], _ = calibrate_edge(pred["expected_return"], realised, pred["fold"], times, edge.horizon_ms)
    return MarketMatrix(
        ts_ms=times,
        symbols=symbols,
        open=columns.pop("open"),
        close=columns.pop("close"),
        has_bar=has_bar,
        pred=pred,
        volume=columns.pop("volume"),
        feat=columns,
    )


def simulate(pipeline: Pipeline, matrix: MarketMatrix, edge: EdgeBasis, model_version: str) -> Spine:
    """Run a fresh engine over every batch of ``matrix`` (the engine's one loop)."""
    return run_spine(pipeline, matrix, edge, model_version)


def execute(pipeline: Pipeline, bars: pl.DataFrame, bundle: ModelBundle, wall: WallClock) -> Outcome:
    """Run the spine over ``bars`` with ``bundle``: the one path backtest and replay share."""
    spec = pipeline.spec
    started = wall.monotonic()
    matrix = market_matrix(pipeline, bars, bundle, spec.training.num_threads)
    prepared = wall.monotonic()
    spine = simulate(pipeline, matrix, edge_basis(spec, bundle), bundle.version)
    looped = wall.monotonic()
    decisions = spine.engine.log.frame()
    digest = decision_log_sha256(decisions)
    finished = wall.monotonic()
    timings = {
        "features_and_predictions": prepared - started,
        "event_loop": looped - prepared,
        "decision_log": finished - looped,
    }
    return Outcome(
        spine.engine, matrix, spine.equity, spine.exposure, spine.states, decisions, digest, sha256_hex(spine.states.tobytes()), timings
    )


def write_json(path: Path, value: object) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
