"""Broker faults: every private call the Kraken broker makes, under every fault the emulator injects on it.

The broker (:class:`execution.brokers.kraken.KrakenBroker`, ccxt against the private API of
:class:`backend.sandbox.kraken.KrakenEmulator`) runs one of three scenes with one fault on one call:

- ``session``: a market order is submitted (``AddOrder``) and its fill is read back at the next bars
  (``OpenOrders`` then ``ClosedOrders`` by client id), at most three bars;
- ``kill``: an order resting on Kraken is adopted, then the kill switch cancels it (``CancelAll``, then
  each order read back by client id);
- ``start``: on start the broker reconciles with Kraken (``OpenOrders``) and cancels an open order under a
  client id its journal does not know (``CancelOrder``).

Faults are scripted answers of the emulator to the first call of the endpoint (``PrivateFault``): Kraken's
rate-limit and nonce errors, a 5xx page, a timeout (before the call is carried out, and, for writes, after
it: the client cannot know whether it happened), ``EOrder:Insufficient funds`` (orders only) and
``EGeneral:Invalid arguments``; and a truncated or malformed body on the request number of that call (the
emulator's ``*_every`` faults; the desk first reads the server time 20 times, so the next multiple falls after
the scene).

Handled: Kraken ends with what the broker's documented behaviour leaves there (one order, or none when the
order is refused; the resting order or the stranger cancelled), every fill Kraken made is applied once,
the journal's state agrees with Kraken's, and ``broker_events`` carries the error class of the fault.
The broker never calls ``Balance`` (the runtime's cash is its own ledger), so no fault is injected there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from backend.clock import SimulatedClock
from backend.kraken.client import Credentials, KrakenCallError, NonceSource, make_client
from backend.sandbox.faults import FaultSpec, PrivateFault
from backend.sandbox.kraken import KrakenEmulator
from execution.accounting.portfolio import Portfolio
from execution.brokers.kraken import KrakenBroker, kraken_client_id, open_live_journal
from execution.brokers.simulated import MarketOrder
from execution.orders.lifecycle import OrderStatus
from scripts.drills.kills import START_MS

LIVE = ("query-funds", "query-open-trades", "query-closed-trades", "modify-trades", "close-trades")
BAR_MS = 300_000
NOW_MS = START_MS + 30 * BAR_MS
QTY = Decimal("0.001")
ORDER = "drill-order"
TIMEOUT_MS = 200  # the client's; the emulator holds a timed-out answer longer
HOLD_SECONDS = 0.4
MAX_BARS = 3
WARM_UP = 20  # server-time reads before each scene: a body fault's multiples then fall after the scene
REFUSED = ("EOrder:Insufficient funds", "EGeneral:Invalid arguments")
BODY_FAULTS = ("truncated body", "malformed body")
# (call as shown, endpoint, scene, is a write)
CALLS = (
    ("AddOrder (submit)", "AddOrder", "session", True),
    ("OpenOrders (fill read)", "OpenOrders", "session", False),
    ("ClosedOrders (fill read)", "ClosedOrders", "session", False),
    ("CancelAll (kill switch)", "CancelAll", "kill", True),
    ("OpenOrders (start reconcile)", "OpenOrders", "start", False),
    ("CancelOrder (start reconcile)", "CancelOrder", "start", True),
)


@dataclass
class BrokerCase:
    """One private call under one fault: whether it was handled, what Kraken holds and the evidence."""

    call: str
    fault: str
    handled: bool
    orders: int  # orders on Kraken under the scene's client id
    fills: int  # fills applied to the portfolio
    evidence: tuple[str, ...]  # error classes in broker_events
    detail: str


def faults_of(endpoint: str, write: bool) -> dict[str, FaultSpec | None]:
    """The faults injected on the first call of ``endpoint``, by name; None marks a body fault (its request
    number is found by a clean run)."""

    def one(**kind: Any) -> FaultSpec:
        return FaultSpec(timeout_seconds=HOLD_SECONDS, private_faults=(PrivateFault(endpoint=endpoint, calls=(1,), **kind),))

    out: dict[str, FaultSpec | None] = {
        "EAPI:Rate limit exceeded (429)": one(error="EAPI:Rate limit exceeded"),
        "5xx": one(status=502),
        "timeout": one(timeout=True),
    }
    if write:
        out["5xx after accept"] = one(status=502, after_accept=True)
        out["timeout after accept"] = one(timeout=True, after_accept=True)
    out["EAPI:Invalid nonce"] = one(error="EAPI:Invalid nonce")
    if endpoint == "AddOrder":
        out["EOrder:Insufficient funds"] = one(error="EOrder:Insufficient funds")
    out["EGeneral:Invalid arguments"] = one(error="EGeneral:Invalid arguments")
    out["truncated body"] = None
    out["malformed body"] = None
    return out


def body_fault(fault: str, request_number: int) -> FaultSpec:
    """A truncated or malformed body on request ``request_number`` (and its multiples)."""
    if fault == "truncated body":
        return FaultSpec(truncate_every=request_number)
    return FaultSpec(malformed_every=request_number)


class Desk:
    """One emulator with the fault on, one key, one ccxt client (markets preset: no public call), one broker."""

    def __init__(self, bars: pl.DataFrame, spec: FaultSpec, markets: tuple[Any, Any], root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.emulator = KrakenEmulator(bars, "5m", spec, now_ms=lambda: NOW_MS)
        self.emulator.start()
        key = self.emulator.account.create_key(LIVE)
        self.client = make_client(self.emulator.base_url, Credentials(key.key, key.secret), NonceSource(lambda: 0),
                                  TIMEOUT_MS, rate_limit=False)  # fmt: skip
        self.client.set_markets(*markets)
        for _ in range(WARM_UP):
            self.client.fetch_time()
        self.clock = SimulatedClock(NOW_MS)
        self.broker = KrakenBroker(self.client, open_live_journal(root), self.clock, lambda index, point: None,
                                   {"BTC": "BTC/USD"}, 40.0, sleep=lambda s: None)  # fmt: skip
        self.portfolio = Portfolio(("BTC",), 10_000.0)

    def orders(self, client_id: str) -> list[Any]:
        return [o for o in self.emulator.account.orders.values() if o.cl_ord_id == client_id]

    def stop(self) -> None:
        self.broker.close()
        self.emulator.stop()


def load_markets(bars: pl.DataFrame) -> tuple[Any, Any]:
    """ccxt's markets and currencies, read once from a clean emulator."""
    with KrakenEmulator(bars, "5m", FaultSpec(), now_ms=lambda: NOW_MS) as emulator:
        client = make_client(emulator.base_url, None, NonceSource(lambda: 0), TIMEOUT_MS, rate_limit=False)
        client.load_markets()
        return client.markets, client.currencies


