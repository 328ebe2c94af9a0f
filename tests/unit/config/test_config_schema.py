"""The real conf/ tree composes into the exact RunSpec we expect, and every bound refuses bad values by name."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from backend.config.compose import compose_raw, compose_spec, validate_raw
from backend.config.schema import (
    LakeDataSpec,
    Mode,
    RunSpec,
    SharedDataSpec,
    SimulatedDataSpec,
)
from backend.errors import ConfigError

DAY_MS = 86_400_000
JAN_1_2025_MS = 1_735_689_600_000
JAN_1_2021_MS = 1_609_459_200_000

UNIVERSE_V1 = (
    "AAVE", "ADA", "APT", "AVAX", "BCH", "BNB", "BTC", "CRO", "DOGE", "DOT", "ENA", "ETH", "HBAR", "HYPE", "LINK",
    "LTC", "MNT", "NEAR", "PEPE", "SHIB", "SOL", "SUI", "TAO", "TON", "TRX", "UNI", "WLFI", "XLM", "XRP", "ZEC",
)  # fmt: skip
SHARED_1H = ("ADA", "AVAX", "BCH", "BTC", "DOGE", "DOT", "ETH", "LINK", "LTC", "NEAR", "SOL", "TRX", "XLM", "XRP")


@pytest.fixture(scope="module")
def default_spec() -> RunSpec:
    return compose_spec()


@pytest.fixture(scope="module")
def default_raw() -> dict[str, Any]:
    return compose_raw()


def refusal(*overrides: str) -> str:
    """Compose with ``overrides``, expect a ConfigError and return its message."""
    with pytest.raises(ConfigError) as caught:
        compose_spec(list(overrides))
    return str(caught.value)


def raw_refusal(raw: dict[str, Any]) -> str:
    """Validate ``raw``, expect a ConfigError and return its message."""
    with pytest.raises(ConfigError) as caught:
        validate_raw(raw)
    return str(caught.value)


def with_value(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a deep copy of ``raw`` with ``dotted`` (list indices allowed) set to ``value``."""
    out = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


# ---------------------------------------------------------------- the default run, exactly


def test_default_run_is_a_simulated_backtest_of_the_thirty_universe_symbols(default_spec: RunSpec) -> None:
    assert (default_spec.name, default_spec.seed, default_spec.mode) == ("default", 7, Mode.BACKTEST)
    assert default_spec.symbols == UNIVERSE_V1
    assert len(default_spec.symbols) == 30
    assert default_spec.data == SimulatedDataSpec(
        kind="simulated", timeframe="5m", start=date(2025, 1, 1), days=60, symbols=None
    )


def test_default_data_window_is_sixty_days_of_five_minute_bars_from_new_year_2025(default_spec: RunSpec) -> None:
    assert default_spec.data.start_ms == JAN_1_2025_MS
    assert default_spec.data.end_ms == JAN_1_2025_MS + 60 * DAY_MS
    assert default_spec.data.bar_ms == 300_000


def test_universe_v1_maps_symbols_to_kraken_names_and_clusters(default_spec: RunSpec) -> None:
    universe = default_spec.universe
    assert (universe.version, universe.quote, universe.ranking_date) == ("v1", "USD", date(2026, 9, 21))
    btc = universe.assets[0]
    assert (btc.symbol, btc.kraken.pair_key, btc.kraken.altname, btc.kraken.wsname) == (
        "BTC", "XXBTZUSD", "XBTUSD", "XBT/USD"
    )
    assert btc.coinapi_symbol_id == "KRAKEN_SPOT_BTC_USD"
    assert btc.ordermin == 0.00005
    clusters = universe.clusters
    assert list(clusters) == list(UNIVERSE_V1)
    assert (clusters["BTC"], clusters["ETH"], clusters["DOGE"], clusters["LINK"]) == (
        "store_of_value", "l1_major", "meme", "oracle_infra"
    )


