"""The Kraken broker alone against the emulator: restarts, adoption by client id, fills read back once,
the kill switch, and every failure of a read, each with its evidence in ``broker_events``.

The runtime-level tests (``test_kraken_sessions.py``, the SIGKILL drill) drive the broker through whole
sessions; these put it in each state a restart can leave it in, with ccxt talking to the emulator.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from backend.clock import SimulatedClock
from backend.config.compose import compose_spec
from backend.data.simulator import simulate_ohlcv
from backend.kraken.client import Credentials, NonceSource, make_client
from backend.sandbox.faults import FaultSpec, PrivateFault
from backend.sandbox.kraken import KrakenEmulator
from execution.accounting.portfolio import Portfolio
from execution.brokers.kraken import KrakenBroker, kraken_client_id, open_live_journal
from execution.brokers.simulated import MarketOrder
from execution.orders.lifecycle import OrderStatus, OrderTrigger

LIVE = ("query-funds", "query-open-trades", "query-closed-trades", "modify-trades", "close-trades")
START_MS = 1_735_689_600_000
QTY = Decimal("0.001")


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return simulate_ohlcv(["BTC", "ETH"], compose_spec([]).universe.clusters, "5m", START_MS, 60, seed=2)


class Desk:
    """One emulator, one key, one client; brokers opened (and re-opened, as after a restart) on one journal."""

    def __init__(self, bars: pl.DataFrame, root: Path, faults: FaultSpec = FaultSpec()) -> None:
        self.emulator = KrakenEmulator(bars, "5m", faults, now_ms=lambda: START_MS + 30 * 300_000)
        self.emulator.start()
        key = self.emulator.account.create_key(LIVE)
        self.client = make_client(self.emulator.base_url, Credentials(key.key, key.secret),
                                  NonceSource(lambda: time.time_ns() // 1_000_000), 1500, rate_limit=False)  # fmt: skip
        self.root = root
        self.clock = SimulatedClock(START_MS)
        self.portfolio = Portfolio(("BTC", "ETH"), 10_000.0)

    def broker(self) -> KrakenBroker:
        return KrakenBroker(self.client, open_live_journal(self.root), self.clock, lambda index, point: None,
                            {"BTC": "BTC/USD", "ETH": "ETH/USD"}, 40.0, sleep=lambda s: None)  # fmt: skip

    def rest(self, order_id: str | None, price: float = 1000.0) -> str:
        """Place a resting limit buy on Kraken (under the order's client id, or none); return its txid."""
        params = {} if order_id is None else {"clientOrderId": kraken_client_id(order_id)}
        return self.client.create_order("BTC/USD", "limit", "buy", float(QTY), price, params)["id"]

    def bar(self, broker: KrakenBroker) -> list:
        return broker.on_bar(self.clock.now_ms(), np.array([1.0, 1.0]), np.array([True, True]), self.portfolio, None)

    def stop(self) -> None:
        self.emulator.stop()


@pytest.fixture()
def desk(bars: pl.DataFrame, tmp_path: Path) -> Iterator[Desk]:
    made = Desk(bars, tmp_path)
    yield made
    made.stop()


def kinds(broker: KrakenBroker) -> list[str]:
    return [e["kind"] for e in broker.events()]


def test_an_order_journalled_before_a_crash_is_adopted_waits_while_open_and_is_cancelled_by_the_kill_switch(desk: Desk) -> None:
    broker = desk.broker()
    broker.journal.record_new("o-1", "BTC", "buy", QTY, START_MS, "DECISION")  # committed, then the process died
    txid = desk.rest("o-1")  # ... after Kraken had placed it
    broker.submit(MarketOrder("o-1", "BTC", "buy", QTY))
    assert [o.cl_ord_id for o in desk.emulator.account.orders.values()] == [kraken_client_id("o-1")]  # not sent again
    assert kinds(broker) == ["RECONCILED"] and broker.events()[0]["detail"] == {"txid": txid}
    assert desk.bar(broker) == [] and [o.order_id for o in broker.pending] == ["o-1"]  # still open on Kraken
    assert broker.kill(START_MS) == ["o-1"]
    assert desk.emulator.account.orders[txid].status == "canceled" and broker.journal.status("o-1") is OrderStatus.CANCELLED
    assert broker.pending == []
    broker.close()


def test_a_restart_after_the_send_adopts_and_a_fill_is_applied_once(desk: Desk) -> None:
    first = desk.broker()
    order = MarketOrder("o-2", "BTC", "buy", QTY)
    first.submit(order)
    assert first.journal.status("o-2") is OrderStatus.ACKNOWLEDGED
    first.close()
    again = desk.broker()  # restarted before the fills were read
    again.submit(order)
    assert kinds(again)[-1] == "ADOPTED_AFTER_RESTART" and len(desk.emulator.account.orders) == 1
    (fill,) = desk.bar(again)
    assert fill.qty == QTY and again.journal.status("o-2") is OrderStatus.FILLED
    again.close()
    third = desk.broker()  # restarted after the journal knew the fill, before the runtime's checkpoint
    third.submit(order)
    (replayed,) = desk.bar(third)
    assert replayed == fill and third.journal.status("o-2") is OrderStatus.FILLED and third.pending == []
    assert len(desk.emulator.account.orders) == 1
    third.close()


def test_an_order_kraken_closed_unfilled_expires(desk: Desk) -> None:
    broker = desk.broker()
    broker.journal.record_new("o-3", "BTC", "buy", QTY, START_MS, "DECISION")
    txid = desk.rest("o-3")
    desk.client.cancel_order(txid)
    broker.submit(MarketOrder("o-3", "BTC", "buy", QTY))
    assert desk.bar(broker) == [] and broker.journal.status("o-3") is OrderStatus.EXPIRED
    broker.close()


def test_orders_kraken_holds_under_unknown_client_ids_are_cancelled_on_start(desk: Desk) -> None:
    stranger = desk.client.create_order("BTC/USD", "limit", "buy", float(QTY), 1000.0, {"clientOrderId": str(uuid.UUID(int=7))})["id"]
    manual = desk.rest(None)  # placed by hand, without a client id: left alone
    broker = desk.broker()
    broker.journal.record_new("o-4", "BTC", "buy", QTY, START_MS, "DECISION")
    own = desk.rest("o-4")
    assert broker.restored_problem() is None
    orders = desk.emulator.account.orders
    assert (orders[stranger].status, orders[manual].status, orders[own].status) == ("canceled", "open", "open")
    assert kinds(broker) == ["UNKNOWN_OPEN_ORDER_CANCELLED"]
    broker.close()


def test_failed_reads_leave_orders_waiting_with_evidence(bars: pl.DataFrame, tmp_path: Path) -> None:
    faults = FaultSpec(private_faults=(
        PrivateFault(endpoint="OpenOrders", calls=(3, 4), status=500),  # 3: the fill read, 4: the kill's read
        PrivateFault(endpoint="CancelAll", calls=(1,), error="EService:Unavailable"),
    ))  # fmt: skip
    made = Desk(bars, tmp_path, faults)
    try:
        broker = made.broker()
        broker.journal.record_new("o-5", "BTC", "buy", QTY, START_MS, "DECISION")
        made.rest("o-5")
        broker.submit(MarketOrder("o-5", "BTC", "buy", QTY))  # OpenOrders 1 (found)
        assert made.bar(broker) == [] and [o.order_id for o in broker.pending] == ["o-5"]  # OpenOrders 2 ok: open
        assert made.bar(broker) == [] and [o.order_id for o in broker.pending] == ["o-5"]  # OpenOrders 3: 500
        assert broker.kill(START_MS) == []  # CancelAll refused, OpenOrders 4: 500
        assert kinds(broker) == ["RECONCILED", "FILL_READ_FAILED", "CANCEL_ALL_FAILED", "CANCEL_READ_FAILED"]
        assert broker.events()[2]["kraken_error"] == "EService:Unavailable" and broker.journal.status("o-5") is OrderStatus.ACKNOWLEDGED
        broker.close()
    finally:
        made.stop()


def test_an_order_whose_fate_stays_unknown_after_every_attempt_stays_new(bars: pl.DataFrame, tmp_path: Path) -> None:
    made = Desk(bars, tmp_path, FaultSpec(private_faults=(PrivateFault(endpoint="AddOrder", calls=(1, 2, 3, 4), status=502),)))
    try:
        broker = made.broker()
        broker.submit(MarketOrder("o-6", "BTC", "buy", QTY))
        assert kinds(broker) == ["SEND_FAILED"] * 4 + ["UNRESOLVED"]
        assert broker.journal.status("o-6") is OrderStatus.NEW and broker.pending == []  # looked up again on restart
        assert made.emulator.account.orders == {}
        broker.close()
    finally:
        made.stop()


def test_a_rejected_order_is_left_alone_on_restart_and_a_filled_one_is_not_cancelled(desk: Desk) -> None:
    broker = desk.broker()
    broker.journal.record_new("o-7", "BTC", "buy", QTY, START_MS, "DECISION")
    broker.journal.apply("o-7", OrderTrigger.REJECT, START_MS, "REJECTED insufficient_funds: EOrder:Insufficient funds")
    broker.submit(MarketOrder("o-7", "BTC", "buy", QTY))  # restarted: a rejected order is neither resent nor adopted
    assert broker.events() == [] and broker.pending == [] and desk.emulator.account.orders == {}
    broker.submit(MarketOrder("o-8", "BTC", "buy", QTY))  # a market order: Kraken fills it at once
    assert broker.kill(START_MS) == [] and [o.order_id for o in broker.pending] == ["o-8"]  # filled, not cancelled
    (fill,) = desk.bar(broker)
    assert fill.order_id == "o-8" and broker.journal.status("o-8") is OrderStatus.FILLED
    broker.close()
