"""Live enablement: an append-only log of the steps towards live trading, and the rule that reads it.

Live trading is allowed only when, in this order and for the key connected now: (1) the key was
onboarded (its permissions checked and it was stored in the OS credential store), (2) a connectivity
check passed after that, (3) a shadow session of at least the configured minimum length ran after
the check, and (4) an operator confirmed with ``acts live enable --confirm`` after the session. A
step counts only after the previous one; onboarding another key, disconnecting or disabling starts
again from the step it undoes. The log lives in ``$ACTS_HOME/acts.db`` (``control_live_events``,
UPDATE and DELETE refused by triggers), with who did each step and when (the injected clock). The
last nonce sent with each key is kept here too (``control_nonces``), so no restart reuses one.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.clock import Clock
from backend.config.text import AUTHOR_MAX_CHARS, attribution, checked_text
from backend.errors import ControlError
from backend.sqlite import SqliteStore, transaction


class LiveEvent(enum.Enum):
    """A step logged towards (or away from) live trading."""

    ONBOARDED = "onboarded"
    CONNECTIVITY_PASSED = "connectivity_passed"
    SHADOW_SESSION = "shadow_session"
    ENABLED = "enabled"
    DISABLED = "disabled"
    DISCONNECTED = "disconnected"


class Requirement(enum.Enum):
    """What live mode needs, in the order it must be met."""

    ONBOARDED_KEY = "an onboarded key (acts kraken connect)"
    CONNECTIVITY_CHECK = "a passed connectivity check (acts kraken status --check)"
    SHADOW_SESSION = "a shadow session of the configured minimum length (acts run --mode shadow)"
    OPERATOR_CONFIRMATION = "an operator confirmation (acts live enable --confirm --author NAME)"


_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS control_live_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts INTEGER NOT NULL,
        event TEXT NOT NULL,
        author TEXT NOT NULL,
        key_fingerprint TEXT NOT NULL,
        detail TEXT NOT NULL
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS control_live_events_no_update BEFORE UPDATE ON control_live_events
    BEGIN SELECT RAISE(ABORT, 'control_live_events is append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS control_live_events_no_delete BEFORE DELETE ON control_live_events
    BEGIN SELECT RAISE(ABORT, 'control_live_events is append-only'); END
    """,
    "CREATE TABLE IF NOT EXISTS control_nonces (key_fingerprint TEXT PRIMARY KEY, last_nonce INTEGER NOT NULL)",
)


@dataclass(frozen=True)
class LiveRecord:
    """One logged step."""

    seq: int
    ts_ms: int
    event: LiveEvent
    author: str
    key_fingerprint: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Readiness:
    """Which requirements are met (in order) for the connected key, and the first missing ones."""

    key_fingerprint: str | None
    met: tuple[Requirement, ...]
    missing: tuple[Requirement, ...]

    @property
    def ready(self) -> bool:
        """Whether live trading may start."""
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        """Return the readiness as JSON-ready data."""
        return {"key_fingerprint": self.key_fingerprint, "ready": self.ready,
                "met": [r.name for r in self.met], "missing": [r.name for r in self.missing]}  # fmt: skip


_SELECT = "SELECT seq, ts, event, author, key_fingerprint, detail FROM control_live_events ORDER BY seq"


def _records(conn: sqlite3.Connection) -> list[LiveRecord]:
    return [LiveRecord(seq, ts, LiveEvent(event), author, key, json.loads(detail))
            for seq, ts, event, author, key, detail in conn.execute(_SELECT).fetchall()]  # fmt: skip


def connected_of(events: list[LiveRecord]) -> LiveRecord | None:
    """Return the onboarding of the key connected after ``events`` (None after a disconnect or before any)."""
    current = None
    for record in events:
        if record.event is LiveEvent.ONBOARDED:
            current = record
        elif record.event is LiveEvent.DISCONNECTED:
            current = None
    return current


def readiness_of(events: list[LiveRecord], min_shadow_ms: int) -> Readiness:
    """Return which requirements ``events`` meet, in order, for the key connected after them (pure)."""
    onboarded = connected_of(events)
    order = list(Requirement)
    if onboarded is None:
        return Readiness(None, (), tuple(order))
    fingerprint = onboarded.key_fingerprint
    met = [Requirement.ONBOARDED_KEY]
    later = [r for r in events if r.seq > onboarded.seq and r.key_fingerprint == fingerprint]
    step = {LiveEvent.CONNECTIVITY_PASSED: Requirement.CONNECTIVITY_CHECK,
            LiveEvent.SHADOW_SESSION: Requirement.SHADOW_SESSION,
            LiveEvent.ENABLED: Requirement.OPERATOR_CONFIRMATION}  # fmt: skip
    for record in later:
        if record.event is LiveEvent.DISABLED and Requirement.OPERATOR_CONFIRMATION in met:
            met.remove(Requirement.OPERATOR_CONFIRMATION)
            continue
        wanted = step.get(record.event)
        if wanted is None or wanted in met or order.index(wanted) != len(met):
            continue
        if wanted is Requirement.SHADOW_SESSION and int(record.detail.get("duration_ms", 0)) < min_shadow_ms:
            continue
        met.append(wanted)
    return Readiness(fingerprint, tuple(met), tuple(order[len(met):]))


