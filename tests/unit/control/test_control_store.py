"""The control store: kill switch state and its append-only, attributed action log in SQLite (WAL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.clock import SimulatedClock
from backend.control import ControlAction, ControlStatus, ControlStore, is_killed, kill, resume, status
from backend.control.store import AUTHOR_MAX_CHARS, REASON_MAX_CHARS, default_db_path
from backend.errors import ActsError, ControlError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "acts.db"


@pytest.fixture
def store(path: Path) -> Iterator[ControlStore]:
    with ControlStore(path) as opened:
        yield opened


def _rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_new_store_is_not_killed_and_has_an_empty_log(store: ControlStore) -> None:
    assert store.is_killed() is False
    assert store.actions() == []
    assert store.status() == ControlStatus(killed=False, since_ms=None, actions=0, last_action=None)


def test_the_database_is_wal_with_full_sync_and_only_control_prefixed_tables(store: ControlStore, path: Path) -> None:
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    names = [name for (name,) in _rows(path, "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') AND name NOT LIKE 'sqlite_%'")]
    assert sorted(names) == ["control_actions", "control_actions_no_delete", "control_actions_no_update", "control_kill_switch"]


def test_kill_turns_the_switch_on_and_logs_who_when_and_why(store: ControlStore) -> None:
    snapshot = store.kill("alice", "  exchange outage  ", SimulatedClock(1_700_000_000_000))

    assert store.is_killed() is True
    action = ControlAction(1, 1_700_000_000_000, "kill", "alice", "exchange outage", killed_before=False, killed_after=True)
    assert snapshot == ControlStatus(killed=True, since_ms=1_700_000_000_000, actions=1, last_action=action)
    assert store.actions() == [action]


def test_resume_turns_it_off_and_since_is_the_time_of_the_last_change(store: ControlStore) -> None:
    store.kill("alice", "outage", SimulatedClock(1_000))
    store.kill("bob", "still out", SimulatedClock(2_000))
    snapshot = store.resume("bob", "exchange back", SimulatedClock(3_000))

    assert store.is_killed() is False
    assert snapshot.since_ms == 3_000 and snapshot.actions == 3
    assert [(a.action, a.author, a.killed_before, a.killed_after) for a in store.actions()] == [
        ("kill", "alice", False, True),
        ("kill", "bob", True, True),
        ("resume", "bob", True, False),
    ]


def test_a_repeated_kill_is_logged_but_keeps_the_time_the_switch_went_on(store: ControlStore) -> None:
    store.kill("alice", "outage", SimulatedClock(1_000))
    snapshot = store.kill("bob", "again", SimulatedClock(5_000))

    assert snapshot.killed and snapshot.since_ms == 1_000
    assert snapshot.last_action is not None and snapshot.last_action.ts_ms == 5_000


def test_a_resume_of_a_running_system_is_logged_and_changes_nothing(store: ControlStore) -> None:
    snapshot = store.resume("alice", "drill", SimulatedClock(7))

    assert snapshot == ControlStatus(
        killed=False, since_ms=None, actions=1, last_action=ControlAction(1, 7, "resume", "alice", "drill", False, False)
    )


def test_state_survives_reopening_and_is_seen_by_another_connection(path: Path) -> None:
    with ControlStore(path) as first:
        first.kill("alice", "outage", SimulatedClock(10))
        with ControlStore(path) as second:
            assert second.is_killed() is True
            second.resume("bob", "back", SimulatedClock(20))
        assert first.is_killed() is False
    with ControlStore(path) as reopened:
        assert [a.seq for a in reopened.actions()] == [1, 2]


@pytest.mark.parametrize("statement", ["UPDATE control_actions SET reason = 'x'", "DELETE FROM control_actions"])
def test_the_action_log_refuses_updates_and_deletes(store: ControlStore, path: Path, statement: str) -> None:
    store.kill("alice", "outage", SimulatedClock(1))
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="control_actions is append-only"):
            conn.execute(statement)
    finally:
        conn.close()
    assert _rows(path, "SELECT reason FROM control_actions") == [("outage",)]


@pytest.mark.parametrize(
    ("author", "reason", "message"),
    [
        ("", "why", f"'author' must be 1 to {AUTHOR_MAX_CHARS} characters (after trimming), was 0: ''"),
        ("   ", "why", f"'author' must be 1 to {AUTHOR_MAX_CHARS} characters (after trimming), was 0: '   '"),
        ("a" * 65, "why", f"'author' must be 1 to {AUTHOR_MAX_CHARS} characters (after trimming), was 65: '{'a' * 65}'"),
        ("alice", "", f"'reason' must be 1 to {REASON_MAX_CHARS} characters (after trimming), was 0: ''"),
        ("alice", "r" * 501, f"'reason' must be 1 to {REASON_MAX_CHARS} characters (after trimming), was 501: '{'r' * 501}'"),
        ("al\nice", "why", "'author' must not contain control characters, was 'al\\nice'"),
        ("alice", "why\x7f", "'reason' must not contain control characters, was 'why\\x7f'"),
    ],
)
def test_bad_author_or_reason_is_refused_naming_the_field_and_writes_nothing(
    store: ControlStore, author: str, reason: str, message: str
) -> None:
    with pytest.raises(ControlError) as caught:
        store.kill(author, reason, SimulatedClock(1))

    assert str(caught.value) == message
    assert isinstance(caught.value, ActsError)
    assert store.is_killed() is False and store.actions() == []


def test_a_clock_before_the_epoch_is_refused_and_writes_nothing(store: ControlStore) -> None:
    with pytest.raises(ControlError) as caught:
        store.kill("alice", "outage", SimulatedClock(-5))

    assert str(caught.value) == "'ts' of a control action must be >= 0 (UTC milliseconds), was -5"
    assert store.actions() == []


def test_a_write_lock_held_elsewhere_fails_the_action_before_anything_is_written(store: ControlStore, path: Path) -> None:
    store._conn.execute("PRAGMA busy_timeout=0")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.kill("alice", "outage", SimulatedClock(1))
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
    assert store.is_killed() is False and store.actions() == []
    assert store.kill("alice", "outage", SimulatedClock(2)).actions == 1


def test_an_error_inside_the_transaction_rolls_back_the_state_with_the_log(store: ControlStore) -> None:
    # A timestamp SQLite cannot store fails the log insert after the transaction began.
    with pytest.raises(OverflowError):
        store.kill("alice", "outage", SimulatedClock(2**63))

    assert store.is_killed() is False and store.actions() == []
    assert not store._conn.in_transaction


def test_a_full_disk_surfaces_its_own_error_and_leaves_state_and_log_consistent(store: ControlStore) -> None:
    # SQLite rolls back by itself on SQLITE_FULL; the store must not hide that error behind its own ROLLBACK.
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for step in range(200):
            action = store.kill if step % 2 == 0 else store.resume
            action("alice", "r" * REASON_MAX_CHARS, SimulatedClock(step))

    logged = store.actions()
    assert 0 < len(logged) < 200
    assert store.is_killed() is logged[-1].killed_after
    assert [a.seq for a in logged] == list(range(1, len(logged) + 1))


def test_status_as_dict_is_json_ready(store: ControlStore) -> None:
    assert store.status().as_dict() == {"killed": False, "since_ms": None, "actions": 0, "last_action": None}
    store.kill("alice", "outage", SimulatedClock(9))

    assert store.status().as_dict() == {
        "killed": True,
        "since_ms": 9,
        "actions": 1,
        "last_action": {
            "seq": 1,
            "ts_ms": 9,
            "action": "kill",
            "author": "alice",
            "reason": "outage",
            "killed_before": False,
            "killed_after": True,
        },
    }


def test_module_functions_use_the_homes_database(acts_home: Path) -> None:
    assert default_db_path() == acts_home / "acts.db"
    assert is_killed() is False
    kill("alice", "outage", SimulatedClock(1))

    assert (acts_home / "acts.db").is_file()
    assert is_killed() is True and status().killed is True
    resume("alice", "back", SimulatedClock(2))
    assert is_killed() is False and status().actions == 2


def test_module_functions_take_an_explicit_database(path: Path) -> None:
    kill("alice", "outage", SimulatedClock(1), path)

    assert is_killed(path) is True
    assert resume("bob", "back", SimulatedClock(2), path).killed is False
    assert status(path).actions == 2
