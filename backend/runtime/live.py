"""Composition of the market-facing sessions: paper, shadow and live on the Kraken feed.

The engine, features, strategy, risk gates and accounting are the same in every mode; a session
differs only in its broker: paper simulates fills, shadow journals what it would send and sends
nothing (starting from the account's real cash, read with a read-only key), live sends through ccxt
(:class:`execution.brokers.kraken.KrakenBroker`). Live mode first re-checks the key and the
enablement log (:mod:`backend.control.live`) and refuses, naming what is missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import ccxt
import polars as pl

from backend.audit.decisions import DECISION_SCHEMA
from backend.control.live import LiveEvent, LiveGate, Readiness
from backend.control.onboarding import KrakenEndpoint, OnboardingError, client_for, fingerprint, probe_permissions
from backend.data.ingest import Ingestor
from backend.data.live_feed import LiveBarFeed
from backend.data.providers.kraken_ccxt import CcxtKrakenFetcher
from backend.data.providers.kraken_public import KrakenOhlcProvider
from backend.data.raw import RawStore
from backend.data.state import IngestState
from backend.clock import Clock, SimulatedClock
from backend.engine.pipeline import Pipeline
from backend.errors import ActsError
from backend.kraken.client import NonceSource, call, make_client
from backend.kraken.permissions import KeyMode
from backend.kraken.settings import KrakenSettings
from backend.models.bundle import ModelBundle
from backend.runtime.kraken_source import KrakenFeedSource
from backend.runtime.paper import BrokerFactory, Crash, EventJournal, JournaledBroker, PaperRuntimeError
from backend.secrets.keychain import Keychain
from execution.brokers.kraken import KrakenBroker, open_live_journal
from execution.brokers.simulated import MarketOrder, SlippageModel
from execution.orders.lifecycle import OrderTrigger

LAKE_SOURCE = "kraken"


class LiveRefused(ActsError):
    """A market-facing session may not start; the message names what is missing."""


def kraken_feed(pipeline: Pipeline, bundle: ModelBundle, home_root: Path, settings: KrakenSettings, clock: Clock,
                start_ms: int, sleep: Callable[[float], None] = time.sleep, max_polls: int | None = None,
                idle_polls: int | None = None) -> tuple[KrakenFeedSource, Callable[[], None]]:  # fmt: skip
    """Return the Kraken feed source over the home's raw store, ingest state and lake, and its closer."""
    spec = pipeline.spec
    raw = RawStore(home_root / "raw")
    state = IngestState(home_root / "data" / "ingest.sqlite")
    client = make_client(settings.base_url, None, NonceSource(clock.now_ms), settings.timeout_ms, settings.rate_limit)
    fetcher = CcxtKrakenFetcher(client, raw, clock, sleep)
    provider = KrakenOhlcProvider(fetcher, LAKE_SOURCE)  # type: ignore[arg-type]
    ingestor = Ingestor(home_root / "lake", provider, state, clock, lambda line: None, time.monotonic)
    assets = [a for a in spec.universe.assets if a.symbol in spec.symbols]
    feed = LiveBarFeed(ingestor, state, assets, spec.data.timeframe, start_ms)
    source = KrakenFeedSource(pipeline, bundle, feed, settings.poll_seconds, sleep, max_polls, idle_polls,
                              spec.training.num_threads)  # fmt: skip

    def close() -> None:
        try:
            feed.settle()  # a session stopped inside a poll (max events) still writes that poll down
        finally:
            raw.close()
            state.close()

    return source, close


class ShadowBroker(JournaledBroker):
    """Journal every order it would send, send none; fills are simulated so the session keeps deciding."""

    def submit(self, order: MarketOrder) -> None:
        ts = self.clock.now_ms()
        if not self.journal.record_new(order.order_id, order.symbol, order.side, order.qty, ts, "DECISION"):
            raise PaperRuntimeError(f"order {order.order_id} is already in the journal; refusing to journal it twice")
        self.pending.append(order)
        self.journal.apply(order.order_id, OrderTrigger.SUBMIT, ts, "SHADOW_NOT_SENT")
        self.journal.apply(order.order_id, OrderTrigger.ACKNOWLEDGE, ts, "SHADOW_NOT_SENT")


def shadow_broker(pipeline: Pipeline) -> BrokerFactory:
    """Return the factory of the shadow broker (the simulated fill model of the spec)."""
    execution = pipeline.spec.execution

    def build(journal: EventJournal, clock: SimulatedClock, crash: Crash, state_dir: Path) -> JournaledBroker:
        return ShadowBroker(execution.taker_fee_bps, SlippageModel(**execution.slippage.model_dump()), journal, clock, crash)

    return build


