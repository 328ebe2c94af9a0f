"""Ingestion state in one SQLite file (``$ACTS_HOME/data/ingest.sqlite``): cursors, batches, evidence.

A series' cursor says where its stored history ends; its resume point (table ``resume``) says where an
unfinished run's next page starts, so a run killed or stopped half way is continued with the very
requests it would have made (the same pages, the same bytes, the same batch ids). A series' pending
page (table ``pending_page``) is a page the live feed has handed on but not yet written to the lake:
its raw ids, the request and the ``now`` it was parsed at, so a restart applies it again from the raw store.

Evidence rows are never deleted; their ``resolution`` moves from ``open`` to how the issue was
resolved. A row's ``fingerprint`` (sha256 of what was detected) makes detection idempotent: finding
the same issue again, for example after a restart, adds nothing.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from backend.sqlite import transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (
    source TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    next_ms INTEGER NOT NULL, high_ms INTEGER, updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, symbol, timeframe)
);
CREATE TABLE IF NOT EXISTS resume (
    source TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    request_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, symbol, timeframe)
);
CREATE TABLE IF NOT EXISTS batch (
    batch_id TEXT NOT NULL, source TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    status TEXT NOT NULL, rows INTEGER NOT NULL, raw_ids TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (batch_id, symbol, timeframe)
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, source TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    ts_start INTEGER, ts_end INTEGER, detected_at_ms INTEGER NOT NULL, batch_id TEXT,
    detail TEXT NOT NULL, resolution TEXT NOT NULL, resolved_at_ms INTEGER, resolved_by TEXT,
    fingerprint TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS pending_page (
    source TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    request_ms INTEGER NOT NULL, now_ms INTEGER NOT NULL, raw_ids TEXT NOT NULL,
    PRIMARY KEY (source, symbol, timeframe)
);
CREATE INDEX IF NOT EXISTS evidence_series ON evidence(source, symbol, timeframe, kind, resolution);
"""


class EvidenceKind(str, enum.Enum):
    """What reconciliation found."""

    GAP = "gap"
    LATE_ARRIVAL = "late_arrival"
    DUPLICATE = "duplicate"
    REVISION = "revision"
    CROSS_SOURCE = "cross_source_disagreement"
    QUARANTINE = "quarantine"


class Resolution(str, enum.Enum):
    """How an evidence record was resolved; ``open`` until something resolves it."""

    OPEN = "open"
    REFETCHED = "refetched"  # a later fetch filled the gap or replaced the bad page
    PARTIALLY_REFETCHED = "partially_refetched"  # part of a gap was filled; the rest is a new gap record
    ACCEPTED_TRUE_GAP = "accepted_true_gap"  # the provider confirmed it has no bar there
    SUPERSEDED_OLD_KEPT = "superseded_old_kept"  # the new value is in the lake, the old one in this record
    ACCEPTED_LATE = "accepted_late"  # a late bar was added to the lake and recorded here
    FLAGGED = "flagged"  # recorded for review; nothing changed (cross-source disagreement)
    REJECTED = "rejected"  # the batch never reached the lake


@dataclass(frozen=True)
class Evidence:
    """One reconciliation finding."""

    kind: EvidenceKind
    source: str
    symbol: str
    timeframe: str
    ts_start: int | None
    ts_end: int | None
    detail: dict = field(default_factory=dict)
    resolution: Resolution = Resolution.OPEN
    batch_id: str | None = None

    @property
    def fingerprint(self) -> str:
        """Return the sha256 of what was found (not of when or how it was resolved)."""
        text = json.dumps(
            [self.kind.value, self.source, self.symbol, self.timeframe, self.ts_start, self.ts_end, self.detail],
            sort_keys=True, separators=(",", ":"), default=str,
        )  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class EvidenceRow:
    """An evidence record as stored."""

    id: int
    kind: EvidenceKind
    source: str
    symbol: str
    timeframe: str
    ts_start: int | None
    ts_end: int | None
    detected_at_ms: int
    batch_id: str | None
    detail: dict
    resolution: Resolution
    resolved_at_ms: int | None
    resolved_by: str | None

    def as_dict(self) -> dict:
        """Return the record as plain JSON-ready values."""
        return {
            "id": self.id, "kind": self.kind.value, "source": self.source, "symbol": self.symbol,
            "timeframe": self.timeframe, "ts_start": self.ts_start, "ts_end": self.ts_end,
            "detected_at_ms": self.detected_at_ms, "batch_id": self.batch_id, "detail": self.detail,
            "resolution": self.resolution.value, "resolved_at_ms": self.resolved_at_ms, "resolved_by": self.resolved_by,
        }  # fmt: skip


