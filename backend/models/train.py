"""Walk-forward training of per-symbol specialists and a global cross-asset model, and prediction."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from backend.config.canonical import sha256_hex
from backend.config.schema import ModelSpec, TrainingSpec
from backend.models import lgbm
from backend.models.bundle import TARGETS, FoldWindow, ModelBundle, TrainedModel
from backend.models.walkforward import make_folds

_OBJECTIVES = {"p_up": "binary", "expected_return": "regression"}
_LABELS = {"p_up": "label_up", "expected_return": "label_return"}
Progress = Callable[[str], None]


def derive_seed(base: int, *parts: object) -> int:
    """Derive a task seed from the spec seed and the task's identity (never from global state)."""
    return int(sha256_hex(":".join(str(p) for p in (base, *parts)))[:8], 16) % (2**31 - 1)


def _matrix(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    return frame.select(columns).to_numpy().astype(np.float64, copy=False)


def train_walk_forward(
    dataset: pl.DataFrame,
    feature_names: tuple[str, ...],
    clusters: dict[str, str],
    model: ModelSpec,
    training: TrainingSpec,
    seed: int,
    lineage: dict[str, object],
    progress: Progress = lambda _message: None,
) -> ModelBundle:
    """Train every fold's global model and specialists on ``dataset``.

    ``dataset`` holds ``ts, symbol``, the feature columns and the labels ``label_up`` and
    ``label_return``, sorted by ``(ts, symbol)``. Folds are cut on its distinct timestamps.
    """
    symbols = tuple(sorted(dataset["symbol"].unique().to_list()))
    cluster_names = tuple(sorted({clusters[s] for s in symbols}))
    frame = _with_context(dataset, symbols, cluster_names, clusters)
    times = frame["ts"].unique().sort().to_numpy()
    folds = make_folds(len(times), training.walk_forward)
    columns = list(feature_names)
    global_columns = columns + ["symbol_code", "cluster_code"]
    categorical = [len(columns), len(columns) + 1]
    windows, models = [], []
    for fold in folds:
        window = FoldWindow(
            fold.index,
            int(times[fold.train_start]),
            int(times[fold.train_end - 1]) + 1,
            int(times[fold.test_start]),
            int(times[fold.test_end - 1]) + 1,
        )
        windows.append(window)
        train = frame.filter(
            pl.col("ts").is_between(window.train_start_ms, window.train_end_ms, closed="left")
            & pl.col("label_return").is_not_null()
        ).tail(training.max_train_rows)
        for target in TARGETS:
            progress(f"fold {fold.index}: global {target} on {train.height} rows")
            models.append(
                _fit(train, global_columns, target, model, training, derive_seed(seed, fold.index, "global", target), fold.index, "global", categorical)
            )
        for symbol in symbols:
            rows = train.filter(pl.col("symbol") == symbol)
            if rows.height < 2 * model.specialist.min_data_in_leaf:
                # Too little history for a specialist in this fold: the global model alone predicts it.
                progress(f"fold {fold.index}: no specialist for {symbol} ({rows.height} rows)")
                continue
            for target in TARGETS:
                models.append(
                    _fit(rows, columns, target, model, training, derive_seed(seed, fold.index, symbol, target), fold.index, symbol, None)
                )
    return ModelBundle(
        name=model.name,
        feature_names=tuple(feature_names),
        symbols=symbols,
        clusters=cluster_names,
        specialist_weight=model.specialist_weight,
        folds=tuple(windows),
        models=tuple(models),
        lineage=lineage,
    )


def _fit(
    rows: pl.DataFrame,
    columns: list[str],
    target: str,
    model: ModelSpec,
    training: TrainingSpec,
    seed: int,
    fold: int,
    scope: str,
    categorical: list[int] | None,
) -> TrainedModel:
    params = model.global_model if scope == "global" else model.specialist
    text = lgbm.fit(
        _matrix(rows, columns),
        rows[_LABELS[target]].to_numpy(),
        params,
        _OBJECTIVES[target],
        seed,
        training.num_threads,
        categorical,
    )
    return TrainedModel(fold, scope, target, seed, rows.height, text)


def _with_context(
    frame: pl.DataFrame, symbols: tuple[str, ...], cluster_names: tuple[str, ...], clusters: dict[str, str]
) -> pl.DataFrame:
    symbol_code = {s: float(i) for i, s in enumerate(symbols)}
    cluster_code = {s: float(cluster_names.index(clusters[s])) for s in symbols}
    return frame.with_columns(
        pl.col("symbol").replace_strict(symbol_code, return_dtype=pl.Float64).alias("symbol_code"),
        pl.col("symbol").replace_strict(cluster_code, return_dtype=pl.Float64).alias("cluster_code"),
    )


def predict_bundle(bundle: ModelBundle, features: pl.DataFrame, clusters: dict[str, str], num_threads: int) -> pl.DataFrame:
    """Predict each fold's test span with that fold's models and blend specialist and global outputs.

    Returns ``ts, symbol, fold, p_up, expected_return`` for the rows inside some fold's test span,
    sorted by ``(ts, symbol)``. Rows outside every test span get no prediction (the strategy sees none).
    """
    frame = _with_context(features.filter(pl.col("symbol").is_in(list(bundle.symbols))), bundle.symbols, bundle.clusters, clusters)
    columns = list(bundle.feature_names)
    global_columns = columns + ["symbol_code", "cluster_code"]
    weight = bundle.specialist_weight
    parts = []
    for window in bundle.folds:
        span = frame.filter(pl.col("ts").is_between(window.test_start_ms, window.test_end_ms, closed="left"))
        out = {"ts": span["ts"].to_numpy(), "symbol": span["symbol"].to_numpy()}
        # Integer codes: comparing a numpy object array of strings per symbol is far slower.
        codes = span["symbol_code"].to_numpy()
        global_matrix = _matrix(span, global_columns)
        specialist_matrix = global_matrix[:, : len(columns)]
        for target in TARGETS:
            blended = lgbm.predict(bundle.model(window.index, "global", target).text, global_matrix, num_threads)
            for code, symbol in enumerate(bundle.symbols):
                mask = codes == code
                specialist = bundle.find(window.index, symbol, target)
                if specialist is not None and mask.any():
                    own = lgbm.predict(specialist.text, specialist_matrix[mask], num_threads)
                    blended[mask] = (1.0 - weight) * blended[mask] + weight * own
            out[target] = blended
        parts.append(pl.DataFrame(out).with_columns(pl.lit(window.index, dtype=pl.Int64).alias("fold")))
    result = pl.concat(parts) if parts else pl.DataFrame(
        schema={"ts": pl.Int64, "symbol": pl.String, "p_up": pl.Float64, "expected_return": pl.Float64, "fold": pl.Int64}
    )
    return result.select("ts", "symbol", "fold", "p_up", "expected_return").sort(["ts", "symbol"])
