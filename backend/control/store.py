"""Control-plane state in the home's SQLite database: the kill switch and its append-only action log.

The database is ``$ACTS_HOME/acts.db`` (WAL, synchronous=FULL), shared with other stores; every
table here is prefixed ``control_``. ``control_kill_switch`` holds one row, the current state;
``control_actions`` logs every kill and resume (who, when by the injected clock, why, and the state
before and after) and refuses UPDATE and DELETE through triggers, so the log is append-only. A kill
or resume is one ``BEGIN IMMEDIATE`` transaction: the state and its log row change together or not
at all, and two operators acting at once are serialised.

A runtime keeps one :class:`ControlStore` open and calls :meth:`ControlStore.is_killed` before
every event: one indexed read of a one-row table on an open connection (microseconds). The
module-level functions open the default database for one call each; they serve the CLI.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.clock import Clock
from backend.errors import ControlError
from backend.home import acts_home
from backend.sqlite import SqliteStore, transaction

DB_FILENAME = "acts.db"
AUTHOR_MAX_CHARS = 64
REASON_MAX_CHARS = 500
KILL = "kill"
RESUME = "resume"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS control_kill_switch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        killed INTEGER NOT NULL CHECK (killed IN (0, 1))
    )
    """,
    "INSERT OR IGNORE INTO control_kill_switch (id, killed) VALUES (1, 0)",
    """
    CREATE TABLE IF NOT EXISTS control_actions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('kill', 'resume')),
        author TEXT NOT NULL,
        reason TEXT NOT NULL,
        killed_before INTEGER NOT NULL,
        killed_after INTEGER NOT NULL
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS control_actions_no_update BEFORE UPDATE ON control_actions
    BEGIN SELECT RAISE(ABORT, 'control_actions is append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS control_actions_no_delete BEFORE DELETE ON control_actions
    BEGIN SELECT RAISE(ABORT, 'control_actions is append-only'); END
    """,
)


def default_db_path() -> Path:
    """The home's operational database: ``$ACTS_HOME/acts.db``."""
    return acts_home() / DB_FILENAME


@dataclass(frozen=True)
class ControlAction:
    """One logged kill or resume, with the kill switch state before and after it."""

    seq: int
    ts_ms: int
    action: str
    author: str
    reason: str
    killed_before: bool
    killed_after: bool

    def as_dict(self) -> dict[str, Any]:
        """Return the action as JSON-ready data."""
        return {
            "seq": self.seq,
            "ts_ms": self.ts_ms,
            "action": self.action,
            "author": self.author,
            "reason": self.reason,
            "killed_before": self.killed_before,
            "killed_after": self.killed_after,
        }


@dataclass(frozen=True)
class ControlStatus:
    """A snapshot of the control state: the kill switch, since when, and the log's last entry."""

    killed: bool
    since_ms: int | None
    actions: int
    last_action: ControlAction | None

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as JSON-ready data."""
        return {
            "killed": self.killed,
            "since_ms": self.since_ms,
            "actions": self.actions,
            "last_action": None if self.last_action is None else self.last_action.as_dict(),
        }


def _checked_text(field: str, value: str, max_chars: int) -> str:
    text = value.strip()
    if not 1 <= len(text) <= max_chars:
        raise ControlError(f"'{field}' must be 1 to {max_chars} characters (after trimming), was {len(text)}: {value!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ControlError(f"'{field}' must not contain control characters, was {value!r}")
    return text


def _action(row: sqlite3.Row) -> ControlAction:
    return ControlAction(
        seq=row["seq"],
        ts_ms=row["ts"],
        action=row["action"],
        author=row["author"],
        reason=row["reason"],
        killed_before=bool(row["killed_before"]),
        killed_after=bool(row["killed_after"]),
    )


class ControlStore(SqliteStore):
    """The kill switch and its action log in one SQLite file (WAL); each action is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            for statement in _SCHEMA:
                self._conn.execute(statement)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    def is_killed(self) -> bool:
        """Whether the kill switch is on: one read of a one-row table, cheap enough for every event."""
        return bool(self._conn.execute("SELECT killed FROM control_kill_switch WHERE id = 1").fetchone()[0])

    def kill(self, author: str, reason: str, clock: Clock) -> ControlStatus:
        """Turn the kill switch on and log it; killing an already killed system is logged as well."""
        return self._act(KILL, True, author, reason, clock)

    def resume(self, author: str, reason: str, clock: Clock) -> ControlStatus:
        """Turn the kill switch off and log it; resuming a running system is logged as well."""
        return self._act(RESUME, False, author, reason, clock)

    def _act(self, action: str, killed: bool, author: str, reason: str, clock: Clock) -> ControlStatus:
        who = _checked_text("author", author, AUTHOR_MAX_CHARS)
        why = _checked_text("reason", reason, REASON_MAX_CHARS)
        ts = int(clock.now_ms())
        if ts < 0:
            raise ControlError(f"'ts' of a control action must be >= 0 (UTC milliseconds), was {ts}")
        with self._transaction() as conn:
            before = self.is_killed()
            conn.execute(
                "INSERT INTO control_actions (ts, action, author, reason, killed_before, killed_after)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (ts, action, who, why, int(before), int(killed)),
            )
            conn.execute("UPDATE control_kill_switch SET killed = ? WHERE id = 1", (int(killed),))
        return self.status()

    def actions(self) -> list[ControlAction]:
        """Every logged action, oldest first."""
        rows = self._conn.execute(
            "SELECT seq, ts, action, author, reason, killed_before, killed_after FROM control_actions ORDER BY seq"
        ).fetchall()
        return [_action(row) for row in rows]

    def status(self) -> ControlStatus:
        """The current state, when it last changed (None if never), the log size and its last entry."""
        count = self._conn.execute("SELECT COUNT(*) FROM control_actions").fetchone()[0]
        last = self._conn.execute(
            "SELECT seq, ts, action, author, reason, killed_before, killed_after FROM control_actions"
            " ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        changed = self._conn.execute(
            "SELECT ts FROM control_actions WHERE killed_before != killed_after ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return ControlStatus(
            killed=self.is_killed(),
            since_ms=None if changed is None else changed["ts"],
            actions=count,
            last_action=None if last is None else _action(last),
        )



def kill(author: str, reason: str, clock: Clock, path: Path | None = None) -> ControlStatus:
    """Turn the kill switch on in the home's database (or ``path``) and log who, when and why."""
    with ControlStore(path or default_db_path()) as store:
        return store.kill(author, reason, clock)


def resume(author: str, reason: str, clock: Clock, path: Path | None = None) -> ControlStatus:
    """Turn the kill switch off in the home's database (or ``path``) and log who, when and why."""
    with ControlStore(path or default_db_path()) as store:
        return store.resume(author, reason, clock)


def is_killed(path: Path | None = None) -> bool:
    """Whether the kill switch is on; opens the database per call (a runtime keeps a store open)."""
    with ControlStore(path or default_db_path()) as store:
        return store.is_killed()


def status(path: Path | None = None) -> ControlStatus:
    """A snapshot of the control state in the home's database (or ``path``)."""
    with ControlStore(path or default_db_path()) as store:
        return store.status()
