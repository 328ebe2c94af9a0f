"""The paper runtime: the engine, event by event, on a recorded feed, with a durable state folder.

One event is one SQLite transaction in the state folder's ``journal.sqlite`` (WAL, synchronous=FULL):
the kill-switch cancellations, every order lifecycle event (an order is journalled NEW before the
broker queues it; its client order id is the engine's decision-derived order id), the fills (the
ledger), the event's decision rows and the engine checkpoint (symbol states, campaigns, marks, peak
equity, drawdown flags, Decimal cash and quantities, open orders, the next event index) are
committed together or not at all. A crash between events loses nothing; a crash inside an event
rolls the whole event back, and a restart restores the checkpoint (not a re-run of history) and
processes that event again. An exception inside an event leaves the in-memory engine unusable: the
runtime re-raises and must be constructed again from the state folder.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from backend.audit.artifacts import INPUTS_KEYS, read_json, read_parquet, read_spec
from backend.audit.decisions import DecisionLog, decision_log_sha256
from backend.clock import SimulatedClock
from backend.control.kill_switch import apply_kill_switch, effective_profile
from backend.control.store import ControlStore
from backend.engine.core import Engine, Stamp
from backend.engine.events import BarBatch, MarketMatrix
from backend.engine.pipeline import Pipeline, compile_pipeline
from backend.errors import ActsError, ModelError
from backend.models.bundle import ModelBundle
from backend.models.registry import ModelRegistry
from backend.profiles.watcher import ProfileWatcher
from backend.runs.replay import read_bundle
from backend.runs.runner import edge_basis, frame_sha256, market_matrix
from backend.sqlite import transaction
from execution.accounting.portfolio import Fill, Portfolio
from execution.brokers.simulated import MarketOrder, SimulatedBroker, SlippageModel
from execution.orders.journal import OrderJournal
from execution.orders.lifecycle import OrderTrigger

# Test seam: "EVENT:POINT" (or "EVENT:POINT:SIGNAL", default SIGKILL) makes the runtime signal itself
# at that point of that event index. Read only by :func:`crash_hook`; unset in normal use.
CRASH_ENV = "ACTS_PAPER_CRASH_AT"
CRASH_POINTS = ("before_event", "after_record_new", "after_submit", "after_fills", "before_commit", "after_commit")
JOURNAL_FILE = "journal.sqlite"

Crash = Callable[[int, str], None]
Sleeper = Callable[[float], None]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS paper_meta (id INTEGER PRIMARY KEY CHECK (id = 1), identity TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS paper_checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), next_index INTEGER NOT NULL,"
    " ts INTEGER NOT NULL, state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS paper_fills (seq INTEGER PRIMARY KEY, order_id TEXT NOT NULL, ts INTEGER NOT NULL,"
    " symbol TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL, fee TEXT NOT NULL, campaign_id TEXT)",
    "CREATE TABLE IF NOT EXISTS paper_decisions (seq INTEGER PRIMARY KEY, row TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS paper_actions (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,"
    " action TEXT NOT NULL, detail TEXT NOT NULL)",
)


class PaperRuntimeError(ActsError):
    """The paper runtime cannot start or continue (wrong state folder, inconsistent journal, bad input)."""


def _no_crash(index: int, point: str) -> None:
    return None


def crash_hook(environ: Mapping[str, str]) -> Crash:
    """Return the crash seam configured by :data:`CRASH_ENV` in ``environ`` (a no-op when unset)."""
    text = environ.get(CRASH_ENV)
    if not text:
        return _no_crash
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0].isdigit() or parts[1] not in CRASH_POINTS:
        raise PaperRuntimeError(f"{CRASH_ENV} must be EVENT:POINT[:SIGNAL] with POINT in {CRASH_POINTS}, was {text!r}")
    at, where = int(parts[0]), parts[1]
    sig = signal.Signals[parts[2]] if len(parts) == 3 else signal.SIGKILL

    def crash(index: int, point: str) -> None:
        if index == at and point == where:
            os.kill(os.getpid(), sig)

    return crash


class EventJournal(OrderJournal):
    """The order journal, joining the runtime's open event transaction instead of committing on its own."""

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        if self._conn.in_transaction:
            return nullcontext(self._conn)
        return super()._transaction()

    @property
    def conn(self) -> sqlite3.Connection:
        """The journal's connection: the runtime opens each event's transaction on it."""
        return self._conn


