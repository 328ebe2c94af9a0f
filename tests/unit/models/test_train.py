"""Tests for backend.models.train: walk-forward training, skipped specialists, blended prediction."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from stubs import small_spec

from backend.config.schema import FailureInjectionSpec, RaySpec, RunSpec
from backend.data.simulator import simulate_ohlcv
from backend.features.build import build_features
from backend.features.labels import forward_return_labels

BAR_MS = 300_000  # 5-minute bars
from backend.errors import TrainingTaskError
from backend.models import lgbm
from backend.models.bundle import ModelBundle
from backend.models.stacking import StackMethod, StackReason
from backend.models import train
from backend.models.stacking import apply_stacker
from backend.models.train import TARGETS, derive_seed, predict_bundle, train_walk_forward
from backend.models.walkforward import make_folds

N_BARS = 2880  # ten days of 5-minute bars
COLUMNS = ["ts", "symbol", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def spec() -> RunSpec:
    return small_spec("training.num_threads=1")


@pytest.fixture(scope="module")
def bars(spec: RunSpec) -> pl.DataFrame:
    """SMALL bars where DOGE starts 20 bars before fold 0's training ends and ETH stops at fold 1's test span."""
    frame = simulate_ohlcv(spec.symbols, spec.universe.clusters, "5m", spec.data.start_ms, N_BARS, spec.seed).select(COLUMNS)
    times = frame["ts"].unique().sort().to_numpy()
    doge_from = int(times[1440 - 54 - 20])
    eth_until = int(times[2160])
    return frame.filter(
        ~((pl.col("symbol") == "DOGE") & (pl.col("ts") < doge_from)) & ~((pl.col("symbol") == "ETH") & (pl.col("ts") >= eth_until))
    )


@pytest.fixture(scope="module")
def dataset(spec: RunSpec, bars: pl.DataFrame) -> pl.DataFrame:
    features = build_features(bars, spec.features)
    labels = forward_return_labels(bars, spec.training.label.horizon_bars, 0.001, BAR_MS)
    return with_recovery_columns(features.join(labels, on=["ts", "symbol"], how="left"))


def with_recovery_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Stand-in recovery labels: depth below the 1-day high, and 'recovered' when the net return beats -1 %."""
    return frame.with_columns(
        adverse_depth=1.0 - pl.col("close") / pl.col("close").rolling_max(288, min_samples=1).over("symbol"),
        label_recover=pl.when(pl.col("label_return").is_null()).then(None).otherwise((pl.col("label_return") > -0.01).cast(pl.Float64)),
    )


@pytest.fixture(scope="module")
def feature_names(spec: RunSpec) -> tuple[str, ...]:
    return tuple(f.name for f in spec.features.features)


@pytest.fixture(scope="module")
def bundle(spec: RunSpec, dataset: pl.DataFrame, feature_names: tuple[str, ...]) -> ModelBundle:
    return train_walk_forward(
        dataset, feature_names, spec.universe.clusters, spec.model, spec.training, spec.seed, {"spec_hash": "x"}
    )


@pytest.fixture(scope="module")
def predictions(spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame) -> pl.DataFrame:
    return predict_bundle(bundle, dataset, spec.universe.clusters, 1)


def test_derive_seed_depends_only_on_the_base_seed_and_the_task_identity() -> None:
    seed = derive_seed(7, 0, "global", "p_up")

    assert seed == derive_seed(7, 0, "global", "p_up")
    assert 0 <= seed < 2**31 - 1
    assert len({seed, derive_seed(8, 0, "global", "p_up"), derive_seed(7, 1, "global", "p_up"), derive_seed(7, 0, "BTC", "p_up"), derive_seed(7, 0, "global", "expected_return")}) == 5


def test_the_bundle_records_features_symbols_clusters_weight_and_lineage(spec: RunSpec, bundle: ModelBundle, feature_names: tuple[str, ...]) -> None:
    assert bundle.name == spec.model.name
    assert bundle.feature_names == feature_names
    assert bundle.symbols == ("BTC", "DOGE", "ETH", "SOL")
    assert bundle.clusters == ("l1_major", "meme", "store_of_value")
    assert bundle.specialist_weight == spec.model.specialist_weight
    assert bundle.lineage == {"spec_hash": "x"}


