"""The emulators' market data: refusals of bad frames, merging, roll-ups with counts and vwap."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sandbox_helpers import BAR_MS, START_MS, make_trades

from backend.errors import DataError
from backend.sandbox.bars import MarketData, aggregate
from backend.sandbox.faults import FaultInjector, FaultSpec


def _frame(**columns: object) -> pl.DataFrame:
    base = {
        "ts": [START_MS, START_MS + BAR_MS, START_MS + 2 * BAR_MS],
        "symbol": ["BTC"] * 3,
        "open": [10.0, 11.0, 12.0],
        "high": [11.5, 12.5, 13.0],
        "low": [9.5, 10.5, 11.0],
        "close": [11.0, 12.0, 12.5],
        "volume": [1.0, 0.0, 3.0],
    }
    return pl.DataFrame(base | columns)


def _injector() -> FaultInjector:
    return FaultInjector(FaultSpec(), lambda: 0.0)


def test_bars_roll_up_with_given_trade_counts_and_vwap() -> None:
    data = MarketData(_frame(vwap=[10.5, 11.0, 12.0], trades=[4, 0, 6]), "5m", {"BTC"}, None)
    bars = data.bars("BTC", 1, _injector(), None, 900_000)
    assert len(bars) == 1
    assert (bars.open[0], bars.high[0], bars.low[0], bars.close[0]) == (10.0, 13.0, 9.5, 12.5)
    assert bars.volume[0] == 4.0
    assert bars.vwap[0] == pytest.approx((10.5 * 1 + 12.0 * 3) / 4)
    assert bars.count[0] == 10


def test_an_empty_period_has_the_mean_close_as_vwap() -> None:
    data = MarketData(_frame(volume=[0.0, 0.0, 0.0]), "5m", {"BTC"}, None)
    bars = aggregate(data.bars("BTC", 1, _injector(), None), 900_000)
    assert bars.vwap[0] == pytest.approx((11.0 + 12.0 + 12.5) / 3)
    assert bars.count[0] == 0


def test_appended_bars_replace_bars_at_the_same_time() -> None:
    data = MarketData(_frame(), "5m", {"BTC", "ETH"}, None)
    data.append_bars(_frame(ts=[START_MS + 2 * BAR_MS, START_MS + 3 * BAR_MS, START_MS + 4 * BAR_MS], close=[1.0, 2.0, 3.0]))
    bars = data.bars("BTC", 1, _injector(), START_MS + 3 * BAR_MS)
    assert bars.ts.tolist() == [START_MS + i * BAR_MS for i in range(4)]
    assert bars.close.tolist() == [11.0, 12.0, 1.0, 2.0]
    assert len(data.bars("ETH", 1, _injector(), None)) == 0
    assert data.first_last_ms == {"BTC": (START_MS, START_MS + 4 * BAR_MS)}


@pytest.mark.parametrize(
    ("frame", "timeframe", "message"),
    [
        (_frame(), "7m", "unknown timeframe '7m'"),
        (_frame().drop("volume"), "5m", "bars frame has no column 'volume'"),
        (_frame(symbol=["BTC", "FOO", "BTC"]), "5m", "bars for symbol 'FOO', which is not in the universe"),
        (_frame(ts=[START_MS, START_MS + 1, START_MS + BAR_MS]), "5m", f"bar ts {START_MS + 1} is not aligned to the 5m timeframe"),
    ],
)
def test_bad_bar_frames_are_refused_naming_the_problem(frame: pl.DataFrame, timeframe: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        MarketData(frame, timeframe, {"BTC"}, None)


def test_bad_trade_frames_are_refused() -> None:
    with pytest.raises(DataError, match="trades frame has no column 'trade_id'"):
        MarketData(_frame(), "5m", {"BTC"}, make_trades("BTC", 5).drop("trade_id"))
    with pytest.raises(DataError, match="trades for symbol 'ETH'"):
        MarketData(_frame(), "5m", {"BTC"}, make_trades("ETH", 5))


def test_trades_sharing_a_millisecond_get_distinct_microsecond_times() -> None:
    trades = make_trades("BTC", 4).with_columns(ts_ms=pl.lit(START_MS, dtype=pl.Int64))
    data = MarketData(_frame(), "5m", {"BTC"}, trades)
    frame = data.trades("BTC", None)
    assert frame is not None
    assert (frame["ts_ns"] - START_MS * 1_000_000).to_list() == [0, 1000, 2000, 3000]
    assert data.trades("BTC", START_MS - 1).height == 0  # type: ignore[union-attr]
    assert data.trades("ETH", None) is None


def test_revised_marks_need_a_served_request() -> None:
    injector = FaultInjector(FaultSpec(revised_bars={START_MS: 50.0}), lambda: 0.0)
    data = MarketData(_frame(), "5m", {"BTC"}, None)
    assert data.bars("BTC", 1, injector, None).close[0] == 11.0
    data.mark_served("BTC", injector, 1, START_MS, START_MS, BAR_MS)
    assert data.bars("BTC", 2, injector, None).close.tolist() == [50.0, 12.0, 12.5]
    quiet = _injector()
    data.mark_served("BTC", quiet, 1, START_MS, START_MS, BAR_MS)  # nothing to remember without revisions
    assert np.array_equal(data.bars("BTC", 2, quiet, None).close, np.array([11.0, 12.0, 12.5]))
