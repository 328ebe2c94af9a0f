"""The data an emulator serves: bars and trades per symbol, faults applied per request.

Bars arrive as canonical lake frames (``ts`` bar open in UTC ms, ``symbol``, ``open``, ``high``,
``low``, ``close``, ``volume``; optional ``vwap`` and ``trades``); other columns are ignored.
Trades arrive as frames with ``ts_ms``, ``symbol``, ``price``, ``volume``, ``side`` (``b``/``s``),
``ordertype`` (``m``/``l``), ``trade_id`` and optionally ``ts_ns``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from backend.data.lake import TIMEFRAME_MS
from backend.errors import DataError
from backend.sandbox.faults import FaultInjector

_BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")
_TRADE_COLUMNS = ("ts_ms", "symbol", "price", "volume", "side", "ordertype", "trade_id")


@dataclass(frozen=True)
class Bars:
    """Bars of one symbol, sorted by ``ts`` (UTC ms); ``count`` is the number of trades."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def take(self, index: np.ndarray | slice) -> Bars:
        """Return the bars at ``index``."""
        return Bars(*(getattr(self, name)[index] for name in _FIELDS))


_FIELDS = ("ts", "open", "high", "low", "close", "volume", "vwap", "count")


def _missing(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    absent = [name for name in columns if name not in frame.columns]
    if absent:
        raise DataError(f"{what} frame has no column {absent[0]!r}; expected at least {list(columns)}")


def _bars_of(frame: pl.DataFrame) -> Bars:
    frame = frame.sort("ts")
    typical = (frame["high"] + frame["low"] + frame["close"]) / 3.0
    vwap = frame["vwap"].cast(pl.Float64) if "vwap" in frame.columns else typical
    if "trades" in frame.columns:
        count = frame["trades"].cast(pl.Int64).to_numpy()
    else:
        # Without trade counts, a bar with volume counts as one trade, an empty bar as none.
        count = (frame["volume"] > 0).cast(pl.Int64).to_numpy()
    return Bars(
        frame["ts"].cast(pl.Int64).to_numpy(),
        *(frame[name].cast(pl.Float64).to_numpy() for name in ("open", "high", "low", "close", "volume")),
        vwap.to_numpy(),
        count,
    )


def aggregate(bars: Bars, interval_ms: int) -> Bars:
    """Roll bars up into ``interval_ms`` periods (open first, high max, low min, close last, sums)."""
    buckets = bars.ts - bars.ts % interval_ms
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], bars.ts.size] - 1
    volume = np.add.reduceat(bars.volume, starts)
    weighted = np.add.reduceat(bars.vwap * bars.volume, starts)
    plain = np.add.reduceat(bars.close, starts) / (ends - starts + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(volume > 0, weighted / np.where(volume > 0, volume, 1.0), plain)
    return Bars(
        buckets[starts],
        bars.open[starts],
        np.maximum.reduceat(bars.high, starts),
        np.minimum.reduceat(bars.low, starts),
        bars.close[ends],
        volume,
        vwap,
        np.add.reduceat(bars.count, starts),
    )


class MarketData:
    """Bars (one base timeframe) and trades per symbol, shared by the request threads.

    Parameters
    ----------
    bars : pl.DataFrame
        Canonical lake bars of the symbols in ``symbols``.
    timeframe : str
        Their bar length, a key of :data:`backend.data.lake.TIMEFRAME_MS`.
    symbols : Iterable[str]
        Symbols the universe knows; bars of any other symbol are refused.
    trades : pl.DataFrame or None
        Trades, or None for none.
    """

    def __init__(self, bars: pl.DataFrame, timeframe: str, symbols: Iterable[str], trades: pl.DataFrame | None) -> None:
        if timeframe not in TIMEFRAME_MS:
            raise DataError(f"unknown timeframe {timeframe!r}; expected one of {sorted(TIMEFRAME_MS)}")
        self.timeframe = timeframe
        self.bar_ms = TIMEFRAME_MS[timeframe]
        self.symbols = frozenset(symbols)
        self._lock = threading.Lock()
        self._frames: dict[str, pl.DataFrame] = {}
        self._bars: dict[str, Bars] = {}
        self._trades: dict[str, pl.DataFrame] = {}
        self.append_bars(bars)
        if trades is not None:
            self._set_trades(trades)

    def _check(self, frame: pl.DataFrame, what: str) -> None:
        unknown = sorted(set(frame["symbol"].unique().to_list()) - self.symbols)
        if unknown:
            raise DataError(f"{what} for symbol {unknown[0]!r}, which is not in the universe")

    def append_bars(self, bars: pl.DataFrame) -> None:
        """Merge new bars in; a bar at an existing (symbol, ts) replaces the old one."""
        _missing(bars, _BAR_COLUMNS, "bars")
        self._check(bars, "bars")
        misaligned = bars.filter(pl.col("ts") % self.bar_ms != 0)
        if misaligned.height:
            raise DataError(f"bar ts {misaligned['ts'][0]} is not aligned to the {self.timeframe} timeframe")
        keep = [name for name in (*_BAR_COLUMNS, "vwap", "trades") if name in bars.columns]
        with self._lock:
            for (symbol,), part in bars.select(keep).partition_by("symbol", as_dict=True).items():
                old = self._frames.get(symbol)
                merged = part if old is None else pl.concat([old, part], how="diagonal_relaxed")
                merged = merged.unique("ts", keep="last", maintain_order=True).sort("ts")
                self._frames[symbol] = merged
                self._bars[symbol] = _bars_of(merged)

    def _set_trades(self, trades: pl.DataFrame) -> None:
        _missing(trades, _TRADE_COLUMNS, "trades")
        self._check(trades, "trades")
        frame = trades.sort("symbol", "ts_ms", "trade_id")
        if "ts_ns" not in frame.columns:
            # Several trades can share a millisecond; a microsecond rank keeps their times distinct.
            rank = pl.int_range(pl.len()).over("symbol", "ts_ms").cast(pl.Int64)
            frame = frame.with_columns(ts_ns=pl.col("ts_ms").cast(pl.Int64) * 1_000_000 + rank * 1_000)
        frame = frame.with_columns(pl.col("price", "volume").cast(pl.Float64), pl.col("trade_id").cast(pl.Int64))
        for (symbol,), part in frame.sort("symbol", "ts_ns", "trade_id").partition_by("symbol", as_dict=True).items():
            self._trades[symbol] = part

    def bars(
        self,
        symbol: str,
        request_number: int,
        faults: FaultInjector,
        end_ms: int | None,
        interval_ms: int | None = None,
    ) -> Bars:
        """Return the bars of ``symbol`` one request may see, faults applied, rolled up to ``interval_ms``.

        Bars opening after ``end_ms`` (the emulator's now) have not happened yet and are left out.
        """
        with self._lock:
            bars = self._bars.get(symbol)
        if bars is None:
            return Bars(*(np.empty(0, dtype=np.int64 if n in ("ts", "count") else np.float64) for n in _FIELDS))
        if end_ms is not None:
            bars = bars.take(slice(0, int(np.searchsorted(bars.ts, end_ms, side="right"))))
        if faults.has_bar_faults:
            bars = bars.take(faults.visible_mask(bars.ts, request_number))
            high, low, close = faults.revise(symbol, bars.ts, bars.high, bars.low, bars.close)
            bars = Bars(bars.ts, bars.open, high, low, close, bars.volume, bars.vwap, bars.count)
        if interval_ms is not None and interval_ms != self.bar_ms:
            return aggregate(bars, interval_ms)
        return bars

    def mark_served(
        self, symbol: str, faults: FaultInjector, request_number: int, first_ms: int, last_ms: int, interval_ms: int
    ) -> None:
        """Record that the visible base bars of ``symbol`` in ``[first_ms, last_ms + interval_ms)`` were served."""
        if not faults.spec.revised_bars:
            return
        with self._lock:
            bars = self._bars[symbol]
        lo, hi = np.searchsorted(bars.ts, [first_ms, last_ms + interval_ms])
        ts = bars.ts[lo:hi]
        faults.mark_served(symbol, ts[faults.visible_mask(ts, request_number)])

    def trades(self, symbol: str, end_ms: int | None) -> pl.DataFrame | None:
        """Return the trades of ``symbol`` up to ``end_ms`` (sorted by ``ts_ns``), or None without trades."""
        frame = self._trades.get(symbol)
        if frame is None or end_ms is None:
            return frame
        return frame.filter(pl.col("ts_ms") <= end_ms)

    @property
    def first_last_ms(self) -> dict[str, tuple[int, int]]:
        """Return the first and last bar open time of every symbol held."""
        with self._lock:
            return {s: (int(b.ts[0]), int(b.ts[-1])) for s, b in sorted(self._bars.items())}


ClockMs = Callable[[], int]
