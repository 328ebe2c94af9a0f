"""Integration tests for the paper runtime: replay parity, SIGKILL recovery, kill switch, profile pickup."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from paper_helpers import REPO, record_run

from backend.audit.decisions import read_decisions
from backend.clock import WallClock
from backend.control.store import ControlStore
from backend.models.registry import ModelRegistry
from backend.profiles.store import ProfileStore
from backend.profiles.watcher import ProfileWatcher
from backend.runtime.paper import CRASH_ENV, PaperRuntime, RecordedFeed, crash_hook, load_recorded
from execution.orders.lifecycle import OrderStatus


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    return record_run(tmp_path_factory.mktemp("paper"))


@pytest.fixture(scope="module")
def feed(recorded: tuple[Path, dict[str, object]], tmp_path_factory: pytest.TempPathFactory) -> RecordedFeed:
    return load_recorded(recorded[0], ModelRegistry(tmp_path_factory.mktemp("registry")), allow_run_bundle=True)


@pytest.fixture(scope="module")
def order_events(recorded: tuple[Path, dict[str, object]], feed: RecordedFeed) -> list[int]:
    """Event indexes at which the backtest submitted orders, in order."""
    decisions = read_decisions(recorded[0] / "decisions.parquet").filter(pl.col("order_id").is_not_null())
    ts = feed.matrix.ts_ms.tolist()
    return sorted({ts.index(t) for t in decisions["ts"].to_list()})


def journal_statuses(state: Path) -> dict[str, str]:
    with sqlite3.connect(state / "journal.sqlite") as conn:
        return dict(conn.execute("SELECT client_order_id, status FROM orders").fetchall())


def test_paper_run_reproduces_the_backtest_decision_log(feed: RecordedFeed, recorded: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    runtime = PaperRuntime(feed, tmp_path / "state")
    result = runtime.run()
    runtime.close()

    summary = recorded[1]
    assert result.finished and result.processed == summary["timestamps"]
    assert result.decision_log_sha256 == summary["decision_log_sha256"]
    assert (result.orders, result.fills, result.open_orders) == (summary["orders"], summary["fills"], 0)
    assert result.ledger_reconciles
    backtest_fills = pl.read_parquet(recorded[0] / "fills.parquet")
    statuses = journal_statuses(tmp_path / "state")
    assert sorted(statuses) == sorted(backtest_fills["order_id"].to_list())
    assert set(statuses.values()) == {OrderStatus.FILLED.value}


def test_a_stopped_run_continues_where_it_stopped_and_then_does_nothing(feed: RecordedFeed, recorded: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    naps: list[float] = []
    first = PaperRuntime(feed, tmp_path / "state")
    stopped = first.run(speed=600.0, max_events=5, sleep=naps.append)
    first.close()
    second = PaperRuntime(feed, tmp_path / "state")
    done = second.run()
    again = second.run()
    actions = [a["action"] for a in second.actions()]
    second.close()

    assert (stopped.processed, stopped.next_index, stopped.finished) == (5, 5, False)
    assert naps == [0.5] * 4  # 5-minute bars at 600x: half a second between events, none before the first
    assert done.processed == done.events - 5 and done.decision_log_sha256 == recorded[1]["decision_log_sha256"]
    assert again.processed == 0 and again.decision_log_sha256 == done.decision_log_sha256
    assert actions == ["profile"]  # the restart re-activates the profile in force


def _crash_cases() -> list[tuple[str, int, str]]:
    # (name, which order event (or -1 for the last event), kill point)
    return [
        ("start-of-event", 0, "before_event"),
        ("between-journal-write-and-send", 0, "after_record_new"),
        ("after-send", 0, "after_submit"),
        ("journal-write-of-a-later-order", 3, "after_record_new"),
        ("after-fills-booked", 4, "after_fills"),
        ("before-commit", 6, "before_commit"),
        ("after-commit", 8, "after_commit"),
        ("before-commit-of-the-last-event", -1, "before_commit"),
    ]


@pytest.mark.parametrize(("name", "which", "point"), _crash_cases(), ids=[c[0] for c in _crash_cases()])
def test_a_sigkilled_paper_run_restarts_identical_to_an_uninterrupted_one(
    name: str, which: int, point: str, feed: RecordedFeed, recorded: tuple[Path, dict[str, object]],
    order_events: list[int], tmp_path: Path,
) -> None:  # fmt: skip
    run_dir, summary = recorded
    index = order_events[which] + (1 if point == "after_fills" else 0) if which >= 0 else len(feed.matrix.ts_ms) - 1
    state = tmp_path / "state"
    env = {**os.environ, "ACTS_HOME": str(tmp_path / "home"), CRASH_ENV: f"{index}:{point}"}
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from scripts.cli import main; sys.exit(main(sys.argv[1:]))",
         "run", "--mode", "paper", "--source", "recorded", "--run-dir", str(run_dir),
         "--state", str(state), "--speed", "0", "--allow-run-bundle"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert child.returncode == -signal.SIGKILL, child.stderr
    last_committed_ts = int(feed.matrix.ts_ms[index if point == "after_commit" else index - 1])
    expected = read_decisions(run_dir / "decisions.parquet").filter(pl.col("order_id").is_not_null() & (pl.col("ts") <= last_committed_ts))
    assert sorted(journal_statuses(state)) == sorted(expected["order_id"].to_list())  # nothing of the killed event survives
    restarted = PaperRuntime(feed, state)
    assert restarted.next_index == (index + 1 if point == "after_commit" else index)
    result = restarted.run()
    restarted.close()
    assert result.decision_log_sha256 == summary["decision_log_sha256"]
    assert (result.orders, result.fills, result.open_orders, result.ledger_reconciles) == (summary["orders"], summary["fills"], 0, True)
    backtest_fills = pl.read_parquet(run_dir / "fills.parquet")
    statuses = journal_statuses(state)
    assert sorted(statuses) == sorted(backtest_fills["order_id"].to_list())
    assert set(statuses.values()) == {OrderStatus.FILLED.value}


def test_a_paper_run_killed_from_outside_once_the_journal_holds_ten_orders_restarts_identical(
    feed: RecordedFeed, recorded: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    run_dir, summary = recorded
    state = tmp_path / "state"
    env = {**os.environ, "ACTS_HOME": str(tmp_path / "home")}
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from scripts.cli import main; sys.exit(main(sys.argv[1:]))",
         "run", "--mode", "paper", "--source", "recorded", "--run-dir", str(run_dir),
         "--state", str(state), "--speed", "600000", "--allow-run-bundle"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    orders = 0
    while orders < 10 and child.poll() is None:
        time.sleep(0.002)
        if (state / "journal.sqlite").exists():
            with contextlib.suppress(sqlite3.OperationalError):
                orders = len(journal_statuses(state))
    child.kill()

    assert child.wait() == -signal.SIGKILL
    restarted = PaperRuntime(feed, state)
    assert 0 < restarted.next_index < len(feed.matrix.ts_ms)
    result = restarted.run()
    restarted.close()
    assert result.decision_log_sha256 == summary["decision_log_sha256"]
    assert (result.orders, result.fills, result.open_orders, result.ledger_reconciles) == (summary["orders"], summary["fills"], 0, True)


def test_an_exception_inside_an_event_rolls_the_whole_event_back(feed: RecordedFeed, recorded: tuple[Path, dict[str, object]], order_events: list[int], tmp_path: Path) -> None:
    class Crashed(Exception):
        pass

    def handler(_signum: int, _frame: object) -> None:
        raise Crashed

    index = order_events[1]
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        runtime = PaperRuntime(feed, tmp_path / "state", crash=crash_hook({CRASH_ENV: f"{index}:after_submit:SIGUSR1"}))
        with pytest.raises(Crashed):
            runtime.run()
        runtime.close()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    statuses_after_crash = journal_statuses(tmp_path / "state")
    restarted = PaperRuntime(feed, tmp_path / "state")
    assert restarted.next_index == index
    result = restarted.run()
    restarted.close()

    orders = read_decisions(recorded[0] / "decisions.parquet").filter(pl.col("order_id").is_not_null())
    before = int((orders["ts"] < int(feed.matrix.ts_ms[index])).sum())
    assert len(statuses_after_crash) == before  # the event's orders rolled back, every earlier one kept
    assert result.decision_log_sha256 == recorded[1]["decision_log_sha256"] and result.ledger_reconciles


def test_kill_switch_cancels_the_open_orders_before_the_next_event_and_logs_it(
    feed: RecordedFeed, order_events: list[int], tmp_path: Path
) -> None:
    control = ControlStore(tmp_path / "acts.db")
    runtime = PaperRuntime(feed, tmp_path / "state", control)
    runtime.run(max_events=order_events[0] + 1)  # the first order event: its order is open, not yet filled
    open_ids = [o.order_id for o in runtime.broker.pending]
    control.kill("ops", "test", WallClock())
    runtime.run(max_events=1)
    actions = runtime.actions()
    result = runtime.result(0)
    runtime.close()
    control.close()

    statuses = journal_statuses(tmp_path / "state")
    kill_ts = int(feed.matrix.ts_ms[order_events[0] + 1])
    assert open_ids and all(statuses[i] == OrderStatus.CANCELLED.value for i in open_ids)
    assert (result.fills, result.open_orders, result.killed, result.ledger_reconciles) == (0, 0, True, True)
    assert actions == [
        {"ts": kill_ts, "action": "profile", "detail": {"version": feed.pipeline.profile_version, "killed": True}},
        {"ts": kill_ts, "action": "kill_switch", "detail": {"killed": True}},
        # the journal cancels by creation time, then client order id (the orders of one event share a time)
        {"ts": kill_ts, "action": "cancel", "detail": {"orders": sorted(open_ids)}},
    ]


def test_kill_switch_denies_entries_and_lets_exits_through_until_resumed(
    feed: RecordedFeed, order_events: list[int], tmp_path: Path
) -> None:
    control = ControlStore(tmp_path / "acts.db")
    runtime = PaperRuntime(feed, tmp_path / "state", control)
    runtime.run(max_events=order_events[0] + 2)  # the entry has filled: a position is open
    control.kill("ops", "test", WallClock())
    runtime.run()
    decisions = runtime.decisions()
    result = runtime.result(0)
    runtime.close()
    control.close()

    after = decisions.filter(pl.col("ts") >= int(feed.matrix.ts_ms[order_events[0] + 2]))
    entries = after.filter(pl.col("action").is_in(["enter", "reenter"]))
    assert entries.height > 0 and not entries["admitted"].any()
    assert set(entries["gate_reason"].to_list()) == {"KILL_SWITCH_ACTIVE"}
    exits = after.filter(pl.col("action").is_in(["exit", "scale_out"]) & pl.col("order_id").is_not_null())
    statuses = journal_statuses(tmp_path / "state")
    assert exits.height > 0 and exits["admitted"].all()
    assert {statuses[i] for i in exits["order_id"].to_list()} == {OrderStatus.FILLED.value}
    assert result.ledger_reconciles and result.killed


def test_a_resumed_kill_switch_admits_entries_again_and_is_logged(feed: RecordedFeed, tmp_path: Path) -> None:
    control = ControlStore(tmp_path / "acts.db")
    control.kill("ops", "test", WallClock())
    runtime = PaperRuntime(feed, tmp_path / "state", control)
    runtime.run(max_events=10)
    control.resume("ops", "test", WallClock())
    result = runtime.run()
    actions = [a["action"] for a in runtime.actions()]
    runtime.close()
    control.close()

    assert actions == ["profile", "kill_switch", "cancel", "profile", "kill_switch"]
    assert result.orders > 0 and not result.killed


def test_profile_activations_are_picked_up_at_the_next_event_and_recorded(
    feed: RecordedFeed, order_events: list[int], tmp_path: Path
) -> None:
    split = order_events[2] + 1
    store = ProfileStore(tmp_path / "profiles.db", WallClock())
    store.activate("aggressive", 1, "ops", "start")
    runtime = PaperRuntime(feed, tmp_path / "state", profiles=ProfileWatcher(store))
    runtime.run(max_events=split)
    store.activate("balanced", 1, "ops", "calmer")
    runtime.run()
    decisions = runtime.decisions()
    actions = runtime.actions()
    runtime.close()
    store.close()

    first_ts = int(feed.matrix.ts_ms[split])
    versions = decisions.select("ts", "profile_version").unique().sort("ts")
    early = set(versions.filter(pl.col("ts") < first_ts)["profile_version"].to_list())
    late = set(versions.filter(pl.col("ts") >= first_ts)["profile_version"].to_list())
    assert len(early) == 1 and len(late) == 1 and early != late
    assert [a["action"] for a in actions] == ["profile", "profile"]
    assert actions[1]["ts"] == first_ts
