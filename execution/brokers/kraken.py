"""The Kraken broker: market orders through ccxt, journalled before they are sent, idempotent by client id.

Every order is written NEW to its own journal (``live_orders.sqlite``, one committed transaction per
write) before ccxt sends it, with a Kraken ``cl_ord_id`` derived from the decision's order id (a UUID
made of its hash): the same decision always carries the same client id. A runtime that is killed and
restarted re-processes the interrupted event and makes the same decisions; an order the journal
already holds is then looked up on Kraken by its client id (open and closed orders) and adopted, never
sent again. Fills are read back from Kraken (volume, average price and fee as Kraken states them) at
the next event and applied to the portfolio once: the runtime commits them with its checkpoint.

Kraken's error classes are handled by class, each with a row in ``broker_events`` (the evidence):
rate limits and nonce errors are retried with back-off; 5xx and timeouts are reconciled by client id
before any retry (the order may have been placed); insufficient funds and invalid arguments reject
the order. Orders are spot market orders only: no leverage, no margin parameter is ever sent.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt

from backend.clock import Clock
from backend.kraken.client import KrakenCallError, KrakenErrorClass, call
from execution.accounting.portfolio import CENT, Fill, Portfolio
from execution.brokers.simulated import MarketOrder, SimulatedBroker, SlippageModel
from execution.orders.journal import OrderJournal
from execution.orders.lifecycle import OrderStatus, OrderTrigger

LIVE_JOURNAL_FILE = "live_orders.sqlite"
Crash = Callable[[int, str], None]
RETRY = frozenset({KrakenErrorClass.RATE_LIMIT, KrakenErrorClass.NONCE})
RECONCILE = frozenset({KrakenErrorClass.UNAVAILABLE, KrakenErrorClass.TIMEOUT, KrakenErrorClass.MALFORMED})
TRANSIENT = RETRY | RECONCILE  # worth another try on a read or an idempotent write (CancelAll, CancelOrder)
_EVENTS = """
CREATE TABLE IF NOT EXISTS broker_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, order_id TEXT NOT NULL, kind TEXT NOT NULL,
    error_class TEXT, kraken_error TEXT, detail TEXT NOT NULL
)
"""


def kraken_client_id(order_id: str) -> str:
    """Return the Kraken ``cl_ord_id`` of an order: a UUID of its hash (Kraken accepts UUIDs)."""
    return str(uuid.UUID(hex=hashlib.sha256(f"acts:{order_id}".encode()).hexdigest()[:32]))


class KrakenBroker(SimulatedBroker):
    """Send admitted market orders to Kraken and read their fills back.

    Parameters
    ----------
    client : ccxt.kraken
        An authenticated client (:func:`backend.kraken.client.make_client`).
    journal : OrderJournal
        The broker's own journal (committed before every send).
    clock : Clock
        The runtime clock (event times).
    crash : callable
        The crash seam of drills (``after_record_new``, ``after_send``).
    markets : dict[str, str]
        Symbol -> ccxt market (``BTC`` -> ``BTC/USD``).
    fee_bps : float
        Fee assumed for the cost of open orders (the risk gates' cash check).
    sleep : callable
        Waits between retries; ``max_attempts`` bounds them.
    """

    def __init__(self, client: ccxt.kraken, journal: OrderJournal, clock: Clock, crash: Crash, markets: dict[str, str],
                 fee_bps: float, sleep: Callable[[float], None] = time.sleep, max_attempts: int = 4,
                 backoff_seconds: float = 0.5) -> None:  # fmt: skip
        super().__init__(fee_bps, SlippageModel(0.0, 0.0, 0.0))
        self.client = client
        self.journal = journal
        self.clock = clock
        self.crash = crash
        self.markets = markets
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.event = -1
        conn: sqlite3.Connection = journal._conn
        conn.execute(_EVENTS)
        self._conn = conn

    # ------------------------------------------------------------------ evidence
    def _evidence(self, order_id: str, kind: str, error: KrakenCallError | None = None, **detail: object) -> None:
        self._conn.execute(
            "INSERT INTO broker_events (ts, order_id, kind, error_class, kraken_error, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (self.clock.now_ms(), order_id, kind, None if error is None else error.error_class.value,
             None if error is None else error.kraken_error, json.dumps(detail, sort_keys=True)),
        )  # fmt: skip

    def events(self) -> list[dict[str, Any]]:
        """Every broker event (sends, retries, reconciliations, rejections), oldest first."""
        rows = self._conn.execute(
            "SELECT ts, order_id, kind, error_class, kraken_error, detail FROM broker_events ORDER BY seq"
        ).fetchall()
        return [{"ts": r[0], "order_id": r[1], "kind": r[2], "error_class": r[3], "kraken_error": r[4],
                 "detail": json.loads(r[5])} for r in rows]  # fmt: skip

    def _retried(self, endpoint: str, order_id: str, kind: str, action: Callable[[], object]) -> object:
        """Run an idempotent call, retrying transient classes with back-off; each failure is journalled.

        The last error (or the first permanent one) is raised once ``max_attempts`` are spent.
        """
        attempt = 1
        while True:
            try:
                return call(endpoint, action)
            except KrakenCallError as error:
                self._evidence(order_id, kind, error, attempt=attempt)
                if error.error_class not in TRANSIENT or attempt >= self.max_attempts:
                    raise
            self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            attempt += 1

    # ------------------------------------------------------------------ orders
    def _find(self, order: MarketOrder) -> dict[str, Any] | None:
        """Return Kraken's order with this order's client id (open or closed), or None."""
        params = {"clientOrderId": kraken_client_id(order.order_id)}
        for fetch in (self.client.fetch_open_orders, self.client.fetch_closed_orders):
            found = call("ClientOrder", lambda fetch=fetch: fetch(params=params))
            if found:
                return found[0]  # type: ignore[index]
        return None

    def submit(self, order: MarketOrder) -> None:
        """Journal the order, then send it (or adopt the one Kraken already has under its client id)."""
        ts = self.clock.now_ms()
        fresh = self.journal.record_new(order.order_id, order.symbol, order.side, order.qty, ts, "DECISION")
        self.crash(self.event, "after_record_new")
        status = self.journal.status(order.order_id)
        if status is OrderStatus.NEW:
            if fresh or not self._adopt(order, ts):
                self._send(order, ts)
        elif status is not OrderStatus.REJECTED:
            self._evidence(order.order_id, "ADOPTED_AFTER_RESTART", status=status.value)
            self.pending.append(order)

    def _adopt(self, order: MarketOrder, ts: int) -> bool:
        found = self._find(order)
        if found is None:
            return False
        self.journal.apply(order.order_id, OrderTrigger.SUBMIT, ts, f"RECONCILED {found['id']}")
        self.journal.apply(order.order_id, OrderTrigger.ACKNOWLEDGE, ts, "RECONCILED")
        self._evidence(order.order_id, "RECONCILED", txid=found["id"])
        self.pending.append(order)
        return True

    def _send(self, order: MarketOrder, ts: int) -> None:
        market = self.markets[order.symbol]
        client_id = kraken_client_id(order.order_id)
        must_look = False  # after a 5xx or a timeout the order may exist: look it up before any resend
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self.sleep(self.backoff_seconds * 2 ** (attempt - 2))
            if must_look:
                try:
                    if self._adopt(order, ts):
                        return
                except KrakenCallError as error:
                    self._evidence(order.order_id, "LOOKUP_FAILED", error, attempt=attempt)
                    continue
                must_look = False
            try:
                placed = call("AddOrder", lambda: self.client.create_order(
                    market, "market", order.side, float(order.qty), None, {"clientOrderId": client_id}))  # fmt: skip
            except KrakenCallError as error:
                self._evidence(order.order_id, "SEND_FAILED", error, attempt=attempt)
                # A transport failure (5xx page, timeout) may hide a placed order; a Kraken error string means it was not placed.
                must_look = error.error_class in RECONCILE and not error.kraken_error.startswith("E")
                if error.error_class in TRANSIENT:
                    continue
                self.journal.apply(order.order_id, OrderTrigger.REJECT, ts, f"REJECTED {error.error_class.value}: {error.kraken_error}")
                return
            self.crash(self.event, "after_send")
            self.journal.apply(order.order_id, OrderTrigger.SUBMIT, ts, f"SENT {placed['id']}")  # type: ignore[index]
            self.journal.apply(order.order_id, OrderTrigger.ACKNOWLEDGE, ts, "ACCEPTED")
            self._evidence(order.order_id, "SENT", txid=placed["id"], attempt=attempt)  # type: ignore[index]
            self.pending.append(order)
            return
        # Out of attempts: an order that may exist stays NEW in the journal (looked up again on restart).
        if must_look:
            self._evidence(order.order_id, "UNRESOLVED")
            return
        self.journal.apply(order.order_id, OrderTrigger.REJECT, ts, "REJECTED gave up after retries")

    def on_bar(self, ts_ms: int, open_prices: Any, has_bar: Any, portfolio: Portfolio, volumes: Any) -> list[Fill]:
        """Read the fills of the orders sent so far and apply each once; open orders keep waiting."""
        fills, waiting = [], []
        for order in self.pending:
            try:
                found = self._find(order)
            except KrakenCallError as error:
                self._evidence(order.order_id, "FILL_READ_FAILED", error)
                waiting.append(order)
                continue
            info = (found or {}).get("info", {})
            if found is None or info.get("status") in ("open", "pending"):
                waiting.append(order)
                continue
            qty = Decimal(info["vol_exec"])
            if qty > 0:
                fee = Decimal(info["fee"]).quantize(CENT)
                fill = Fill(order.order_id, ts_ms, order.symbol, order.side, qty, Decimal(info["price"]), fee, order.campaign_id)
                portfolio.apply(fill)
                fills.append(fill)
            trigger, reason = (OrderTrigger.FILL, "FILLED") if qty > 0 else (OrderTrigger.EXPIRE, str(info.get("status")).upper())
            if self.journal.status(order.order_id) not in (OrderStatus.FILLED, OrderStatus.EXPIRED):
                self.journal.apply(order.order_id, trigger, ts_ms, reason, qty, Decimal(info["price"]))
        self.pending = waiting
        return fills

    def close(self) -> None:
        """Close the broker's journal."""
        self.journal.close()

    def drop(self, order_ids: set[str]) -> None:
        """Forget orders that are cancelled."""
        self.pending = [o for o in self.pending if o.order_id not in order_ids]

    def kill(self, ts: int) -> list[str]:
        """Cancel every open order on Kraken (the kill switch); return the ids of the journal's cancelled ones."""
        cancelled = []
        try:
            self._retried("CancelAll", "*", "CANCEL_ALL_FAILED", self.client.cancel_all_orders)
        except KrakenCallError as error:
            self._evidence("*", "CANCEL_ALL_GAVE_UP", error)
            self._cancel_each()
        for order in list(self.pending):
            try:
                found = self._find(order)
            except KrakenCallError as error:
                self._evidence(order.order_id, "CANCEL_READ_FAILED", error)
                continue
            if found is not None and found["info"].get("status") == "canceled":
                self.journal.apply(order.order_id, OrderTrigger.CANCEL, ts, "KILL_SWITCH")
                cancelled.append(order.order_id)
            elif found is not None and found["info"].get("status") in ("open", "pending"):
                self._evidence(order.order_id, "KILL_SWITCH_INCOMPLETE", txid=found["id"])  # loud: still open on Kraken
        self.drop(set(cancelled))
        return cancelled

    def _cancel_each(self) -> None:
        # CancelAll was refused or kept failing: cancel the broker's own open orders one by one.
        for order in self.pending:
            try:
                found = self._find(order)
                if found is not None and found["info"].get("status") in ("open", "pending"):
                    self._retried("CancelOrder", order.order_id, "CANCEL_ORDER_FAILED",
                                  lambda found=found: self.client.cancel_order(found["id"]))  # fmt: skip
            except KrakenCallError as error:
                self._evidence(order.order_id, "CANCEL_ORDER_GAVE_UP", error)

    def restored_problem(self) -> str | None:
        """Reconcile with Kraken on start: cancel open orders it holds under a client id the journal does not know."""
        known = {kraken_client_id(r["client_order_id"]) for r in self._journal_orders()}
        try:
            opened = self._retried("OpenOrders", "*", "START_READ_FAILED", self.client.fetch_open_orders)
        except KrakenCallError as error:
            self._evidence("*", "START_RECONCILE_FAILED", error)
            return f"start reconcile could not read Kraken's open orders ({error.error_class.value}): {error.kraken_error}"
        for open_order in opened:  # type: ignore[attr-defined]
            client_id = open_order.get("clientOrderId")
            if client_id is not None and client_id not in known:
                self._evidence(str(client_id), "UNKNOWN_OPEN_ORDER_CANCELLED", txid=open_order["id"])
                try:
                    self._retried("CancelOrder", str(client_id), "START_CANCEL_FAILED",
                                  lambda open_order=open_order: self.client.cancel_order(open_order["id"]))  # fmt: skip
                except KrakenCallError as error:
                    if not self._still_open(open_order["id"]):  # the cancel was carried out before the fault
                        continue
                    self._evidence(str(client_id), "START_RECONCILE_FAILED", error)
                    return f"start reconcile could not cancel unknown order {open_order['id']} ({error.error_class.value}): {error.kraken_error}"
        return None

    def _still_open(self, txid: str) -> bool:
        try:
            opened = self._retried("OpenOrders", "*", "START_READ_FAILED", self.client.fetch_open_orders)
        except KrakenCallError:
            return True  # unknown: fail closed
        return any(o["id"] == txid for o in opened)  # type: ignore[attr-defined]

    def _journal_orders(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT client_order_id FROM orders").fetchall()
        return [{"client_order_id": r[0]} for r in rows]


def open_live_journal(state_dir: Path) -> OrderJournal:
    """Open the broker's own journal in the state folder (committed write by write)."""
    return OrderJournal(state_dir / LIVE_JOURNAL_FILE)