def test_balanced_profile_is_the_default_risk_profile(default_spec: RunSpec) -> None:
    risk = default_spec.risk
    assert risk.model_dump() == {
        "name": "balanced",
        "kill_switch": False,
        "max_concurrent_positions": 8,
        "max_total_exposure": {"mode": "pct_of_pv", "value": 0.8},
        "max_cluster_exposure": {"mode": "pct_of_pv", "value": 0.35},
        "position_size_pct": 0.1,
        "max_drawdown_pct": 0.2,
        "drawdown_resume_pct": 0.1,
        "entry_min_p_up": 0.55,
        "entry_min_expected_return": 0.002,
        "exit_max_p_up": 0.45,
        "exit_max_expected_return": -0.002,
        "min_order_usd": 5.0,
        "drawdown_reanchor_hours": 48.0,
        "max_total_drawdown_pct": 0.3,
        "scale_out_max_p_up": 0.5,
        "scale_out_fraction": 0.5,
        "take_profit_pct": 0.05,
        "reentry_min_p_up": 0.57,
        "reentry_min_expected_return": 0.003,
        "severe_loss_pct": 0.08,
        "recovery_exit_max_p": 0.3,
        "recovery_reduce_max_p": 0.5,
    }


def test_profile_parameters_are_the_numeric_top_level_fields_as_floats(default_spec: RunSpec) -> None:
    # kill_switch (a bool), the name and the nested exposure limits are not guard parameters.
    dump = default_spec.risk.model_dump()
    expected = {k: float(v) for k, v in dump.items() if k not in ("name", "kill_switch", "max_total_exposure", "max_cluster_exposure")}
    assert default_spec.risk.parameters() == expected
    assert all(isinstance(v, float) for v in expected.values()) and expected["max_concurrent_positions"] == 8.0


def test_default_training_model_features_strategy_and_execution(default_spec: RunSpec) -> None:
    training = default_spec.training
    assert training.walk_forward.model_dump() == {
        "scheme": "expanding", "n_folds": 3, "min_train_bars": 4032, "train_bars": None,
        "purge_bars": 144, "embargo_bars": 12,
    }  # fmt: skip
    assert (training.label.horizon_bars, training.num_threads, training.max_train_rows) == (144, 2, 120_000)
    model = default_spec.model
    assert (model.name, model.kind, model.specialist_weight) == ("lgbm_blend_v1", "lgbm_blend", 0.4)
    assert (model.specialist.num_leaves, model.specialist.n_estimators, model.specialist.min_data_in_leaf) == (15, 60, 100)
    assert (model.global_model.num_leaves, model.global_model.n_estimators) == (31, 80)
    assert default_spec.features.name == "core_v1"
    assert [f.name for f in default_spec.features.features] == [
        "ret_1", "ret_12", "ret_48", "vol_48", "range_12", "volume_z_48", "rsi_14", "btc_ret_12"
    ]
    assert default_spec.features.features[-1].symbol == "BTC"
    assert (default_spec.strategy.name, default_spec.strategy.initial_state) == ("campaign_v1", "FLAT")
    assert [s.name for s in default_spec.strategy.states] == ["FLAT", "HOLDING", "PARTIAL", "SEVERE", "RECOVERY_HOLD", "RECOVERY_REDUCED"]
    assert default_spec.execution.model_dump() == {
        "broker": "simulated", "initial_cash": 100_000.0, "taker_fee_bps": 40.0,
        "slippage": {"half_spread_bps": 5.0, "impact_bps_per_pct_of_bar_volume": 2.0, "max_bps": 50.0},
        "min_order_usd": 0.5,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("profile", "positions", "total", "entry_p_up"),
    [("conservative", 4, 0.5, 0.6), ("balanced", 8, 0.8, 0.55), ("aggressive", 15, 1.0, 0.52)],
)
def test_each_risk_profile_composes_with_its_own_bounds(
    profile: str, positions: int, total: float, entry_p_up: float
) -> None:
    risk = compose_spec([f"risk={profile}"]).risk
    assert (risk.name, risk.max_concurrent_positions, risk.max_total_exposure.value, risk.entry_min_p_up) == (
        profile, positions, total, entry_p_up
    )


