"""Forward-return labels: log return to the close `horizon` bars later, net of the round-trip cost."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from backend.data.simulator import simulate_ohlcv
from backend.errors import ConfigError
from backend.features.labels import forward_return_labels, recovery_labels

BAR_MS = 300_000  # 5-minute bars

START = 1_735_689_600_000
CLUSTERS = {"BTC": "store_of_value", "ETH": "l1_major", "DOGE": "meme"}
N_BARS = 60


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_ohlcv(list(CLUSTERS), CLUSTERS, "5m", START, N_BARS, seed=4)


def closes(bars: pl.DataFrame, symbol: str) -> np.ndarray:
    return bars.filter(pl.col("symbol") == symbol).sort("ts")["close"].to_numpy()


@pytest.mark.parametrize("horizon", [1, 5])
def test_label_return_is_the_net_log_return_to_the_close_horizon_bars_later(bars: pl.DataFrame, horizon: int) -> None:
    cost = 0.008
    labels = forward_return_labels(bars, horizon, cost, BAR_MS)
    for symbol in CLUSTERS:
        close = closes(bars, symbol)
        got = labels.filter(pl.col("symbol") == symbol)["label_return"].to_numpy()
        expected = np.log(close[horizon:]) - np.log(close[:-horizon]) - cost
        np.testing.assert_allclose(got[:-horizon], expected, rtol=0, atol=1e-12)


def test_last_horizon_bars_of_each_symbol_have_no_label(bars: pl.DataFrame) -> None:
    labels = forward_return_labels(bars, 7, 0.0, BAR_MS)
    per_symbol = labels.group_by("symbol").agg(
        pl.col("label_return").null_count().alias("nulls"), pl.col("ts").filter(pl.col("label_return").is_null()).min().alias("first")
    )
    assert sorted(per_symbol["nulls"].to_list()) == [7, 7, 7]
    assert set(per_symbol["first"].to_list()) == {START + (N_BARS - 7) * 300_000}


def test_label_up_is_null_exactly_where_the_return_is_null_and_else_marks_a_positive_return(bars: pl.DataFrame) -> None:
    labels = forward_return_labels(bars, 3, 0.001, BAR_MS)
    assert labels["label_up"].is_null().to_list() == labels["label_return"].is_null().to_list()
    known = labels.drop_nulls()
    assert known["label_up"].to_list() == [1.0 if r > 0 else 0.0 for r in known["label_return"]]
    assert set(known["label_up"].to_list()) == {0.0, 1.0}
    assert labels.schema["label_up"] == pl.Float64


def test_round_trip_cost_is_subtracted_from_every_return(bars: pl.DataFrame) -> None:
    gross = forward_return_labels(bars, 4, 0.0, BAR_MS)
    net = forward_return_labels(bars, 4, 0.01, BAR_MS)
    diff = (gross["label_return"] - net["label_return"]).drop_nulls()
    np.testing.assert_allclose(diff.to_numpy(), 0.01, rtol=0, atol=1e-12)
    # A cost can only turn ups into downs.
    assert net["label_up"].sum() < gross["label_up"].sum()


def test_output_is_sorted_by_time_then_symbol_whatever_the_input_order(bars: pl.DataFrame) -> None:
    shuffled = bars.sample(fraction=1.0, shuffle=True, seed=3)
    labels = forward_return_labels(shuffled, 2, 0.0, BAR_MS)
    assert labels.columns == ["ts", "symbol", "label_return", "label_up"]
    assert labels.select("ts", "symbol").equals(bars.sort("ts", "symbol").select("ts", "symbol"))
    assert labels.equals(forward_return_labels(bars, 2, 0.0, BAR_MS))


def test_a_gap_never_stretches_a_label_beyond_its_horizon_in_time(bars: pl.DataFrame) -> None:
    # Remove BTC's bar 10: the label at bar 7 (horizon 3) has no bar exactly 3 steps later, so it is
    # null rather than the return to bar 11, which would reach past a purge sized in time.
    gap_ts = START + 10 * BAR_MS
    holed = bars.filter(~((pl.col("symbol") == "BTC") & (pl.col("ts") == gap_ts)))
    labels = forward_return_labels(holed, 3, 0.0, BAR_MS).filter(pl.col("symbol") == "BTC")
    assert labels.filter(pl.col("ts") == START + 7 * BAR_MS)["label_return"].to_list() == [None]
    assert labels.filter(pl.col("ts") == START + 6 * BAR_MS)["label_return"].null_count() == 0


def closes_frame(closes: list[float], symbol: str = "BTC", skip: tuple[int, ...] = ()) -> pl.DataFrame:
    rows = [(START + i * BAR_MS, symbol, c) for i, c in enumerate(closes) if i not in skip]
    return pl.DataFrame(rows, schema={"ts": pl.Int64, "symbol": pl.String, "close": pl.Float64}, orient="row")


def test_recovery_label_marks_regaining_the_fraction_of_the_drawdown_within_the_horizon() -> None:
    # lookback 3 bars, horizon 2 bars, recover half of the gap to the trailing high.
    out = recovery_labels(closes_frame([10.0, 8.0, 9.0, 7.0, 10.0, 11.0, 10.5]), 2, 3, 0.5, BAR_MS)
    assert out.columns == ["ts", "symbol", "label_recover", "adverse_depth"]
    # bar 1: high 10, close 8, depth 0.2, target 9, next closes 9, 7 -> reached.
    # bar 2: high 10, close 9, target 9.5, next 7, 10 -> reached.
    # bar 3: the 10 of bar 0 left the 3-bar lookback: high 9, close 7, target 8, next 10, 11 -> reached.
    # bar 6: high 11, close 10.5, but its horizon is not observed.
    assert out["adverse_depth"].to_list() == pytest.approx([0.0, 0.2, 0.1, 1 - 7 / 9, 0.0, 0.0, 1 - 10.5 / 11])
    assert out["label_recover"].to_list() == [None, 1.0, 1.0, 1.0, None, None, None]


def test_recovery_label_is_zero_when_the_target_is_missed_within_the_horizon() -> None:
    # bar 1: high 10, close 9, target 9.5, next closes 6, 7 -> missed.
    # bar 2: high 10, close 6, target 8, next closes 7, 7.9 -> missed; the 9 comes one bar too late.
    # bar 3: high 10, close 7, target 8.5, next closes 7.9, 9 -> reached.
    out = recovery_labels(closes_frame([10.0, 9.0, 6.0, 7.0, 7.9, 9.0]), 2, 5, 0.5, BAR_MS)
    assert out["label_recover"].to_list()[:4] == [None, 0.0, 0.0, 1.0]
    # A full recovery needs the high itself: from bar 2 nothing reaches 10 within 3 bars.
    full = recovery_labels(closes_frame([10.0, 9.0, 6.0, 7.0, 7.9, 9.0]), 3, 5, 1.0, BAR_MS)
    assert full["label_recover"].to_list()[:3] == [None, 0.0, 0.0]


def test_recovery_label_is_null_when_a_bar_inside_the_horizon_is_missing() -> None:
    # Bar 3 is missing: labels whose horizon covers it (bars 1 and 2 with horizon 2) are unknown,
    # even though a later close would have reached the target.
    out = recovery_labels(closes_frame([10.0, 8.0, 8.5, 9.9, 9.9, 9.9, 9.9], skip=(3,)), 2, 4, 0.5, BAR_MS)
    by_ts = dict(zip(out["ts"].to_list(), out["label_recover"].to_list()))
    assert by_ts[START + 1 * BAR_MS] is None and by_ts[START + 2 * BAR_MS] is None
    assert by_ts[START + 4 * BAR_MS] is None  # at the trailing high: nothing to recover


def test_adverse_depth_lookback_is_measured_in_time_not_rows() -> None:
    # Bar 1 is missing; with a 3-bar lookback, bar 3 sees bars 2 and 3 only (the 20 at bar 0 is too old).
    out = recovery_labels(closes_frame([20.0, 0.0, 10.0, 8.0], skip=(1,)), 1, 3, 0.5, BAR_MS)
    assert out["adverse_depth"].to_list() == pytest.approx([0.0, 0.5, 0.2])


def test_recovery_labels_match_a_brute_force_count_on_simulated_bars(bars: pl.DataFrame) -> None:
    horizon, lookback, fraction = 5, 12, 0.4
    out = recovery_labels(bars.sample(fraction=1.0, shuffle=True, seed=2), horizon, lookback, fraction, BAR_MS)
    assert out.select("ts", "symbol").equals(bars.sort("ts", "symbol").select("ts", "symbol"))
    for symbol in CLUSTERS:
        close = closes(bars, symbol)
        got = out.filter(pl.col("symbol") == symbol)
        for i in range(len(close)):
            high = close[max(0, i - lookback + 1) : i + 1].max()
            assert got["adverse_depth"][i] == pytest.approx(1 - close[i] / high, abs=1e-15)
            if i + horizon >= len(close) or high == close[i]:
                assert got["label_recover"][i] is None
            else:
                reached = close[i + 1 : i + horizon + 1].max() >= close[i] + fraction * (high - close[i])
                assert got["label_recover"][i] == float(reached)
    known = out["label_recover"].drop_nulls()
    assert set(known.to_list()) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 5, 0.5, BAR_MS), "'horizon_bars' must be >= 1, was 0"),
        ((5, 0, 0.5, BAR_MS), "'lookback_bars' must be >= 1, was 0"),
        ((5, 5, 0.5, 0), "'bar_ms' must be >= 1, was 0"),
        ((5, 5, 0.0, BAR_MS), "'recover_fraction' must be in (0, 1], was 0.0"),
        ((5, 5, 1.5, BAR_MS), "'recover_fraction' must be in (0, 1], was 1.5"),
    ],
)
def test_recovery_labels_refuse_out_of_bound_parameters(bars: pl.DataFrame, args: tuple, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        recovery_labels(bars, *args)
    assert str(caught.value) == message
