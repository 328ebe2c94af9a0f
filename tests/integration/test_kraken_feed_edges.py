"""The live feed's edges against the emulator: no bar committed yet, and the ccxt fetcher's retries and refusals."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from backend.clock import SimulatedClock
from backend.config.compose import compose_spec
from backend.data.ingest import Ingestor
from backend.data.live_feed import LiveBarFeed
from backend.data.providers.base import ProviderError
from backend.data.providers.kraken_ccxt import CcxtKrakenFetcher
from backend.data.providers.kraken_public import KrakenOhlcProvider
from backend.data.raw import RawStore
from backend.data.simulator import simulate_ohlcv
from backend.data.state import IngestState
from backend.kraken.client import NonceSource, make_client
from backend.sandbox.faults import FaultSpec
from backend.sandbox.kraken import KrakenEmulator

START_MS = 1_735_689_600_000


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_ohlcv(["BTC", "ETH"], compose_spec([]).universe.clusters, "5m", START_MS, 30, seed=4)


def fetcher_for(emu: KrakenEmulator, root: Path) -> tuple[CcxtKrakenFetcher, RawStore, list[float]]:
    raw = RawStore(root / "raw")
    waits: list[float] = []
    client = make_client(emu.base_url, None, NonceSource(lambda: 0), 1500, rate_limit=False)
    return CcxtKrakenFetcher(client, raw, SimulatedClock(START_MS), waits.append, max_attempts=3, backoff_seconds=0.5), raw, waits


def test_a_feed_polled_before_kraken_committed_any_bar_has_nothing_ready(bars: pl.DataFrame, tmp_path: Path) -> None:
    with KrakenEmulator(bars, "5m", now_ms=lambda: START_MS - 1) as emu:  # the emulator's now is before the first bar
        fetcher, raw, _ = fetcher_for(emu, tmp_path)
        state = IngestState(tmp_path / "ingest.sqlite")
        clock = SimulatedClock(START_MS)
        ingestor = Ingestor(tmp_path / "lake", KrakenOhlcProvider(fetcher, "kraken"), state, clock, lambda line: None, lambda: 0.0)
        assets = [a for a in compose_spec([]).universe.assets if a.symbol in ("BTC", "ETH")]
        feed = LiveBarFeed(ingestor, state, assets, "5m", START_MS)
        try:
            poll = feed.poll()
            assert poll.ready_ts == () and poll.bars.height == 0 and feed.ready_after_ms is None
            assert {r.symbol for r in poll.reports} == {"BTC", "ETH"}
        finally:
            raw.close()
            state.close()


def test_the_fetcher_retries_outages_then_gives_up_naming_the_last_failure(bars: pl.DataFrame, tmp_path: Path) -> None:
    with KrakenEmulator(bars, "5m", FaultSpec(fail_5xx_every=1)) as emu:
        fetcher, raw, waits = fetcher_for(emu, tmp_path)
        try:
            with pytest.raises(ProviderError, match=r"kraken /0/public/OHLC failed 3 times; last: unavailable"):
                fetcher.get("/0/public/OHLC", {"pair": "XBTUSD", "interval": 5})
        finally:
            raw.close()
    assert waits == [0.5, 1.0] and fetcher.retries == 2 and len(fetcher.failures) == 3


def test_the_fetcher_refuses_a_permanent_error_and_an_endpoint_it_does_not_serve(bars: pl.DataFrame, tmp_path: Path) -> None:
    with KrakenEmulator(bars, "5m") as emu:
        fetcher, raw, waits = fetcher_for(emu, tmp_path)
        try:
            with pytest.raises(ProviderError, match=r"kraken /0/public/OHLC refused: invalid_arguments: EQuery:Unknown asset pair"):
                fetcher.get("/0/public/OHLC", {"pair": "NOPEUSD", "interval": 5})
            with pytest.raises(ProviderError, match=r"kraken /0/private/Balance is not a public endpoint the feed reads"):
                fetcher.get("/0/private/Balance", {})
        finally:
            raw.close()
    assert waits == [] and fetcher.retries == 0
