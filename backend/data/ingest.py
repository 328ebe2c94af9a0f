"""Backfill and incremental ingestion from per-(source, symbol, timeframe) cursors, with evidence.

One page at a time, per series:

1. fetch (the body is in the raw store before anything reads it);
2. parse; a bad page is quarantined (evidence with the raw digest), refetched up to a bound, and
   never reaches the lake;
3. assess the valid bars against the lake (revisions, late arrivals, gaps) and commit that evidence;
4. write the lake (each file atomically); 5. commit the cursor and the run's next request.

A crash between any two steps repeats the page on restart: evidence is de-duplicated by fingerprint
and an identical bar is never rewritten, so the result has no duplicate, torn or missing rows. The
restart continues the interrupted run's page sequence (the lookback is applied once, when a run
starts), so it fetches the pages the uninterrupted run would have fetched and the month files come
out byte for byte the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from backend.clock import Clock
from backend.config.schema import AssetSpec
from backend.data import lake
from backend.data.lake import TIMEFRAME_MS
from backend.data.normalize import BadPayload, batch_id_for
from backend.data.providers.base import Fetched, OhlcvPage, OhlcvProvider
from backend.data.raw import RawRecord
from backend.data.reconcile import assess_bars, series_ts
from backend.data.state import Cursor, Evidence, EvidenceKind, IngestState, Resolution
from backend.errors import PayloadError, ProviderError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class IngestOptions:
    """What one ingestion run does.

    ``start_ms`` is where a series without a cursor starts (the beginning of the history asked for);
    ``lookback_bars`` re-reads that many bars before the cursor to catch revisions and late bars;
    ``max_bad_pages`` bounds the refetches of a quarantined page; ``max_pages`` bounds pages per
    series (None: until the provider has nothing newer).
    """

    timeframe: str
    start_ms: int
    lookback_bars: int = 0
    max_bad_pages: int = 3
    max_pages: int | None = None


@dataclass
class SeriesReport:
    """What happened to one series in one run."""

    source: str
    symbol: str
    timeframe: str
    pages: int = 0
    bars: int = 0
    files_written: int = 0
    quarantined: int = 0
    evidence: int = 0
    error: str | None = None


@dataclass(frozen=True)
class _RunStep:
    """A page of a run (not a gap refetch): where the run's next page starts, None when the page was its last."""

    next_request_ms: int | None


@dataclass
class _Eta:
    total_ms: int
    monotonic: Callable[[], float]
    started: float = field(default=0.0)
    done_ms: int = 0

    def line(self, pace_seconds: float | None) -> str:
        elapsed = self.monotonic() - self.started
        share = self.done_ms / self.total_ms if self.total_ms else 1.0
        eta = elapsed / share * (1.0 - share) if share > 0 else math.inf
        text = f"{share:6.1%} done, ETA {eta:,.0f} s" if math.isfinite(eta) else f"{share:6.1%} done, ETA unknown"
        if pace_seconds:
            text += f" (rate limited: at least {pace_seconds:,.0f} s at the current pace)"
        return text


