"""Kill-switch drill: engage the switch while the paper runtime holds positions and open orders.

For each order event ``e`` of the recorded run, the runtime continues from the journal kept before
``e`` (see :func:`scripts.drills.kills.paper_reference`), processes ``e`` (the order is placed and
open), then the operator engages the kill switch and the runtime processes ``window`` more events.
Measured: the open orders and positions at the kill, how many of those orders the next event cancels,
the new-risk orders admitted after the kill (entries and re-entries that send an order; goal: none from
the next event), the entries denied, and the exits and scale-outs still sent (risk reductions must pass).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from backend.control.store import ControlStore
from backend.clock import WallClock
from backend.runtime.paper import PaperRuntime

NEW_RISK = ("enter", "reenter")
REDUCE = ("exit", "scale_out")


@dataclass
class KillSwitchDrill:
    """The figures of the kill-switch drill, summed over its engagements."""

    engagements: int = 0
    with_open_orders: int = 0
    with_positions: int = 0
    open_orders_at_kill: int = 0
    cancelled_at_next_event: int = 0
    left_open_after_next_event: int = 0
    new_risk_admitted_after_kill: int = 0
    new_risk_denied_after_kill: int = 0
    reductions_admitted_after_kill: int = 0
    max_events_until_no_new_risk: int = 0
    seconds: float = 0.0
    per_event: list[dict[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "per_event"}


def killswitch_drill(feed: Any, events: list[int], root: Path, window: int = 6) -> KillSwitchDrill:
    """Engage the kill switch right after each order event in ``events``; return what the runtime did."""
    started = time.monotonic()
    drill = KillSwitchDrill()
    for event in events:
        state = root / f"kill-{event}"
        shutil.copytree(root / f"after-{event - 1}", state)
        with ControlStore(state / "control.db") as control:
            runtime = PaperRuntime(feed, state, control)
            batches = feed.batches(event)
            runtime.step(next(batches))  # event e: the order is placed and open
            at_kill = {o.order_id for o in runtime.broker.pending}
            open_orders = len(at_kill)
            positions = sum(1 for q in runtime.engine.portfolio.qty if q > 0)
            control.kill("drill", f"kill-switch drill after event {event}", WallClock())
            kill_ts = int(feed.matrix.ts_ms[event + 1])
            runtime.step(next(batches))  # the next event: the switch takes effect before it
            still_open = len(at_kill & {o["client_order_id"] for o in runtime.journal.open_orders()})
            for _ in range(window - 2):
                runtime.step(next(batches))
            after = runtime.decisions().filter(pl.col("ts") >= kill_ts)
            runtime.close()
        # New risk is an entry that sends an order (an admitted entry with no order, NO_ORDER, takes no risk).
        entries = after.filter(pl.col("action").is_in(NEW_RISK) & (pl.col("gate_reason") != "NO_ORDER"))
        admitted = entries.filter(pl.col("admitted") & pl.col("order_id").is_not_null())
        drill.engagements += 1
        drill.with_open_orders += open_orders > 0
        drill.with_positions += positions > 0
        drill.open_orders_at_kill += open_orders
        drill.cancelled_at_next_event += open_orders - still_open
        drill.left_open_after_next_event += still_open
        drill.new_risk_admitted_after_kill += admitted.height
        drill.new_risk_denied_after_kill += entries.height - admitted.height
        drill.reductions_admitted_after_kill += after.filter(
            pl.col("action").is_in(REDUCE) & pl.col("admitted") & pl.col("order_id").is_not_null()
        ).height
        # Events from the kill until the last admitted new risk (0: none was admitted from the next event on).
        last = admitted["ts"].max() if admitted.height else None
        until = 0 if last is None else int((feed.matrix.ts_ms <= last).sum()) - event
        drill.max_events_until_no_new_risk = max(drill.max_events_until_no_new_risk, until)
        drill.per_event.append({"event": event, "open_orders": open_orders, "positions": positions, "left_open": still_open})
        shutil.rmtree(state)
    drill.seconds = time.monotonic() - started
    return drill
