"""Forward-return labels: log return to the close `horizon` bars later, net of the round-trip cost."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from backend.data.simulator import simulate_ohlcv
from backend.features.labels import forward_return_labels

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
