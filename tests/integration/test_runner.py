"""Integration tests for backend.runs.runner: lake loading, hashing, the market matrix, execute."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stubs import small_spec

from backend.audit.decisions import decision_log_sha256
from backend.clock import WallClock
from backend.config.canonical import canonical_json, content_hash, sha256_hex
from backend.data import lake
from backend.data.simulator import simulate_ohlcv
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import DataError
from backend.home import Home
from backend.models.bundle import ModelBundle
from backend.runs.runner import (
    BAR_COLUMNS,
    align_column,
    place,
    Outcome,
    execute,
    frame_sha256,
    load_bars,
    market_matrix,
    model_training_json,
    round_trip_cost,
    cached_version,
    simulated_source,
    train_bundle,
    training_cache,
    training_key,
    write_json,
)

FAST = "training.num_threads=1"


def _quiet(_message: str) -> None:
    return None


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return compile_pipeline(small_spec(FAST))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("runner_home"))


@pytest.fixture(scope="module")
def loaded(pipeline: Pipeline, home: Home) -> tuple[pl.DataFrame, dict[str, str]]:
    return load_bars(pipeline.spec, home, _quiet)


@pytest.fixture(scope="module")
def bundle(pipeline: Pipeline, loaded: tuple[pl.DataFrame, dict[str, str]]) -> ModelBundle:
    bars, snapshot = loaded
    return train_bundle(pipeline, bars, snapshot, _quiet)


@pytest.fixture(scope="module")
def outcome(pipeline: Pipeline, loaded: tuple[pl.DataFrame, dict[str, str]], bundle: ModelBundle) -> Outcome:
    return execute(pipeline, loaded[0], bundle, WallClock())


# ---------------------------------------------------------------- identity of data
def test_simulated_source_is_stable_for_a_spec() -> None:
    name = simulated_source(small_spec())

    assert name == simulated_source(small_spec())
    assert name.startswith("sim-") and len(name) == len("sim-") + 12


@pytest.mark.parametrize("change", ["seed=8", "data.days=11", "data.symbols=[BTC,ETH]", "data.start=2025-02-01", "data.timeframe=1h"])
def test_simulated_source_differs_when_the_simulated_series_differs(change: str) -> None:
    assert simulated_source(small_spec(change)) != simulated_source(small_spec())


def test_simulated_source_ignores_what_does_not_change_the_series() -> None:
    assert simulated_source(small_spec("risk=conservative", "model.specialist_weight=0.1")) == simulated_source(small_spec())


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {"ts": [1, 2, 3], "symbol": ["BTC", "ETH", "BTC"], "close": [1.0, 2.0, 3.0], "volume": [5.0, 6.0, 7.0]}
    )


def test_frame_sha256_is_the_same_for_equal_content_and_after_a_parquet_roundtrip(frame: pl.DataFrame, tmp_path: Path) -> None:
    frame.write_parquet(tmp_path / "f.parquet")

    assert frame_sha256(frame.clone()) == frame_sha256(frame)
    assert frame_sha256(pl.read_parquet(tmp_path / "f.parquet")) == frame_sha256(frame)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(lambda f: f.with_columns(ts=pl.Series([1, 2, 4])), id="int"),
        pytest.param(lambda f: f.with_columns(symbol=pl.Series(["BTC", "ETH", "SOL"])), id="string"),
        pytest.param(lambda f: f.with_columns(close=pl.Series([1.0, 2.0, 3.0000000001])), id="float"),
        pytest.param(lambda f: f.with_columns(volume=pl.Series([5.0, 6.0, -7.0])), id="sign"),
        pytest.param(lambda f: f.rename({"volume": "vol"}), id="column name"),
        pytest.param(lambda f: f.reverse(), id="row order"),
        pytest.param(lambda f: f.head(2), id="row dropped"),
    ],
)
def test_frame_sha256_changes_when_any_value_changes(frame: pl.DataFrame, changed) -> None:
    assert frame_sha256(changed(frame)) != frame_sha256(frame)


# ---------------------------------------------------------------- load_bars
def test_a_simulated_run_writes_its_bars_to_the_lake_and_reads_them_back(pipeline: Pipeline, home: Home, loaded: tuple[pl.DataFrame, dict[str, str]]) -> None:
    spec = pipeline.spec
    bars, snapshot = loaded
    expected = simulate_ohlcv(spec.symbols, spec.universe.clusters, "5m", spec.data.start_ms, 2880, spec.seed, signal_bps=spec.data.signal_bps)

    assert bars.columns == list(BAR_COLUMNS)
    assert bars.equals(expected.select(BAR_COLUMNS))
    files = lake.lake_files(home.lake, simulated_source(spec), "5m", spec.symbols)
    assert snapshot == lake.snapshot(files, home.lake)
    assert sorted(snapshot) == [f"ohlcv/source={simulated_source(spec)}/timeframe=5m/symbol={s}/2025-01.parquet" for s in spec.symbols]


def test_a_second_simulated_load_reuses_the_lake_without_rewriting_it(pipeline: Pipeline, home: Home, loaded: tuple[pl.DataFrame, dict[str, str]]) -> None:
    files = lake.lake_files(home.lake, simulated_source(pipeline.spec), "5m", pipeline.spec.symbols)
    before = {p: p.stat().st_mtime_ns for p in files}
    messages: list[str] = []

    bars, snapshot = load_bars(pipeline.spec, home, messages.append)

    assert bars.equals(loaded[0]) and snapshot == loaded[1]
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert messages == []


def test_a_lake_run_reads_what_a_simulated_run_wrote(pipeline: Pipeline, home: Home, loaded: tuple[pl.DataFrame, dict[str, str]]) -> None:
    spec = small_spec(
        "data=lake", f"data.source={simulated_source(pipeline.spec)}", "data.timeframe=5m", "data.start=2025-01-01", "data.days=10"
    )

    bars, snapshot = load_bars(spec, home, _quiet)

    assert bars.equals(loaded[0])
    assert snapshot == loaded[1]


def test_a_lake_run_over_a_source_the_lake_lacks_is_a_data_error(home: Home) -> None:
    spec = small_spec("data=lake", "data.source=nothing-here", "data.timeframe=5m")

    with pytest.raises(DataError) as caught:
        load_bars(spec, home, _quiet)

    assert "no bars for symbol 'BTC' (source 'nothing-here', timeframe '5m')" in str(caught.value)


def _write_feather(path: Path, frame: pl.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.select(
        pl.from_epoch("ts", time_unit="ms").dt.cast_time_unit("ns").dt.replace_time_zone("UTC").alias("date"),
        "open", "high", "low", "close", "volume",
    ).write_ipc(path)


@pytest.fixture
def shared_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recorded-data folder in the real layout with three days of 1h BTC and ETH candles."""
    spec = small_spec("data=shared_binance_1h", "data.start=2024-01-01", "data.days=3", "data.symbols=[BTC,ETH]")
    bars = simulate_ohlcv(["BTC", "ETH"], spec.universe.clusters, "1h", spec.data.start_ms, 72, 3)
    root = tmp_path / "shared_data"
    for symbol in ("BTC", "ETH"):
        _write_feather(root / "ohlcv" / "binance_mounik" / f"{symbol}_USDT-1h.feather", bars.filter(pl.col("symbol") == symbol))
    monkeypatch.setenv("ACTS_SHARED_DATA", str(root))
    return root


