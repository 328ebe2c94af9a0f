"""Injected faults and bad input each leave evidence, never a silent change, and never a torn lake."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
from ingest_helpers import BAR_MS, CANARY, START_MS, FakeTime, lake_rows, seeded_bars, universe

from backend.config.schema import AssetSpec
from backend.data.ingest import IngestOptions, Ingestor
from backend.data.lake import lake_files, snapshot
from backend.data.providers import Purpose, Source, open_provider
from backend.data.providers.base import RetryPolicy
from backend.data.raw import RawStore
from backend.data.reconcile import gap_mask
from backend.data.settings import HistDataSettings
from backend.data.state import EvidenceKind, IngestState, Resolution
from backend.errors import ConfigError, ProviderCallRefused
from backend.sandbox.coinapi import CoinApiEmulator
from backend.sandbox.faults import FaultSpec
from backend.sandbox.kraken import KrakenEmulator

N = 600
END_MS = START_MS + N * BAR_MS
FAST_RETRY = RetryPolicy(max_attempts=5, backoff_seconds=0.01, timeout_seconds=2.0)


def assets(*symbols: str) -> list[AssetSpec]:
    by_symbol = {a.symbol: a for a in universe().assets}
    return [by_symbol[s] for s in symbols]


class Harness:
    """An ingestor wired to a base URL, with a fake clock that moves only when the client sleeps."""

    def __init__(self, home: Path, base_url: str, source: Source = Source.COINAPI, page_limit: int | None = None,
                 rate: float | None = None, retry: RetryPolicy = FAST_RETRY, key: str = CANARY,
                 now_ms: int = END_MS + 3_600_000) -> None:  # fmt: skip
        self.home = home
        self.time = FakeTime(now_ms)
        self.settings = HistDataSettings(hist_market_data_api_key=key, hist_market_data_base_url=base_url,
                                         kraken_public_base_url=base_url)  # fmt: skip
        self.raw = RawStore(home / "raw")
        self.state = IngestState(home / "data" / "ingest.sqlite")
        self.provider = open_provider(self.settings, source, self.raw, self.time, self.time.monotonic, self.time.sleep,
                                      rate, retry, page_limit=page_limit)  # fmt: skip
        self.lines: list[str] = []
        self.ingestor = Ingestor(home / "lake", self.provider, self.state, self.time, self.lines.append, self.time.monotonic)

    def run(self, *symbols: str, lookback: int = 0, start: int = START_MS):
        return self.ingestor.run(assets(*symbols), IngestOptions("5m", start, lookback_bars=lookback))

    def evidence(self, kind: EvidenceKind):
        return self.state.evidence(kind)

    def close(self) -> None:
        self.provider.fetcher.close()
        self.raw.close()
        self.state.close()


@pytest.fixture
def harnesses(acts_home: Path) -> Iterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for harness in made:
        harness.close()


def start(emulator, home: Path, made: list[Harness], **kw) -> Harness:
    harness = Harness(home, emulator.start(), **kw)
    made.append(harness)
    return harness


def coinapi(faults: FaultSpec = FaultSpec(), **kw) -> CoinApiEmulator:
    return CoinApiEmulator(seeded_bars(["BTC"], N), faults=faults, api_key=CANARY, universe=universe(), **kw)


def ts(index: int) -> int:
    return START_MS + index * BAR_MS


def test_hidden_bars_become_a_gap_that_a_refetch_accepts_as_true(acts_home: Path, harnesses) -> None:
    with coinapi(FaultSpec(hidden_bars=(ts(100), ts(101)))) as emulator:
        harness = start(emulator, acts_home, harnesses)
        harness.run("BTC")
        (gap,) = harness.evidence(EvidenceKind.GAP)
        assert (gap.ts_start, gap.ts_end, gap.resolution, gap.detail) == (ts(100), ts(102), Resolution.OPEN, {"missing_bars": 2})

        harness.ingestor.refetch_gaps(assets("BTC"), IngestOptions("5m", START_MS))

    (gap,) = harness.evidence(EvidenceKind.GAP)
    assert gap.resolution is Resolution.ACCEPTED_TRUE_GAP
    mask = gap_mask(acts_home / "lake", "coinapi", "5m", ["BTC"], ts(99), ts(103))
    assert mask["present"].to_list() == [True, False, False, True]


def test_a_late_bar_is_recorded_as_late_and_closes_its_gap(acts_home: Path, harnesses) -> None:
    # Request 1 asks /v1/symbols, request 2 the history; the late bar shows from request 3.
    with coinapi(FaultSpec(late_bars={ts(200): 3})) as emulator:
        harness = start(emulator, acts_home, harnesses)
        harness.run("BTC")
        assert [g.resolution for g in harness.evidence(EvidenceKind.GAP)] == [Resolution.OPEN]

        harness.run("BTC", lookback=450)

    (late,) = harness.evidence(EvidenceKind.LATE_ARRIVAL)
    assert (late.ts_start, late.ts_end, late.resolution, late.detail["bars"]) == (ts(200), ts(201), Resolution.ACCEPTED_LATE, 1)
    (gap,) = harness.evidence(EvidenceKind.GAP)
    assert gap.resolution is Resolution.REFETCHED and gap.resolved_by == late.batch_id
    assert lake_rows(acts_home, "coinapi", ["BTC"]).height == N


def test_a_revised_bar_supersedes_the_old_value_which_the_evidence_keeps(acts_home: Path, harnesses) -> None:
    original = seeded_bars(["BTC"], N).filter(pl.col("ts") == ts(590))["close"][0]
    with coinapi(FaultSpec(revised_bars={ts(590): 123.0})) as emulator:
        harness = start(emulator, acts_home, harnesses)
        harness.run("BTC")
        harness.run("BTC", lookback=20)

    (revision,) = harness.evidence(EvidenceKind.REVISION)
    assert revision.ts_start == ts(590) and revision.resolution is Resolution.SUPERSEDED_OLD_KEPT
    assert revision.detail["old"]["close"] == original and revision.detail["new"]["close"] == 123.0
    stored = lake_rows(acts_home, "coinapi", ["BTC"]).filter(pl.col("ts") == ts(590))
    assert stored["close"][0] == 123.0 and stored["low"][0] == 123.0


def test_malformed_and_truncated_pages_are_quarantined_then_refetched(acts_home: Path, harnesses) -> None:
    with coinapi(FaultSpec(malformed_every=2, truncate_every=5)) as emulator:
        harness = start(emulator, acts_home, harnesses, page_limit=100)
        (report,) = harness.run("BTC")

    assert report.error is None and report.quarantined >= 2
    quarantined = harness.evidence(EvidenceKind.QUARANTINE)
    assert {q.detail["problem"] for q in quarantined} == {"malformed"}
    assert all(q.resolution is Resolution.REFETCHED for q in quarantined)
    assert lake_rows(acts_home, "coinapi", ["BTC"]).equals(seeded_bars(["BTC"], N).select(lake_rows(acts_home, "coinapi", ["BTC"]).columns))
    bodies = {r.sha256 for r in harness.raw.records()}
    assert all(q.detail["raw_sha256"] in bodies for q in quarantined)
    assert {b["status"] for b in harness.state.batches()} == {"committed", "quarantined"}


def test_429_5xx_and_timeouts_are_retried_and_every_response_body_is_kept(acts_home: Path, harnesses) -> None:
    faults = FaultSpec(fail_429_every=3, fail_5xx_every=4, timeout_every=7, timeout_seconds=1.0)
    retry = RetryPolicy(max_attempts=6, backoff_seconds=0.01, timeout_seconds=0.3)
    with coinapi(faults) as emulator:
        harness = start(emulator, acts_home, harnesses, page_limit=60, retry=retry)
        (report,) = harness.run("BTC")

    assert report.error is None
    assert lake_rows(acts_home, "coinapi", ["BTC"]).height == N
    statuses = sorted({r.status for r in harness.raw.records()})
    assert statuses[:3] == [200, 429, 500] and set(statuses) <= {200, 429, 500, 502, 503}
    assert harness.provider.fetcher.retries >= 3


def test_after_the_first_429_the_client_paces_itself_to_the_limit(acts_home: Path, harnesses) -> None:
    clock = FakeTime(END_MS + 3_600_000)
    with coinapi(FaultSpec(rate_limit_per_second=2.0), now_ms=clock) as emulator:
        harness = start(emulator, acts_home, harnesses, page_limit=50)
        harness.time = clock
        harness.provider.fetcher.limiter._monotonic = clock.monotonic
        harness.provider.fetcher.limiter._sleep = clock.sleep
        harness.ingestor.clock = clock
        (report,) = harness.run("BTC")
        log = emulator.request_log

    assert report.error is None and report.bars == N
    statuses = [status for _, _, status in log]
    assert statuses.count(429) == 1
    assert 429 not in statuses[statuses.index(429) + 1:]
    assert any("rate limited: at least" in line for line in harness.lines)


def test_a_used_up_quota_stops_the_series_with_a_clear_error(acts_home: Path, harnesses) -> None:
    with coinapi(credit_quota=4) as emulator:  # one credit for /v1/symbols, then one per 100 bars
        harness = start(emulator, acts_home, harnesses, page_limit=100)
        (report,) = harness.run("BTC")

    assert "request quota used up (x-ratelimit-remaining=0" in report.error
    assert lake_rows(acts_home, "coinapi", ["BTC"]).height == 300  # the pages paid for are kept


def test_a_wrong_key_or_an_unknown_symbol_fails_without_retrying(acts_home: Path, harnesses) -> None:
    with coinapi() as emulator:
        harness = start(emulator, acts_home, harnesses, key="wrong-key")
        (report,) = harness.run("BTC")
        assert report.error.startswith("coinapi /v1/symbols answered HTTP 401")
        assert "wrong-key" not in report.error
        good = start(emulator, acts_home, harnesses)
        stranger = assets("BTC")[0].model_copy(update={"symbol": "NOPE", "coinapi_symbol_id": "KRAKEN_SPOT_NOPE_USD"})
        (report,) = good.ingestor.run([stranger], IngestOptions("5m", START_MS))
        log = emulator.request_log

    assert "answered HTTP 550" in report.error
    assert [status for *_, status in log] == [401, 200, 550]


def test_connection_failures_give_up_after_the_retry_budget(acts_home: Path, harnesses) -> None:
    emulator = coinapi()
    url = emulator.start()
    emulator.stop()  # nothing listens there any more
    harness = Harness(acts_home, url, retry=RetryPolicy(max_attempts=3, backoff_seconds=0.01, timeout_seconds=0.5))
    harnesses.append(harness)

    (report,) = harness.run("BTC")

    assert "failed 3 times; last failure: ConnectError" in report.error
    assert harness.time.slept == pytest.approx([0.01, 0.02], abs=1e-3)  # doubling backoff between attempts


def test_kraken_rate_limit_errors_are_retried(acts_home: Path, harnesses) -> None:
    with KrakenEmulator(seeded_bars(["BTC"], N), faults=FaultSpec(fail_429_every=2), universe=universe()) as emulator:
        harness = start(emulator, acts_home, harnesses, source=Source.KRAKEN)
        harness.run("BTC", start=ts(N - 100))
        harness.run("BTC")
        log = emulator.request_log

    assert lake_rows(acts_home, "kraken", ["BTC"]).height == 99
    assert [status for *_, status in log] == [200, 200, 200]
    assert harness.provider.fetcher.retries == 1


def test_training_may_not_open_a_provider_unless_the_policy_allows_it(acts_home: Path) -> None:
    raw = RawStore(acts_home / "raw")
    clock = FakeTime(END_MS)
    refused = HistDataSettings(hist_market_data_api_key=CANARY)
    allowed = HistDataSettings(hist_market_data_api_key=CANARY, force_local_data_for_training=False,
                               allow_provider_calls_during_training=True)  # fmt: skip

    with pytest.raises(ProviderCallRefused, match="ALLOW_PROVIDER_CALLS_DURING_TRAINING=false"):
        open_provider(refused, Source.COINAPI, raw, clock, clock.monotonic, clock.sleep, purpose=Purpose.TRAINING)
    provider = open_provider(allowed, Source.COINAPI, raw, clock, clock.monotonic, clock.sleep, purpose=Purpose.TRAINING)

    assert provider.source == "coinapi"
    assert raw.records() == []  # opening makes no call
    with pytest.raises(ConfigError, match="HIST_MARKET_DATA_API_KEY is required"):
        open_provider(HistDataSettings(), Source.COINAPI, raw, clock, clock.monotonic, clock.sleep)
    raw.close()


class _Canned(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def canned_server(body: bytes) -> ThreadingHTTPServer:
    handler = type("Handler", (_Canned,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def coinapi_item(i: int, price: float = 100.0) -> dict:
    from backend.sandbox.coinapi import iso7

    return {"time_period_start": iso7(ts(i) * 1_000_000), "time_period_end": iso7(ts(i + 1) * 1_000_000),
            "price_open": price, "price_high": price + 1, "price_low": price - 1, "price_close": price,
            "volume_traded": 1.0}  # fmt: skip


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("source", "body", "problem"),
    [
        (Source.COINAPI, b'[{"time_period_start":"2025-01-01T00:00', "malformed"),
        (Source.COINAPI, compact([{"start": 1}]), "schema"),
        (Source.COINAPI, compact([coinapi_item(700), coinapi_item(700)]), "duplicate"),
        (Source.COINAPI, compact([coinapi_item(701), coinapi_item(700)]), "non_monotonic"),
        (Source.COINAPI, compact([coinapi_item(700, price=-3.0)]), "bad_value"),
        (Source.KRAKEN, compact({"error": [], "result": {"XETHZUSD": [], "last": 1}}), "unknown_symbol"),
    ],
)
def test_bad_input_is_kept_raw_quarantined_with_evidence_and_changes_nothing(
    acts_home: Path, harnesses, source: Source, body: bytes, problem: str
) -> None:
    with coinapi() as emulator:
        start(emulator, acts_home, harnesses).run("BTC")
    files = lake_files(acts_home / "lake", "coinapi", "5m", ["BTC"])
    before = snapshot(files, acts_home / "lake")
    server = canned_server(body)
    try:
        harness = Harness(acts_home, f"http://127.0.0.1:{server.server_address[1]}", source=source)
        harnesses.append(harness)
        (report,) = harness.run("BTC", start=ts(700))
    finally:
        server.shutdown()
        server.server_close()

    assert f"{problem}: " in report.error and "stayed bad after 3 refetches" in report.error
    assert "the lake is unchanged" in report.error
    assert hashlib.sha256(body).hexdigest() in {r.sha256 for r in harness.raw.records()}
    quarantined = harness.evidence(EvidenceKind.QUARANTINE)
    assert quarantined and {q.detail["problem"] for q in quarantined} == {problem}
    assert all(q.resolution is Resolution.OPEN for q in quarantined)
    assert snapshot(lake_files(acts_home / "lake", "coinapi", "5m", ["BTC"]), acts_home / "lake") == before
    assert not (acts_home / "lake" / "ohlcv" / "source=kraken").exists()
    if problem == "duplicate":
        assert harness.evidence(EvidenceKind.DUPLICATE)[0].resolution is Resolution.REJECTED


class _Sequence(BaseHTTPRequestHandler):
    replies: list[tuple[int, dict[str, str], bytes]] = []

    def do_GET(self) -> None:  # noqa: N802
        status, headers, body = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_an_unreadable_retry_after_falls_back_to_the_backoff(acts_home: Path, harnesses) -> None:
    replies = [(429, {"Retry-After": "soon"}, b'{"message":"slow down"}'), (200, {}, compact([coinapi_item(0)]))]
    handler = type("Handler", (_Sequence,), {"replies": list(replies)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        harness = Harness(acts_home, f"http://127.0.0.1:{server.server_address[1]}")
        harnesses.append(harness)
        (report,) = harness.run("BTC")
    finally:
        server.shutdown()
        server.server_close()

    assert report.error is None and report.bars == 1
    assert harness.time.slept[0] == pytest.approx(0.01, abs=1e-3)
    assert harness.provider.fetcher.limiter.throttled == 1


def busy_trades(n_first: int, bars_after: int) -> pl.DataFrame:
    """``n_first`` trades inside the first bar, then ten trades in each of the next ``bars_after`` bars."""
    first = [(START_MS + i, 100.0 + (i % 7), 0.5, i + 1) for i in range(n_first)]
    later = [(ts(b) + 1000 * k, 200.0 + b, 1.0, n_first + b * 10 + k + 1) for b in range(1, bars_after + 1) for k in range(10)]
    frame = pl.DataFrame(first + later, schema=["ts_ms", "price", "volume", "trade_id"], orient="row")
    return frame.with_columns(symbol=pl.lit("BTC"), side=pl.lit("b"), ordertype=pl.lit("m"))


def test_trades_of_one_busy_bar_spanning_pages_rebuild_one_whole_bar(acts_home: Path, harnesses) -> None:
    trades = busy_trades(1500, 60)  # pages: 1000 trades of bar 0; 500 of bar 0 and 500 later ones; the rest
    with KrakenEmulator(seeded_bars(["BTC"], 10), trades=trades, universe=universe()) as emulator:
        # Bar 61 has not ended: nothing after bar 60 is final.
        harness = start(emulator, acts_home, harnesses, source=Source.KRAKEN_TRADES, now_ms=ts(61) + 1)
        (report,) = harness.run("BTC")

    rebuilt = lake_rows(acts_home, "kraken_trades", ["BTC"])
    assert report.error is None and report.pages == 2
    assert rebuilt["ts"].to_list() == [ts(i) for i in range(61)]
    first = rebuilt.row(0, named=True)
    assert first["volume"] == pytest.approx(1500 * 0.5)
    assert (first["open"], first["high"], first["low"], first["close"]) == (100.0, 106.0, 100.0, 100.0 + 1499 % 7)
    assert rebuilt.row(60, named=True)["close"] == 260.0
    assert harness.state.cursor("kraken_trades", "BTC", "5m").next_ms == ts(61)


def test_a_bar_busier_than_the_page_budget_stops_the_series_without_writing(acts_home: Path, harnesses) -> None:
    with KrakenEmulator(seeded_bars(["BTC"], 10), trades=busy_trades(2500, 2), universe=universe()) as emulator:
        harness = start(emulator, acts_home, harnesses, source=Source.KRAKEN_TRADES)
        harness.provider.max_pages = 2
        (report,) = harness.run("BTC")

    assert (report.pages, report.bars, report.error) == (1, 0, None)
    assert harness.state.cursor("kraken_trades", "BTC", "5m").next_ms == START_MS


def test_kraken_public_reference_endpoints_are_read_through_the_raw_store(acts_home: Path, harnesses) -> None:
    from backend.data.normalize import BadPayload
    from backend.data.providers.kraken_public import KrakenPublic

    with KrakenEmulator(seeded_bars(["BTC"], 10), universe=universe(), now_ms=lambda: END_MS) as emulator:
        harness = start(emulator, acts_home, harnesses, source=Source.KRAKEN)
        public = KrakenPublic(harness.provider.fetcher)
        assert public.server_time_ms() == END_MS
        assert public.system_status() == "online"
        assert public.assets()["XXBT"]["altname"] == "XBT"
        assert public.asset_pairs(["XBTUSD"])["XXBTZUSD"]["wsname"] == "XBT/USD"
        with pytest.raises(BadPayload, match="api_error: Kraken /0/public/AssetPairs: \\['EQuery:Unknown asset pair'\\]"):
            public.asset_pairs(["NOPEUSD"])
    with KrakenEmulator(seeded_bars(["BTC"], 10), faults=FaultSpec(malformed_every=1), universe=universe()) as emulator:
        public = KrakenPublic(start(emulator, acts_home, harnesses, source=Source.KRAKEN).provider.fetcher)
        with pytest.raises(BadPayload, match="malformed: Kraken /0/public/Time body is not JSON"):
            public.server_time_ms()

    assert {r.endpoint for r in harness.raw.records()} >= {"/0/public/Time", "/0/public/Assets", "/0/public/AssetPairs"}


def test_coinapi_trades_history_is_kept_raw(acts_home: Path, harnesses) -> None:
    trades = busy_trades(5, 1)
    with CoinApiEmulator(seeded_bars(["BTC"], 10), trades=trades, api_key=CANARY, universe=universe()) as emulator:
        harness = start(emulator, acts_home, harnesses)
        fetched = harness.provider.fetch_trades(assets("BTC")[0], START_MS, limit=100)

    items = json.loads(fetched.body)
    assert len(items) == 15 and items[0]["symbol_id"] == "KRAKEN_SPOT_BTC_USD"
    assert harness.raw.read(fetched.record) == fetched.body


def test_a_gap_refetch_adds_late_bars_and_reports_provider_failures(acts_home: Path, harnesses) -> None:
    with coinapi(FaultSpec(late_bars={ts(50): 3})) as emulator:
        harness = start(emulator, acts_home, harnesses)
        harness.run("BTC")
        harness.ingestor.refetch_gaps(assets("BTC"), IngestOptions("5m", START_MS))
    (gap,) = harness.evidence(EvidenceKind.GAP)
    assert gap.resolution is Resolution.REFETCHED
    assert [e.ts_start for e in harness.evidence(EvidenceKind.LATE_ARRIVAL)] == [ts(50)]

    with coinapi(FaultSpec(hidden_bars=(ts(60),))) as emulator:
        start(emulator, acts_home / "other", harnesses).run("BTC")
        refused = start(emulator, acts_home / "other", harnesses, key="revoked-key")
        (report,) = refused.ingestor.refetch_gaps(assets("BTC"), IngestOptions("5m", START_MS))
    assert "answered HTTP 401" in report.error
    assert refused.evidence(EvidenceKind.GAP)[0].resolution is Resolution.OPEN


def test_kraken_ohlc_cannot_confirm_a_gap_so_it_stays_open(acts_home: Path, harnesses) -> None:
    with KrakenEmulator(seeded_bars(["BTC"], 100), faults=FaultSpec(hidden_bars=(ts(60),)), universe=universe()) as emulator:
        harness = start(emulator, acts_home, harnesses, source=Source.KRAKEN)
        harness.run("BTC")
        (report,) = harness.ingestor.refetch_gaps(assets("BTC"), IngestOptions("5m", START_MS))

    assert report.pages == 1 and report.error is None
    assert [g.resolution for g in harness.evidence(EvidenceKind.GAP)] == [Resolution.OPEN]
