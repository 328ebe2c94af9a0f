"""The live feed's short decision path hands on, keeps and writes exactly what the ingestion pipeline does.

The reference is the feed as it was before the decision path was shortened: the backfill's pipeline
(:meth:`Ingestor.run`) once per poll, then the ready bars read back from the lake. Both run against
their own emulator (same bars, same faults, same clock); every poll must hand on the same bar times
and the same bars, and the lake files, the evidence, the cursors and the raw manifest must come out
the same, also when the feed is killed between handing a poll on and writing it down.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest

from backend.clock import SimulatedClock
from backend.config.compose import compose_spec
from backend.config.schema import TIMEFRAME_MS
from backend.data import lake
from backend.data.ingest import IngestOptions, Ingestor
from backend.data.live_feed import LiveBarFeed, Poll
from backend.data.providers.kraken_ccxt import CcxtKrakenFetcher
from backend.data.providers.kraken_public import KrakenOhlcProvider
from backend.data.raw import RawStore
from backend.data.simulator import simulate_ohlcv
from backend.data.state import IngestState
from backend.kraken.client import NonceSource, make_client
from backend.sandbox.faults import FaultSpec
from backend.sandbox.kraken import KrakenEmulator

START_MS = 1_735_689_600_000
BAR_MS = TIMEFRAME_MS["5m"]
SYMBOLS = ("BTC", "ETH", "SOL")
FIRST_POLL_BAR = 30
POLLS = 16
# Data faults keyed on bar times only (the two feeds number their requests alike only without refetches).
DATA_FAULTS = FaultSpec(
    hidden_bars=(START_MS + 36 * BAR_MS,),
    # Poll k sends requests 3k-2..3k; bar 40 closes at poll 12 and is served from poll 14 on, inside its lookback.
    late_bars={START_MS + 40 * BAR_MS: 40},
    revised_bars={START_MS + 28 * BAR_MS: 123.0},  # served by the first poll, revised when the lookback reads it again
)
BAD_PAGE_FAULTS = FaultSpec(duplicated_bars=(START_MS + 34 * BAR_MS,), disordered_bars=(START_MS + 38 * BAR_MS,))


class PipelineFeed:
    """The reference: the ingestion pipeline per series, every poll, then the ready bars read from the lake."""

    def __init__(self, ingestor: Ingestor, state: IngestState, assets: list, start_ms: int) -> None:
        self.ingestor, self.state, self.assets = ingestor, state, assets
        self.options = IngestOptions("5m", start_ms, lookback_bars=2, max_pages=1)
        self.ready_after_ms: int | None = None

    def poll(self) -> Poll:
        reports = tuple(self.ingestor.run(self.assets, self.options))
        committed = {}
        for asset in self.assets:
            cursor = self.state.cursor("kraken", asset.symbol, "5m")
            if cursor is not None and cursor.high_ms is not None:
                committed[asset.symbol] = cursor.high_ms
        if not committed:
            return Poll((), reports, pl.DataFrame())
        leader = max(committed.values())
        floor = min(h for h in committed.values() if h >= leader - 2 * BAR_MS)
        start = self.options.start_ms if self.ready_after_ms is None else self.ready_after_ms + BAR_MS
        if floor < start:
            return Poll((), reports, pl.DataFrame())
        bars = lake.read_ohlcv(self.ingestor.lake_root, "kraken", "5m", [a.symbol for a in self.assets], start, floor + BAR_MS)
        ready = tuple(sorted(set(bars["ts"].to_list())))
        self.ready_after_ms = max(ready, default=self.ready_after_ms)
        return Poll(ready, reports, bars.sort("ts", "symbol"))


class Home:
    """One feed's emulator, raw store, ingest state and lake."""

    def __init__(self, bars: pl.DataFrame, root: Path, clock: SimulatedClock, faults: FaultSpec, pipeline: bool) -> None:
        self.root, self.clock = root, clock
        self.emulator = KrakenEmulator(bars, "5m", faults, now_ms=clock.now_ms)
        self.emulator.start()
        self.assets = [a for a in compose_spec([]).universe.assets if a.symbol in SYMBOLS]
        self.feed = self.open(pipeline)

    def open(self, pipeline: bool = False) -> LiveBarFeed | PipelineFeed:
        self.raw = RawStore(self.root / "raw")
        self.state = IngestState(self.root / "ingest.sqlite")
        client = make_client(self.emulator.base_url, None, NonceSource(lambda: 0), 1500, rate_limit=False)
        fetcher = CcxtKrakenFetcher(client, self.raw, self.clock, lambda seconds: None)
        ingestor = Ingestor(self.root / "lake", KrakenOhlcProvider(fetcher, "kraken"), self.state, self.clock,
                            lambda line: None, lambda: 0.0)  # fmt: skip
        if pipeline:
            return PipelineFeed(ingestor, self.state, self.assets, START_MS)
        return LiveBarFeed(ingestor, self.state, self.assets, "5m", START_MS)

    def kill(self) -> None:
        """Drop the feed without writing its last poll down (what SIGKILL leaves), and close the stores."""
        self.raw.close()
        self.state.close()

    def facts(self) -> dict[str, object]:
        """The lake's bytes, the evidence, cursors and batches, and the raw manifest, without ids and stamps."""
        files = sorted((self.root / "lake").rglob("*.parquet"))
        state = IngestState(self.root / "ingest.sqlite")
        raw = RawStore(self.root / "raw")
        try:
            return {
                "lake": {p.relative_to(self.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
                "evidence": [(e.kind, e.symbol, e.ts_start, e.ts_end, e.detail, e.resolution, e.batch_id) for e in state.evidence()],
                "cursors": state.cursors(),
                "batches": sorted((b["batch_id"], b["symbol"], b["status"], b["rows"]) for b in state.batches()),
                "raw": [(r.endpoint, r.params, r.status, r.sha256) for r in raw.records()],
                "pending": state.pending_pages("kraken", "5m"),
            }
        finally:
            state.close()
            raw.close()

    def stop(self) -> None:
        self.emulator.stop()


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_ohlcv(list(SYMBOLS), compose_spec([]).universe.clusters, "5m", START_MS, 60, seed=11)


def poll_both(fast: Home, reference: Home, polls: int) -> list[Poll]:
    """Poll both feeds ``polls`` times (one bar apart), settling the fast one as its session does; return its polls."""
    seen = []
    for _ in range(polls):
        got, want = fast.feed.poll(), reference.feed.poll()
        assert got.ready_ts == want.ready_ts
        assert got.bars.equals(want.bars)
        assert [(r.symbol, r.pages, r.error is None) for r in got.reports] == [
            (r.symbol, r.pages, r.error is None) for r in want.reports
        ]
        fast.feed.settle()  # type: ignore[union-attr]
        seen.append(got)
        fast.clock.advance_to(fast.clock.now_ms() + BAR_MS)
        reference.clock.advance_to(reference.clock.now_ms() + BAR_MS)
    return seen


@pytest.mark.parametrize("faults", [FaultSpec(), DATA_FAULTS, BAD_PAGE_FAULTS], ids=["clean", "gaps-late-revised", "bad-pages"])
def test_the_short_path_hands_on_and_writes_what_the_pipeline_does(bars: pl.DataFrame, tmp_path: Path, faults: FaultSpec) -> None:
    at = START_MS + FIRST_POLL_BAR * BAR_MS + 1
    fast = Home(bars, tmp_path / "fast", SimulatedClock(at), faults, pipeline=False)
    reference = Home(bars, tmp_path / "reference", SimulatedClock(at), faults, pipeline=True)
    try:
        polls = poll_both(fast, reference, POLLS)
        facts = fast.facts()
        assert facts == reference.facts()
    finally:
        fast.stop()
        reference.stop()
    assert sum(len(p.ready_ts) for p in polls) >= POLLS - 4  # bars were handed on
    kinds = {e[0].value for e in facts["evidence"]}  # type: ignore[attr-defined]
    expected = {"clean": set(), "gaps-late-revised": {"gap", "late_arrival", "revision"},
                "bad-pages": {"quarantine", "duplicate"}}  # fmt: skip
    assert kinds == expected["clean" if faults == FaultSpec() else "gaps-late-revised" if faults == DATA_FAULTS else "bad-pages"]
    assert facts["pending"] == {}


@pytest.mark.parametrize("killed_after", [1, 5])
def test_a_feed_killed_before_writing_a_poll_down_applies_it_from_the_raw_store_on_restart(
    bars: pl.DataFrame, tmp_path: Path, killed_after: int
) -> None:
    at = START_MS + FIRST_POLL_BAR * BAR_MS + 1
    fast = Home(bars, tmp_path / "fast", SimulatedClock(at), DATA_FAULTS, pipeline=False)
    reference = Home(bars, tmp_path / "reference", SimulatedClock(at), DATA_FAULTS, pipeline=True)
    try:
        poll_both(fast, reference, killed_after)
        handed_on = fast.feed.poll()  # handed on (decided) ...
        assert fast.facts()["pending"]  # ... and only pending: the lake does not have it yet
        want = reference.feed.poll()
        assert handed_on.bars.equals(want.bars)
        fast.kill()
        fast.feed = fast.open()
        fast.feed.ready_after_ms = handed_on.ready_ts[-1] if handed_on.ready_ts else reference.feed.ready_after_ms  # type: ignore[attr-defined]
        fast.feed.open()  # type: ignore[union-attr]
        assert fast.facts() == reference.facts()  # the killed poll is in the lake, as if it had been written down
        for home in (fast, reference):
            home.clock.advance_to(home.clock.now_ms() + BAR_MS)
        poll_both(fast, reference, POLLS - killed_after - 1)
        assert fast.facts() == reference.facts()
    finally:
        fast.stop()
        reference.stop()


def test_a_page_bad_once_is_quarantined_and_refetched_in_the_same_poll(bars: pl.DataFrame, tmp_path: Path) -> None:
    at = START_MS + FIRST_POLL_BAR * BAR_MS + 1
    fast = Home(bars, tmp_path / "fast", SimulatedClock(at), FaultSpec(malformed_every=7), pipeline=False)
    clean = Home(bars, tmp_path / "clean", SimulatedClock(at), FaultSpec(), pipeline=True)
    try:
        poll_both(fast, clean, 6)  # the same bars are handed on as without the fault
        quarantined = [e for e in fast.facts()["evidence"] if e[0].value == "quarantine"]  # type: ignore[union-attr]
    finally:
        fast.stop()
        clean.stop()
    assert quarantined and {e[5].value for e in quarantined} == {"refetched"}


def test_a_refused_series_is_reported_and_the_others_are_handed_on(bars: pl.DataFrame, tmp_path: Path) -> None:
    at = START_MS + FIRST_POLL_BAR * BAR_MS + 1
    home = Home(bars, tmp_path / "home", SimulatedClock(at), FaultSpec(), pipeline=False)
    try:
        unknown = home.assets[0].model_copy(update={"symbol": "NOPE", "kraken": home.assets[0].kraken.model_copy(update={"altname": "NOPEUSD"})})
        feed = LiveBarFeed(home.feed.ingestor, home.state, [*home.assets, unknown], "5m", START_MS)
        poll = feed.poll()
    finally:
        home.stop()
    errors = {r.symbol: r.error for r in poll.reports}
    assert "EQuery:Unknown asset pair" in str(errors["NOPE"]) and all(errors[s] is None for s in SYMBOLS)
    assert set(poll.bars["symbol"].unique().to_list()) == set(SYMBOLS)


def test_a_resume_point_is_asked_from_and_pending_pages_of_other_symbols_are_left(bars: pl.DataFrame, tmp_path: Path) -> None:
    at = START_MS + FIRST_POLL_BAR * BAR_MS + 1
    home = Home(bars, tmp_path / "home", SimulatedClock(at), FaultSpec(), pipeline=False)
    resume = START_MS + 20 * BAR_MS
    try:
        home.state.set_resume_point("kraken", "BTC", "5m", resume, at)  # an unfinished run of BTC asks from here
        home.feed.poll()  # handed on, not written down
        asked = [r.params for r in home.raw.records() if '"XBTUSD"' in r.params]
        home.kill()
        home.feed = home.open()
        only_btc = LiveBarFeed(home.feed.ingestor, home.state, home.assets[:1], "5m", START_MS)  # type: ignore[union-attr]
        only_btc.open()
        left = sorted(home.state.pending_pages("kraken", "5m"))
        home.kill()
    finally:
        home.stop()
    assert asked == [f'{{"interval":"5","pair":"XBTUSD","since":"{resume // 1000 - 1}"}}']
    assert left == ["ETH", "SOL"]  # another session's pages stay pending for it
