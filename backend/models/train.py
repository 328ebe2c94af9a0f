"""Walk-forward training of per-symbol specialists and a global cross-asset model, and prediction.

Training is cut into tasks, one per ``(fold, scope)`` where the scope is ``global`` or a symbol.
A task carries its own matrices and seeds and fits the scope's boosters for every target, so it
gives the same model texts wherever it runs (in-process or as a Ray task).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from backend.config.canonical import sha256_hex
from backend.config.schema import LgbmParamsSpec, ModelSpec, StackingSpec, TrainingSpec
from backend.errors import ModelError
from backend.models import forest, lgbm
from backend.models.bundle import TARGETS, FoldWindow, ModelBundle, TrainedModel
from backend.models.parallel import run_tasks
from backend.models.stacking import OutOfFold, Stacker, apply_stacker, describe, fit_stacker, scores_of
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
    windows: tuple[FoldWindow, ...] | None = None,
) -> ModelBundle:
    """Train every fold's global model and specialists on ``dataset``, then each fold's stackers.

    ``dataset`` holds ``ts, symbol``, the feature columns and the labels ``label_up``,
    ``label_return``, ``label_recover`` and ``adverse_depth``, sorted by ``(ts, symbol)``. Folds
    are cut on its distinct timestamps, unless ``windows`` gives them (an incumbent retrained on a
    candidate's windows). Tasks run through Ray when ``training.ray.enabled`` (Ray's temp dir is
    ``ray_temp_dir``), else in this process; the bundle is the same either way. The stackers are
    fitted afterwards from the boosters' out-of-fold scores (:func:`fit_stackers`).

    Raises
    ------
    TrainingTaskError
        When a task still fails after ``training.ray.max_retries`` retries.
    """
    symbols = tuple(sorted(dataset["symbol"].unique().to_list()))
    cluster_names = tuple(sorted({clusters[s] for s in symbols}))
    frame = _with_context(dataset, symbols, cluster_names, clusters)
    folds = list(windows) if windows is not None else fold_windows(frame["ts"].unique().sort().to_numpy(), training)
    tasks = plan_tasks(frame, folds, symbols, list(feature_names), model, training, seed, progress)
    temp_dir = ray_temp_dir if ray_temp_dir is not None else Path("tmp")
    results = run_tasks(tasks, fit_task, training.ray, temp_dir, progress)
    boosters = ModelBundle(
        name=model.name,
        feature_names=tuple(feature_names),
        symbols=symbols,
        clusters=cluster_names,
        specialist_weight=model.specialist_weight,
        folds=tuple(folds),
        models=tuple(m for result in results for m in result),
        lineage=lineage,
    )
    stackers = fit_stackers(boosters, dataset, clusters, model.stacking, training.recovery.min_depth, training.num_threads)
    for stacker in stackers:
        progress(describe(stacker))
    return dataclasses.replace(boosters, stackers=stackers)


def _labels_of(frame: pl.DataFrame, target: str, min_depth: float) -> np.ndarray:
    """The label a target's stacker fits, NaN where unknown (or, for recovery, outside a severe adverse state)."""
    if target == "p_recovery":
        severe = pl.col("adverse_depth").fill_null(-1.0) >= min_depth
        column = pl.when(severe).then(pl.col("label_recover")).otherwise(None)
    else:
        column = pl.col(_LABELS[target])
    return frame.select(column.cast(pl.Float64).fill_null(np.nan)).to_series().to_numpy()