def test_bench_run_is_thirty_symbols_over_365_days() -> None:
    spec = compose_spec(["run=bench"])
    assert spec.name == "bench"
    assert len(spec.symbols) == 30
    assert (spec.data.kind, spec.data.days, spec.data.timeframe) == ("simulated", 365, "5m")
    assert spec.data.end_ms - spec.data.start_ms == 365 * DAY_MS
    assert (spec.training.walk_forward.n_folds, spec.training.walk_forward.min_train_bars) == (4, 17_280)
    assert spec.training.max_train_rows == 200_000


def test_real_run_switches_data_to_shared_binance_hourly_bars() -> None:
    spec = compose_spec(["run=real"])
    assert spec.name == "real"
    assert isinstance(spec.data, SharedDataSpec)
    assert (spec.data.kind, spec.data.source, spec.data.timeframe, spec.data.days) == ("shared", "binance", "1h", 1642)
    assert (spec.data.start_ms, spec.data.bar_ms) == (JAN_1_2021_MS, 3_600_000)
    assert spec.symbols == SHARED_1H
    walk = spec.training.walk_forward
    assert (walk.n_folds, walk.min_train_bars, walk.purge_bars, walk.embargo_bars) == (6, 8760, 24, 24)
    assert spec.training.label.horizon_bars == 24


def test_lake_data_option_reads_the_named_lake_source() -> None:
    spec = compose_spec(["data=lake"])
    assert isinstance(spec.data, LakeDataSpec)
    assert (spec.data.kind, spec.data.source, spec.data.timeframe, spec.data.days) == ("lake", "binance", "1h", 365)
    assert spec.symbols == ("BTC", "ETH")


def test_data_symbols_override_selects_a_sorted_distinct_subset() -> None:
    spec = compose_spec(["data.symbols=[SOL,BTC,ETH,BTC]"])
    assert spec.symbols == ("BTC", "ETH", "SOL")
    assert spec.data.symbols == ("SOL", "BTC", "ETH", "BTC")


def test_rolling_walk_forward_with_a_window_is_accepted() -> None:
    walk = compose_spec(["training.walk_forward.scheme=rolling", "training.walk_forward.train_bars=2000"]).training.walk_forward
    assert (walk.scheme, walk.train_bars) == ("rolling", 2000)


def test_absolute_exposure_may_exceed_one_dollar() -> None:
    limit = compose_spec(["risk.max_total_exposure.mode=absolute", "risk.max_total_exposure.value=50000"]).risk
    assert (limit.max_total_exposure.mode, limit.max_total_exposure.value) == ("absolute", 50_000.0)


def test_spec_is_frozen(default_spec: RunSpec) -> None:
    with pytest.raises(ValueError, match="frozen"):
        default_spec.seed = 8  # type: ignore[misc]