class Ingestor:
    """Run backfills and incremental ingests of one provider into the lake.

    Parameters
    ----------
    lake_root : Path
        Lake root (``$ACTS_HOME/lake``).
    provider : OhlcvProvider
        Where bars come from.
    state : IngestState
        Cursors, batches and evidence.
    clock : Clock
        ``now``: which bars are closed, and the stamps of records.
    progress : callable
        Receives one line per page (counts, share done, time left).
    monotonic : callable
        Seconds for the time-left estimate.
    """

    def __init__(
        self,
        lake_root: Path,
        provider: OhlcvProvider,
        state: IngestState,
        clock: Clock,
        progress: Progress,
        monotonic: Callable[[], float],
    ) -> None:
        self.lake_root = lake_root
        self.provider = provider
        self.state = state
        self.clock = clock
        self.progress = progress
        self.monotonic = monotonic

    # ------------------------------------------------------------- runs
    def run(self, assets: Sequence[AssetSpec], options: IngestOptions) -> list[SeriesReport]:
        """Ingest every asset's series from its cursor (or ``options.start_ms``) up to now.

        A series whose provider fails (after retries) or whose page stays bad is reported with its
        error; the others still run. Temporaries a killed writer left in the lake are swept first.
        """
        lake.sweep_temporaries(self.lake_root, self.progress)
        ordered = sorted(assets, key=lambda a: a.symbol)
        reports = {a.symbol: SeriesReport(self.provider.source, a.symbol, options.timeframe) for a in ordered}
        starts: dict[str, int] = {}
        for asset in ordered:
            try:
                starts[asset.symbol] = self._start(asset, options)
            except ProviderError as error:
                self._fail(reports[asset.symbol], error)
        now = self.clock.now_ms()
        eta = _Eta(sum(max(0, now - s) for s in starts.values()), self.monotonic, self.monotonic())
        for asset in ordered:
            if asset.symbol not in starts:
                continue
            report = reports[asset.symbol]
            try:
                self._run_series(asset, options, starts[asset.symbol], report, eta)
            except (ProviderError, PayloadError) as error:
                self._fail(report, error)
        return list(reports.values())

    def good_page(self, asset: AssetSpec, options: IngestOptions, start_ms: int, report: SeriesReport,
                  fetched: tuple[Fetched, ...]) -> OhlcvPage:  # fmt: skip
        """Parse a page fetched elsewhere; quarantine it and refetch when it is bad, as a run does.

        Raises
        ------
        PayloadError
            When the page stays bad after ``options.max_bad_pages`` refetches (the lake is unchanged).
        ProviderError
            When a refetch fails.
        """
        page = self._good_page(asset, options.timeframe, start_ms, None, options, report, fetched)
        report.pages += 1
        return page

    def apply_page(self, asset: AssetSpec, timeframe: str, page: OhlcvPage, next_ms: int, report: SeriesReport) -> Cursor:
        """Record a run's last page of a series as a run does: evidence, lake, then cursor; return the cursor.

        Applying the same page again changes nothing (evidence is de-duplicated, equal bars are not rewritten).
        """
        cursor = self.state.cursor(self.provider.source, asset.symbol, timeframe)
        return self._apply(asset, timeframe, page, cursor, next_ms, report, _RunStep(None))

    def fail(self, report: SeriesReport, error: Exception) -> None:
        """Report a series' failure (its error, and one progress line)."""
        self._fail(report, error)

    def _fail(self, report: SeriesReport, error: Exception) -> None:
        report.error = str(error)
        self.progress(f"{report.source} {report.symbol} {report.timeframe}: FAILED: {error}")

    def follow(
        self,
        assets: Sequence[AssetSpec],
        options: IngestOptions,
        should_stop: Callable[[int], bool],
        wait: Callable[[float], None],
        interval_seconds: float,
    ) -> list[SeriesReport]:
        """Ingest repeatedly, waiting ``interval_seconds`` between rounds, until ``should_stop(rounds_done)``."""
        reports: list[SeriesReport] = []
        rounds = 0
        while not should_stop(rounds):
            reports.extend(self.run(assets, options))
            rounds += 1
            if not should_stop(rounds):
                wait(interval_seconds)
        return reports

    def _start(self, asset: AssetSpec, options: IngestOptions) -> int:
        cursor = self.state.cursor(self.provider.source, asset.symbol, options.timeframe)
        if cursor is not None:
            return cursor.next_ms
        # Starting at the provider's first day saves empty requests and gives the estimate its real span.
        first = self.provider.history_start_ms(asset)
        return options.start_ms if first is None else max(options.start_ms, first)

    def _pace(self, remaining_ms: int, timeframe: str) -> float | None:
        limiter = self.provider.fetcher.limiter
        page_limit = getattr(self.provider, "page_limit", None)
        if not limiter.interval or page_limit is None:
            return None
        return limiter.seconds_for(math.ceil(remaining_ms / (page_limit * TIMEFRAME_MS[timeframe])))

    def _run_series(
        self, asset: AssetSpec, options: IngestOptions, start_ms: int, report: SeriesReport, eta: _Eta
    ) -> None:
        source, symbol, timeframe = self.provider.source, asset.symbol, options.timeframe
        bar_ms = TIMEFRAME_MS[timeframe]
        cursor = self.state.cursor(source, symbol, timeframe)
        request_from = start_ms
        resume = self.state.resume_point(source, symbol, timeframe)
        if resume is not None:
            # An unfinished run (killed, failed or stopped by max_pages) is continued with the requests it
            # would have made: the lookback is not applied again, so the pages (and their batch ids) are the
            # uninterrupted run's.
            request_from = resume
        elif cursor is not None and options.lookback_bars:
            request_from = max(options.start_ms, cursor.next_ms - options.lookback_bars * bar_ms)
        position = start_ms
        while options.max_pages is None or report.pages < options.max_pages:
            page = self._good_page(asset, timeframe, request_from, None, options, report)
            report.pages += 1
            if report.pages == 1 and page.bars.height and int(page.bars["ts"][0]) > position:
                # History starts later than asked: that span was never there to fetch.
                eta.total_ms -= int(page.bars["ts"][0]) - position
                position = int(page.bars["ts"][0])
            finished = page.complete or page.next_cursor_ms <= request_from
            cursor = self._apply(
                asset, timeframe, page, cursor, max(position, page.next_cursor_ms), report,
                _RunStep(None if finished else page.next_cursor_ms),
            )  # fmt: skip
            eta.done_ms += max(0, cursor.next_ms - position)
            position = cursor.next_ms
            remaining = max(0, eta.total_ms - eta.done_ms)  # over every series of the run
            self.progress(
                f"{source} {symbol} {timeframe}: page {report.pages}, {report.bars} bars; "
                f"{eta.line(self._pace(remaining, timeframe))}"
            )
            if finished:
                break
            request_from = page.next_cursor_ms

    def _good_page(
        self, asset: AssetSpec, timeframe: str, start_ms: int, end_ms: int | None, options: IngestOptions,
        report: SeriesReport, first: tuple[Fetched, ...] | None = None,
    ) -> OhlcvPage:  # fmt: skip
        """Fetch and parse one page (``first``: parse that one first); quarantine and refetch a bad one up to ``max_bad_pages`` times."""
        quarantined: list[int] = []
        while True:
            record = None
            try:
                if first is not None:
                    # A page already fetched (the live feed's poll): its own raw row is quarantined if it is bad.
                    fetched, first = first, None
                    record = fetched[-1].record
                else:
                    fetched = self.provider.fetch(asset, timeframe, start_ms, end_ms)
                page = self.provider.parse(fetched, asset, timeframe, start_ms, self.clock.now_ms())
            except BadPayload as error:
                quarantined.append(self._quarantine(asset, timeframe, start_ms, error, report, record))
                if len(quarantined) > options.max_bad_pages:
                    raise PayloadError(
                        f"{self.provider.source} {asset.symbol} {timeframe}: page from {start_ms} stayed bad after "
                        f"{options.max_bad_pages} refetches; last problem: {error}; the lake is unchanged"
                    ) from None
                continue
            with self.state.transaction():
                for evidence_id in quarantined:
                    self.state.resolve(evidence_id, Resolution.REFETCHED, page.records[-1].sha256, self.clock.now_ms())
            return page

    def _quarantine(self, asset: AssetSpec, timeframe: str, start_ms: int, error: BadPayload, report: SeriesReport,
                    record: RawRecord | None = None) -> int:  # fmt: skip
        record = self.provider.fetcher.last_record if record is None else record
        sha = record.sha256 if record is not None else ""
        batch_id = batch_id_for(self.provider.source, [sha])
        detail = {"problem": error.problem.value, "message": str(error), "raw_sha256": sha,
                  "raw_id": None if record is None else record.id,
                  "endpoint": None if record is None else record.endpoint}  # fmt: skip
        evidence = Evidence(EvidenceKind.QUARANTINE, self.provider.source, asset.symbol, timeframe, start_ms, None,
                            detail, Resolution.OPEN, batch_id)  # fmt: skip
        now = self.clock.now_ms()
        with self.state.transaction():
            self.state.add_evidence(evidence, now)
            if error.problem.value == "duplicate":
                self.state.add_evidence(
                    Evidence(EvidenceKind.DUPLICATE, self.provider.source, asset.symbol, timeframe, start_ms, None,
                             detail, Resolution.REJECTED, batch_id), now)  # fmt: skip
            self.state.record_batch(batch_id, self.provider.source, asset.symbol, timeframe, "quarantined", 0,
                                    [] if record is None else [record.id], now)  # fmt: skip
        report.quarantined += 1
        self.progress(f"{self.provider.source} {asset.symbol} {timeframe}: page quarantined: {error}")
        (row,) = [e for e in self.state.evidence(EvidenceKind.QUARANTINE, self.provider.source, asset.symbol, timeframe)
                  if e.detail == detail and e.ts_start == start_ms]  # fmt: skip
        return row.id

    def _apply(
        self, asset: AssetSpec, timeframe: str, page: OhlcvPage, cursor: Cursor | None, next_ms: int,
        report: SeriesReport, step: _RunStep | None = None,
    ) -> Cursor:  # fmt: skip
        """Record what the page changes, write it, then move the cursor (and a run's resume point, with it)."""
        source, symbol = self.provider.source, asset.symbol
        bars = page.bars
        high = None if cursor is None else cursor.high_ms
        now = self.clock.now_ms()
        if bars.height:
            bar_ms = TIMEFRAME_MS[timeframe]
            first, after = int(bars["ts"].min()), int(bars["ts"].max()) + bar_ms  # type: ignore[arg-type]
            gaps = [g for g in self.state.evidence(EvidenceKind.GAP, source, symbol, timeframe, Resolution.OPEN)
                    if int(g.ts_start or 0) < after and int(g.ts_end or 0) > first]  # fmt: skip
            span_start = min([first, *(int(g.ts_start or 0) for g in gaps)])
            span_end = max([after, *(int(g.ts_end or 0) for g in gaps)])
            known = series_ts(self.lake_root, source, timeframe, symbol, span_start, span_end)
            conflicts = lake.conflicting_bars(self.lake_root, bars, timeframe)
            batch_id = str(bars["batch_id"][0])
            found, updates = assess_bars(bars, conflicts, known, cursor, gaps, source, symbol, timeframe, batch_id)
            with self.state.transaction():
                report.evidence += sum(self.state.add_evidence(e, now) for e in found)
                for gap_id, resolution in updates:
                    self.state.resolve(gap_id, resolution, batch_id, now)
                self.state.record_batch(batch_id, source, symbol, timeframe, "writing", bars.height,
                                        [r.id for r in page.records], now)  # fmt: skip
            report.files_written += len(lake.write_ohlcv(self.lake_root, bars, timeframe, supersede=True))
            report.bars += bars.height
            high = max(after - bar_ms, high if high is not None else after - bar_ms)
        new_cursor = Cursor(max(next_ms, cursor.next_ms if cursor is not None else next_ms), high)
        with self.state.transaction():
            if bars.height:
                self.state.record_batch(str(bars["batch_id"][0]), source, symbol, timeframe, "committed", bars.height,
                                        [r.id for r in page.records], now)  # fmt: skip
            self.state.set_cursor(source, symbol, timeframe, new_cursor, now)
            if step is not None:
                self.state.set_resume_point(source, symbol, timeframe, step.next_request_ms, now)
        return new_cursor

    # ------------------------------------------------------------- gap refetch
    def refetch_gaps(self, assets: Sequence[AssetSpec], options: IngestOptions) -> list[SeriesReport]:
        """Ask the provider again for every open gap of the assets' series.

        Bars that arrived since are added (late-arrival evidence, the gap resolved as refetched); a
        window the provider answers empty is accepted as a true gap when the provider can confirm it.
        Temporaries a killed writer left in the lake are swept first.
        """
        lake.sweep_temporaries(self.lake_root, self.progress)
        source, timeframe = self.provider.source, options.timeframe
        reports = []
        for asset in sorted(assets, key=lambda a: a.symbol):
            report = SeriesReport(source, asset.symbol, timeframe)
            for gap in self.state.evidence(EvidenceKind.GAP, source, asset.symbol, timeframe, Resolution.OPEN):
                start, end = int(gap.ts_start or 0), int(gap.ts_end or 0)
                try:
                    page = self._good_page(asset, timeframe, start, end, options, report)
                except (ProviderError, PayloadError) as error:
                    report.error = str(error)
                    break
                report.pages += 1
                window = page.bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
                cursor = self.state.cursor(source, asset.symbol, timeframe)
                if window.height:
                    self._apply(asset, timeframe, OhlcvPage(window, page.records, start, True), cursor,
                                start if cursor is None else cursor.next_ms, report)  # fmt: skip
                elif self.provider.confirms_gaps:
                    with self.state.transaction():
                        self.state.resolve(gap.id, Resolution.ACCEPTED_TRUE_GAP, page.records[-1].sha256,
                                           self.clock.now_ms())  # fmt: skip
            reports.append(report)
        return reports