class JournaledBroker(SimulatedBroker):
    """The simulated broker with every lifecycle step journalled; an order is journalled before it is queued."""

    def __init__(
        self, fee_bps: float, slippage: SlippageModel, journal: OrderJournal, clock: SimulatedClock, crash: Crash
    ) -> None:
        super().__init__(fee_bps, slippage)
        self.journal = journal
        self.clock = clock
        self.crash = crash
        self.event = -1

    def submit(self, order: MarketOrder) -> None:
        ts = self.clock.now_ms()
        if not self.journal.record_new(order.order_id, order.symbol, order.side, order.qty, ts, "DECISION"):
            raise PaperRuntimeError(f"order {order.order_id} is already in the journal; refusing to send it twice")
        self.crash(self.event, "after_record_new")
        super().submit(order)
        self.journal.apply(order.order_id, OrderTrigger.SUBMIT, ts, "SENT")
        self.journal.apply(order.order_id, OrderTrigger.ACKNOWLEDGE, ts, "SIMULATED_ACK")
        self.crash(self.event, "after_submit")

    def on_bar(
        self, ts_ms: int, open_prices: np.ndarray, has_bar: np.ndarray, portfolio: Portfolio, volumes: np.ndarray | None
    ) -> list[Fill]:
        before = list(self.pending)
        fills = super().on_bar(ts_ms, open_prices, has_bar, portfolio, volumes)
        filled = {f.order_id: f for f in fills}
        waiting = {o.order_id for o in self.pending}
        for order in before:
            if order.order_id in waiting:
                continue
            fill = filled.get(order.order_id)
            if fill is None:
                self.journal.apply(order.order_id, OrderTrigger.EXPIRE, ts_ms, "NOT_FILLABLE")
            elif fill.qty == order.qty:
                self.journal.apply(order.order_id, OrderTrigger.FILL, ts_ms, "FILLED", fill.qty, fill.price)
            else:
                self.journal.apply(order.order_id, OrderTrigger.PARTIAL_FILL, ts_ms, "PARTIAL", fill.qty, fill.price)
                self.journal.apply(order.order_id, OrderTrigger.EXPIRE, ts_ms, "REMAINDER_NOT_FILLABLE")
        return fills

    def drop(self, order_ids: set[str]) -> None:
        """Forget queued orders the journal has cancelled (the kill switch)."""
        self.pending = [o for o in self.pending if o.order_id not in order_ids]


class RecordingLog(DecisionLog):
    """A decision log that also remembers which rows arrived since the last :meth:`take`."""

    def __init__(self) -> None:
        super().__init__()
        self.fresh: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any]) -> None:
        """Append one decision and keep a copy (with its ``seq``) for the next :meth:`take`."""
        seq = len(self)
        super().append(row)
        self.fresh.append(dict(row, seq=seq))

    def take(self) -> list[dict[str, Any]]:
        """Return the rows appended since the last call, and forget them."""
        rows, self.fresh = self.fresh, []
        return rows


@dataclass(frozen=True)
class RecordedFeed:
    """A recorded backtest folder as an event source: its pipeline, bundle and aligned matrix."""

    run_dir: Path
    pipeline: Pipeline
    bundle: ModelBundle
    matrix: MarketMatrix
    identity: str

    def batches(self, start: int) -> Iterator[BarBatch]:
        """Yield the events from index ``start`` on, each without the matrix (evaluated as a live event)."""
        for t in range(start, len(self.matrix.ts_ms)):
            yield self.matrix.batch(t, attached=False)


