"""Walk-forward training of per-symbol specialists and a global cross-asset model, and prediction.

Training is cut into tasks, one per ``(fold, scope)`` where the scope is ``global`` or a symbol.
A task carries its own matrices and seeds and fits the scope's boosters for every target, so it
gives the same model texts wherever it runs (in-process or as a Ray task).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from backend.config.canonical import sha256_hex
from backend.config.schema import LgbmParamsSpec, ModelSpec, TrainingSpec
from backend.errors import ModelError
from backend.models import forest, lgbm
from backend.models.bundle import TARGETS, FoldWindow, ModelBundle, TrainedModel
from backend.models.parallel import run_tasks
from backend.models.walkforward import make_folds

_OBJECTIVES = {"p_up": "binary", "expected_return": "regression", "p_recovery": "binary"}
_LABELS = {"p_up": "label_up", "expected_return": "label_return", "p_recovery": "label_recover"}
LABEL_COLUMNS = ("label_up", "label_return", "label_recover", "adverse_depth")
Progress = Callable[[str], None]


def derive_seed(base: int, *parts: object) -> int:
    """Derive a task seed from the spec seed and the task's identity (never from global state)."""
    return int(sha256_hex(":".join(str(p) for p in (base, *parts)))[:8], 16) % (2**31 - 1)


