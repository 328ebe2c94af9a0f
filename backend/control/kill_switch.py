"""What the kill switch does to open orders: cancel every one through the order lifecycle.

Handling by status (the lifecycle table in ``execution/orders/lifecycle.py`` decides what is legal):

- ``NEW`` (journalled, never sent): ``REJECT``. The order is refused locally and can never be sent,
  not even by a resend after a crash, because ``REJECTED`` is terminal.
- ``SUBMITTED`` (sent, not yet acknowledged): left open. The table allows no cancel before the
  exchange acknowledges an order; it ends by itself (filled, rejected or expired) or is cancelled by
  a later call. The paper runtime calls :func:`apply_kill_switch` at the event where the switch takes
  effect, not at every event while killed: orders admitted after that are all risk-reducing exits,
  which must be allowed to fill.
- ``ACKNOWLEDGED`` and ``PARTIALLY_FILLED``: ``REQUEST_CANCEL`` then ``CANCEL``.
- ``CANCEL_REQUESTED`` (a cancel was requested earlier, e.g. before a crash): ``CANCEL``.

Each trigger is its own journal transaction, so a crash between ``REQUEST_CANCEL`` and ``CANCEL``
leaves ``CANCEL_REQUESTED``, which the next call completes. With the simulated broker the cancel
is confirmed at once; a live broker would journal ``CANCEL`` on the exchange's report instead.

New risk is stopped by the gate chain itself: :func:`effective_profile` hands the gates the active
profile with ``kill_switch`` forced on, so the first gate denies every new-risk intent with
``KILL_SWITCH_ACTIVE`` while reductions and exits pass, exactly as a profile's own kill switch does.
"""

from __future__ import annotations

from backend.config.schema import RiskProfileSpec
from execution.orders.journal import OrderJournal
from execution.orders.lifecycle import OrderStatus, OrderTrigger

KILL_SWITCH_REASON = "KILL_SWITCH"

_STEPS: dict[OrderStatus, tuple[OrderTrigger, ...]] = {
    OrderStatus.NEW: (OrderTrigger.REJECT,),
    OrderStatus.ACKNOWLEDGED: (OrderTrigger.REQUEST_CANCEL, OrderTrigger.CANCEL),
    OrderStatus.PARTIALLY_FILLED: (OrderTrigger.REQUEST_CANCEL, OrderTrigger.CANCEL),
    OrderStatus.CANCEL_REQUESTED: (OrderTrigger.CANCEL,),
}


def apply_kill_switch(journal: OrderJournal, ts: int, reason: str = KILL_SWITCH_REASON) -> list[str]:
    """Cancel (or, if never sent, reject) every open order in ``journal``; return their ids.

    Orders are visited by creation time then client order id. ``SUBMITTED`` orders are left open
    and not returned (see the module notes); calling again after their acknowledgement cancels them.
    """
    done = []
    for order in journal.open_orders():
        steps = _STEPS.get(order["status"], ())
        for trigger in steps:
            journal.apply(order["client_order_id"], trigger, ts, reason)
        if steps:
            done.append(order["client_order_id"])
    return done


def effective_profile(profile: RiskProfileSpec, killed: bool) -> RiskProfileSpec:
    """The profile the risk gates see: ``kill_switch`` forced on while the operator's switch is on.

    When not killed (or when the profile's own switch is already on) the profile is returned as it is.
    """
    if killed and not profile.kill_switch:
        return profile.model_copy(update={"kill_switch": True})
    return profile
