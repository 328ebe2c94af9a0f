"""The live bar feed: poll Kraken OHLC for the universe, close a bar only when Kraken commits it.

One poll, in this order:

1. the exchange: one OHLC request per series through ccxt (:meth:`CcxtKrakenFetcher.get_many`);
2. every answer is kept in the raw store in one synced transaction before anything reads it;
3. the pages are parsed and validated together (one frame for the universe); a bad page is
   quarantined and refetched through the ingestion pipeline exactly as a backfill does;
4. each good page is recorded as the series' *pending page* (its raw ids, the request and the
   ``now`` it was parsed at) in one ingest-state transaction;
5. the ready bars are handed on from memory (see below): the decision path stops here.

After the decisions, :meth:`LiveBarFeed.settle` writes the poll down with the ingestion pipeline
unchanged (:meth:`backend.data.ingest.Ingestor.apply_page`: reconciliation evidence, the lake, then
the cursor, series by series) and drops the pending pages. A process killed anywhere loses nothing:
the raw bodies are durable before any bar is used, and :meth:`LiveBarFeed.open` applies every
pending page again from the raw store (the same bytes parsed at the same ``now``), so the lake a
restart reads is the one an uninterrupted session writes. Kraken's provisional newest bar is never
kept (``last`` marks the committed ones).

A bar time ``T`` is *ready* (handed to the engine) once every symbol has committed a bar at or after
``T``, or lags the leading symbol by more than ``stall_bars`` bars (a symbol without trades must not
hold the others back: its missing bar is a gap, with evidence). Ready times only move forward. The
bars after the last ready time are held in memory, as the lake holds them (a bar equal in value keeps
its first batch id, a revised one replaces it), so no poll reads the lake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from backend.config.schema import TIMEFRAME_MS, AssetSpec
from backend.data import lake
from backend.data.ingest import IngestOptions, Ingestor, SeriesReport
from backend.data.lake import OHLCV_SCHEMA
from backend.data.normalize import OhlcBody, batch_id_for, parse_kraken_ohlc_many
from backend.data.providers.base import Fetched, OhlcvPage
from backend.data.raw import RawRecord
from backend.data.state import Cursor, IngestState, PendingPage
from backend.errors import PayloadError, ProviderError

_VALUES = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Poll:
    """One poll: the new ready bar times, the series reports, and the bars at those times."""

    ready_ts: tuple[int, ...]
    reports: tuple[SeriesReport, ...]
    bars: pl.DataFrame


@dataclass(frozen=True)
class _Received:
    """A series' good page of the last poll, handed on and not yet in the lake.

    ``page`` is None for a page of the poll's common frame (its bars are cut out of it when settled).
    """

    asset: AssetSpec
    record: RawRecord
    next_ms: int
    report: SeriesReport
    page: OhlcvPage | None = None


class LiveBarFeed:
    """Polls, keeps and says which bar times are closed for the whole universe.

    Parameters
    ----------
    ingestor : Ingestor
        The ingestion pipeline over the Kraken OHLC provider (through ccxt: its fetcher offers ``get_many``).
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
        self._cursors: dict[str, Cursor] | None = None  # None until open()
        self._resume: dict[str, int] = {}
        self._waiting = pl.DataFrame(schema=OHLCV_SCHEMA)  # bars after ready_after_ms, as the lake holds them
        self._received: list[_Received] = []
        self._closed = pl.DataFrame(schema=OHLCV_SCHEMA)  # the last poll's bars of its common frame

    @property
    def source(self) -> str:
        """The lake source the bars are written under."""
        return self.ingestor.provider.source

    def open(self) -> None:
        """Apply the pending pages a killed session left, then load the cursors and the bars not yet handed on.

        Done once, by the first poll at the latest; call it before reading the lake (a restart's warm-up).
        """
        if self._cursors is not None:
            return
        lake.sweep_temporaries(self.ingestor.lake_root, self.ingestor.progress)
        by_symbol = {a.symbol: a for a in self.assets}
        pending = self.state.pending_pages(self.source, self.timeframe)
        fetcher = self.ingestor.provider.fetcher
        for symbol, kept in pending.items():
            asset = by_symbol.get(symbol)
            if asset is None:
                continue  # another universe's page: its own session applies it
            fetched = fetcher.kept(kept.raw_ids)  # type: ignore[attr-defined]
            page = self.ingestor.provider.parse(fetched, asset, self.timeframe, kept.request_ms, kept.now_ms)
            report = SeriesReport(self.source, symbol, self.timeframe)
            self._received.append(_Received(asset, page.records[-1], page.next_cursor_ms, report, page))
        self._cursors = {}
        self.settle()
        for asset in self.assets:
            cursor = self.state.cursor(self.source, asset.symbol, self.timeframe)
            if cursor is not None:
                self._cursors[asset.symbol] = cursor
            resume = self.state.resume_point(self.source, asset.symbol, self.timeframe)
            if resume is not None:
                self._resume[asset.symbol] = resume
        start = self._first_unready()
        files = lake.lake_files(self.ingestor.lake_root, self.source, self.timeframe, list(by_symbol), start, None)
        if files:
            self._waiting = pl.read_parquet(files).filter(pl.col("ts") >= start).sort("ts", "symbol")

    def _first_unready(self) -> int:
        return self.options.start_ms if self.ready_after_ms is None else self.ready_after_ms + self.bar_ms

    def _request(self, asset: AssetSpec) -> tuple[int, int]:
        """Where the series' page is asked from, and where its stored history ends (as a run starts)."""
        cursor = self._cursors.get(asset.symbol)  # type: ignore[union-attr]
        start = self.options.start_ms if cursor is None else cursor.next_ms
        if asset.symbol in self._resume:
            return self._resume[asset.symbol], start
        if cursor is not None and self.options.lookback_bars:
            return max(self.options.start_ms, cursor.next_ms - self.options.lookback_bars * self.bar_ms), start
        return start, start

    def poll(self) -> Poll:
        """Poll every series once; return the newly ready bar times and their bars (sorted by ts, symbol).

        The last poll is settled first if it was not (see :meth:`settle`).
        """
        self.settle()
        self.open()
        cursors: dict[str, Cursor] = self._cursors  # type: ignore[assignment]
        provider, timeframe = self.ingestor.provider, self.timeframe
        reports = {a.symbol: SeriesReport(self.source, a.symbol, timeframe) for a in self.assets}
        starts = {a.symbol: self._request(a) for a in self.assets}
        answers = provider.fetcher.get_many(  # type: ignore[attr-defined]
            [provider.request(a, timeframe, starts[a.symbol][0]) for a in self.assets]  # type: ignore[attr-defined]
        )
        # The answers are in hand and kept (synced): from here on is the feed's own time.
        now = self.ingestor.clock.now_ms()
        fetched: list[tuple[AssetSpec, Fetched]] = []
        for asset, answer in zip(self.assets, answers, strict=True):
            if isinstance(answer, ProviderError):
                self.ingestor.fail(reports[asset.symbol], answer)
            else:
                fetched.append((asset, answer))
        bars = self._parse(fetched, starts, now, reports)
        with self.state.transaction():
            for received in self._received:
                symbol = received.asset.symbol
                pending = PendingPage(starts[symbol][0], now, (received.record.id,))
                self.state.set_pending_page(self.source, symbol, timeframe, pending)
        highs = dict(bars.group_by("symbol").agg(pl.col("ts").max()).iter_rows()) if bars.height else {}
        for symbol, high in highs.items():
            cursor = cursors.get(symbol)
            if cursor is not None and cursor.high_ms is not None:
                high = max(high, cursor.high_ms)
            # As a run moves it: past the last closed bar, never back.
            cursors[symbol] = Cursor(max(high + self.bar_ms, starts[symbol][1]), high)
        first_unready = self._first_unready()
        self._hold(bars.filter(pl.col("ts") >= first_unready))
        ready, ready_bars = self._ready(first_unready)
        return Poll(ready, tuple(reports.values()), ready_bars)

    def _parse(self, fetched: list[tuple[AssetSpec, Fetched]], starts: dict[str, tuple[int, int]], now: int,
               reports: dict[str, SeriesReport]) -> pl.DataFrame:  # fmt: skip
        """Parse the poll's pages together, keep their closed bars; return them (bad pages go through the pipeline)."""
        bodies = [OhlcBody(f.body, a.kraken.pair_key, a.symbol, batch_id_for(self.source, [f.record.sha256])) for a, f in fetched]
        bars, bad = parse_kraken_ohlc_many(bodies, self.timeframe, self.source)
        request_from = pl.DataFrame({"symbol": [a.symbol for a, _ in fetched],
                                     "_from": [starts[a.symbol][0] for a, _ in fetched]}, schema={"symbol": pl.String, "_from": pl.Int64})  # fmt: skip
        # As closed_since: bars at or after the request that have closed by now.
        closed = (bars.join(request_from, on="symbol", how="left", maintain_order="left")
                  .filter((pl.col("ts") >= pl.col("_from")) & (pl.col("ts") + self.bar_ms <= now)).drop("_from"))  # fmt: skip
        self._closed = closed
        highs = dict(closed.group_by("symbol").agg(pl.col("ts").max()).iter_rows()) if closed.height else {}
        refetched = []
        for index, (asset, answer) in enumerate(fetched):
            report = reports[asset.symbol]
            request = starts[asset.symbol][0]
            if index not in bad:
                report.pages += 1
                # The next request follows the last closed bar, or stays where it was.
                next_ms = highs[asset.symbol] + self.bar_ms if asset.symbol in highs else request
                self._received.append(_Received(asset, answer.record, next_ms, report))
                continue
            try:
                page = self.ingestor.good_page(asset, self.options, request, report, (answer,))
            except (PayloadError, ProviderError) as error:
                self.ingestor.fail(report, error)
                continue
            self._received.append(_Received(asset, page.records[-1], page.next_cursor_ms, report, page))
            refetched.append(page.bars)
        return pl.concat([closed, *refetched]) if refetched else closed

    def _hold(self, new: pl.DataFrame) -> None:
        """Merge new bars into the held ones as the lake merges them: only a real revision replaces a bar."""
        same = new.join(self._waiting, on=["symbol", "ts", *_VALUES], how="semi")
        new = new.join(same.select("symbol", "ts"), on=["symbol", "ts"], how="anti")
        self._waiting = pl.concat([self._waiting.join(new, on=["symbol", "ts"], how="anti"), new]).sort("ts", "symbol")

    def _ready(self, first_unready: int) -> tuple[tuple[int, ...], pl.DataFrame]:
        committed = {s: c.high_ms for s, c in self._cursors.items() if c.high_ms is not None}  # type: ignore[union-attr]
        if not committed:
            return (), pl.DataFrame()
        leader = max(committed.values())
        # A series without any committed bar, or lagging by more than stall_bars, holds nothing back.
        floor = min(h for h in committed.values() if h >= leader - self.stall_bars * self.bar_ms)
        if floor < first_unready:
            return (), pl.DataFrame()
        bars = self._waiting.filter(pl.col("ts") <= floor)
        self._waiting = self._waiting.filter(pl.col("ts") > floor)
        ready = tuple(bars["ts"].unique(maintain_order=True).to_list())
        self.ready_after_ms = max(ready, default=self.ready_after_ms)
        return ready, bars

    def settle(self) -> None:
        """Write the last poll down: evidence, lake and cursor per series (the ingestion pipeline's order), then drop its pending pages."""
        if not self._received:
            return
        parts = self._closed.partition_by("symbol", as_dict=True) if self._closed.height else {}
        for received in self._received:
            symbol = received.asset.symbol
            page = received.page
            if page is None:
                page = OhlcvPage(parts.get((symbol,), self._closed.clear()), (received.record,), received.next_ms, True)
            cursor = self.state.cursor(self.source, symbol, self.timeframe)
            start = self.options.start_ms if cursor is None else cursor.next_ms
            done = self.ingestor.apply_page(received.asset, self.timeframe, page, max(start, page.next_cursor_ms), received.report)
            self._cursors[symbol] = done  # type: ignore[index]
        with self.state.transaction():
            for received in self._received:
                self.state.drop_pending_page(self.source, received.asset.symbol, self.timeframe)
        self._received = []


def history(lake_root: Path, source: str, timeframe: str, symbols: Sequence[str], end_ms: int, bars: int) -> pl.DataFrame:
    """Return the ``bars`` bar periods of history before ``end_ms`` from the lake (warm-up of the features)."""
    bar_ms = TIMEFRAME_MS[timeframe]
    return lake.read_ohlcv(lake_root, source, timeframe, list(symbols), end_ms - bars * bar_ms, end_ms)