def test_a_shared_run_imports_the_recorded_candles_into_the_lake_and_reads_them(shared_dir: Path, tmp_path: Path) -> None:
    spec = small_spec("data=shared_binance_1h", "data.start=2024-01-01", "data.days=3", "data.symbols=[BTC,ETH]")
    home = Home(tmp_path / "home")
    expected = simulate_ohlcv(["BTC", "ETH"], spec.universe.clusters, "1h", spec.data.start_ms, 72, 3).select(BAR_COLUMNS)

    bars, snapshot = load_bars(spec, home, _quiet)

    assert bars.equals(expected)
    assert sorted(snapshot) == [f"ohlcv/source=binance/timeframe=1h/symbol={s}/2024-01.parquet" for s in ("BTC", "ETH")]


def test_a_shared_run_with_a_symbol_the_recorded_data_lacks_is_a_data_error(shared_dir: Path, tmp_path: Path) -> None:
    spec = small_spec("data=shared_binance_1h", "data.start=2024-01-01", "data.days=3", "data.symbols=[BTC,ETH,SOL]")

    with pytest.raises(DataError) as caught:
        load_bars(spec, Home(tmp_path / "home"), _quiet)

    assert "no bars for symbol 'SOL' (source 'binance', timeframe '1h')" in str(caught.value)


# ---------------------------------------------------------------- training lineage
def test_train_bundle_records_the_lineage_of_spec_features_labels_and_inputs(pipeline: Pipeline, loaded: tuple[pl.DataFrame, dict[str, str]], bundle: ModelBundle) -> None:
    spec = pipeline.spec
    bars, snapshot = loaded

    assert bundle.lineage == {
        "spec_hash": pipeline.spec_hash,
        "features": canonical_json(spec.features),
        "feature_set_hash": content_hash(spec.features),
        "training": model_training_json(spec),
        "label_round_trip_cost": 2.0 * (spec.execution.taker_fee_bps + spec.execution.slippage.half_spread_bps) / 10_000.0,
        "lake_snapshot": snapshot,
        "inputs_sha256": frame_sha256(bars),
    }
    assert bundle.symbols == spec.symbols and bundle.feature_names == pipeline.feature_names