# ---------------------------------------------------------------- refusals: each names the key, the bound and the value


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # risk
        ("risk.max_concurrent_positions", 31, "'risk.max_concurrent_positions' must be <= 30, was 31"),
        ("risk.max_concurrent_positions", 0, "'risk.max_concurrent_positions' must be >= 1, was 0"),
        ("risk.position_size_pct", 0, "'risk.position_size_pct' must be > 0.0, was 0"),
        ("risk.position_size_pct", 1.5, "'risk.position_size_pct' must be <= 1.0, was 1.5"),
        ("risk.entry_min_p_up", 0.4, "'risk.entry_min_p_up' must be >= 0.5, was 0.4"),
        ("risk.exit_max_expected_return", 0.2, "'risk.exit_max_expected_return' must be <= 0.1, was 0.2"),
        ("risk.entry_min_expected_return", -0.2, "'risk.entry_min_expected_return' must be >= -0.1, was -0.2"),
        ("risk.max_total_exposure.value", 0, "'risk.max_total_exposure.value' must be > 0.0, was 0"),
        ("risk.max_drawdown_pct", 0, "'risk.max_drawdown_pct' must be > 0.0, was 0"),
        # execution
        ("execution.taker_fee_bps", 501, "'execution.taker_fee_bps' must be <= 500.0, was 501"),
        ("execution.slippage.half_spread_bps", -1, "'execution.slippage.half_spread_bps' must be >= 0.0, was -1"),
        ("execution.slippage.max_bps", 501, "'execution.slippage.max_bps' must be <= 500.0, was 501"),
        (
            "execution.slippage.impact_bps_per_pct_of_bar_volume",
            101,
            "'execution.slippage.impact_bps_per_pct_of_bar_volume' must be <= 100.0, was 101",
        ),
        ("execution.initial_cash", 5, "'execution.initial_cash' must be >= 10.0, was 5"),
        ("execution.min_order_usd", 2000000, "'execution.min_order_usd' must be <= 1000000.0, was 2000000"),
        # training
        ("training.walk_forward.n_folds", 0, "'training.walk_forward.n_folds' must be >= 1, was 0"),
        ("training.walk_forward.n_folds", 121, "'training.walk_forward.n_folds' must be <= 120, was 121"),
        ("training.walk_forward.min_train_bars", 9, "'training.walk_forward.min_train_bars' must be >= 10, was 9"),
        ("training.walk_forward.embargo_bars", -1, "'training.walk_forward.embargo_bars' must be >= 0, was -1"),
        ("training.label.horizon_bars", 0, "'training.label.horizon_bars' must be >= 1, was 0"),
        ("training.num_threads", 65, "'training.num_threads' must be <= 64, was 65"),
        ("training.max_train_rows", 99, "'training.max_train_rows' must be >= 100, was 99"),
        # model
        ("model.specialist.learning_rate", 0, "'model.specialist.learning_rate' must be > 0.0, was 0"),
        ("model.specialist.num_leaves", 1, "'model.specialist.num_leaves' must be >= 2, was 1"),
        ("model.global_model.max_bin", 1024, "'model.global_model.max_bin' must be <= 1023, was 1024"),
        ("model.global_model.n_estimators", 5001, "'model.global_model.n_estimators' must be <= 5000, was 5001"),
        ("model.specialist_weight", 1.5, "'model.specialist_weight' must be <= 1.0, was 1.5"),
        # data: the discriminator tag is not part of the key
        ("data.days", 1, "'data.days' must be >= 2, was 1"),
        ("data.days", 5001, "'data.days' must be <= 5000, was 5001"),
        # features and the run itself
        ("features.features.0.window", 0, "'features.features.0.window' must be >= 1, was 0"),
        ("seed", -1, "'seed' must be >= 0, was -1"),
    ],
)
def test_out_of_bound_value_is_refused_naming_key_bound_and_value(
    default_raw: dict[str, Any], key: str, value: Any, message: str
) -> None:
    assert raw_refusal(with_value(default_raw, key, value)) == f"invalid config:\n{message}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("risk.foo", 1, "'risk.foo' is not a known key (unknown keys are refused), was 1"),
        ("execution.maker_fee_bps", 10, "'execution.maker_fee_bps' is not a known key (unknown keys are refused), was 10"),
        ("data.interval", "5m", "'data.interval' is not a known key (unknown keys are refused), was '5m'"),
        ("model.specialist.depth", 3, "'model.specialist.depth' is not a known key (unknown keys are refused), was 3"),
        ("training.label.kind", "up", "'training.label.kind' is not a known key (unknown keys are refused), was 'up'"),
        ("universe.assets.0.kraken.pair", "X", "'universe.assets.0.kraken.pair' is not a known key (unknown keys are refused), was 'X'"),
        ("leverage", 2, "'leverage' is not a known key (unknown keys are refused), was 2"),
    ],
)
def test_unknown_key_is_refused_by_name(default_raw: dict[str, Any], key: str, value: Any, message: str) -> None:
    assert raw_refusal(with_value(default_raw, key, value)) == f"invalid config:\n{message}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+risk.foo=1", "'risk.foo' is not a known key (unknown keys are refused), was 1"),
        ("risk.max_concurrent_positions=31", "'risk.max_concurrent_positions' must be <= 30, was 31"),
        ("data.days=1", "'data.days' must be >= 2, was 1"),
        ("risk.max_concurrent_positions=abc", "'risk.max_concurrent_positions' input should be a valid integer, unable to parse string as an integer, was 'abc'"),
    ],
)
def test_command_line_override_is_refused_with_the_same_message(override: str, message: str) -> None:
    assert refusal(override) == f"invalid config:\n{message}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "risk.max_concurrent_positions", "abc",
            "'risk.max_concurrent_positions' input should be a valid integer, unable to parse string as an integer, "
            "was 'abc'",
        ),
        ("risk.kill_switch", "maybe", "'risk.kill_switch' input should be a valid boolean, unable to interpret input, was 'maybe'"),
        ("execution.broker", "kraken", "'execution.broker' input should be 'simulated', was 'kraken'"),
        ("mode", "foo", "'mode' input should be 'backtest', 'replay', 'paper', 'shadow' or 'live', was 'foo'"),
        ("data.timeframe", "2m", "'data.timeframe' input should be '1m', '5m', '15m', '1h', '4h' or '1d', was '2m'"),
        ("data.start", "notadate", "'data.start' input should be a valid date or datetime, input is too short, was 'notadate'"),
        # the pattern keeps its case: only the first letter of the message is lowered
        ("name", "bad/name", "'name' string should match pattern '^[A-Za-z0-9_.@-]+$', was 'bad/name'"),
        ("risk.max_total_exposure.mode", "leverage", "'risk.max_total_exposure.mode' input should be 'pct_of_pv' or 'absolute', was 'leverage'"),
        ("training.walk_forward.scheme", "anchored", "'training.walk_forward.scheme' input should be 'expanding' or 'rolling', was 'anchored'"),
        ("data.symbols", [], "'data.symbols' tuple should have at least 1 item after validation, not 0, was []"),
    ],
)
def test_wrong_type_or_choice_is_refused_naming_key_and_value(
    default_raw: dict[str, Any], key: str, value: Any, message: str
) -> None:
    assert raw_refusal(with_value(default_raw, key, value)) == f"invalid config:\n{message}"


