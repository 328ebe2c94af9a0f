"""Paper, shadow and live on the Kraken feed, against the emulator serving a recorded run's bars bar by bar."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from kraken_helpers import BAR_MS, BarClock, run_model, settings_for
from paper_helpers import record_run

from backend.control.live import LiveEvent, LiveGate, readiness_at
from backend.control.store import ControlStore
from backend.data.raw import RawStore
from backend.data.state import EvidenceKind, IngestState
from backend.clock import WallClock
from backend.kraken.client import Credentials, NonceSource, make_client
from backend.runtime.live import DECISION_KEY, LiveRefused, divergence, kraken_feed, live_broker, refuse_unready, shadow_broker
from backend.runtime.paper import PaperRuntime
from backend.sandbox.faults import FaultSpec, PrivateFault
from backend.sandbox.kraken import KrakenEmulator
from backend.sandbox.kraken_account import KrakenAccount
from execution.brokers.kraken import kraken_client_id

LIVE = ("query-funds", "query-open-trades", "query-closed-trades", "modify-trades", "close-trades")
WINDOW_START_BAR = 2600  # the recorded run trades around here (entries, scale-outs, re-entries, exits)
POLLS = 80
FAULT_START_BAR, FAULT_POLLS = 2150, 300


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("kraken_sessions")
    run_dir, _ = record_run(root)
    return run_model(run_dir, root)


class Session:
    """One session's emulator, account and runtime pieces."""

    def __init__(self, model: tuple, root: Path, faults: FaultSpec = FaultSpec(), start_bar: int = WINDOW_START_BAR) -> None:
        self.pipeline, self.bundle, bars = model
        self.first = int(bars["ts"].min())
        self.clock = BarClock(self.first + start_bar * BAR_MS + 1)
        self.account = KrakenAccount({"ZUSD": str(self.pipeline.spec.execution.initial_cash)})
        self.emulator = KrakenEmulator(bars, "5m", faults, universe=self.pipeline.spec.universe, now_ms=self.clock, account=self.account)
        self.emulator.start()
        self.root = root
        key = self.account.create_key(LIVE)
        self.client = make_client(self.emulator.base_url, Credentials(key.key, key.secret),
                                  NonceSource(lambda: time.time_ns() // 1_000_000), 1000, rate_limit=False)  # fmt: skip

    def runtime(self, polls: int, broker: str = "paper", control: ControlStore | None = None) -> tuple[PaperRuntime, object]:
        source, close = kraken_feed(self.pipeline, self.bundle, self.root / "home", settings_for(self.emulator.base_url),
                                    self.clock, self.first, sleep=self.clock.sleep, max_polls=polls)  # fmt: skip
        factory = {"paper": None, "live": live_broker(self.client, self.pipeline, sleep=lambda s: None),
                   "shadow": shadow_broker(self.pipeline)}[broker]  # fmt: skip
        return PaperRuntime(source, self.root / "state", control, None, broker_factory=factory), close

    def run(self, polls: int, broker: str = "paper", control: ControlStore | None = None) -> tuple[pl.DataFrame, PaperRuntime]:
        runtime, close = self.runtime(polls, broker, control)
        try:
            runtime.run(0.0)
            return runtime.decisions(), runtime
        finally:
            runtime.close()
            close()  # type: ignore[operator]

    def stop(self) -> None:
        self.emulator.stop()


def broker_events(state: Path) -> list[dict]:
    with sqlite3.connect(state / "live_orders.sqlite") as conn:
        rows = conn.execute("SELECT kind, error_class, kraken_error FROM broker_events ORDER BY seq").fetchall()
    return [{"kind": k, "error_class": c, "kraken_error": e} for k, c, e in rows]


@pytest.fixture()
def session(model: tuple, tmp_path: Path) -> Iterator[Session]:
    made = Session(model, tmp_path)
    yield made
    made.stop()


def test_paper_on_the_feed_keeps_raw_bodies_lake_bars_and_gap_evidence(model: tuple, tmp_path: Path) -> None:
    first = int(model[2]["ts"].min())
    hidden = first + (WINDOW_START_BAR + 10) * BAR_MS
    made = Session(model, tmp_path, FaultSpec(hidden_bars=(hidden,)))
    try:
        decisions, runtime = made.run(POLLS)
    finally:
        made.stop()
    result = runtime.result(0)
    assert result.next_index == POLLS - 2 and result.orders > 0  # warm-up poll, hidden bar and result.ledger_reconciles
    assert hidden not in decisions["ts"].to_list()
    raw = RawStore(tmp_path / "home" / "raw")
    assert {r.endpoint for r in raw.records()} == {"/0/public/OHLC"} and len(raw.records()) >= POLLS
    raw.close()
    state = IngestState(tmp_path / "home" / "data" / "ingest.sqlite")
    gaps = state.evidence(EvidenceKind.GAP, "kraken", "BTC", "5m")
    state.close()
    assert [(g.ts_start, g.ts_end) for g in gaps] == [(hidden, hidden + BAR_MS)]
    lake_files = list((tmp_path / "home" / "lake").rglob("*.parquet"))
    assert lake_files and pl.read_parquet(lake_files[0])["source"].unique().to_list() == ["kraken"]


def test_a_stopped_paper_session_continues_exactly(model: tuple, tmp_path: Path) -> None:
    whole = Session(model, tmp_path / "whole")
    try:
        expected, _ = whole.run(POLLS)
    finally:
        whole.stop()
    split = Session(model, tmp_path / "split")
    try:
        split.run(30)
        split.clock.now -= BAR_MS  # the restarted feed's first poll sees the bar the last one saw, and more
        got, runtime = split.run(POLLS - 29)
    finally:
        split.stop()
    assert got.select(*DECISION_KEY, "order_id").equals(expected.select(*DECISION_KEY, "order_id"))
    assert runtime.result(0).ledger_reconciles


def test_paper_and_live_on_the_same_bars_make_the_same_decisions(model: tuple, tmp_path: Path) -> None:
    paper = Session(model, tmp_path / "paper")
    live = Session(model, tmp_path / "live")
    try:
        paper_decisions, _ = paper.run(POLLS)
        live_decisions, runtime = live.run(POLLS, "live")
    finally:
        paper.stop()
        live.stop()
    assert divergence(live_decisions, paper_decisions)["first_divergence_ts"] is None
    orders = live_decisions.filter(pl.col("order_id").is_not_null())["order_id"].to_list()
    assert len(orders) >= 5
    sent = sorted(o.cl_ord_id for o in live.account.orders.values())
    assert sent == sorted(kraken_client_id(o) for o in orders)  # each decision's order sent once
    fills = runtime.engine.portfolio.ledger
    assert len(fills) == len(live.account.fills) and runtime.result(0).ledger_reconciles
    by_order = {o.txid: o for o in live.account.orders.values()}
    exchange = sorted((by_order[f["ordertxid"]].cl_ord_id, Decimal(f["vol"])) for f in live.account.fills.values())
    assert exchange == sorted((kraken_client_id(f.order_id), f.qty) for f in fills)


def test_every_emulator_fault_is_handled_with_journal_evidence(model: tuple, tmp_path: Path) -> None:
    faults = FaultSpec(timeout_seconds=1.5, private_faults=(
        PrivateFault(endpoint="AddOrder", calls=(1,), error="EAPI:Rate limit exceeded"),
        PrivateFault(endpoint="AddOrder", calls=(2,), error="EAPI:Invalid nonce"),
        PrivateFault(endpoint="AddOrder", calls=(4,), status=502, after_accept=True),
        PrivateFault(endpoint="AddOrder", calls=(6,), timeout=True, after_accept=True),
        PrivateFault(endpoint="AddOrder", calls=(7,), error="EOrder:Insufficient funds"),
        PrivateFault(endpoint="AddOrder", calls=(8,), error="EGeneral:Invalid arguments"),
        PrivateFault(endpoint="AddOrder", calls=(9,), status=503),
        PrivateFault(endpoint="AddOrder", calls=(10, 11, 12, 13), error="EService:Unavailable"),
        PrivateFault(endpoint="ClosedOrders", calls=(5,), status=500),
    ))  # fmt: skip
    # From before the recorded run's first entry, long enough for the ~10 orders the schedule above needs (the
    # cost-aware strategy trades sparsely: a few orders in any 80 bars).
    made = Session(model, tmp_path, faults, start_bar=FAULT_START_BAR)
    try:
        _, runtime = made.run(FAULT_POLLS, "live")
    finally:
        made.stop()
    events = broker_events(tmp_path / "state")
    failed = {(e["error_class"], e["kraken_error"]) for e in events if e["kind"] == "SEND_FAILED"}
    assert {("rate_limit", "EAPI:Rate limit exceeded"), ("nonce", "EAPI:Invalid nonce"),
            ("insufficient_funds", "EOrder:Insufficient funds"), ("invalid_arguments", "EGeneral:Invalid arguments"),
            ("unavailable", "EService:Unavailable")} <= failed  # fmt: skip
    assert {e["error_class"] for e in events if e["kind"] == "SEND_FAILED"} >= {"timeout", "unavailable"}
    assert sum(e["kind"] == "RECONCILED" for e in events) == 2  # the 502 and the timeout after the order was placed
    assert any(e["kind"] == "LOOKUP_FAILED" and e["error_class"] == "unavailable" for e in events)  # ClosedOrders 500
    with sqlite3.connect(tmp_path / "state" / "live_orders.sqlite") as conn:
        rejected = conn.execute("SELECT reason FROM order_events WHERE to_status = 'REJECTED'").fetchall()
    assert {r[0].split(":")[0] for r in rejected} == {"REJECTED insufficient_funds", "REJECTED invalid_arguments",
                                                      "REJECTED gave up after retries"}  # fmt: skip
    cl_ids = [o.cl_ord_id for o in made.account.orders.values()]
    assert len(cl_ids) == len(set(cl_ids)), "no order was sent twice"
    assert len(runtime.engine.portfolio.ledger) == len(made.account.fills)


def test_shadow_journals_orders_and_sends_none(session: Session) -> None:
    decisions, runtime = session.run(POLLS, "shadow")
    assert session.account.orders == {} and decisions.filter(pl.col("order_id").is_not_null()).height > 0
    with sqlite3.connect(session.root / "state" / "journal.sqlite") as conn:
        reasons = {r[0] for r in conn.execute("SELECT reason FROM order_events")}
    assert "SHADOW_NOT_SENT" in reasons


def test_the_kill_switch_cancels_on_kraken_before_the_next_event(session: Session, tmp_path: Path) -> None:
    control = ControlStore(tmp_path / "acts.db")
    session.run(20, "live", control)
    resting = session.client.create_order("BTC/USD", "limit", "buy", 0.001, 1000.0)
    control.kill("ops", "drill", WallClock())
    session.run(5, "live", control)
    assert session.account.orders[resting["id"]].status == "canceled"
    with sqlite3.connect(session.root / "state" / "journal.sqlite") as conn:
        assert ("kill_switch",) in conn.execute("SELECT action FROM paper_actions").fetchall()
    control.close()


def test_polls_that_bring_no_closed_bar_yield_no_event(model: tuple, tmp_path: Path) -> None:
    made = Session(model, tmp_path)
    try:
        # Kraken's clock stands still: after the warm-up poll, no poll brings a bar.
        source, close = kraken_feed(made.pipeline, made.bundle, tmp_path / "home", settings_for(made.emulator.base_url),
                                    made.clock, made.first, sleep=lambda seconds: None, max_polls=4)  # fmt: skip
        try:
            assert list(source.batches(0)) == [] and source.polls == 4
        finally:
            close()
        # With idle_polls the session ends after that many empty polls in a row, before max_polls.
        source, close = kraken_feed(made.pipeline, made.bundle, tmp_path / "home2", settings_for(made.emulator.base_url),
                                    made.clock, made.first, sleep=lambda seconds: None, max_polls=10, idle_polls=2)  # fmt: skip
        try:
            assert list(source.batches(0)) == [] and source.polls == 3  # the warm-up, then two empty polls
        finally:
            close()
    finally:
        made.stop()


def test_live_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    db = tmp_path / "acts.db"
    minimum = settings_for("http://127.0.0.1:1").min_shadow_ms
    with pytest.raises(LiveRefused, match="missing, in order: an onboarded key .*; a passed connectivity check"):
        refuse_unready(readiness_at(db, minimum))
    assert not db.exists()  # reading the readiness creates nothing
    with LiveGate(db) as gate:
        clock = WallClock()
        gate.record(LiveEvent.ONBOARDED, "ops", "k", {"mode": "live"}, clock)
        gate.record(LiveEvent.CONNECTIVITY_PASSED, "ops", "k", {}, clock)
        with pytest.raises(LiveRefused, match="missing, in order: a shadow session"):
            refuse_unready(readiness_at(db, minimum))
        gate.record(LiveEvent.SHADOW_SESSION, "ops", "k", {"duration_ms": 3_600_000}, clock)
        with pytest.raises(LiveRefused, match="missing, in order: an operator confirmation"):
            refuse_unready(gate.readiness(minimum))
        gate.enable("ops", True, 3_600_000, clock)
        refuse_unready(readiness_at(db, minimum))