def readiness_at(path: Path, min_shadow_ms: int) -> Readiness:
    """Return the live readiness logged in the database at ``path``, reading only (nothing is created).

    A missing database, or one without the log, meets no requirement.
    """
    if not Path(path).is_file():
        return readiness_of([], min_shadow_ms)
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        known = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'control_live_events'").fetchone()
        return readiness_of(_records(conn) if known else [], min_shadow_ms)
    finally:
        conn.close()


class LiveGate(SqliteStore):
    """The live-enablement log and the nonce floor of each key, in the home's database."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            for statement in _SCHEMA:
                self._conn.execute(statement)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    # ------------------------------------------------------------------ log
    def record(self, event: LiveEvent, author: str, key_fingerprint: str, detail: dict[str, Any], clock: Clock) -> LiveRecord:
        """Append one step, stamped with ``clock``; ``detail`` must hold no secret."""
        who = checked_text("author", author, AUTHOR_MAX_CHARS, ControlError)
        fingerprint = checked_text("key_fingerprint", key_fingerprint, AUTHOR_MAX_CHARS, ControlError)
        ts = int(clock.now_ms())
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO control_live_events (ts, event, author, key_fingerprint, detail) VALUES (?, ?, ?, ?, ?)",
                (ts, event.value, who, fingerprint, json.dumps(detail, sort_keys=True)),
            )
        return LiveRecord(int(cursor.lastrowid or 0), ts, event, who, fingerprint, detail)

    def events(self) -> list[LiveRecord]:
        """Every logged step, oldest first."""
        return _records(self._conn)

    def connected(self) -> LiveRecord | None:
        """Return the onboarding of the key connected now (None after a disconnect or before any)."""
        return connected_of(self.events())

    def readiness(self, min_shadow_ms: int) -> Readiness:
        """Return which requirements hold, in order, for the connected key."""
        return readiness_of(self.events(), min_shadow_ms)

    def enable(self, author: str, confirm: bool, min_shadow_ms: int, clock: Clock) -> LiveRecord:
        """Log the operator's confirmation; refused (nothing written) unless the first three steps hold.

        Raises
        ------
        ControlError
            Without ``confirm``, or naming each earlier requirement still missing.
        """
        checked_text("author", author, AUTHOR_MAX_CHARS, ControlError)
        if not confirm:
            raise ControlError("'--confirm' is required: live trading is enabled only by an explicit confirmation")
        ready = self.readiness(min_shadow_ms)
        before = [r for r in ready.missing if r is not Requirement.OPERATOR_CONFIRMATION]
        if before:
            raise ControlError("live trading cannot be enabled yet; missing, in order: " + "; ".join(r.value for r in before))
        return self.record(LiveEvent.ENABLED, author, ready.key_fingerprint or "", {"min_shadow_ms": min_shadow_ms}, clock)

    def disable(self, author: str, reason: str, clock: Clock) -> LiveRecord:
        """Log that live trading is disabled (a new confirmation is needed to enable it again).

        Raises
        ------
        ControlError
            When the author or the reason breaks the free-text rule (:mod:`backend.config.text`).
        """
        who, why = attribution(author, reason, ControlError)
        connected = self.connected()
        fingerprint = connected.key_fingerprint if connected is not None else "none"
        return self.record(LiveEvent.DISABLED, who, fingerprint, {"reason": why}, clock)

    # ------------------------------------------------------------------ nonces
    def nonce_floor(self, key_fingerprint: str) -> int:
        """Return the last nonce sent with the key (0 if none)."""
        row = self._conn.execute("SELECT last_nonce FROM control_nonces WHERE key_fingerprint = ?", (key_fingerprint,)).fetchone()
        return 0 if row is None else int(row[0])

    def save_nonce(self, key_fingerprint: str, nonce: int) -> None:
        """Persist ``nonce`` as the key's last (never lowering it)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO control_nonces (key_fingerprint, last_nonce) VALUES (?, ?) ON CONFLICT(key_fingerprint)"
                " DO UPDATE SET last_nonce = MAX(last_nonce, excluded.last_nonce)",
                (key_fingerprint, nonce),
            )