def load_recorded(
    run_dir: Path, registry: ModelRegistry, allow_run_bundle: bool, num_threads: int = 1, installed: str | None = None
) -> RecordedFeed:
    """Load ``run_dir`` (spec, verified inputs, model bundle) as a feed.

    The bundle must be the registry's promoted model or ``installed`` (the model version of the
    home's active installed bundle), unless ``allow_run_bundle`` accepts the run's own.

    Raises
    ------
    PaperRuntimeError
        When the folder is not a run or its inputs do not match their recorded hash.
    ModelError
        When the run's bundle is not the promoted model and ``allow_run_bundle`` is not given.
    """
    spec_path, inputs_path = run_dir / "spec.json", run_dir / "inputs.parquet"
    if not any((run_dir / name).exists() for name in ("spec.json", "inputs.parquet", "inputs.json")):
        raise PaperRuntimeError(f"--run-dir {run_dir} is not a recorded run (spec.json, inputs.parquet and inputs.json are needed)")
    pipeline = compile_pipeline(read_spec(spec_path)[1])
    bars = read_parquet(inputs_path)
    recorded = read_json(run_dir / "inputs.json", INPUTS_KEYS)["inputs_sha256"]
    if frame_sha256(bars) != recorded:
        raise PaperRuntimeError(f"{inputs_path} does not match its recorded hash {recorded}; the inputs were altered")
    bundle = read_bundle(run_dir / "model")
    if not allow_run_bundle and bundle.version != installed:
        promoted = registry.promoted()
        if promoted is None or promoted["version"] != bundle.version:
            have = "none" if promoted is None else promoted["version"]
            raise ModelError(
                f"paper mode runs only on the promoted model or the installed bundle: the run's bundle is {bundle.version}, "
                f"promoted is {have}, installed is {installed or 'none'}"
                " (pass --allow-run-bundle to run the recorded run's own bundle)"
            )
    matrix = market_matrix(pipeline, bars, bundle, num_threads)
    identity = json.dumps({"spec_hash": pipeline.spec_hash, "model": bundle.version, "inputs": recorded}, sort_keys=True)
    return RecordedFeed(run_dir, pipeline, bundle, matrix, identity)


@dataclass(frozen=True)
class PaperResult:
    """Where a paper session stopped and what the state folder holds."""

    processed: int
    next_index: int
    events: int
    decisions: int
    decision_log_sha256: str
    orders: int
    fills: int
    open_orders: int
    ledger_reconciles: bool
    killed: bool

    @property
    def finished(self) -> bool:
        """Whether every event of the feed has been processed."""
        return self.next_index == self.events

    def as_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {**self.__dict__, "finished": self.finished}


