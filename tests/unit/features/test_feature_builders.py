"""The issue-4 builder families, each checked against a plain numpy computation of its definition."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from backend.config.compose import compose_raw
from backend.config.schema import FeatureSetSpec, FeatureSpec
from backend.data.simulator import simulate_ohlcv
from backend.errors import ConfigError
from backend.features.build import build_features
from backend.features.registry import builder_info, builder_names, feature_plan, validate_feature_set
from backend.models.metrics import average_ranks

START = 1_735_689_600_000  # 2025-01-01 00:00 UTC, a Wednesday
BAR = 300_000
DAY = 86_400_000
CLUSTERS = {"BTC": "store_of_value", "ETH": "l1_major", "SOL": "l1_major", "ADA": "l1_major", "DOGE": "meme"}
N_BARS = 90
W = 5


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_ohlcv(list(CLUSTERS), CLUSTERS, "5m", START, N_BARS, seed=13).select(
        "ts", "symbol", "open", "high", "low", "close", "volume"
    )


def build_one(bars: pl.DataFrame, builder: str, window: int | None = W, symbol: str | None = None) -> pl.DataFrame:
    spec = FeatureSetSpec(name="t", features=(FeatureSpec(name="f", builder=builder, window=window, symbol=symbol),))
    return build_features(bars, spec, CLUSTERS)


def column(frame: pl.DataFrame, symbol: str, name: str) -> np.ndarray:
    return frame.filter(pl.col("symbol") == symbol).sort("ts")[name].to_numpy().astype(float)


def rolling(x: np.ndarray, window: int, fn) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(window - 1, len(x)):
        out[i] = fn(x[i - window + 1 : i + 1])
    return out


def ema(x: np.ndarray, span: int) -> np.ndarray:
    """EMA with alpha 2/(span+1), seeded at the first non-missing value, null until span values seen."""
    alpha = 2.0 / (span + 1.0)
    out = np.full(len(x), np.nan)
    value, seen = math.nan, 0
    for i, v in enumerate(x):
        if np.isnan(v):
            continue
        value = v if seen == 0 else alpha * v + (1.0 - alpha) * value
        seen += 1
        if seen >= span:
            out[i] = value
    return out


def shift(x: np.ndarray, k: int) -> np.ndarray:
    return np.r_[np.full(k, np.nan), x[:-k]]


def ohlcv(bars: pl.DataFrame, symbol: str) -> dict[str, np.ndarray]:
    return {c: column(bars, symbol, c) for c in ("open", "high", "low", "close", "volume")}


def assert_series(got: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-9, atol=1e-13)


def test_at_least_25_builders_cover_every_family_named_by_the_issue() -> None:
    names = set(builder_names())
    assert len(names) >= 25
    families = {
        "returns": {"log_return"},
        "volatility and range": {"realized_vol", "range_mean", "parkinson_vol", "garman_klass_vol", "true_range_mean"},
        "volume": {"volume_zscore", "relative_volume", "signed_volume_ratio", "amihud_illiquidity"},
        "trend": {"ema_distance", "sma_distance", "trend_slope", "drawdown_from_high", "channel_width"},
        "oscillators": {"rsi", "stochastic_k", "stochastic_d", "macd", "macd_histogram", "price_zscore"},
        "calendar": {"hour_sin", "hour_cos", "dow_sin", "dow_cos"},
        "gaps": {"is_gap", "bars_since_gap"},
        "cross-asset": {"symbol_log_return", "market_breadth", "cluster_momentum", "cross_sectional_rank", "market_return"},
    }
    for family, members in families.items():
        assert members <= names, family


def test_the_full_feature_set_composes_validates_and_uses_at_least_25_builders() -> None:
    from backend.config.schema import FeatureSetSpec as Spec

    features = Spec.model_validate(compose_raw(["features=full_v1"])["features"])
    validate_feature_set(features)
    assert features.name == "full_v1"
    assert len({f.builder for f in features.features}) >= 25


def test_unknown_builder_info_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown feature builder 'kama' \(known: amihud_illiquidity, "):
        builder_info("kama")
    assert builder_info("rsi").inputs == "market" and builder_info("hour_sin").inputs == "clock"
    assert builder_info("cluster_momentum").needs_clusters and not builder_info("market_breadth").needs_clusters


def test_cross_sectional_plans_with_the_same_inner_stage_share_one_helper_column() -> None:
    rank = feature_plan(FeatureSpec(name="xs", builder="cross_sectional_rank", window=3))
    breadth = feature_plan(FeatureSpec(name="breadth", builder="market_breadth", window=3))
    longer = feature_plan(FeatureSpec(name="breadth_9", builder="market_breadth", window=9))
    assert rank.inner is not None and breadth.inner is not None and longer.inner is not None
    helper = rank.inner.meta.output_name()
    assert helper.startswith("__inner__") and helper == breadth.inner.meta.output_name()
    assert longer.inner.meta.output_name() != helper
    assert rank.outer.meta.output_name() == "xs" and breadth.outer.meta.output_name() == "breadth"


@pytest.mark.parametrize("symbol", ["BTC", "DOGE"])
def test_volatility_and_range_builders_match_their_definitions(bars: pl.DataFrame, symbol: str) -> None:
    b = ohlcv(bars, symbol)
    log_hl2 = np.log(b["high"] / b["low"]) ** 2
    log_co2 = np.log(b["close"] / b["open"]) ** 2
    step = np.r_[np.nan, np.diff(np.log(b["close"]))]
    previous = shift(b["close"], 1)
    true_range = np.maximum.reduce([b["high"] - b["low"], np.abs(b["high"] - previous), np.abs(b["low"] - previous)])
    expected = {
        "parkinson_vol": np.sqrt(rolling(log_hl2, W, np.mean) / (4 * math.log(2))),
        "garman_klass_vol": np.sqrt(
            np.clip(rolling(0.5 * log_hl2 - (2 * math.log(2) - 1) * log_co2, W, np.mean), 0.0, None)
        ),
        "vol_ratio": rolling(step, W, lambda x: np.std(x, ddof=1)) / rolling(step, 4 * W, lambda x: np.std(x, ddof=1)),
        "true_range_mean": rolling(true_range, W, np.mean) / b["close"],
    }
    for builder, values in expected.items():
        assert_series(column(build_one(bars, builder), symbol, "f"), values)


@pytest.mark.parametrize("symbol", ["ETH", "ADA"])
def test_volume_builders_match_their_definitions(bars: pl.DataFrame, symbol: str) -> None:
    b = ohlcv(bars, symbol)
    signed = np.sign(b["close"] - b["open"]) * b["volume"]
    step = np.r_[np.nan, np.diff(np.log(b["close"]))]
    impact = np.abs(step) / (b["close"] * b["volume"])
    expected = {
        "relative_volume": b["volume"] / rolling(b["volume"], W, np.mean),
        "signed_volume_ratio": rolling(signed, W, np.sum) / rolling(b["volume"], W, np.sum),
        "amihud_illiquidity": np.log1p(rolling(impact, W, np.mean) * 1e6),
    }
    for builder, values in expected.items():
        assert_series(column(build_one(bars, builder), symbol, "f"), values)
    ratio = column(build_one(bars, "signed_volume_ratio"), symbol, "f")
    assert np.nanmax(np.abs(ratio)) <= 1.0 + 1e-12  # sliding sums round


@pytest.mark.parametrize("symbol", ["SOL", "BTC"])
def test_trend_builders_match_their_definitions(bars: pl.DataFrame, symbol: str) -> None:
    b = ohlcv(bars, symbol)
    close = b["close"]
    k = np.arange(W) - (W - 1) / 2
    line = (ema(close, W) - ema(close, 2 * W)) / close
    expected = {
        "ema_distance": close / ema(close, W) - 1.0,
        "sma_distance": close / rolling(close, W, np.mean) - 1.0,
        "trend_slope": rolling(np.log(close), W, lambda y: float(np.dot(k, y) / np.dot(k, k))),
        "macd": line,
        "macd_histogram": line - ema(line, math.ceil(0.75 * W)),
        "drawdown_from_high": 1.0 - close / rolling(close, W, np.max),
        "channel_width": (rolling(b["high"], W, np.max) - rolling(b["low"], W, np.min)) / close,
        "price_zscore": (close - rolling(close, W, np.mean)) / rolling(close, W, lambda x: np.std(x, ddof=1)),
    }
    for builder, values in expected.items():
        assert_series(column(build_one(bars, builder), symbol, "f"), values)


def test_trend_slope_recovers_the_drift_of_a_log_linear_series() -> None:
    n = 20
    close = 100.0 * np.exp(0.01 * np.arange(n))
    frame = pl.DataFrame(
        {"ts": [START + i * BAR for i in range(n)], "symbol": ["BTC"] * n, "open": close, "high": close, "low": close, "close": close, "volume": [1.0] * n}
    )
    slope = build_one(frame, "trend_slope", window=6)["f"].drop_nulls().to_numpy()
    np.testing.assert_allclose(slope, 0.01, rtol=1e-9)
    assert build_one(frame, "trend_slope", window=1)["f"].null_count() == n  # one bar has no slope


@pytest.mark.parametrize("symbol", ["DOGE", "ETH"])
def test_stochastic_oscillator_is_the_close_within_the_windows_range_and_d_smooths_it(bars: pl.DataFrame, symbol: str) -> None:
    b = ohlcv(bars, symbol)
    lowest = rolling(b["low"], W, np.min)
    k = (b["close"] - lowest) / (rolling(b["high"], W, np.max) - lowest)
    got_k = column(build_one(bars, "stochastic_k"), symbol, "f")
    assert_series(got_k, k)
    assert ((got_k[W - 1 :] >= 0) & (got_k[W - 1 :] <= 1)).all()
    assert_series(column(build_one(bars, "stochastic_d"), symbol, "f"), rolling(k, 3, np.mean))


def test_calendar_features_are_the_utc_phase_of_the_day_and_the_monday_based_week() -> None:
    # 2025-01-06 is a Monday; bars at 00:00, 06:00, 12:00 and 18:00 UTC, and Thursday 00:00.
    monday = START + 5 * DAY
    stamps = [monday, monday + DAY // 4, monday + DAY // 2, monday + 3 * DAY // 4, monday + 3 * DAY]
    frame = pl.DataFrame(
        {"ts": stamps, "symbol": ["BTC"] * 5, **{c: [1.0] * 5 for c in ("open", "high", "low", "close", "volume")}}
    )
    spec = FeatureSetSpec(name="cal", features=tuple(FeatureSpec(name=n, builder=n) for n in ("hour_sin", "hour_cos", "dow_sin", "dow_cos")))
    out = build_features(frame, spec)
    np.testing.assert_allclose(out["hour_sin"].to_numpy(), [0, 1, 0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(out["hour_cos"].to_numpy(), [1, 0, -1, 0, 1], atol=1e-12)
    week = 2 * np.pi * np.array([0, 0.25, 0.5, 0.75, 3]) / 7
    np.testing.assert_allclose(out["dow_sin"].to_numpy(), np.sin(week), atol=1e-12)
    np.testing.assert_allclose(out["dow_cos"].to_numpy(), np.cos(week), atol=1e-12)
    assert out["dow_cos"][0] == pytest.approx(1.0)


def wide_returns(bars: pl.DataFrame, window: int) -> tuple[list[str], np.ndarray]:
    symbols = sorted(CLUSTERS)
    close = np.column_stack([column(bars, s, "close") for s in symbols])
    ret = np.full(close.shape, np.nan)
    ret[window:] = np.log(close[window:] / close[:-window])
    return symbols, ret


def long_feature(out: pl.DataFrame, symbols: list[str]) -> np.ndarray:
    return np.column_stack([column(out, s, "f") for s in symbols])


def test_market_return_breadth_and_relative_return_are_taken_across_symbols_at_each_ts(bars: pl.DataFrame) -> None:
    symbols, ret = wide_returns(bars, W)
    valid = ~np.isnan(ret[:, 0])
    market = np.full(len(ret), np.nan)
    market[valid] = ret[valid].mean(axis=1)
    breadth = np.full(len(ret), np.nan)
    breadth[valid] = (ret[valid] > 0).mean(axis=1)
    assert_series(long_feature(build_one(bars, "market_return"), symbols).ravel(), np.repeat(market, len(symbols)))
    assert_series(long_feature(build_one(bars, "market_breadth"), symbols).ravel(), np.repeat(breadth, len(symbols)))
    assert_series(long_feature(build_one(bars, "relative_return"), symbols).ravel(), (ret - market[:, None]).ravel())
    assert set(np.unique(breadth[valid] * len(symbols))) <= set(range(len(symbols) + 1))


def test_cluster_momentum_is_the_mean_return_of_the_symbols_cluster(bars: pl.DataFrame) -> None:
    symbols, ret = wide_returns(bars, W)
    got = long_feature(build_one(bars, "cluster_momentum"), symbols)
    l1 = [symbols.index(s) for s in ("ADA", "ETH", "SOL")]
    expected_l1 = ret[:, l1].mean(axis=1)
    for i in l1:
        assert_series(got[:, i], expected_l1)
    # Alone in their clusters, BTC and DOGE get their own return.
    for s in ("BTC", "DOGE"):
        assert_series(got[:, symbols.index(s)], ret[:, symbols.index(s)])


def test_cross_sectional_rank_scales_the_average_rank_to_the_unit_interval(bars: pl.DataFrame) -> None:
    symbols, ret = wide_returns(bars, W)
    got = long_feature(build_one(bars, "cross_sectional_rank"), symbols)
    for t in range(W, len(ret)):
        np.testing.assert_allclose(got[t], (average_ranks(ret[t]) - 1) / (len(symbols) - 1), rtol=1e-12)
    assert np.isnan(got[:W]).all()


def test_cross_sectional_rank_averages_ties_and_is_null_for_a_lone_symbol() -> None:
    n = 4
    rows = []
    for i in range(n):
        for symbol, price in (("BTC", 1.0 + i), ("ETH", 2.0 + 2 * i), ("SOL", 1.0)):
            rows.append({"ts": START + i * BAR, "symbol": symbol, "open": price, "high": price, "low": price, "close": price, "volume": 1.0})
    frame = pl.DataFrame(rows)
    out = build_one(frame, "cross_sectional_rank", window=1)
    # BTC 1 -> 2 and ETH 2 -> 4 both double (tie), SOL stays flat: ranks 2.5, 2.5, 1 of 3.
    assert out.filter(pl.col("ts") == START + BAR)["f"].to_list() == [0.75, 0.75, 0.0]
    lone = build_one(frame.filter(pl.col("symbol") == "BTC"), "cross_sectional_rank", window=1)
    assert lone["f"].null_count() == n


def test_cluster_features_need_a_cluster_for_every_symbol(bars: pl.DataFrame) -> None:
    spec = FeatureSetSpec(name="clustered", features=(FeatureSpec(name="cm", builder="cluster_momentum", window=3),))
    with pytest.raises(ConfigError) as missing:
        build_features(bars, spec)
    assert str(missing.value) == (
        "feature set 'clustered' has cluster features, but symbols ['ADA', 'BTC', 'DOGE', 'ETH', 'SOL'] have no "
        "cluster (pass the universe's cluster mapping)"
    )
    partial = {s: c for s, c in CLUSTERS.items() if s != "SOL"}
    with pytest.raises(ConfigError, match=r"symbols \['SOL'\] have no cluster"):
        build_features(bars, spec, partial)
    # A set without cluster features needs no mapping.
    plain = FeatureSetSpec(name="plain", features=(FeatureSpec(name="r", builder="log_return", window=3),))
    assert build_features(bars, plain).height == bars.height
