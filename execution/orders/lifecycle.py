"""The order lifecycle as a transition table: states, triggers, and deterministic client order ids."""

from __future__ import annotations

import hashlib
from enum import Enum

from backend.errors import ActsError


class OrderStatus(Enum):
    """Where an order stands with the exchange."""

    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class OrderTrigger(Enum):
    """What happened to an order: our own action or an exchange report."""

    SUBMIT = "SUBMIT"
    ACKNOWLEDGE = "ACKNOWLEDGE"
    PARTIAL_FILL = "PARTIAL_FILL"
    FILL = "FILL"
    REQUEST_CANCEL = "REQUEST_CANCEL"
    CANCEL = "CANCEL"
    REJECT = "REJECT"
    EXPIRE = "EXPIRE"


S = OrderStatus
T = OrderTrigger

# Lifecycle choices, kept here so the table stays plain data:
# - REJECT is a rejection of the order itself, so it is legal only before acknowledgement
#   (NEW: refused locally before sending; SUBMITTED: refused by the exchange). A refused
#   cancel request is not an order trigger: the order stays CANCEL_REQUESTED until the
#   exchange reports a fill, a cancel or an expiry, and the cancel may be requested again.
# - A fill report may overtake the acknowledgement, so SUBMITTED accepts PARTIAL_FILL and FILL.
#   An immediate-or-cancel order may expire unfilled before any acknowledgement arrives.
# - A cancel needs an acknowledged order; the exchange may cancel on its own (CANCEL without
#   REQUEST_CANCEL), for example for self-trade prevention.
# - Partial fills repeat. Fills may arrive while a cancel is requested: a partial fill keeps
#   the order in CANCEL_REQUESTED, a complete fill ends it as FILLED.
# - FILLED, CANCELLED, REJECTED and EXPIRED are terminal: no row leaves them.
TABLE: dict[tuple[OrderStatus, OrderTrigger], OrderStatus] = {
    (S.NEW, T.SUBMIT): S.SUBMITTED,
    (S.NEW, T.REJECT): S.REJECTED,
    (S.SUBMITTED, T.ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.SUBMITTED, T.REJECT): S.REJECTED,
    (S.SUBMITTED, T.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.SUBMITTED, T.FILL): S.FILLED,
    (S.SUBMITTED, T.EXPIRE): S.EXPIRED,
    (S.ACKNOWLEDGED, T.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.ACKNOWLEDGED, T.FILL): S.FILLED,
    (S.ACKNOWLEDGED, T.REQUEST_CANCEL): S.CANCEL_REQUESTED,
    (S.ACKNOWLEDGED, T.CANCEL): S.CANCELLED,
    (S.ACKNOWLEDGED, T.EXPIRE): S.EXPIRED,
    (S.PARTIALLY_FILLED, T.PARTIAL_FILL): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, T.FILL): S.FILLED,
    (S.PARTIALLY_FILLED, T.REQUEST_CANCEL): S.CANCEL_REQUESTED,
    (S.PARTIALLY_FILLED, T.CANCEL): S.CANCELLED,
    (S.PARTIALLY_FILLED, T.EXPIRE): S.EXPIRED,
    (S.CANCEL_REQUESTED, T.REQUEST_CANCEL): S.CANCEL_REQUESTED,
    (S.CANCEL_REQUESTED, T.PARTIAL_FILL): S.CANCEL_REQUESTED,
    (S.CANCEL_REQUESTED, T.FILL): S.FILLED,
    (S.CANCEL_REQUESTED, T.CANCEL): S.CANCELLED,
    (S.CANCEL_REQUESTED, T.EXPIRE): S.EXPIRED,
}

TERMINAL: frozenset[OrderStatus] = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED})

CLIENT_ORDER_ID_PREFIX = "acts-"
CLIENT_ORDER_ID_HEX_CHARS = 24


class InvalidOrderTransition(ActsError):
    """An order trigger is not legal in the order's current status; nothing was changed."""

    def __init__(self, status: OrderStatus, trigger: OrderTrigger) -> None:
        super().__init__(f"order in status {status.name} cannot take trigger {trigger.name}")
        self.status = status
        self.trigger = trigger


def next_status(status: OrderStatus, trigger: OrderTrigger) -> OrderStatus:
    """Return the status ``trigger`` leads to from ``status``, or raise ``InvalidOrderTransition``."""
    if (status, trigger) not in TABLE:
        raise InvalidOrderTransition(status, trigger)
    return TABLE[(status, trigger)]


def is_terminal(status: OrderStatus) -> bool:
    """Whether ``status`` ends the order's life."""
    return status in TERMINAL


def client_order_id(decision_key: str) -> str:
    """The client order id for a decision: the same key always gives the same id."""
    digest = hashlib.sha256(decision_key.encode("utf-8")).hexdigest()
    return CLIENT_ORDER_ID_PREFIX + digest[:CLIENT_ORDER_ID_HEX_CHARS]