def account_cash(client: ccxt.kraken) -> float:
    """Return the account's free USD (BalanceEx through ccxt): shadow and live start from it."""
    balance = call("BalanceEx", client.fetch_balance)
    return float(Decimal(str(balance["free"].get("USD", 0.0))))  # type: ignore[index]


def connected_client(settings: KrakenSettings, mode: KeyMode, gate: LiveGate, keychain: Keychain, clock: Clock) -> ccxt.kraken:
    """Return a client with the connected key after re-checking its permissions for ``mode``.

    Raises
    ------
    LiveRefused
        When no key is connected or it no longer passes the policy (permissions can be widened later).
    """
    connected = gate.connected()
    credentials = keychain.load() if connected is not None else None
    if connected is None or credentials is None or fingerprint(credentials.api_key) != connected.key_fingerprint:
        raise LiveRefused(f"{mode.value} mode needs an onboarded Kraken key: run `acts kraken connect --mode {mode.value}`")
    endpoint = KrakenEndpoint(settings.base_url, settings.timeout_ms, settings.rate_limit)
    client = client_for(endpoint, credentials, gate, clock)
    try:
        report = probe_permissions(client, mode, clock.now_ms() // 1000)
    except OnboardingError as error:
        raise LiveRefused(str(error)) from None
    if not report.accepted:
        raise LiveRefused(f"the connected key no longer passes the {mode.value} policy: " + "; ".join(str(p) for p in report.problems))
    return client


def refuse_unready(readiness: Readiness) -> None:
    """Refuse live mode unless every requirement is met, naming the missing ones in order."""
    if not readiness.ready:
        raise LiveRefused("live mode refused; missing, in order: " + "; ".join(r.value for r in readiness.missing))


def live_broker(client: ccxt.kraken, pipeline: Pipeline, sleep: Callable[[float], None] = time.sleep) -> BrokerFactory:
    """Return the factory of the Kraken broker for the run's symbols."""
    markets = {s: f"{s}/USD" for s in pipeline.spec.symbols}

    def build(journal: EventJournal, clock: SimulatedClock, crash: Crash, state_dir: Path) -> KrakenBroker:
        return KrakenBroker(client, open_live_journal(state_dir), clock, crash, markets,
                            pipeline.spec.execution.taker_fee_bps, sleep)  # fmt: skip

    return build  # type: ignore[return-value]


def record_shadow_session(gate: LiveGate, author: str, key: str, first_ms: int | None, last_ms: int | None,
                          bars: int, clock: Clock) -> None:  # fmt: skip
    """Log a shadow session (its span in bar time) towards live enablement."""
    duration = 0 if first_ms is None or last_ms is None else last_ms - first_ms
    gate.record(LiveEvent.SHADOW_SESSION, author, key, {"first_ms": first_ms, "last_ms": last_ms, "bars": bars,
                                                        "duration_ms": duration}, clock)  # fmt: skip


DECISION_KEY = ("ts", "symbol", "transition", "action", "state_from", "state_to", "reason", "admitted", "gate_reason")


def divergence(shadow: pl.DataFrame, paper: pl.DataFrame) -> dict[str, object]:
    """Compare two decision logs on the same bars: the decisions only one of them made, first one first."""
    key = list(DECISION_KEY)
    # An empty log (a session that decided nothing) has the decision schema's key columns, so the joins line up.
    empty = pl.DataFrame(schema={k: DECISION_SCHEMA[k] for k in key})
    a = shadow.select(key).cast(empty.schema) if shadow.height else empty  # type: ignore[arg-type]
    b = paper.select(key).cast(empty.schema) if paper.height else empty  # type: ignore[arg-type]
    only_shadow = a.join(b, on=key, how="anti").sort("ts", "symbol")
    only_paper = b.join(a, on=key, how="anti").sort("ts", "symbol")
    first = None
    for frame in (only_shadow, only_paper):
        if frame.height and (first is None or frame["ts"][0] < first):
            first = int(frame["ts"][0])
    return {"shadow_decisions": a.height, "paper_decisions": b.height, "only_shadow": only_shadow.height,
            "only_paper": only_paper.height, "first_divergence_ts": first,
            "examples": json.loads(only_shadow.head(5).write_json()) + json.loads(only_paper.head(5).write_json())}  # fmt: skip

