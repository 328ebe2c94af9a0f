"""Unit tests for the paper runtime's pieces: the journalled broker, the crash seam, the event journal."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from backend.audit.decisions import COLUMNS
from backend.clock import SimulatedClock
from backend.runtime.paper import CRASH_ENV, EventJournal, JournaledBroker, PaperRuntimeError, RecordingLog, crash_hook
from execution.accounting.portfolio import Portfolio
from execution.brokers.simulated import MarketOrder, SlippageModel
from execution.orders.lifecycle import OrderStatus

SYMBOLS = ("BTC", "ETH", "SOL")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[EventJournal]:
    opened = EventJournal(tmp_path / "journal.sqlite")
    yield opened
    opened.close()


def broker_for(journal: EventJournal, points: list[tuple[int, str]] | None = None) -> JournaledBroker:
    def record(index: int, point: str) -> None:
        if points is not None:
            points.append((index, point))

    broker = JournaledBroker(10.0, SlippageModel(0.0, 0.0, 0.0), journal, SimulatedClock(1_000), record)
    broker.event = 7
    return broker


def test_an_order_is_journalled_new_before_it_is_queued_then_sent_and_acknowledged(journal: EventJournal) -> None:
    points: list[tuple[int, str]] = []
    broker = broker_for(journal, points)

    broker.submit(MarketOrder("o1", "BTC", "buy", Decimal("1"), "c1"))

    assert [e["to_status"] for e in journal.events("o1")] == [OrderStatus.NEW, OrderStatus.SUBMITTED, OrderStatus.ACKNOWLEDGED]
    assert [e["ts"] for e in journal.events("o1")] == [1_000] * 3
    assert points == [(7, "after_record_new"), (7, "after_submit")]
    assert [o.order_id for o in broker.pending] == ["o1"]


def test_a_client_order_id_already_in_the_journal_is_never_sent_twice(journal: EventJournal) -> None:
    broker = broker_for(journal)
    broker.submit(MarketOrder("o1", "BTC", "buy", Decimal("1")))

    with pytest.raises(PaperRuntimeError, match="order o1 is already in the journal"):
        broker.submit(MarketOrder("o1", "BTC", "buy", Decimal("1")))
    assert len(broker.pending) == 1


def test_fills_partial_fills_and_unfillable_orders_are_journalled(journal: EventJournal) -> None:
    broker = broker_for(journal)
    portfolio = Portfolio(SYMBOLS, 1_000.0)
    broker.submit(MarketOrder("full", "BTC", "buy", Decimal("1")))
    broker.submit(MarketOrder("partial", "BTC", "buy", Decimal("100")))
    broker.submit(MarketOrder("nothing", "ETH", "sell", Decimal("1")))
    broker.submit(MarketOrder("waits", "SOL", "buy", Decimal("1")))

    fills = broker.on_bar(2_000, np.array([100.0, 50.0, np.nan]), np.array([True, True, False]), portfolio, None)

    assert [f.order_id for f in fills] == ["full", "partial"]
    assert journal.status("full") is OrderStatus.FILLED
    partial = journal.events("partial")
    assert [e["to_status"] for e in partial[-2:]] == [OrderStatus.PARTIALLY_FILLED, OrderStatus.EXPIRED]
    assert partial[-2]["qty"] == fills[1].qty < Decimal("100")
    assert journal.status("nothing") is OrderStatus.EXPIRED
    assert journal.status("waits") is OrderStatus.ACKNOWLEDGED and [o.order_id for o in broker.pending] == ["waits"]


def test_drop_forgets_only_the_named_orders(journal: EventJournal) -> None:
    broker = broker_for(journal)
    for name in ("a", "b", "c"):
        broker.submit(MarketOrder(name, "BTC", "buy", Decimal("1")))

    broker.drop({"a", "c"})

    assert [o.order_id for o in broker.pending] == ["b"]


def test_the_event_journal_joins_an_open_transaction_and_rolls_back_with_it(journal: EventJournal) -> None:
    with pytest.raises(RuntimeError):
        with journal.conn:
            journal.conn.execute("BEGIN IMMEDIATE")
            assert journal.record_new("x", "BTC", "buy", Decimal("1"), 1, "DECISION")
            raise RuntimeError("crash inside the event")

    assert journal.open_orders() == []
    assert journal.record_new("x", "BTC", "buy", Decimal("1"), 1, "DECISION")  # alone, it commits itself
    assert journal.status("x") is OrderStatus.NEW


def test_the_recording_log_hands_out_each_new_row_once_with_its_sequence() -> None:
    log = RecordingLog()
    row = {name: None for name in COLUMNS if name != "seq"}
    log.append(dict(row, symbol="A"))
    log.append(dict(row, symbol="B"))

    assert [(r["seq"], r["symbol"]) for r in log.take()] == [(0, "A"), (1, "B")]
    assert log.take() == [] and len(log) == 2


def test_no_crash_seam_without_the_environment_variable() -> None:
    hook = crash_hook({})

    assert hook(0, "before_event") is None


def test_the_crash_seam_signals_only_at_its_event_and_point() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, _frame: received.append(signum))
    try:
        hook = crash_hook({CRASH_ENV: "3:before_commit:SIGUSR2"})
        hook(2, "before_commit")
        hook(3, "after_commit")
        hook(3, "before_commit")
    finally:
        signal.signal(signal.SIGUSR2, previous)

    assert received == [signal.SIGUSR2]


@pytest.mark.parametrize("text", ["3", "x:before_event", "3:nowhere", "1:2:3:4"])
def test_a_malformed_crash_seam_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(PaperRuntimeError, match=f"{CRASH_ENV} must be EVENT:POINT"):
        crash_hook({CRASH_ENV: text})


def test_the_shadow_broker_journals_without_sending_and_never_twice(journal: EventJournal) -> None:
    from backend.runtime.live import ShadowBroker

    broker = ShadowBroker(10.0, SlippageModel(0.0, 0.0, 0.0), journal, SimulatedClock(1_000), lambda index, point: None)
    order = MarketOrder("s-1", "BTC", "buy", Decimal("0.5"))
    broker.submit(order)
    assert journal.status("s-1") is OrderStatus.ACKNOWLEDGED and broker.pending == [order]
    with pytest.raises(PaperRuntimeError, match="order s-1 is already in the journal; refusing to journal it twice"):
        broker.submit(order)
    assert broker.pending == [order]


def test_divergence_names_the_decisions_only_one_log_made_and_the_earliest() -> None:
    import polars as pl

    from backend.runtime.live import DECISION_KEY, divergence

    def log(*rows: tuple[int, str]) -> pl.DataFrame:
        return pl.DataFrame([{**{k: "x" for k in DECISION_KEY}, "admitted": True, "ts": ts, "symbol": symbol} for ts, symbol in rows])

    same = divergence(log((1, "BTC")), log((1, "BTC")))
    assert (same["only_shadow"], same["only_paper"], same["first_divergence_ts"]) == (0, 0, None)
    earlier_in_shadow = divergence(log((1, "BTC"), (5, "ETH")), log((1, "BTC"), (9, "SOL")))
    assert (earlier_in_shadow["only_shadow"], earlier_in_shadow["only_paper"], earlier_in_shadow["first_divergence_ts"]) == (1, 1, 5)
    earlier_in_paper = divergence(log((9, "ETH")), log((3, "SOL")))
    assert earlier_in_paper["first_divergence_ts"] == 3
    empty = divergence(pl.DataFrame(), log((2, "BTC")))  # a shadow session that decided nothing
    assert (empty["shadow_decisions"], empty["paper_decisions"], empty["only_paper"], empty["first_divergence_ts"]) == (0, 1, 1, 2)
    assert divergence(log((4, "ETH")), pl.DataFrame())["first_divergence_ts"] == 4