def _matrix(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    return frame.select(columns).to_numpy().astype(np.float64, copy=False)


@dataclass(frozen=True)
class TrainTask:
    """One ``(fold, scope)``: its feature matrix, labels, parameters and one seed per target.

    ``recovery_rows`` marks the rows in a severe adverse state with a known recovery label: the
    recovery booster trains on those alone, and only when there are at least ``recovery_min_rows``.
    """

    fold: int
    scope: str
    features: np.ndarray
    label_up: np.ndarray
    label_return: np.ndarray
    label_recover: np.ndarray
    recovery_rows: np.ndarray
    params: LgbmParamsSpec
    seeds: tuple[int, int, int]
    num_threads: int
    categorical: tuple[int, ...]
    recovery_min_rows: int
    fail: bool = False


def fit_task(task: TrainTask) -> tuple[TrainedModel, ...]:
    """Fit the boosters of one task: ``p_up`` and ``expected_return``, and ``p_recovery`` when it can."""
    if task.fail:
        raise ModelError(f"injected failure (training.inject_failure) for {task.scope} in fold {task.fold}")
    categorical = list(task.categorical) or None
    out = []
    for target, labels, seed in (("p_up", task.label_up, task.seeds[0]), ("expected_return", task.label_return, task.seeds[1])):
        text = lgbm.fit(task.features, labels, task.params, _OBJECTIVES[target], seed, task.num_threads, categorical)
        out.append(TrainedModel(task.fold, task.scope, target, seed, len(labels), text))
    rows = task.recovery_rows
    count = int(rows.sum())
    if count >= task.recovery_min_rows:
        text = lgbm.fit(task.features[rows], task.label_recover[rows], task.params, "binary", task.seeds[2], task.num_threads, categorical)
        out.append(TrainedModel(task.fold, task.scope, "p_recovery", task.seeds[2], count, text))
    return tuple(out)


def fold_windows(times: np.ndarray, training: TrainingSpec) -> list[FoldWindow]:
    """Return the walk-forward folds over the sorted distinct timestamps ``times``, in UTC ms."""
    return [
        FoldWindow(
            fold.index,
            int(times[fold.train_start]),
            int(times[fold.train_end - 1]) + 1,
            int(times[fold.test_start]),
            int(times[fold.test_end - 1]) + 1,
        )
        for fold in make_folds(len(times), training.walk_forward)
    ]


def plan_tasks(
    frame: pl.DataFrame,
    windows: list[FoldWindow],
    symbols: tuple[str, ...],
    columns: list[str],
    model: ModelSpec,
    training: TrainingSpec,
    seed: int,
    progress: Progress,
) -> Iterator[TrainTask]:
    """Yield the tasks of every fold in a fixed order: the global model, then each symbol's specialist.

    Tasks are built lazily, so only the tasks in flight hold their matrices.
    """
    global_columns = columns + ["symbol_code", "cluster_code"]
    min_depth = training.recovery.min_depth
    failure = training.inject_failure
    for window in windows:
        train = frame.filter(
            pl.col("ts").is_between(window.train_start_ms, window.train_end_ms, closed="left")
            & pl.col("label_return").is_not_null()
        ).tail(training.max_train_rows)
        progress(f"fold {window.index}: global model on {train.height} rows")
        scopes: list[tuple[str, pl.DataFrame, list[str], LgbmParamsSpec, tuple[int, ...]]] = [
            ("global", train, global_columns, model.global_model, (len(columns), len(columns) + 1))
        ]
        by_symbol = train.partition_by("symbol", as_dict=True, maintain_order=True)  # one pass, not one filter each
        for symbol in symbols:
            rows = by_symbol.get((symbol,), train.clear())
            if rows.height < 2 * model.specialist.min_data_in_leaf:
                # Too little history for a specialist in this fold: the global model alone predicts it.
                progress(f"fold {window.index}: no specialist for {symbol} ({rows.height} rows)")
                continue
            scopes.append((symbol, rows, columns, model.specialist, ()))
        for scope, rows, names, params, categorical in scopes:
            recover = rows["label_recover"].to_numpy().astype(np.float64)
            depth = rows["adverse_depth"].to_numpy().astype(np.float64)
            yield TrainTask(
                fold=window.index,
                scope=scope,
                features=_matrix(rows, names),
                label_up=rows["label_up"].to_numpy().astype(np.float64),
                label_return=rows["label_return"].to_numpy().astype(np.float64),
                label_recover=recover,
                recovery_rows=~np.isnan(recover) & (np.nan_to_num(depth, nan=-1.0) >= min_depth),
                params=params,
                seeds=tuple(derive_seed(seed, window.index, scope, target) for target in TARGETS),  # type: ignore[arg-type]
                num_threads=training.num_threads,
                categorical=categorical,
                recovery_min_rows=training.recovery.min_rows,
                fail=failure is not None and (failure.scope, failure.fold) == (scope, window.index),
            )


def train_walk_forward(
    dataset: pl.DataFrame,
    feature_names: tuple[str, ...],
    clusters: dict[str, str],
    model: ModelSpec,
    training: TrainingSpec,
    seed: int,
    lineage: dict[str, object],
    progress: Progress = lambda _message: None,
    ray_temp_dir: Path | None = None,
) -> ModelBundle:
    """Train every fold's global model and specialists on ``dataset``.

    ``dataset`` holds ``ts, symbol``, the feature columns and the labels ``label_up``,
    ``label_return``, ``label_recover`` and ``adverse_depth``, sorted by ``(ts, symbol)``. Folds
    are cut on its distinct timestamps. Tasks run through Ray when ``training.ray.enabled``
    (Ray's temp dir is ``ray_temp_dir``), else in this process; the bundle is the same either way.

    Raises
    ------
    TrainingTaskError
        When a task still fails after ``training.ray.max_retries`` retries.
    """
    symbols = tuple(sorted(dataset["symbol"].unique().to_list()))
    cluster_names = tuple(sorted({clusters[s] for s in symbols}))
    frame = _with_context(dataset, symbols, cluster_names, clusters)
    windows = fold_windows(frame["ts"].unique().sort().to_numpy(), training)
    tasks = plan_tasks(frame, windows, symbols, list(feature_names), model, training, seed, progress)
    temp_dir = ray_temp_dir if ray_temp_dir is not None else Path("tmp")
    results = run_tasks(tasks, fit_task, training.ray, temp_dir, progress)
    return ModelBundle(
        name=model.name,
        feature_names=tuple(feature_names),
        symbols=symbols,
        clusters=cluster_names,
        specialist_weight=model.specialist_weight,
        folds=tuple(windows),
        models=tuple(m for result in results for m in result),
        lineage=lineage,
    )


def _with_context(
    frame: pl.DataFrame, symbols: tuple[str, ...], cluster_names: tuple[str, ...], clusters: dict[str, str]
) -> pl.DataFrame:
    symbol_code = {s: float(i) for i, s in enumerate(symbols)}
    cluster_code = {s: float(cluster_names.index(clusters[s])) for s in symbols}
    return frame.with_columns(
        pl.col("symbol").replace_strict(symbol_code, return_dtype=pl.Float64).alias("symbol_code"),
        pl.col("symbol").replace_strict(cluster_code, return_dtype=pl.Float64).alias("cluster_code"),
    )


def _spans(bundle: ModelBundle, forward: bool) -> list[tuple[FoldWindow, int]]:
    """Each fold's prediction span end; with ``forward`` the last fold also predicts every later row."""
    spans = [(w, w.test_end_ms) for w in bundle.folds]
    if forward and spans:
        spans[-1] = (spans[-1][0], np.iinfo(np.int64).max)
    return spans


# Compiled fold forests by (bundle version, fold, targets): the version is a hash of every booster's text, so
# an entry is valid for any bundle object of that version. A live session predicts one bar at a time with
# the same bundle; parsing its boosters again for every bar would cost more than the prediction.
_FORESTS: OrderedDict[tuple[str, int, tuple[str, ...]], tuple[forest.Forest, dict[str, tuple[int, np.ndarray]]]] = OrderedDict()
FOREST_CACHE_ENTRIES = 16


def _fold_forest(bundle: ModelBundle, fold: int, targets: tuple[str, ...]) -> tuple[forest.Forest, dict[str, tuple[int, np.ndarray]]]:
    """Return the fold's boosters for ``targets`` compiled into one forest (cached by bundle version).

    Returns the forest and, per target the fold has a global booster for, the global model's index
    and each symbol's specialist index (-1: none, the global output stands alone).
    """
    key = (bundle.version, fold, tuple(targets))
    found = _FORESTS.get(key)
    if found is None:
        found = _compile_fold_forest(bundle, fold, targets)
        _FORESTS[key] = found
        if len(_FORESTS) > FOREST_CACHE_ENTRIES:
            _FORESTS.popitem(last=False)
    _FORESTS.move_to_end(key)
    return found


def _compile_fold_forest(bundle: ModelBundle, fold: int, targets: tuple[str, ...]) -> tuple[forest.Forest, dict[str, tuple[int, np.ndarray]]]:
    texts: list[str] = []
    plans: dict[str, tuple[int, np.ndarray]] = {}
    for target in (t for t in TARGETS if t in targets):
        general = bundle.find(fold, "global", target)
        if general is None:
            continue
        plans[target] = (len(texts), np.full(len(bundle.symbols), -1, dtype=np.int64))
        texts.append(general.text)
        for code, symbol in enumerate(bundle.symbols):
            specialist = bundle.find(fold, symbol, target)
            if specialist is not None:
                plans[target][1][code] = len(texts)
                texts.append(specialist.text)
    return forest.compile_forest(texts), plans


def predict_bundle(
    bundle: ModelBundle,
    features: pl.DataFrame,
    clusters: dict[str, str],
    num_threads: int,
    forward: bool = False,
    targets: tuple[str, ...] = TARGETS,
) -> pl.DataFrame:
    """Predict each fold's test span with that fold's models and blend specialist and global outputs.

    Returns ``ts, symbol, fold, p_up, expected_return, p_recovery`` for the rows inside some fold's
    test span, sorted by ``(ts, symbol)``. Rows outside every test span get no prediction (the
    strategy sees none), unless ``forward``: then the last fold's models also predict every row after
    its test span (a promoted model predicting new bars). ``p_recovery`` is NaN where the fold has
    no recovery booster in any scope; a scope without one falls back to the global booster. Outputs
    not in ``targets`` are NaN without being computed (a strategy that never reads one does not pay for it).
    Scores are LightGBM's, bit for bit, computed by :mod:`backend.models.forest` on ``num_threads`` threads.
    """
    frame = _with_context(features.filter(pl.col("symbol").is_in(list(bundle.symbols))), bundle.symbols, bundle.clusters, clusters)
    frame = frame.sort("ts", maintain_order=True)
    # Specialists read the leading feature columns, the global model also the two context codes.
    matrix = _matrix(frame, [*bundle.feature_names, "symbol_code", "cluster_code"])
    codes = frame["symbol_code"].to_numpy().astype(np.int64)
    times = frame["ts"].to_numpy()
    parts = []
    for window, span_end in _spans(bundle, forward):
        first, end = np.searchsorted(times, [window.test_start_ms, span_end])
        out: dict[str, object] = {"ts": frame["ts"].slice(first, end - first), "symbol": frame["symbol"].slice(first, end - first)}
        compiled, plans = _fold_forest(bundle, window.index, targets)
        rows = forest.prepare(matrix[first:end])  # once for every output of these rows
        for target in TARGETS:
            if target in plans:
                general, own = plans[target]
                out[target] = forest.blend(compiled, rows, codes[first:end], general, own, bundle.specialist_weight, num_threads)
            else:
                out[target] = np.full(end - first, np.nan)
        parts.append(pl.DataFrame(out).with_columns(pl.lit(window.index, dtype=pl.Int64).alias("fold")))
    result = pl.concat(parts) if parts else pl.DataFrame(
        schema={"ts": pl.Int64, "symbol": pl.String, **{t: pl.Float64 for t in TARGETS}, "fold": pl.Int64}
    )
    return result.select("ts", "symbol", "fold", *TARGETS).sort(["ts", "symbol"])
