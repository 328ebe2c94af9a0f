"""apply_kill_switch against a real order journal: every open order ends through the lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from backend.config.compose import CONF_DIR
from backend.config.schema import RiskProfileSpec
from backend.control import KILL_SWITCH_REASON, apply_kill_switch, effective_profile
from execution.risk.gates import GateReason, OrderIntent, PortfolioView, admit
from execution.orders.journal import OrderJournal
from execution.orders.lifecycle import OrderStatus, OrderTrigger, client_order_id

S = OrderStatus
T = OrderTrigger

# The triggers that bring a NEW order to each status.
ROUTE = {
    S.NEW: (),
    S.SUBMITTED: (T.SUBMIT,),
    S.ACKNOWLEDGED: (T.SUBMIT, T.ACKNOWLEDGE),
    S.PARTIALLY_FILLED: (T.SUBMIT, T.ACKNOWLEDGE, T.PARTIAL_FILL),
    S.CANCEL_REQUESTED: (T.SUBMIT, T.ACKNOWLEDGE, T.REQUEST_CANCEL),
    S.FILLED: (T.SUBMIT, T.FILL),
    S.CANCELLED: (T.SUBMIT, T.ACKNOWLEDGE, T.CANCEL),
    S.REJECTED: (T.REJECT,),
    S.EXPIRED: (T.SUBMIT, T.EXPIRE),
}


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[OrderJournal]:
    with OrderJournal(tmp_path / "acts.db") as opened:
        yield opened


def _order(journal: OrderJournal, status: OrderStatus, created: int = 100) -> str:
    oid = client_order_id(f"decision:{status.name}")
    journal.record_new(oid, "BTC", "buy", Decimal("0.5"), created, "ENTRY_PREDICTED_EDGE")
    for step, trigger in enumerate(ROUTE[status], start=1):
        journal.apply(oid, trigger, created + step, "EXCHANGE")
    assert journal.status(oid) is status
    return oid


@pytest.mark.parametrize(
    ("status", "triggers", "final"),
    [
        (S.NEW, [T.REJECT], S.REJECTED),
        (S.ACKNOWLEDGED, [T.REQUEST_CANCEL, T.CANCEL], S.CANCELLED),
        (S.PARTIALLY_FILLED, [T.REQUEST_CANCEL, T.CANCEL], S.CANCELLED),
        (S.CANCEL_REQUESTED, [T.CANCEL], S.CANCELLED),
    ],
)
def test_each_open_status_is_ended_through_the_lifecycle_and_journalled(
    journal: OrderJournal, status: OrderStatus, triggers: list[OrderTrigger], final: OrderStatus
) -> None:
    oid = _order(journal, status)
    before = len(journal.events(oid))

    assert apply_kill_switch(journal, 500, "KILL_SWITCH") == [oid]

    assert journal.status(oid) is final
    added = journal.events(oid)[before:]
    assert [(e["trigger"], e["ts"], e["reason"]) for e in added] == [(t, 500, "KILL_SWITCH") for t in triggers]


def test_a_submitted_order_stays_open_until_acknowledged_then_the_next_call_cancels_it(journal: OrderJournal) -> None:
    oid = _order(journal, S.SUBMITTED)

    assert apply_kill_switch(journal, 500, KILL_SWITCH_REASON) == []
    assert journal.status(oid) is S.SUBMITTED

    journal.apply(oid, T.ACKNOWLEDGE, 510, "EXCHANGE")
    assert apply_kill_switch(journal, 520, KILL_SWITCH_REASON) == [oid]
    assert journal.status(oid) is S.CANCELLED


def test_terminal_orders_are_left_alone_and_ids_come_in_creation_order(journal: OrderJournal) -> None:
    terminal = [_order(journal, status) for status in (S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED)]
    late = _order(journal, S.ACKNOWLEDGED, created=300)
    early = _order(journal, S.NEW, created=200)
    terminal_events = {oid: len(journal.events(oid)) for oid in terminal}

    assert apply_kill_switch(journal, 900, KILL_SWITCH_REASON) == [early, late]

    assert journal.open_orders() == []
    assert {oid: len(journal.events(oid)) for oid in terminal} == terminal_events


def test_a_second_call_finds_nothing_left_to_cancel(journal: OrderJournal) -> None:
    _order(journal, S.ACKNOWLEDGED)
    apply_kill_switch(journal, 500, KILL_SWITCH_REASON)

    assert apply_kill_switch(journal, 501, KILL_SWITCH_REASON) == []


def test_the_default_reason_is_the_kill_switch_code(journal: OrderJournal) -> None:
    oid = _order(journal, S.NEW)

    apply_kill_switch(journal, 500)

    assert journal.events(oid)[-1]["reason"] == KILL_SWITCH_REASON == "KILL_SWITCH"


# ---------------------------------------------------------------- new risk: the gates see the switch
@pytest.fixture
def balanced() -> RiskProfileSpec:
    return RiskProfileSpec.model_validate(yaml.safe_load((CONF_DIR / "risk" / "balanced.yaml").read_text(encoding="utf-8")))


def _intent(side: str) -> OrderIntent:
    return OrderIntent("BTC", "majors", side, 0.1, 50_000.0, 5_000.0, reduces_risk=side == "sell")


VIEW = PortfolioView(
    equity=100_000.0,
    cash_available=90_000.0,
    open_positions=1,
    total_exposure=10_000.0,
    cluster_exposure={"majors": 10_000.0},
    drawdown_halted=False,
    drawdown=0.0,
    profile_valid=True,
)


def test_while_killed_the_gates_deny_new_risk_and_let_reductions_through(balanced: RiskProfileSpec) -> None:
    killed = effective_profile(balanced, killed=True)

    entry_ok, entry_gates = admit(_intent("buy"), VIEW, killed, 0.004, 0.5, 0.0001)
    exit_ok, _ = admit(_intent("sell"), VIEW, killed, 0.004, 0.5, 0.0001)

    assert killed.kill_switch is True and killed.model_dump(exclude={"kill_switch"}) == balanced.model_dump(exclude={"kill_switch"})
    assert entry_ok is False and entry_gates[-1].reason is GateReason.KILL_SWITCH_ACTIVE
    assert exit_ok is True


def test_when_not_killed_the_profile_is_used_as_it_is(balanced: RiskProfileSpec) -> None:
    assert effective_profile(balanced, killed=False) is balanced
    assert admit(_intent("buy"), VIEW, balanced, 0.004, 0.5, 0.0001)[0] is True


def test_a_profile_whose_own_switch_is_on_stays_on_either_way(balanced: RiskProfileSpec) -> None:
    own = balanced.model_copy(update={"kill_switch": True})

    assert effective_profile(own, killed=True) is own and effective_profile(own, killed=False) is own
