"""Gaps: a missing bar restarts every window (null until refilled); nothing is carried or filled across it."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backend.config.schema import FeatureSetSpec, FeatureSpec
from backend.data.simulator import simulate_ohlcv
from backend.features.build import build_features
from backend.features.registry import builder_info, builder_names

START = 1_735_689_600_000
BAR = 300_000
CLUSTERS = {"BTC": "store_of_value", "ETH": "l1_major", "SOL": "l1_major", "DOGE": "meme"}
N_BARS = 120
WINDOW = 6
GAP_AT = 50  # bar index removed


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_ohlcv(list(CLUSTERS), CLUSTERS, "5m", START, N_BARS, seed=31).select(
        "ts", "symbol", "open", "high", "low", "close", "volume"
    )


def one(builder: str) -> FeatureSetSpec:
    window = WINDOW if builder_info(builder).needs_window else None
    return FeatureSetSpec(name="g", features=(FeatureSpec(name="f", builder=builder, window=window, symbol="BTC"),))


def build(bars: pl.DataFrame, features: FeatureSetSpec) -> pl.DataFrame:
    return build_features(bars, features, CLUSTERS).select("ts", "symbol", *(f.name for f in features.features))


def test_is_gap_marks_the_bar_after_a_missing_bar_and_bars_since_gap_counts_from_it(bars: pl.DataFrame) -> None:
    gap_ts = START + GAP_AT * BAR
    holed = bars.filter(~((pl.col("symbol") == "ETH") & (pl.col("ts") == gap_ts)))
    spec = FeatureSetSpec(
        name="gaps",
        features=(FeatureSpec(name="gap", builder="is_gap"), FeatureSpec(name="since", builder="bars_since_gap", window=WINDOW)),
    )
    out = build_features(holed, spec, CLUSTERS)
    # The missing bar is not invented: no row at it.
    assert out.height == holed.height
    assert out.filter((pl.col("symbol") == "ETH") & (pl.col("ts") == gap_ts)).height == 0
    eth = out.filter(pl.col("symbol") == "ETH").sort("ts")
    after = eth.filter(pl.col("ts") > gap_ts)
    assert eth["gap"].sum() == 1.0 and after["gap"][0] == 1.0
    # The first bar of the series starts a segment but is no gap: there is no evidence of a missing bar.
    assert eth["gap"][0] == 0.0
    assert eth["since"].to_list()[: WINDOW + 2] == [0, 1, 2, 3, 4, 5, 6, 6]
    assert after["since"].to_list()[: WINDOW + 2] == [0, 1, 2, 3, 4, 5, 6, 6]
    others = out.filter(pl.col("symbol") != "ETH")
    assert others["gap"].sum() == 0.0


@pytest.mark.parametrize("builder", [b for b in builder_names() if b != "is_gap"])
def test_after_a_missing_timestamp_every_feature_equals_a_fresh_history_starting_after_it(bars: pl.DataFrame, builder: str) -> None:
    # Remove one whole timestamp (an exchange outage): after it, nothing may remember the bars before.
    gap_ts = START + GAP_AT * BAR
    holed = bars.filter(pl.col("ts") != gap_ts)
    features = one(builder)
    after = pl.col("ts") > gap_ts
    got = build(holed, features).filter(after)
    fresh = build(holed.filter(after), features)
    assert_frame_equal(got, fresh, check_exact=True)


@pytest.mark.parametrize("builder", ["log_return", "realized_vol", "rsi", "ema_distance", "macd"])
def test_a_missing_bar_of_one_symbol_restarts_only_that_symbols_windows(bars: pl.DataFrame, builder: str) -> None:
    gap_ts = START + GAP_AT * BAR
    holed = bars.filter(~((pl.col("symbol") == "SOL") & (pl.col("ts") == gap_ts)))
    features = one(builder)
    full = build(bars, features)
    got = build(holed, features)
    others = pl.col("symbol") != "SOL"
    assert_frame_equal(got.filter(others), full.filter(others), check_exact=True)
    sol = got.filter(pl.col("symbol") == "SOL").sort("ts")
    # Warming up again (at least window - 1 bars), never stretched across the gap; then values return.
    right_after = sol.filter(pl.col("ts") > gap_ts)
    assert right_after["f"].head(WINDOW - 1).null_count() == WINDOW - 1
    assert right_after["f"].tail(-3 * WINDOW).null_count() == 0
    before = sol.filter(pl.col("ts") < gap_ts)
    assert_frame_equal(before, full.filter((pl.col("symbol") == "SOL") & (pl.col("ts") < gap_ts)), check_exact=True)


def test_breadth_at_a_timestamp_counts_only_the_symbols_with_a_value_there(bars: pl.DataFrame) -> None:
    gap_ts = START + GAP_AT * BAR
    holed = bars.filter(~((pl.col("symbol") == "SOL") & (pl.col("ts") == gap_ts)))
    out = build(holed, one("market_breadth"))
    returns = build(holed, one("log_return")).filter(pl.col("ts") == gap_ts + BAR)
    # At the bar after the gap SOL has no return (its window restarted): three symbols vote.
    assert returns["f"].null_count() == 1
    positive = (returns["f"].drop_nulls() > 0).sum()
    expected = positive / 3
    assert out.filter(pl.col("ts") == gap_ts + BAR)["f"].to_list() == pytest.approx([expected] * 4)


def test_one_bar_per_symbol_has_no_known_bar_length_and_no_gap() -> None:
    frame = pl.DataFrame(
        {"ts": [START, START + 7 * BAR], "symbol": ["BTC", "ETH"], **{c: [1.0, 2.0] for c in ("open", "high", "low", "close", "volume")}}
    )
    spec = FeatureSetSpec(
        name="single",
        features=(FeatureSpec(name="gap", builder="is_gap"), FeatureSpec(name="ret", builder="log_return", window=1)),
    )
    out = build_features(frame, spec)
    assert out["gap"].to_list() == [0.0, 0.0]
    assert out["ret"].to_list() == [None, None]
    assert np.isnan(out["ret"].to_numpy()).all()