def test_fold_windows_are_the_walk_forward_folds_in_milliseconds(spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame) -> None:
    times = dataset["ts"].unique().sort().to_numpy()
    folds = make_folds(len(times), spec.training.walk_forward)

    assert [(w.index, w.train_start_ms, w.train_end_ms, w.test_start_ms, w.test_end_ms) for w in bundle.folds] == [
        (f.index, int(times[f.train_start]), int(times[f.train_end - 1]) + 1, int(times[f.test_start]), int(times[f.test_end - 1]) + 1)
        for f in folds
    ]


def test_each_model_trains_on_labelled_rows_of_its_window_only_with_a_derived_seed(spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame) -> None:
    for model in bundle.models:
        window = bundle.folds[model.fold]
        rows = dataset.filter(pl.col("ts").is_between(window.train_start_ms, window.train_end_ms, closed="left") & pl.col("label_return").is_not_null())
        if model.scope != "global":
            rows = rows.filter(pl.col("symbol") == model.scope)
        if model.target == "p_recovery":
            rows = rows.filter(pl.col("label_recover").is_not_null() & (pl.col("adverse_depth") >= spec.training.recovery.min_depth))
        assert model.train_rows == rows.height
        assert model.seed == derive_seed(spec.seed, model.fold, model.scope, model.target)
    # The last labelled training row's label ends before the test span: the purge at work.
    for window in bundle.folds:
        last_train = dataset.filter((pl.col("ts") < window.train_end_ms) & pl.col("label_return").is_not_null())["ts"].max()
        assert last_train + spec.training.label.horizon_bars * 300_000 < window.test_start_ms


def test_a_symbol_with_too_little_history_in_a_fold_gets_no_specialist_there(bundle: ModelBundle) -> None:
    scopes = {(m.fold, m.scope) for m in bundle.models}

    assert (0, "DOGE") not in scopes
    assert {(0, "global"), (0, "BTC"), (0, "ETH"), (0, "SOL")} <= scopes
    assert {(1, "global"), (1, "BTC"), (1, "DOGE"), (1, "ETH"), (1, "SOL")} <= scopes
    assert {m.target for m in bundle.models if (m.fold, m.scope) == (1, "DOGE")} >= {"p_up", "expected_return"}


def test_max_train_rows_keeps_the_most_recent_rows(spec: RunSpec, dataset: pl.DataFrame, feature_names: tuple[str, ...]) -> None:
    training = spec.training.model_copy(update={"max_train_rows": 400})
    model = spec.model.model_copy(update={"specialist": spec.model.specialist.model_copy(update={"n_estimators": 2}), "global_model": spec.model.global_model.model_copy(update={"n_estimators": 2})})

    capped = train_walk_forward(dataset, feature_names, spec.universe.clusters, model, training, spec.seed, {})

    for window in capped.folds:
        kept = dataset.filter((pl.col("ts") < window.train_end_ms) & pl.col("label_return").is_not_null()).tail(400)
        assert kept["ts"].min() > window.train_start_ms
        per_symbol = dict(kept.group_by("symbol").len().iter_rows())
        rows = {m.scope: m.train_rows for m in capped.models if m.fold == window.index and m.target == "p_up"}
        assert rows == {"global": 400, **{s: n for s, n in per_symbol.items() if n >= 40}}


def test_predictions_cover_exactly_the_test_spans_sorted_by_time_and_symbol(bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame) -> None:
    first_test = bundle.folds[0].test_start_ms

    assert predictions.columns == ["ts", "symbol", "fold", "p_up", "expected_return", "p_recovery"]
    assert predictions["ts"].min() == first_test
    assert predictions.height == dataset.filter(pl.col("ts") >= first_test).height
    assert predictions.equals(predictions.sort(["ts", "symbol"]))
    for window in bundle.folds:
        span = predictions.filter(pl.col("fold") == window.index)
        assert span["ts"].min() == window.test_start_ms and span["ts"].max() < window.test_end_ms
    assert predictions["p_up"].is_between(0.0, 1.0, closed="none").all()


def test_a_symbol_without_bars_in_a_test_span_gets_no_prediction_there(bundle: ModelBundle, predictions: pl.DataFrame) -> None:
    eth = predictions.filter(pl.col("symbol") == "ETH")

    assert eth["fold"].unique().to_list() == [0]
    assert bundle.find(1, "ETH", "p_up") is not None


def _span(dataset: pl.DataFrame, bundle: ModelBundle, clusters: dict[str, str], fold: int, symbol: str) -> pl.DataFrame:
    """The symbol's rows in a fold's test span, with the context columns the global model reads."""
    window = bundle.folds[fold]
    return dataset.filter(
        pl.col("ts").is_between(window.test_start_ms, window.test_end_ms, closed="left") & (pl.col("symbol") == symbol)
    ).with_columns(
        symbol_code=pl.lit(float(bundle.symbols.index(symbol))),
        cluster_code=pl.lit(float(bundle.clusters.index(clusters[symbol]))),
    )