class PaperRuntime:
    """Run a feed through the engine with the journalled simulated broker, one transaction per event."""

    def __init__(
        self,
        feed: RecordedFeed,
        state_dir: Path,
        control: ControlStore | None = None,
        profiles: ProfileWatcher | None = None,
        crash: Crash = _no_crash,
    ) -> None:
        self.feed = feed
        self.control = control
        self.profiles = profiles
        self.crash = crash
        state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = EventJournal(state_dir / JOURNAL_FILE)
        self.conn = self.journal.conn
        pipeline, spec = feed.pipeline, feed.pipeline.spec
        ordermin = {a.symbol: a.ordermin for a in spec.universe.assets}
        stamp = Stamp(pipeline.spec_hash, pipeline.profile_version, feed.bundle.version)
        clock = SimulatedClock(int(feed.matrix.ts_ms[0]))
        self.engine = Engine(
            spec.symbols, spec.universe.clusters, ordermin, pipeline.graph, spec.risk, spec.execution, stamp, clock,
            edge_basis(spec, feed.bundle),
        )  # fmt: skip
        self.broker = JournaledBroker(
            spec.execution.taker_fee_bps, SlippageModel(**spec.execution.slippage.model_dump()), self.journal, clock, crash
        )
        self.engine.broker = self.broker
        self.log = RecordingLog()
        self.engine.log = self.log
        self.active: tuple[str, bool] | None = (pipeline.profile_version, False)
        self.killed = False
        self.next_index = 0
        try:
            self._open(state_dir)
        except BaseException:
            self.journal.close()
            raise

    def _open(self, state_dir: Path) -> None:
        feed = self.feed
        with transaction(self.conn):
            for statement in _SCHEMA:
                self.conn.execute(statement)
            row = self.conn.execute("SELECT identity FROM paper_meta").fetchone()
            if row is None:
                self.conn.execute("INSERT INTO paper_meta (id, identity) VALUES (1, ?)", (feed.identity,))
            elif row[0] != feed.identity:
                raise PaperRuntimeError(f"state folder {state_dir} belongs to another run ({row[0]}), not {feed.identity}")
        self._restore()

    # ------------------------------------------------------------------ restore
    def _restore(self) -> None:
        row = self.conn.execute("SELECT next_index, ts, state FROM paper_checkpoint").fetchone()
        if row is None:
            return
        next_index, ts, text = row
        saved = json.loads(text)
        st, portfolio = self.engine.state, self.engine.portfolio
        st.state[:] = saved["state"]
        st.marks[:] = saved["marks"]
        st.last_hold[:] = saved["last_hold"]
        st.peak_equity = saved["peak_equity"]
        st.campaign = list(saved["campaign"])
        st.drawdown_halted = saved["drawdown_halted"]
        st.flat_since_ms = saved["flat_since_ms"]
        st.profile_valid = saved["profile_valid"]
        st.orders = saved["orders"]
        st.reanchors = list(saved["reanchors"])
        st.high_water_mark = saved["high_water_mark"]
        st.last_buy_ms[:] = [-np.inf if t is None else t for t in saved["last_buy_ms"]]
        st.last_sell_ms[:] = [-np.inf if t is None else t for t in saved["last_sell_ms"]]
        portfolio.cash = Decimal(saved["cash"])
        portfolio.qty = [Decimal(q) for q in saved["qty"]]
        portfolio.cost_basis = [Decimal(c) for c in saved["cost_basis"]]
        portfolio.realized_pnl = Decimal(saved["realized_pnl"])
        portfolio.fees_paid = Decimal(saved["fees_paid"])
        for i, qty in enumerate(portfolio.qty):
            portfolio.qty_f[i] = float(qty)
            portfolio.entry_price_f[i] = float(portfolio.cost_basis[i] / qty) if qty > 0 else np.nan
        portfolio.ledger = [
            Fill(r[0], r[1], r[2], r[3], Decimal(r[4]), Decimal(r[5]), Decimal(r[6]), r[7])
            for r in self.conn.execute(
                "SELECT order_id, ts, symbol, side, qty, price, fee, campaign_id FROM paper_fills ORDER BY seq"
            )
        ]
        st.fills = list(portfolio.ledger)
        self.broker.pending = [MarketOrder(o[0], o[1], o[2], Decimal(o[3]), o[4]) for o in saved["pending"]]
        for (line,) in self.conn.execute("SELECT row FROM paper_decisions ORDER BY seq"):
            DecisionLog.append(self.log, json.loads(line))
        journal_open = sorted(o["client_order_id"] for o in self.journal.open_orders())
        if journal_open != sorted(o.order_id for o in self.broker.pending) or not portfolio.reconciles():
            raise PaperRuntimeError(
                f"state folder does not reconcile: journal open orders {journal_open}, checkpoint open orders "
                f"{sorted(o.order_id for o in self.broker.pending)}, ledger reconciles {portfolio.reconciles()}"
            )
        self.engine.clock.advance_to(ts)
        self.active = None  # re-activate the profile in force at the next event
        self.killed = saved["killed"]
        self.next_index = next_index

    def _checkpoint(self) -> str:
        st, portfolio = self.engine.state, self.engine.portfolio
        return json.dumps(
            {
                "state": st.state.tolist(), "marks": st.marks.tolist(), "last_hold": st.last_hold.tolist(),
                "peak_equity": st.peak_equity, "campaign": st.campaign, "drawdown_halted": st.drawdown_halted,
                "flat_since_ms": st.flat_since_ms, "profile_valid": st.profile_valid, "orders": st.orders,
                "reanchors": st.reanchors, "high_water_mark": st.high_water_mark,
                "last_buy_ms": _times(st.last_buy_ms), "last_sell_ms": _times(st.last_sell_ms), "cash": str(portfolio.cash), "qty": [str(q) for q in portfolio.qty],
                "cost_basis": [str(c) for c in portfolio.cost_basis], "realized_pnl": str(portfolio.realized_pnl),
                "fees_paid": str(portfolio.fees_paid), "killed": self.killed,
                "pending": [[o.order_id, o.symbol, o.side, str(o.qty), o.campaign_id] for o in self.broker.pending],
            },
            sort_keys=True,
        )  # fmt: skip

    # ------------------------------------------------------------------ per event
    def _action(self, ts: int, action: str, detail: object) -> None:
        self.conn.execute("INSERT INTO paper_actions (ts, action, detail) VALUES (?, ?, ?)", (ts, action, json.dumps(detail)))

    def _profile(self, ts: int) -> None:
        """Read the kill switch and the active profile; activate what the gates should see if it changed."""
        killed = self.control.is_killed() if self.control is not None else False
        if self.profiles is not None:
            version, profile = self.profiles.current()
        else:
            version, profile = self.feed.pipeline.profile_version, self.feed.pipeline.spec.risk
        if (version, killed) != self.active:
            self.engine.activate_profile(effective_profile(profile, killed), version)
            self._action(ts, "profile", {"version": version, "killed": killed})
            self.active = (version, killed)
        if killed == self.killed:
            return
        self._action(ts, "kill_switch", {"killed": killed})
        self.killed = killed
        if killed:
            # Every order open when the switch takes effect is cancelled. Orders the gates admit while it
            # is on reduce risk (exits, scale-outs) and are sent and filled, so they are not cancelled later.
            cancelled = apply_kill_switch(self.journal, ts)
            self.broker.drop(set(cancelled))
            self._action(ts, "cancel", {"orders": cancelled})

    def step(self, batch: BarBatch) -> float:
        """Process one event and commit it with its checkpoint in one transaction; return the equity."""
        index = batch.index
        self.broker.event = index
        fills_before = len(self.engine.portfolio.ledger)
        with transaction(self.conn):
            self.crash(index, "before_event")
            self._profile(batch.ts_ms)
            equity = self.engine.on_batch(batch)
            new_fills = self.engine.portfolio.ledger[fills_before:]
            self.conn.executemany(
                "INSERT INTO paper_fills (seq, order_id, ts, symbol, side, qty, price, fee, campaign_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (fills_before + k, f.order_id, f.ts_ms, f.symbol, f.side, str(f.qty), str(f.price), str(f.fee), f.campaign_id)
                    for k, f in enumerate(new_fills)
                ],
            )
            self.crash(index, "after_fills")
            self.conn.executemany(
                "INSERT INTO paper_decisions (seq, row) VALUES (?, ?)",
                [(row["seq"], json.dumps(row, sort_keys=True)) for row in self.log.take()],
            )
            self.conn.execute(
                "INSERT OR REPLACE INTO paper_checkpoint (id, next_index, ts, state) VALUES (1, ?, ?, ?)",
                (index + 1, batch.ts_ms, self._checkpoint()),
            )
            self.crash(index, "before_commit")
        self.crash(index, "after_commit")
        self.next_index = index + 1
        return equity

    def run(self, speed: float = 0.0, max_events: int | None = None, sleep: Sleeper = time.sleep) -> PaperResult:
        """Process events from the next unprocessed one at ``speed`` times real time (0: no sleep).

        ``speed`` is a multiplier: the sleep between two events is their bar gap divided by it, so 10 plays
        ten times faster than real time and 0.5 at half speed.
        """
        if not math.isfinite(speed):
            raise PaperRuntimeError(f"--speed must be a finite number, was {speed}")
        if speed < 0:
            raise PaperRuntimeError(f"--speed must be >= 0 (0 = as fast as possible), was {speed}")
        if max_events is not None and max_events < 1:
            raise PaperRuntimeError(f"--max-events must be >= 1, was {max_events}")
        processed, previous = 0, None
        for batch in self.feed.batches(self.next_index):
            if max_events is not None and processed >= max_events:
                break
            if speed > 0 and previous is not None:
                sleep((batch.ts_ms - previous) / 1000.0 / speed)
            self.step(batch)
            previous = batch.ts_ms
            processed += 1
        return self.result(processed)

    def decisions(self) -> pl.DataFrame:
        """Return the whole decision log (restored rows and this session's)."""
        return self.log.frame()

    def actions(self) -> list[dict[str, Any]]:
        """Return the runtime's logged actions (profile activations, kill switch, cancels), oldest first."""
        rows = self.conn.execute("SELECT ts, action, detail FROM paper_actions ORDER BY seq").fetchall()
        return [{"ts": r[0], "action": r[1], "detail": json.loads(r[2])} for r in rows]

    def result(self, processed: int) -> PaperResult:
        """Return where the run stands, counting ``processed`` events for this session."""
        portfolio = self.engine.portfolio
        decisions = self.decisions()
        return PaperResult(
            processed=processed,
            next_index=self.next_index,
            events=len(self.feed.matrix.ts_ms),
            decisions=len(decisions),
            decision_log_sha256=decision_log_sha256(decisions),
            orders=self.engine.state.orders,
            fills=len(portfolio.ledger),
            open_orders=len(self.broker.pending),
            ledger_reconciles=portfolio.reconciles(),
            killed=self.killed,
        )

    def close(self) -> None:
        """Close the state folder's database."""
        self.journal.close()


def _times(values: np.ndarray) -> list[float | None]:
    """Return order times for a JSON checkpoint: None where a symbol never traded (-inf)."""
    return [None if np.isinf(t) else float(t) for t in values]