def fit_stackers(
    bundle: ModelBundle,
    dataset: pl.DataFrame,
    clusters: dict[str, str],
    stacking: StackingSpec,
    min_depth: float,
    num_threads: int,
) -> tuple[Stacker, ...]:
    """Fit every fold's stacker for every target the fold has a global booster for, strictly out of fold.

    Each fold's boosters score their own test span (out of sample for them); fold ``k``'s stacker
    then reads only those rows of earlier folds that lie before fold ``k``'s training cut-off
    ``train_end_ms``, whose labels (purge >= horizon) are all realised before fold ``k``'s test span.
    """
    frame = _prepared(bundle, dataset, clusters)
    ts, folds, present = [], [], {}
    scores: dict[str, list[np.ndarray]] = {f"{t}.{part}": [] for t in TARGETS for part in ("global", "specialist")}
    labels: dict[str, list[np.ndarray]] = {t: [] for t in TARGETS}
    for fold_scores in _fold_scores(bundle, frame, num_threads, False, TARGETS):
        span = frame.slice(fold_scores.first, fold_scores.end - fold_scores.first)
        present[fold_scores.window.index] = tuple(fold_scores.raw)
        ts.append(span["ts"].to_numpy())
        folds.append(np.full(span.height, fold_scores.window.index, dtype=np.int64))
        named = scores_of(fold_scores.raw)
        for name, chunks in scores.items():
            chunks.append(named.get(name, np.full(span.height, np.nan)))
        for target, chunks in labels.items():
            chunks.append(_labels_of(span, target, min_depth))
    rows = OutOfFold(
        np.concatenate(ts),
        np.concatenate(folds),
        {name: np.concatenate(chunks) for name, chunks in scores.items()},
        {target: np.concatenate(chunks) for target, chunks in labels.items()},
    )
    return tuple(
        fit_stacker(window.index, target, window.train_end_ms, rows, stacking.min_rows, stacking.l2, bundle.specialist_weight)
        for window in bundle.folds
        for target in present[window.index]
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


def _prepared(bundle: ModelBundle, features: pl.DataFrame, clusters: dict[str, str]) -> pl.DataFrame:
    """The bundle's symbols' rows with the context codes, sorted by time (stable: symbols stay sorted)."""
    frame = _with_context(features.filter(pl.col("symbol").is_in(list(bundle.symbols))), bundle.symbols, bundle.clusters, clusters)
    return frame.sort("ts", maintain_order=True)


@dataclass(frozen=True)
class FoldScores:
    """One fold's raw booster scores over rows ``[first, end)`` of the prepared frame.

    ``raw`` maps each target the fold has a global booster for to ``(general, specialist, own)``:
    the global score, the row's specialist score (the global score where there is none), and
    whether the row's symbol has a specialist.
    """

    window: FoldWindow
    first: int
    end: int
    raw: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _scores(compiled: forest.Forest, plans: dict[str, tuple[int, np.ndarray]], matrix: np.ndarray, codes: np.ndarray,
            num_threads: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """Score rows (their feature matrix and symbol codes) with a fold's forest: ``target -> (general, specialist, own)``."""
    rows = forest.prepare(matrix)  # once for every output of these rows
    raw = {}
    for target, (general, own) in plans.items():
        # Weight 1 gives the specialist's score exactly where there is one, the global score elsewhere;
        # the global score alone comes from the same pass.
        alone, mine = forest.blend_with_general(compiled, rows, codes, general, own, 1.0, num_threads)
        raw[target] = (alone, mine, own[codes] >= 0)
    return raw


def _fold_scores(bundle: ModelBundle, frame: pl.DataFrame, num_threads: int, forward: bool, targets: tuple[str, ...]) -> Iterator[FoldScores]:
    # Specialists read the leading feature columns, the global model also the two context codes.
    matrix = _matrix(frame, [*bundle.feature_names, "symbol_code", "cluster_code"])
    codes = frame["symbol_code"].to_numpy().astype(np.int64)
    times = frame["ts"].to_numpy()
    for window, span_end in _spans(bundle, forward):
        first, end = (int(i) for i in np.searchsorted(times, [window.test_start_ms, span_end]))
        compiled, plans = _fold_forest(bundle, window.index, targets)
        yield FoldScores(window, first, end, _scores(compiled, plans, matrix[first:end], codes[first:end], num_threads))


# Rows ``predict_bundle`` scores at a time: its peak memory is a chunk's matrices, not every row's (ADR-080).
PREDICT_CHUNK_ROWS = 262_144


def _prediction_rows(bundle: ModelBundle, features: pl.DataFrame) -> tuple[np.ndarray | None, np.ndarray]:
    """Return the rows :func:`_prepared` would hold, as positions in ``features`` (None: all, in order), and their times.

    No frame is copied: a frame of the bundle's symbols already sorted by time (what ``build_features``
    gives) is used as it is; otherwise the positions are those of a stable sort by time.
    """
    times = features["ts"].to_numpy()
    keep = features["symbol"].is_in(list(bundle.symbols)).to_numpy()
    if keep.all() and bool((times[1:] >= times[:-1]).all()):
        return None, times
    index = np.flatnonzero(keep)
    positions = index[np.argsort(times[index], kind="stable")]
    return positions, times[positions]


def _rows_of(frame: pl.DataFrame, positions: np.ndarray | None, first: int, end: int) -> pl.DataFrame:
    """Rows ``[first, end)`` of the prediction order: a slice (no copy) or a gather."""
    return frame.slice(first, end - first) if positions is None else frame[positions[first:end]]


def _chunks(first: int, end: int, size: int) -> list[tuple[int, int]]:
    """``[first, end)`` cut into chunks of at most ``size`` rows; an empty span is one empty chunk."""
    return [(lo, min(end, lo + size)) for lo in range(first, end, size)] or [(first, end)]


def predict_bundle(
    bundle: ModelBundle,
    features: pl.DataFrame,
    clusters: dict[str, str],
    num_threads: int,
    forward: bool = False,
    targets: tuple[str, ...] = TARGETS,
) -> pl.DataFrame:
    """Predict each fold's test span with that fold's boosters and combine them with the fold's stacker.

    Returns ``ts, symbol, fold, p_up, expected_return, p_recovery`` for the rows inside some fold's
    test span, sorted by ``(ts, symbol)``. Rows outside every test span get no prediction (the
    strategy sees none), unless ``forward``: then the last fold's models also predict every row after
    its test span (a promoted model predicting new bars). ``p_recovery`` is NaN where the fold has
    no recovery booster in any scope; a scope without one falls back to the global booster. Outputs
    not in ``targets`` are NaN without being computed (a strategy that never reads one does not pay for it).
    Booster scores are LightGBM's, bit for bit, computed by :mod:`backend.models.forest` on
    ``num_threads`` threads; the stackers recorded in the bundle combine them
    (:func:`backend.models.stacking.apply_stacker`), elementwise and so reproducibly.

    Raises
    ------
    ModelError
        When the bundle lacks the stacker of a fold and target it has boosters for.
    """
    # The expected-return stacker also reads the up-probability boosters.
    needed = tuple(t for t in TARGETS if t in targets or (t == "p_up" and "expected_return" in targets))
    positions, times = _prediction_rows(bundle, features)
    columns = features.select("ts", "symbol", *bundle.feature_names)
    parts = []
    # Each fold's span is scored in chunks of rows: a row's scores depend on that row alone (the boosters,
    # and the stackers elementwise), so the outputs are those of one pass over the span, bit for bit.
    for window, span_end in _spans(bundle, forward):
        first, end = (int(i) for i in np.searchsorted(times, [window.test_start_ms, span_end]))
        compiled, plans = _fold_forest(bundle, window.index, needed)
        out = {t: np.full(end - first, np.nan) for t in TARGETS}
        for lo, hi in _chunks(first, end, PREDICT_CHUNK_ROWS):
            chunk = _with_context(_rows_of(columns, positions, lo, hi), bundle.symbols, bundle.clusters, clusters)
            matrix = _matrix(chunk, [*bundle.feature_names, "symbol_code", "cluster_code"])
            raw = _scores(compiled, plans, matrix, chunk["symbol_code"].to_numpy().astype(np.int64), num_threads)
            for target in TARGETS:
                if target in raw and target in targets:
                    out[target][lo - first : hi - first] = apply_stacker(bundle.stacker(window.index, target), raw)
        span = _rows_of(columns.select("ts", "symbol"), positions, first, end)
        parts.append(span.with_columns(*(pl.Series(t, out[t]) for t in TARGETS), pl.lit(window.index, dtype=pl.Int64).alias("fold")))
    result = pl.concat(parts) if parts else pl.DataFrame(
        schema={"ts": pl.Int64, "symbol": pl.String, **{t: pl.Float64 for t in TARGETS}, "fold": pl.Int64}
    )
    result = result.select("ts", "symbol", "fold", *TARGETS)
    return result if _is_sorted(result) else result.sort(["ts", "symbol"])


def _is_sorted(frame: pl.DataFrame) -> bool:
    """Whether ``(ts, symbol)`` strictly increases down ``frame``: then sorting it would change nothing."""
    step = pl.col("ts").diff()
    rising = (step > 0) | ((step == 0) & (pl.col("symbol") > pl.col("symbol").shift(1)))
    return bool(frame.select(rising.all()).item())