@pytest.mark.parametrize("target", ["p_up", "expected_return"])
def test_without_a_specialist_the_global_model_alone_predicts_the_symbol(
    spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame, target: str
) -> None:
    span = _span(dataset, bundle, spec.universe.clusters, 0, "DOGE")
    x = span.select([*bundle.feature_names, "symbol_code", "cluster_code"]).to_numpy()

    expected = lgbm.predict(bundle.model(0, "global", target).text, x, 1)

    got = predictions.filter((pl.col("fold") == 0) & (pl.col("symbol") == "DOGE"))[target].to_numpy()
    assert got.tobytes() == expected.tobytes()


def test_the_first_fold_has_no_out_of_fold_history_and_blends_by_the_declared_fixed_weight(
    spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame
) -> None:
    span = _span(dataset, bundle, spec.universe.clusters, 0, "BTC")
    glob = lgbm.predict(bundle.model(0, "global", "p_up").text, span.select([*bundle.feature_names, "symbol_code", "cluster_code"]).to_numpy(), 1)
    own = lgbm.predict(bundle.model(0, "BTC", "p_up").text, span.select(bundle.feature_names).to_numpy(), 1)

    got = predictions.filter((pl.col("fold") == 0) & (pl.col("symbol") == "BTC"))["p_up"].to_numpy()

    np.testing.assert_array_equal(got, 0.6 * glob + 0.4 * own)
    assert not np.array_equal(got, glob)
    fallback = bundle.stacker(0, "p_up")
    assert (fallback.method, fallback.reason, fallback.inputs, fallback.coef, fallback.rows) == (
        StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD, ("p_up.global", "p_up.specialist"), (0.0, 0.6, 0.4), 0,
    )  # fmt: skip


def test_a_bundle_from_before_stacking_predicts_every_fold_with_its_fixed_blend_exactly(
    spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame
) -> None:
    legacy = dataclasses.replace(bundle, stackers=())
    span = _span(dataset, bundle, spec.universe.clusters, 1, "DOGE")
    glob = lgbm.predict(bundle.model(1, "global", "p_up").text, span.select([*bundle.feature_names, "symbol_code", "cluster_code"]).to_numpy(), 1)
    own = lgbm.predict(bundle.model(1, "DOGE", "p_up").text, span.select(bundle.feature_names).to_numpy(), 1)

    got = predict_bundle(legacy, dataset, spec.universe.clusters, 1).filter((pl.col("fold") == 1) & (pl.col("symbol") == "DOGE"))

    # Fold 1 has a fitted stacker in the trained bundle; without stackers it blends (1 - w) g + w s, as before ADR-023.
    assert bundle.stacker(1, "p_up").reason is StackReason.FITTED
    assert got["p_up"].to_numpy().tobytes() == (0.6 * glob + 0.4 * own).tobytes()


@pytest.mark.parametrize("target", ["p_up", "expected_return"])
def test_a_later_fold_combines_global_and_specialist_with_its_stacker_fitted_on_the_earlier_fold(
    spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame, target: str
) -> None:
    span = _span(dataset, bundle, spec.universe.clusters, 1, "DOGE")
    general_x, own_x = span.select([*bundle.feature_names, "symbol_code", "cluster_code"]).to_numpy(), span.select(bundle.feature_names).to_numpy()
    glob = lgbm.predict(bundle.model(1, "global", target).text, general_x, 1)
    own = lgbm.predict(bundle.model(1, "DOGE", target).text, own_x, 1)
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    stacker = bundle.stacker(1, target)

    got = predictions.filter((pl.col("fold") == 1) & (pl.col("symbol") == "DOGE"))[target].to_numpy()

    if target == "p_up":
        c0, c1, c2 = stacker.coef
        assert stacker.inputs == ("p_up.global", "p_up.specialist")
        np.testing.assert_allclose(got, 1.0 / (1.0 + np.exp(-(c0 + c1 * logit(glob) + c2 * logit(own)))), rtol=1e-12)
    else:
        c0, c1, c2, c3, c4 = stacker.coef
        assert stacker.inputs == ("expected_return.global", "expected_return.specialist", "p_up.global", "p_up.specialist")
        up_glob = lgbm.predict(bundle.model(1, "global", "p_up").text, general_x, 1)
        up_own = lgbm.predict(bundle.model(1, "DOGE", "p_up").text, own_x, 1)
        expected = c0 + c1 * glob + c2 * own + c3 * logit(up_glob) + c4 * logit(up_own)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)
    assert (stacker.reason, stacker.source_folds, stacker.label_cutoff_ms) == (StackReason.FITTED, (0,), bundle.folds[1].train_end_ms)
    eligible = dataset.filter(
        pl.col("ts").is_between(bundle.folds[0].test_start_ms, bundle.folds[1].train_end_ms, closed="left") & pl.col("label_return").is_not_null()
    )
    assert stacker.rows == eligible.height