def test_too_many_data_symbols_is_refused_with_the_count() -> None:
    symbols = ",".join(["BTC"] * 101)
    assert refusal(f"data.symbols=[{symbols}]").endswith(
        "'data.symbols' tuple should have at most 100 items after validation, not 101, was " + repr(["BTC"] * 101)
    )


def test_wrong_discriminator_names_the_expected_data_kinds() -> None:
    message = refusal("data.kind=ftp")
    assert message.startswith(
        "invalid config:\n'data' input tag 'ftp' found using 'kind' does not match any of the expected tags: "
        "'simulated', 'shared', 'lake', was {'kind': 'ftp'"
    )


def test_every_problem_is_reported_one_per_line_sorted() -> None:
    assert refusal("risk.max_concurrent_positions=31", "data.days=1", "seed=-1") == (
        "invalid config:\n"
        "'data.days' must be >= 2, was 1\n"
        "'risk.max_concurrent_positions' must be <= 30, was 31\n"
        "'seed' must be >= 0, was -1"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"training.walk_forward.purge_bars": 100},
            "'training': 'walk_forward.purge_bars' must be >= label.horizon_bars (144), was 100",
        ),
        (
            {"training.walk_forward.scheme": "rolling"},
            "'training.walk_forward': 'train_bars' is required when scheme is 'rolling'",
        ),
        (
            {"risk.max_total_exposure.value": 1.5},
            "'risk.max_total_exposure': 'value' must be <= 1.0 in pct_of_pv mode (no leverage), was 1.5",
        ),
        (
            {"risk.max_cluster_exposure.value": 2},
            "'risk.max_cluster_exposure': 'value' must be <= 1.0 in pct_of_pv mode (no leverage), was 2.0",
        ),
        (
            {"risk.drawdown_resume_pct": 0.5},
            "'risk': 'drawdown_resume_pct' must be <= max_drawdown_pct (0.2), was 0.5",
        ),
        (
            {"risk.max_total_drawdown_pct": 0.1},
            "'risk': 'max_total_drawdown_pct' must be >= max_drawdown_pct (0.2), was 0.1",
        ),
        (
            {"risk.exit_max_p_up": 0.6},
            "'risk': 'exit_max_p_up' must be <= entry_min_p_up (0.55), was 0.6",
        ),
        (
            {"data.symbols": ["BTC", "FOO"]},
            "'<root>': 'data.symbols' entry 'FOO' is not in universe v1",
        ),
        (
            {"data.symbols": ["ETH", "SOL"]},
            "'<root>': feature 'btc_ret_12' refers to symbol 'BTC', which this run does not load",
        ),
    ],
)
def test_cross_field_rule_is_refused_naming_both_fields_and_the_value(
    default_raw: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    raw = default_raw
    for key, value in changes.items():
        raw = with_value(raw, key, value)
    assert raw_refusal(raw) == f"invalid config:\n{message}"


def test_purge_equal_to_the_horizon_is_enough() -> None:
    spec = compose_spec(["training.walk_forward.purge_bars=144"])
    assert spec.training.walk_forward.purge_bars == spec.training.label.horizon_bars == 144


def test_slippage_cap_below_the_half_spread_is_refused(default_raw: dict[str, Any]) -> None:
    raw = with_value(default_raw, "execution.slippage.max_bps", 4.0)
    assert raw_refusal(raw) == "invalid config:\n'execution.slippage': max_bps must be >= half_spread_bps (5.0), was 4.0"


def test_duplicate_universe_symbol_is_refused(default_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(default_raw)
    raw["universe"]["assets"].append(dict(raw["universe"]["assets"][1]))
    assert raw_refusal(raw) == "invalid config:\n'universe': symbol 'ETH' is listed twice"


def test_duplicate_feature_names_are_refused_listing_each_repeated_name(default_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(default_raw)
    features = raw["features"]["features"]
    features += [dict(features[0]), dict(features[3]), dict(features[3])]
    assert raw_refusal(raw) == "invalid config:\n'features': feature names must be unique, repeated: ['ret_1', 'vol_48']"


@pytest.mark.parametrize("group", ["risk", "execution", "strategy", "universe"])
def test_missing_group_is_reported_as_required(default_raw: dict[str, Any], group: str) -> None:
    raw = copy.deepcopy(default_raw)
    del raw[group]
    assert raw_refusal(raw) == f"invalid config:\n'{group}' is required and missing"


def test_missing_nested_key_names_its_full_path(default_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(default_raw)
    del raw["data"]["days"]
    del raw["risk"]["max_total_exposure"]["mode"]
    assert raw_refusal(raw) == (
        "invalid config:\n'data.days' is required and missing\n'risk.max_total_exposure.mode' is required and missing"
    )


def test_strategy_needs_at_least_two_states(default_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(default_raw)
    raw["strategy"]["states"] = raw["strategy"]["states"][:1]
    message = raw_refusal(raw)
    assert message.startswith("invalid config:\n'strategy.states' tuple should have at least 2 items after validation, not 1")


def test_lake_data_accepts_any_named_source() -> None:
    data = compose_spec(["data=lake", "data.source=kraken_backfill"]).data
    assert isinstance(data, LakeDataSpec)
    assert data.source == "kraken_backfill"


def test_ray_address_defaults_to_none_and_accepts_a_cluster_head_host_and_port() -> None:
    assert compose_spec().training.ray.address is None
    spec = compose_spec(["training.ray.enabled=true", "training.ray.address=head-1.example:6379"])

    assert (spec.training.ray.enabled, spec.training.ray.address) == (True, "head-1.example:6379")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ray://head:10001", r"'training.ray.address': must be host:port of a running Ray cluster's head .*, was 'ray://head:10001'"),
        ("head", r"'training.ray.address': must be host:port .*, was 'head'"),
        ("auto", r"'training.ray.address': must be host:port .*, was 'auto'"),
        ("head:0", r"'training.ray.address': port must be >= 1 and <= 65535, was 0 in 'head:0'"),
        ("head:70000", r"'training.ray.address': port must be >= 1 and <= 65535, was 70000 in 'head:70000'"),
    ],
)
def test_a_malformed_ray_address_is_refused_naming_the_key_the_rule_and_the_value(address: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose_spec(["training.ray.enabled=true", f"training.ray.address={address!r}"])


def test_a_ray_address_without_ray_enabled_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ConfigError, match=r"'training.ray': 'address' \('h:6379'\) is set but 'enabled' is false: set enabled=true"):
        compose_spec(["training.ray.address='h:6379'"])
