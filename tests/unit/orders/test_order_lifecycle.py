"""The order lifecycle table: every valid row, every invalid pair, terminal states, client ids."""

from __future__ import annotations

import itertools

import pytest

from backend.errors import ActsError
from execution.orders.lifecycle import (
    TABLE,
    TERMINAL,
    InvalidOrderTransition,
    OrderStatus,
    OrderTrigger,
    client_order_id,
    is_terminal,
    next_status,
)

VALID = sorted(TABLE.items(), key=lambda item: (item[0][0].name, item[0][1].name))
INVALID = [
    pair for pair in itertools.product(OrderStatus, OrderTrigger) if pair not in TABLE
]


def _id(value: object) -> str:
    return getattr(value, "name", str(value))


@pytest.mark.parametrize(("pair", "expected"), VALID, ids=[f"{s.name}-{t.name}" for (s, t), _ in VALID])
def test_valid_row_gives_its_next_status(pair: tuple[OrderStatus, OrderTrigger], expected: OrderStatus) -> None:
    status, trigger = pair
    assert next_status(status, trigger) is expected


@pytest.mark.parametrize(("status", "trigger"), INVALID, ids=[f"{s.name}-{t.name}" for s, t in INVALID])
def test_invalid_pair_raises_naming_status_and_trigger(status: OrderStatus, trigger: OrderTrigger) -> None:
    with pytest.raises(InvalidOrderTransition) as caught:
        next_status(status, trigger)
    assert isinstance(caught.value, ActsError)
    assert status.name in str(caught.value)
    assert trigger.name in str(caught.value)
    assert caught.value.status is status
    assert caught.value.trigger is trigger


def test_valid_and_invalid_pairs_cover_every_pair_exactly_once() -> None:
    assert len(VALID) + len(INVALID) == len(OrderStatus) * len(OrderTrigger)


@pytest.mark.parametrize("status", sorted(TERMINAL, key=lambda s: s.name), ids=_id)
def test_terminal_status_has_no_exits(status: OrderStatus) -> None:
    assert is_terminal(status)
    assert not [pair for pair in TABLE if pair[0] is status]


def test_terminal_set_is_exactly_filled_cancelled_rejected_expired() -> None:
    assert TERMINAL == {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}


@pytest.mark.parametrize("status", [s for s in OrderStatus if s not in TERMINAL], ids=_id)
def test_non_terminal_status_has_an_exit_and_reaches_a_terminal_status(status: OrderStatus) -> None:
    assert not is_terminal(status)
    seen, frontier = {status}, [status]
    while frontier:
        current = frontier.pop()
        for (source, _), target in TABLE.items():
            if source is current and target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen & TERMINAL


def test_every_table_value_is_an_order_status_and_keys_are_status_trigger_pairs() -> None:
    for (status, trigger), target in TABLE.items():
        assert isinstance(status, OrderStatus)
        assert isinstance(trigger, OrderTrigger)
        assert isinstance(target, OrderStatus)


def test_partial_fill_repeats_and_fill_arrives_while_cancel_requested() -> None:
    assert next_status(OrderStatus.PARTIALLY_FILLED, OrderTrigger.PARTIAL_FILL) is OrderStatus.PARTIALLY_FILLED
    assert next_status(OrderStatus.CANCEL_REQUESTED, OrderTrigger.PARTIAL_FILL) is OrderStatus.CANCEL_REQUESTED
    assert next_status(OrderStatus.CANCEL_REQUESTED, OrderTrigger.FILL) is OrderStatus.FILLED


def test_reject_is_legal_only_before_acknowledgement() -> None:
    rejecting = {status for (status, trigger) in TABLE if trigger is OrderTrigger.REJECT}
    assert rejecting == {OrderStatus.NEW, OrderStatus.SUBMITTED}


def test_client_order_id_is_deterministic_prefixed_sha256() -> None:
    first = client_order_id("run-1|BTCUSDT|1700000000000|buy")
    assert first == client_order_id("run-1|BTCUSDT|1700000000000|buy")
    assert first.startswith("acts-")
    digest = first.removeprefix("acts-")
    assert len(digest) == 24
    int(digest, 16)
    # sha256("abc") begins ba7816bf8f01cfea414140de...
    assert client_order_id("abc") == "acts-ba7816bf8f01cfea414140de"


def test_client_order_ids_are_distinct_for_distinct_keys() -> None:
    keys = [f"run-1|BTCUSDT|{ts}|buy" for ts in range(1000)]
    assert len({client_order_id(key) for key in keys}) == len(keys)