# ---------------------------------------------------------------- market matrix and execute
def test_the_market_matrix_aligns_bars_features_and_predictions_to_time_by_symbol(
    pipeline: Pipeline, loaded: tuple[pl.DataFrame, dict[str, str]], bundle: ModelBundle, outcome: Outcome
) -> None:
    bars = loaded[0]
    matrix = outcome.matrix

    assert matrix.symbols == ("BTC", "DOGE", "ETH", "SOL")
    assert matrix.ts_ms.tolist() == bars["ts"].unique().sort().to_list()
    assert matrix.has_bar.all()
    sol = bars.filter(pl.col("symbol") == "SOL")
    np.testing.assert_array_equal(matrix.close[:, 3], sol["close"].to_numpy())
    np.testing.assert_array_equal(matrix.open[:, 3], sol["open"].to_numpy())
    assert matrix.volume is not None
    np.testing.assert_array_equal(matrix.volume[:, 3], sol["volume"].to_numpy())
    assert set(matrix.feat) == set(pipeline.feature_names)
    # Predictions exist from the first test span on, and nowhere before it.
    first_test = int(np.searchsorted(matrix.ts_ms, bundle.folds[0].test_start_ms))
    assert np.isnan(matrix.pred["p_up"][:first_test]).all()
    assert not np.isnan(matrix.pred["p_up"][first_test:]).any()


def test_a_missing_bar_is_a_gap_in_the_matrix_not_a_filled_value(pipeline: Pipeline, loaded: tuple[pl.DataFrame, dict[str, str]], bundle: ModelBundle) -> None:
    bars = loaded[0]
    gap_ts = int(bars["ts"].unique().sort()[2000])
    holed = bars.filter(~((pl.col("symbol") == "ETH") & (pl.col("ts") == gap_ts)))

    matrix = market_matrix(pipeline, holed, bundle, 1)

    t = int(np.searchsorted(matrix.ts_ms, gap_ts))
    assert matrix.has_bar.sum() == holed.height
    assert not matrix.has_bar[t, 2] and matrix.has_bar[t, [0, 1, 3]].all()
    assert math.isnan(matrix.close[t, 2]) and math.isnan(matrix.pred["p_up"][t, 2])
    assert matrix.volume is not None and math.isnan(matrix.volume[t, 2])


def test_execute_returns_the_per_bar_series_and_the_hash_of_its_decision_log(outcome: Outcome, loaded: tuple[pl.DataFrame, dict[str, str]]) -> None:
    n_times = loaded[0]["ts"].n_unique()

    assert outcome.equity.shape == (n_times,)
    assert outcome.states.shape == (n_times, 4)
    assert outcome.equity[0] == outcome.engine.portfolio.initial_cash
    assert outcome.decisions.height > 0
    assert outcome.decision_log_sha256 == decision_log_sha256(outcome.decisions)
    assert outcome.state_trace_sha256 == sha256_hex(outcome.states.tobytes())
    assert set(outcome.timings) == {"features_and_predictions", "event_loop", "decision_log"}
    assert all(v >= 0 for v in outcome.timings.values())


def test_execute_is_deterministic_for_the_same_bars_and_bundle(pipeline: Pipeline, loaded: tuple[pl.DataFrame, dict[str, str]], bundle: ModelBundle, outcome: Outcome) -> None:
    again = execute(pipeline, loaded[0], bundle, WallClock())

    assert again.decision_log_sha256 == outcome.decision_log_sha256
    assert again.state_trace_sha256 == outcome.state_trace_sha256
    assert again.equity.tobytes() == outcome.equity.tobytes()


# ---------------------------------------------------------------- write_json
def test_write_json_writes_sorted_indented_json_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.json"

    write_json(path, {"b": 1, "a": [1.5, None]})

    assert path.read_text(encoding="utf-8") == '{\n "a": [\n  1.5,\n  null\n ],\n "b": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1.5, None], "b": 1}


def test_write_json_refuses_nan_and_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json(path, {"ok": 1})

    with pytest.raises(ValueError):
        write_json(path, {"bad": float("nan")})

    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": 1}