def _session(desk: Desk, refused: bool) -> tuple[bool, int, int, str]:
    broker = desk.broker
    broker.submit(MarketOrder(ORDER, "BTC", "buy", QTY))
    fills = 0
    for _ in range(MAX_BARS):
        fills += len(broker.on_bar(desk.clock.now_ms(), np.array([1.0]), np.array([True]), desk.portfolio, None))
        if not broker.pending:
            break
    placed = desk.orders(kraken_client_id(ORDER))
    filled = sum(o.vol_exec > 0 for o in placed)
    status = broker.journal.status(ORDER)
    expected = (0, OrderStatus.REJECTED) if refused else (1, OrderStatus.FILLED)
    ok = (len(placed), status) == expected and fills == filled and not broker.pending
    return ok, len(placed), fills, f"{len(placed)} order(s) on Kraken, {filled} filled, {fills} fill(s) applied, journal {status.value}"


def _kill(desk: Desk, refused: bool) -> tuple[bool, int, int, str]:
    broker = desk.broker
    broker.journal.record_new(ORDER, "BTC", "buy", QTY, NOW_MS, "DECISION")
    desk.client.create_order("BTC/USD", "limit", "buy", float(QTY), 1000.0, {"clientOrderId": kraken_client_id(ORDER)})
    broker.submit(MarketOrder(ORDER, "BTC", "buy", QTY))  # adopted: it rests on Kraken
    cancelled = broker.kill(NOW_MS)
    placed = desk.orders(kraken_client_id(ORDER))
    state = [o.status for o in placed]
    status = broker.journal.status(ORDER)
    ok = state == ["canceled"] and status is OrderStatus.CANCELLED and cancelled == [ORDER]
    return ok, len(placed), 0, f"Kraken order {', '.join(state)}, journal {status.value}"


def _start(desk: Desk, refused: bool) -> tuple[bool, int, int, str]:
    stranger = str(uuid.UUID(int=7))
    desk.client.create_order("BTC/USD", "limit", "buy", float(QTY), 1000.0, {"clientOrderId": stranger})
    try:
        desk.broker.restored_problem()
        raised = ""
    except KrakenCallError as error:
        raised = f"; start raised {error.error_class.value}"
    state = [o.status for o in desk.orders(stranger)]
    return state == ["canceled"] and not raised, len(state), 0, f"stranger order {', '.join(state)}{raised}"


SCENES = {"session": _session, "kill": _kill, "start": _start}


def broker_case(call: str, endpoint: str, scene: str, fault: str, spec: FaultSpec, bars: pl.DataFrame,
                markets: tuple[Any, Any], root: Path) -> BrokerCase:  # fmt: skip
    """Run one scene with one fault on and judge it."""
    desk = Desk(bars, spec, markets, root)
    try:
        ok, orders, fills, detail = SCENES[scene](desk, endpoint == "AddOrder" and fault in REFUSED)
        evidence = tuple(e["error_class"] for e in desk.broker.events() if e["error_class"] is not None)
    finally:
        desk.stop()
    if not evidence:
        detail += "; no error class in broker_events"
    return BrokerCase(call, fault, ok and bool(evidence), orders, fills, evidence, detail)


def first_request(bars: pl.DataFrame, scene: str, endpoint: str, markets: tuple[Any, Any], root: Path) -> int:
    """The request number of the first ``endpoint`` call of a clean run of ``scene``."""
    desk = Desk(bars, FaultSpec(), markets, root)
    try:
        SCENES[scene](desk, False)
        paths = [target.split("?")[0] for _method, target, _status in desk.emulator.request_log]
    finally:
        desk.stop()
    return paths.index(f"/0/private/{endpoint}") + 1


def broker_drill(bars: pl.DataFrame, root: Path) -> list[BrokerCase]:
    """Every private call of the broker under every fault that applies to it."""
    markets = load_markets(bars)
    cases = []
    for call, endpoint, scene, write in CALLS:
        folder = root / call.split(" ")[0] / scene
        number = first_request(bars, scene, endpoint, markets, folder / "clean")
        for fault, spec in faults_of(endpoint, write).items():
            chosen = spec if spec is not None else body_fault(fault, number)
            cases.append(broker_case(call, endpoint, scene, fault, chosen, bars, markets, folder / fault.replace(" ", "-")))
    return cases

