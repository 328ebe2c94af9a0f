"""The order journal: WAL durability, idempotent creation, atomic validated transitions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from backend.errors import ActsError
from execution.orders.journal import OrderJournal, UnknownOrderError
from execution.orders.lifecycle import InvalidOrderTransition, OrderStatus, OrderTrigger, client_order_id

S = OrderStatus
T = OrderTrigger


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "orders.sqlite"


@pytest.fixture
def journal(path: Path) -> Iterator[OrderJournal]:
    with OrderJournal(path) as opened:
        yield opened


def _counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        orders = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM order_events").fetchone()[0]
    finally:
        conn.close()
    return orders, events


def test_database_is_in_wal_mode_with_full_sync(journal: OrderJournal, path: Path) -> None:
    assert journal._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_record_new_journals_order_as_new(journal: OrderJournal) -> None:
    oid = client_order_id("decision-1")
    assert journal.record_new(oid, "BTCUSDT", "buy", Decimal("0.5"), 1_000, "entry signal") is True
    assert journal.status(oid) is S.NEW
    [event] = journal.events(oid)
    assert event["trigger"] is None
    assert event["from_status"] is None
    assert event["to_status"] is S.NEW
    assert event["reason"] == "entry signal"
    assert event["qty"] == Decimal("0.5")
    assert event["price"] is None


def test_record_new_is_idempotent_and_changes_nothing_on_resend(journal: OrderJournal, path: Path) -> None:
    oid = client_order_id("decision-1")
    assert journal.record_new(oid, "BTCUSDT", "buy", Decimal("0.5"), 1_000, "entry signal")
    journal.apply(oid, T.SUBMIT, 1_001, "sent")
    before_counts = _counts(path)
    before_events = journal.events(oid)
    assert journal.record_new(oid, "ETHUSDT", "sell", Decimal("9"), 2_000, "resend after crash") is False
    assert _counts(path) == before_counts == (1, 2)
    assert journal.events(oid) == before_events
    assert journal.status(oid) is S.SUBMITTED
    [order] = journal.open_orders()
    assert (order["symbol"], order["side"], order["qty"], order["created_ts"]) == ("BTCUSDT", "buy", Decimal("0.5"), 1_000)


def test_events_are_recorded_in_order_with_from_and_to(journal: OrderJournal) -> None:
    oid = client_order_id("decision-2")
    journal.record_new(oid, "BTCUSDT", "buy", Decimal("1.0"), 10, "entry")
    steps = [
        (T.SUBMIT, None, None, S.SUBMITTED),
        (T.ACKNOWLEDGE, None, None, S.ACKNOWLEDGED),
        (T.PARTIAL_FILL, Decimal("0.25"), Decimal("42000.10"), S.PARTIALLY_FILLED),
        (T.PARTIAL_FILL, Decimal("0.25"), Decimal("42000.20"), S.PARTIALLY_FILLED),
        (T.REQUEST_CANCEL, None, None, S.CANCEL_REQUESTED),
        (T.PARTIAL_FILL, Decimal("0.1"), Decimal("42000.30"), S.CANCEL_REQUESTED),
        (T.CANCEL, None, None, S.CANCELLED),
    ]
    for offset, (trigger, qty, price, expected) in enumerate(steps, start=11):
        assert journal.apply(oid, trigger, offset, trigger.name.lower(), qty=qty, price=price) is expected
    events = journal.events(oid)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert [e["ts"] for e in events] == list(range(10, 10 + len(steps) + 1))
    assert [e["trigger"] for e in events] == [None] + [step[0] for step in steps]
    assert [e["from_status"] for e in events] == [None, S.NEW] + [step[3] for step in steps[:-1]]
    assert [e["to_status"] for e in events] == [S.NEW] + [step[3] for step in steps]
    assert [(e["qty"], e["price"]) for e in events[1:]] == [(step[1], step[2]) for step in steps]
    assert all(e["client_order_id"] == oid for e in events)
    assert journal.status(oid) is S.CANCELLED


def test_illegal_transition_raises_and_writes_nothing(journal: OrderJournal, path: Path) -> None:
    oid = client_order_id("decision-3")
    journal.record_new(oid, "BTCUSDT", "buy", Decimal("1"), 10, "entry")
    journal.apply(oid, T.SUBMIT, 11, "sent")
    before_counts = _counts(path)
    before_events = journal.events(oid)
    with pytest.raises(InvalidOrderTransition) as caught:
        journal.apply(oid, T.CANCEL, 12, "not acknowledged yet", qty=Decimal("1"), price=Decimal("1"))
    assert "SUBMITTED" in str(caught.value)
    assert "CANCEL" in str(caught.value)
    assert _counts(path) == before_counts
    assert journal.events(oid) == before_events
    assert journal.status(oid) is S.SUBMITTED
    # The connection is usable after the rollback.
    assert journal.apply(oid, T.ACKNOWLEDGE, 13, "acked") is S.ACKNOWLEDGED


def test_terminal_order_accepts_no_trigger(journal: OrderJournal, path: Path) -> None:
    oid = client_order_id("decision-4")
    journal.record_new(oid, "BTCUSDT", "sell", Decimal("2"), 10, "exit")
    journal.apply(oid, T.REJECT, 11, "insufficient balance")
    before = _counts(path)
    for trigger in OrderTrigger:
        with pytest.raises(InvalidOrderTransition):
            journal.apply(oid, trigger, 12, "after reject")
    assert _counts(path) == before


def test_reopening_the_file_restores_open_orders(path: Path) -> None:
    ids = {name: client_order_id(name) for name in ("a", "b", "c", "d")}
    with OrderJournal(path) as first:
        first.record_new(ids["a"], "BTCUSDT", "buy", Decimal("0.1"), 30, "a")
        first.record_new(ids["b"], "ETHUSDT", "sell", Decimal("2.5"), 10, "b")
        first.record_new(ids["c"], "SOLUSDT", "buy", Decimal("7"), 20, "c")
        first.record_new(ids["d"], "XRPUSDT", "buy", Decimal("100"), 5, "d")
        first.apply(ids["a"], T.SUBMIT, 31, "sent")
        first.apply(ids["a"], T.ACKNOWLEDGE, 32, "acked")
        first.apply(ids["d"], T.SUBMIT, 6, "sent")
        first.apply(ids["d"], T.FILL, 7, "filled", qty=Decimal("100"), price=Decimal("0.5"))
        expected = first.open_orders()
    with OrderJournal(path) as second:
        restored = second.open_orders()
        assert restored == expected
        assert [o["client_order_id"] for o in restored] == [ids["b"], ids["c"], ids["a"]]
        assert [o["status"] for o in restored] == [S.NEW, S.NEW, S.ACKNOWLEDGED]
        assert second.status(ids["d"]) is S.FILLED
        assert len(second.events(ids["a"])) == 3
        assert second.apply(ids["a"], T.FILL, 40, "filled after restart") is S.FILLED
    with OrderJournal(path) as third:
        assert [o["client_order_id"] for o in third.open_orders()] == [ids["b"], ids["c"]]


def test_open_orders_tie_on_created_ts_breaks_by_client_order_id(journal: OrderJournal) -> None:
    for name in ("z", "y", "x"):
        journal.record_new(f"acts-{name}", "BTCUSDT", "buy", Decimal("1"), 100, name)
    assert [o["client_order_id"] for o in journal.open_orders()] == ["acts-x", "acts-y", "acts-z"]


@pytest.mark.parametrize(
    "text",
    ["0.1", "0.30000000000000000001", "123456789.123456789123456789", "1E-18", "5.000", "0"],
)
def test_decimal_quantities_round_trip_exactly(path: Path, text: str) -> None:
    qty = Decimal(text)
    oid = client_order_id(text)
    with OrderJournal(path) as journal:
        journal.record_new(oid, "BTCUSDT", "buy", qty, 1, "entry")
        journal.apply(oid, T.SUBMIT, 2, "sent")
        journal.apply(oid, T.PARTIAL_FILL, 3, "part", qty=qty, price=qty)
    with OrderJournal(path) as reopened:
        [order] = reopened.open_orders()
        assert order["qty"] == qty
        assert str(order["qty"]) == str(qty)
        fill = reopened.events(oid)[-1]
        assert str(fill["qty"]) == str(qty)
        assert str(fill["price"]) == str(qty)


@pytest.mark.parametrize("operation", ["status", "events", "apply"])
def test_unknown_id_raises_a_clear_error(journal: OrderJournal, path: Path, operation: str) -> None:
    before = _counts(path)
    with pytest.raises(UnknownOrderError) as caught:
        if operation == "apply":
            journal.apply("acts-missing", T.SUBMIT, 1, "sent")
        else:
            getattr(journal, operation)("acts-missing")
    assert isinstance(caught.value, ActsError)
    assert "acts-missing" in str(caught.value)
    assert caught.value.client_order_id == "acts-missing"
    assert _counts(path) == before


def test_close_releases_the_connection(path: Path) -> None:
    journal = OrderJournal(path)
    journal.close()
    with pytest.raises(sqlite3.ProgrammingError):
        journal.status("acts-any")


def test_context_manager_closes_on_error(path: Path) -> None:
    with pytest.raises(RuntimeError):
        with OrderJournal(path) as journal:
            raise RuntimeError("boom")
    with pytest.raises(sqlite3.ProgrammingError):
        journal.open_orders()