@pytest.mark.parametrize(("strategy", "targets"), [("flat_holding_v1", ("p_up", "expected_return")), ("campaign_v1", ("p_up", "expected_return", "p_recovery"))])
def test_only_the_model_outputs_a_graph_reads_are_predicted(strategy: str, targets: tuple[str, ...]) -> None:
    pipeline = compile_pipeline(small_spec(f"strategy={strategy}"))
    assert pipeline.prediction_targets == targets


def _frame(rows: list[tuple[int, str]]) -> pl.DataFrame:
    return pl.DataFrame({"ts": [r[0] for r in rows], "symbol": [r[1] for r in rows], "x": [float(i) for i in range(len(rows))]})


def test_a_frame_of_whole_timestamps_is_placed_as_one_block_and_reshaped() -> None:
    times, code = np.array([10, 20, 30, 40]), {"A": 0, "B": 1}
    frame = _frame([(20, "A"), (20, "B"), (30, "A"), (30, "B")])
    where = place(frame, times, code)
    assert where.block == (1, 2)
    out = align_column(frame, "x", where, (4, 2))
    assert np.isnan(out[0]).all() and np.isnan(out[3]).all()
    assert out[1:3].tolist() == [[0.0, 1.0], [2.0, 3.0]]


@pytest.mark.parametrize(
    "rows",
    [
        [(10, "A"), (10, "B"), (20, "A")],  # a missing bar: not whole timestamps
        [(10, "A"), (10, "B"), (30, "A"), (30, "B")],  # whole timestamps, but not contiguous
        [(10, "B"), (10, "A")],  # symbols out of order
        [],  # nothing to place
    ],
)
def test_any_other_frame_is_scattered_cell_by_cell(rows: list[tuple[int, str]]) -> None:
    times, code = np.array([10, 20, 30]), {"A": 0, "B": 1}
    frame = _frame(rows) if rows else _frame([]).cast({"ts": pl.Int64, "symbol": pl.String})
    where = place(frame, times, code)
    assert where.block is None
    out = align_column(frame, "x", where, (3, 2))
    assert int((~np.isnan(out)).sum()) == len(rows)
    for value, (ts, symbol) in enumerate(rows):
        assert out[int(np.searchsorted(times, ts)), code[symbol]] == float(value)


# ---------------------------------------------------------------- the training cache (model.source=cached)
def test_a_cached_source_trains_once_then_reuses_the_same_models_for_any_profile(
    loaded: tuple[pl.DataFrame, dict[str, str]], bundle: ModelBundle, tmp_path: Path
) -> None:
    bars, snapshot = loaded
    home = Home(tmp_path)
    cached = compile_pipeline(small_spec(FAST, "model.source=cached"))
    messages: list[str] = []
    first = train_bundle(cached, bars, snapshot, messages.append, home, now_ms=lambda: 1234)
    assert any(m.startswith("trained") for m in messages)
    # Training is deterministic: the cached models are the ones model.source=train trains.
    assert [m.text for m in first.models] == [m.text for m in bundle.models]
    (record,) = training_cache(home).records()
    assert (record["version"], record["status"], record["created_ms"]) == (first.version, "candidate", 1234)
    assert record["training_key"] == training_key(cached, first.lineage)
    assert cached_version(training_cache(home), "0" * 64) is None  # another training is not this one
    assert not (home.root / "registry" / "models").exists()  # the promoted line is untouched

    messages.clear()
    again = train_bundle(cached, bars, snapshot, messages.append, home)
    assert again.version == first.version and again.models == first.models
    assert messages == [f"using cached model {first.version}: trained on the same bars under the same training settings"]
    other_profile = compile_pipeline(small_spec(FAST, "model.source=cached", "risk=conservative"))
    assert train_bundle(other_profile, bars, snapshot, _quiet, home).version == first.version
    assert len(training_cache(home).records()) == 1


@pytest.mark.parametrize("change", ["seed=8", "training.label.horizon_bars=36", "model.global_model.n_estimators=21", "execution.taker_fee_bps=20"])
def test_the_training_key_changes_with_what_shapes_the_models(bundle: ModelBundle, change: str) -> None:
    def key(*overrides: str) -> str:  # the lineage as train_bundle records it for that spec, on the same bars
        pipeline = compile_pipeline(small_spec(FAST, "model.source=cached", *overrides))
        spec = pipeline.spec
        lineage = dict(bundle.lineage, training=model_training_json(spec), label_round_trip_cost=round_trip_cost(spec))
        return training_key(pipeline, dict(lineage, spec_hash=pipeline.spec_hash))

    assert key(change) != key()
    assert key("risk=conservative") == key("strategy=flat_holding_v1") == key()


def test_an_empty_training_cache_has_no_version(tmp_path: Path) -> None:
    assert cached_version(training_cache(Home(tmp_path)), "0" * 64) is None