def test_every_fold_and_target_with_boosters_has_exactly_one_recorded_stacker(bundle: ModelBundle) -> None:
    boosted = sorted({(m.fold, m.target) for m in bundle.models if m.scope == "global"})

    assert sorted((s.fold, s.target) for s in bundle.stackers) == boosted


def test_a_stacker_sees_no_row_whose_label_was_unknown_when_its_fold_starts(
    spec: RunSpec, bars: pl.DataFrame, dataset: pl.DataFrame, feature_names: tuple[str, ...], bundle: ModelBundle
) -> None:
    # Leakage test: rewrite every bar from fold 1's test span on (prices, and so features and labels there and
    # the labels reaching into it); fold 1's stackers and both folds' boosters must not move.
    start = bundle.folds[1].test_start_ms
    later = pl.col("ts") >= start
    perturbed_bars = bars.with_columns(
        *(pl.when(later).then(pl.col(c) * (1.3 + 0.2 * pl.col("ts").mod(7))).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close"))
    ).with_columns(pl.max_horizontal("open", "high", "close").alias("high"), pl.min_horizontal("open", "low", "close").alias("low"))
    features = build_features(perturbed_bars, spec.features)
    labels = forward_return_labels(perturbed_bars, spec.training.label.horizon_bars, 0.001, BAR_MS)
    perturbed = with_recovery_columns(features.join(labels, on=["ts", "symbol"], how="left"))
    assert not perturbed.filter(pl.col("ts") >= start - spec.training.label.horizon_bars * BAR_MS)["label_return"].equals(
        dataset.filter(pl.col("ts") >= start - spec.training.label.horizon_bars * BAR_MS)["label_return"]
    )

    again = train_walk_forward(perturbed, feature_names, spec.universe.clusters, spec.model, spec.training, spec.seed, {"spec_hash": "x"})

    assert again.models == bundle.models
    assert again.stackers == bundle.stackers
    # The test has teeth: a label the stacker may read (fold 0's test span, before fold 1's cut-off) moves it.
    cutoff = bundle.folds[1].train_end_ms
    flipped = dataset.with_columns(
        pl.when((pl.col("ts") >= bundle.folds[0].test_start_ms) & (pl.col("ts") < cutoff) & (pl.col("symbol") == "BTC"))
        .then(1.0 - pl.col("label_up"))
        .otherwise(pl.col("label_up"))
        .alias("label_up")
    )
    moved = train_walk_forward(flipped, feature_names, spec.universe.clusters, spec.model, spec.training, spec.seed, {"spec_hash": "x"})
    assert moved.stacker(1, "p_up") != bundle.stacker(1, "p_up")
    assert moved.stacker(1, "p_recovery") == bundle.stacker(1, "p_recovery")


def test_training_on_given_windows_uses_them_instead_of_cutting_new_ones(
    spec: RunSpec, dataset: pl.DataFrame, feature_names: tuple[str, ...], bundle: ModelBundle
) -> None:
    windows = bundle.folds[1:]

    one = train_walk_forward(dataset, feature_names, spec.universe.clusters, spec.model, spec.training, spec.seed, {}, windows=windows)

    assert one.folds == windows
    assert {m.fold for m in one.models} == {1}
    assert one.stacker(1, "p_up").reason is StackReason.NO_EARLIER_FOLD


def test_symbols_outside_the_bundle_are_not_predicted(spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame) -> None:
    stranger = dataset.filter(pl.col("symbol") == "SOL").with_columns(symbol=pl.lit("ADA"))

    again = predict_bundle(bundle, pl.concat([dataset, stranger]).sort(["ts", "symbol"]), spec.universe.clusters, 1)

    assert again.equals(predictions)


def test_training_twice_on_the_same_data_gives_the_same_bundle_version(
    spec: RunSpec, dataset: pl.DataFrame, feature_names: tuple[str, ...], bundle: ModelBundle
) -> None:
    progress: list[str] = []

    again = train_walk_forward(dataset, feature_names, spec.universe.clusters, spec.model, spec.training, spec.seed, {"spec_hash": "x"}, progress.append)

    assert again.version == bundle.version
    assert again.models == bundle.models
    assert len(progress) >= 2 * len(bundle.folds)  # at least one report per global fit


def test_recovery_boosters_train_only_where_enough_rows_are_in_a_severe_adverse_state(spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame) -> None:
    recovery = {(m.fold, m.scope): m.train_rows for m in bundle.models if m.target == "p_recovery"}

    # Only SOL falls 5 % below its 1-day high often enough (>= 200 rows) in these ten days.
    assert set(recovery) == {(0, "global"), (0, "SOL"), (1, "global"), (1, "SOL")}
    assert all(rows >= spec.training.recovery.min_rows for rows in recovery.values())
    assert recovery[(0, "global")] == recovery[(0, "SOL")]


def test_a_symbol_without_a_recovery_specialist_gets_the_global_recovery_probability(
    spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame
) -> None:
    span = _span(dataset, bundle, spec.universe.clusters, 0, "BTC")
    glob = lgbm.predict(bundle.model(0, "global", "p_recovery").text, span.select([*bundle.feature_names, "symbol_code", "cluster_code"]).to_numpy(), 1)

    got = predictions.filter((pl.col("fold") == 0) & (pl.col("symbol") == "BTC"))["p_recovery"].to_numpy()

    assert got.tobytes() == glob.tobytes()
    assert predictions["p_recovery"].is_between(0.0, 1.0).all()


def test_a_fold_without_enough_severe_rows_predicts_no_recovery_probability(spec: RunSpec, dataset: pl.DataFrame, feature_names: tuple[str, ...]) -> None:
    training = spec.training.model_copy(update={"recovery": spec.training.recovery.model_copy(update={"min_rows": 100_000})})

    sparse = train_walk_forward(dataset, feature_names, spec.universe.clusters, spec.model, training, spec.seed, {})
    predicted = predict_bundle(sparse, dataset, spec.universe.clusters, 1)

    assert {m.target for m in sparse.models} == {"p_up", "expected_return"}
    assert predicted["p_recovery"].is_nan().all()
    assert not predicted["p_up"].is_nan().any()


def test_forward_prediction_extends_the_last_fold_over_every_later_row(bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame, spec: RunSpec) -> None:
    last = bundle.folds[-1]
    later = dataset.filter(pl.col("ts") < bundle.folds[0].test_start_ms).with_columns(pl.col("ts") + (last.test_end_ms - bundle.folds[0].train_start_ms))

    forward = predict_bundle(bundle, pl.concat([dataset, later]).sort(["ts", "symbol"]), spec.universe.clusters, 1, forward=True)

    beyond = forward.filter(pl.col("ts") >= last.test_end_ms)
    assert beyond.height == later.height
    assert beyond["fold"].unique().to_list() == [last.index]
    assert forward.filter(pl.col("ts") < last.test_end_ms).equals(predictions)


def test_predicting_with_a_bundle_without_folds_gives_an_empty_frame_with_every_output(bundle: ModelBundle, dataset: pl.DataFrame, spec: RunSpec) -> None:
    empty = ModelBundle(bundle.name, bundle.feature_names, bundle.symbols, bundle.clusters, 0.4, (), (), {})

    out = predict_bundle(empty, dataset, spec.universe.clusters, 1, forward=True)

    assert out.height == 0
    assert out.columns == ["ts", "symbol", "fold", "p_up", "expected_return", "p_recovery"]


@pytest.mark.parametrize(("scope", "fold"), [("global", 0), ("SOL", 1)])
def test_an_injected_failure_fails_training_after_its_retries_naming_the_scope_and_fold(
    spec: RunSpec, dataset: pl.DataFrame, feature_names: tuple[str, ...], scope: str, fold: int
) -> None:
    training = spec.training.model_copy(
        update={"inject_failure": FailureInjectionSpec(scope=scope, fold=fold), "ray": RaySpec(enabled=False, max_retries=1)}
    )
    progress: list[str] = []

    with pytest.raises(TrainingTaskError, match=rf"training {scope} in fold {fold} failed after 2 attempt\(s\)") as caught:
        train_walk_forward(dataset, feature_names, spec.universe.clusters, spec.model, training, spec.seed, {}, progress.append)

    assert (caught.value.scope, caught.value.fold) == (scope, fold)
    assert f"retrying {scope} in fold {fold} (attempt 2)" in progress


@pytest.mark.parametrize(("targets", "computed"), [(("expected_return",), {"expected_return"}), (("p_up",), {"p_up"}), (("p_recovery",), {"p_recovery"})])
def test_outputs_not_asked_for_are_nan_even_when_a_stacker_reads_their_boosters(
    spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame, targets: tuple[str, ...], computed: set[str]
) -> None:
    out = predict_bundle(bundle, dataset, spec.universe.clusters, 1, targets=targets)

    for target in ("p_up", "expected_return", "p_recovery"):
        if target in computed:
            assert out[target].to_numpy().tobytes() == predictions[target].to_numpy().tobytes()
        else:
            assert out[target].is_nan().all()


def test_compiled_fold_forests_are_reused_by_bundle_version_and_bounded(
    spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from backend.models import train

    monkeypatch.setattr(train, "_FORESTS", train.OrderedDict())
    first = predict_bundle(bundle, dataset, spec.universe.clusters, 1)
    cached = dict(train._FORESTS)
    assert len(cached) == len(bundle.folds) and all(key[0] == bundle.version for key in cached)
    # A copy of the bundle (same version, as a reloaded one) reuses the compiled forests: no new entry, same scores.
    again = predict_bundle(replace(bundle, lineage=dict(bundle.lineage)), dataset, spec.universe.clusters, 1)
    assert again.equals(first) and first.equals(predictions)
    assert {k: id(v) for k, v in train._FORESTS.items()} == {k: id(v) for k, v in cached.items()}
    # Other target sets are other entries; the oldest leaves once the bound is passed.
    monkeypatch.setattr(train, "FOREST_CACHE_ENTRIES", len(bundle.folds))
    only = predict_bundle(bundle, dataset, spec.universe.clusters, 1, targets=("p_up",))
    assert len(train._FORESTS) == len(bundle.folds) and all(key[2] == ("p_up",) for key in train._FORESTS)
    assert only["p_up"].equals(first["p_up"])


def _whole_span_predictions(bundle: ModelBundle, features: pl.DataFrame, clusters: dict[str, str], forward: bool) -> pl.DataFrame:
    """predict_bundle as it was before chunking: the filtered, sorted frame and every fold span scored at once."""
    frame = train._prepared(bundle, features, clusters)
    parts = []
    for scores in train._fold_scores(bundle, frame, 1, forward, TARGETS):
        count = scores.end - scores.first
        out = {"ts": frame["ts"].slice(scores.first, count), "symbol": frame["symbol"].slice(scores.first, count)}
        for target in TARGETS:
            out[target] = apply_stacker(bundle.stacker(scores.window.index, target), scores.raw) if target in scores.raw else np.full(count, np.nan)
        parts.append(pl.DataFrame(out).with_columns(pl.lit(scores.window.index, dtype=pl.Int64).alias("fold")))
    return pl.concat(parts).select("ts", "symbol", "fold", *TARGETS).sort(["ts", "symbol"])


@pytest.mark.parametrize("chunk_rows", [1, 97, 4096])
@pytest.mark.parametrize("forward", [False, True])
def test_predicting_in_chunks_of_rows_gives_the_whole_span_scores_bit_for_bit(
    spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, monkeypatch: pytest.MonkeyPatch, chunk_rows: int, forward: bool
) -> None:
    whole = _whole_span_predictions(bundle, dataset, spec.universe.clusters, forward)
    monkeypatch.setattr(train, "PREDICT_CHUNK_ROWS", chunk_rows)

    chunked = predict_bundle(bundle, dataset, spec.universe.clusters, 1, forward=forward)

    assert chunked.height == whole.height > 4096
    assert chunked.equals(whole)
    for name in TARGETS:  # NaN where no booster, and every value to the bit
        assert chunked[name].to_numpy().tobytes() == whole[name].to_numpy().tobytes()


def test_rows_in_any_order_are_predicted_as_the_sorted_frame(spec: RunSpec, bundle: ModelBundle, dataset: pl.DataFrame, predictions: pl.DataFrame,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "PREDICT_CHUNK_ROWS", 500)
    shuffled = dataset.sample(fraction=1.0, shuffle=True, seed=3)

    again = predict_bundle(bundle, shuffled, spec.universe.clusters, 1)

    assert again.equals(predictions)
    assert again.equals(_whole_span_predictions(bundle, shuffled, spec.universe.clusters, False))