@dataclass(frozen=True)
class Cursor:
    """Where a series continues (``next_ms``) and the newest bar it holds (``high_ms``)."""

    next_ms: int
    high_ms: int | None


@dataclass(frozen=True)
class PendingPage:
    """A page handed on before the lake has it: where it was asked from, when it was parsed, its raw rows."""

    request_ms: int
    now_ms: int
    raw_ids: tuple[int, ...]


class IngestState:
    """Cursors, batches and evidence of the ingestion, in SQLite (WAL, one transaction per step).

    Parameters
    ----------
    path : Path
        The SQLite file (its folder is created).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL survives a killed process; a power cut can lose the last step, which re-runs idempotently.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """Run the body in one transaction: all of it is committed, or none of it."""
        return transaction(self._db)

    # ------------------------------------------------------------- cursors
    def cursor(self, source: str, symbol: str, timeframe: str) -> Cursor | None:
        """Return the cursor of a series, or None before its first batch."""
        row = self._db.execute(
            "SELECT next_ms, high_ms FROM cursor WHERE source = ? AND symbol = ? AND timeframe = ?",
            (source, symbol, timeframe),
        ).fetchone()
        return None if row is None else Cursor(row[0], row[1])

    def set_cursor(self, source: str, symbol: str, timeframe: str, cursor: Cursor, now_ms: int) -> None:
        """Move a series' cursor."""
        self._db.execute(
            "INSERT INTO cursor VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, symbol, timeframe) DO UPDATE SET"
            " next_ms = excluded.next_ms, high_ms = excluded.high_ms, updated_at_ms = excluded.updated_at_ms",
            (source, symbol, timeframe, cursor.next_ms, cursor.high_ms, now_ms),
        )

    def cursors(self) -> list[tuple[str, str, str, Cursor]]:
        """Return every cursor, sorted by (source, symbol, timeframe)."""
        rows = self._db.execute("SELECT source, symbol, timeframe, next_ms, high_ms FROM cursor ORDER BY 1, 2, 3")
        return [(r[0], r[1], r[2], Cursor(r[3], r[4])) for r in rows]

    def resume_point(self, source: str, symbol: str, timeframe: str) -> int | None:
        """Return where the unfinished run of a series asks for its next page, or None when no run is unfinished."""
        row = self._db.execute(
            "SELECT request_ms FROM resume WHERE source = ? AND symbol = ? AND timeframe = ?", (source, symbol, timeframe)
        ).fetchone()
        return None if row is None else int(row[0])

    def set_resume_point(self, source: str, symbol: str, timeframe: str, request_ms: int | None, now_ms: int) -> None:
        """Record the next page request of a series' unfinished run; None: the run finished (the point is dropped)."""
        if request_ms is None:
            self._db.execute("DELETE FROM resume WHERE source = ? AND symbol = ? AND timeframe = ?", (source, symbol, timeframe))
            return
        self._db.execute(
            "INSERT INTO resume VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, symbol, timeframe) DO UPDATE SET"
            " request_ms = excluded.request_ms, updated_at_ms = excluded.updated_at_ms",
            (source, symbol, timeframe, request_ms, now_ms),
        )

    # ------------------------------------------------------------- pending pages
    def set_pending_page(self, source: str, symbol: str, timeframe: str, page: PendingPage) -> None:
        """Record the page of a series handed on before it reached the lake (replacing an older one)."""
        self._db.execute(
            "INSERT INTO pending_page VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, symbol, timeframe) DO UPDATE SET"
            " request_ms = excluded.request_ms, now_ms = excluded.now_ms, raw_ids = excluded.raw_ids",
            (source, symbol, timeframe, page.request_ms, page.now_ms, json.dumps(list(page.raw_ids))),
        )

    def pending_pages(self, source: str, timeframe: str) -> dict[str, PendingPage]:
        """Return the pending page of every series of ``source`` and ``timeframe``, by symbol (sorted)."""
        rows = self._db.execute(
            "SELECT symbol, request_ms, now_ms, raw_ids FROM pending_page WHERE source = ? AND timeframe = ? ORDER BY symbol",
            (source, timeframe),
        )
        return {r[0]: PendingPage(r[1], r[2], tuple(json.loads(r[3]))) for r in rows}

    def drop_pending_page(self, source: str, symbol: str, timeframe: str) -> None:
        """Forget a series' pending page (it is in the lake)."""
        self._db.execute("DELETE FROM pending_page WHERE source = ? AND symbol = ? AND timeframe = ?", (source, symbol, timeframe))

    # ------------------------------------------------------------- batches
    def record_batch(
        self, batch_id: str, source: str, symbol: str, timeframe: str, status: str, rows: int,
        raw_ids: Iterable[int], now_ms: int,
    ) -> None:  # fmt: skip
        """Record (or update the status of) an ingestion batch."""
        self._db.execute(
            "INSERT INTO batch VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (batch_id, symbol, timeframe)"
            " DO UPDATE SET status = excluded.status, rows = excluded.rows",
            (batch_id, source, symbol, timeframe, status, rows, json.dumps(sorted(raw_ids)), now_ms),
        )

    def batches(self) -> list[dict]:
        """Return every batch row, oldest first."""
        rows = self._db.execute("SELECT * FROM batch ORDER BY created_at_ms, batch_id, symbol")
        names = ("batch_id", "source", "symbol", "timeframe", "status", "rows", "raw_ids", "created_at_ms")
        return [dict(zip(names, row, strict=True)) for row in rows]

    # ------------------------------------------------------------- evidence
    def add_evidence(self, evidence: Evidence, now_ms: int) -> bool:
        """Store a finding unless the same finding is already stored; return True when it was new."""
        resolved_at = None if evidence.resolution is Resolution.OPEN else now_ms
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO evidence (kind, source, symbol, timeframe, ts_start, ts_end, detected_at_ms,"
            " batch_id, detail, resolution, resolved_at_ms, resolved_by, fingerprint)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (evidence.kind.value, evidence.source, evidence.symbol, evidence.timeframe, evidence.ts_start,
             evidence.ts_end, now_ms, evidence.batch_id, json.dumps(evidence.detail, sort_keys=True, default=str),
             evidence.resolution.value, resolved_at, evidence.batch_id if resolved_at else None, evidence.fingerprint),
        )  # fmt: skip
        return cursor.rowcount == 1

    def resolve(self, evidence_id: int, resolution: Resolution, by: str, now_ms: int) -> None:
        """Set the resolution of an open record (a resolved record keeps its first resolution)."""
        self._db.execute(
            "UPDATE evidence SET resolution = ?, resolved_at_ms = ?, resolved_by = ? WHERE id = ? AND resolution = ?",
            (resolution.value, now_ms, by, evidence_id, Resolution.OPEN.value),
        )

    def evidence(
        self,
        kind: EvidenceKind | None = None,
        source: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
        resolution: Resolution | None = None,
    ) -> list[EvidenceRow]:
        """Return evidence records matching every given filter, by id."""
        clauses, values = [], []
        for column, value in (("kind", kind), ("source", source), ("symbol", symbol), ("timeframe", timeframe),
                              ("resolution", resolution)):  # fmt: skip
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value.value if isinstance(value, enum.Enum) else value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            "SELECT id, kind, source, symbol, timeframe, ts_start, ts_end, detected_at_ms, batch_id, detail,"
            f" resolution, resolved_at_ms, resolved_by FROM evidence{where} ORDER BY id",
            values,
        )
        return [
            EvidenceRow(r[0], EvidenceKind(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9]),
                        Resolution(r[10]), r[11], r[12])  # fmt: skip
            for r in rows
        ]
