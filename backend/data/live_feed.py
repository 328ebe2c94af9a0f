"""The live bar feed: poll Kraken OHLC for the universe, close a bar only when Kraken commits it.

Each poll runs the ingestion pipeline (:class:`backend.data.ingest.Ingestor`) once per series, on
the OHLC provider the backfill uses, through ccxt: every body is in the raw store first, committed
bars go to the lake, and gaps, late bars and revisions become reconciliation evidence exactly as in
a backfill. Kraken's provisional newest bar is never kept (``last`` marks the committed ones).

A bar time ``T`` is *ready* (handed to the engine) once every symbol has committed a bar at or after
``T``, or lags the leading symbol by more than ``stall_bars`` bars (a symbol without trades must not
hold the others back: its missing bar is a gap, with evidence). Ready times only move forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from backend.config.schema import AssetSpec
from backend.data import lake
from backend.data.ingest import IngestOptions, Ingestor, SeriesReport
from backend.config.schema import TIMEFRAME_MS
from backend.data.state import IngestState


@dataclass(frozen=True)
class Poll:
    """One poll: the new ready bar times, the series reports, and the bars at those times."""

    ready_ts: tuple[int, ...]
    reports: tuple[SeriesReport, ...]
    bars: pl.DataFrame


class LiveBarFeed:
    """Polls, ingests and says which bar times are closed for the whole universe.

    Parameters
    ----------
    ingestor : Ingestor
        The ingestion pipeline over the Kraken OHLC provider (through ccxt).
    state : IngestState
        Its cursors.
    assets : Sequence[AssetSpec]
        The universe to poll.
    timeframe : str
        Bar length.
    start_ms : int
        Where a series without a cursor starts (Kraken serves the newest 720 bars).
    ready_after_ms : int or None
        The last bar time already handed on (a restart continues after it).
    stall_bars : int
        How far a symbol may lag before it stops holding the ready time back.
    lookback_bars : int
        Bars re-read before each cursor, to see late and revised bars.
    """

    def __init__(self, ingestor: Ingestor, state: IngestState, assets: Sequence[AssetSpec], timeframe: str, start_ms: int,
                 ready_after_ms: int | None = None, stall_bars: int = 2, lookback_bars: int = 2) -> None:  # fmt: skip
        self.ingestor = ingestor
        self.state = state
        self.assets = sorted(assets, key=lambda a: a.symbol)
        self.timeframe = timeframe
        self.bar_ms = TIMEFRAME_MS[timeframe]
        self.options = IngestOptions(timeframe, start_ms, lookback_bars=lookback_bars, max_pages=1)
        self.ready_after_ms = ready_after_ms
        self.stall_bars = stall_bars

    @property
    def source(self) -> str:
        """The lake source the bars are written under."""
        return self.ingestor.provider.source

    def poll(self) -> Poll:
        """Poll every series once; return the newly ready bar times and their bars (sorted by ts, symbol)."""
        reports = tuple(self.ingestor.run(self.assets, self.options))
        committed = {}
        for asset in self.assets:
            cursor = self.state.cursor(self.source, asset.symbol, self.timeframe)
            if cursor is not None and cursor.high_ms is not None:
                committed[asset.symbol] = cursor.high_ms
        if not committed:
            return Poll((), reports, pl.DataFrame())
        leader = max(committed.values())
        # A series without any committed bar, or lagging by more than stall_bars, holds nothing back.
        floor = min(h for h in committed.values() if h >= leader - self.stall_bars * self.bar_ms)
        start = self.options.start_ms if self.ready_after_ms is None else self.ready_after_ms + self.bar_ms
        if floor < start:
            return Poll((), reports, pl.DataFrame())
        bars = lake.read_ohlcv(self.ingestor.lake_root, self.source, self.timeframe, [a.symbol for a in self.assets],
                               start, floor + self.bar_ms)  # fmt: skip
        ready = tuple(sorted(set(bars["ts"].to_list()))) if bars.height else ()
        self.ready_after_ms = max(ready, default=self.ready_after_ms)
        return Poll(ready, reports, bars.sort("ts", "symbol"))


def history(lake_root: Path, source: str, timeframe: str, symbols: Sequence[str], end_ms: int, bars: int) -> pl.DataFrame:
    """Return the ``bars`` bar periods of history before ``end_ms`` from the lake (warm-up of the features)."""
    bar_ms = TIMEFRAME_MS[timeframe]
    return lake.read_ohlcv(lake_root, source, timeframe, list(symbols), end_ms - bars * bar_ms, end_ms)
