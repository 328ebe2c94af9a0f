"""Content-addressed store of provider response bodies, kept byte for byte before any parsing.

Layout under ``<root>`` (``$ACTS_HOME/raw``)::

    objects/<sha256[:2]>/<sha256>      the body, written once, never overwritten (:meth:`RawStore.put`)
    manifest.sqlite                     one row per distinct body received for a request, and (table
                                        ``raw_object``) the bodies kept by :meth:`RawStore.put_many`

A manifest row records the provider, the endpoint, the request parameters (secrets refused), when the
body was received, its sha256 and size, the HTTP status, and ``revision_of``: the id of the previous
row of the same request and HTTP status when the body differs from it. Receiving the same body with
the same status again for the same request adds no row.

:meth:`RawStore.put_many` keeps the answers of one live poll (30 series) in one SQLite transaction
(WAL, ``synchronous=FULL``): the bodies and their rows are one synced append, durable before it
returns, instead of one synced file per body.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.errors import DataError
from backend.sqlite import transaction

# Parameter names that may carry a credential: refused, so a secret can never reach the manifest.
_SECRET_NAME = re.compile(r"(key|secret|token|sign|auth|password|nonce)", re.IGNORECASE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_response (
    id INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    params TEXT NOT NULL,
    request_key TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    revision_of INTEGER REFERENCES raw_response(id)
);
CREATE INDEX IF NOT EXISTS raw_response_request ON raw_response(request_key, id);
CREATE TABLE IF NOT EXISTS raw_object (sha256 TEXT PRIMARY KEY, body BLOB NOT NULL);
"""


@dataclass(frozen=True)
class RawEntry:
    """One response to keep: who answered which request, when, with what status and body."""

    provider: str
    endpoint: str
    params: Mapping[str, object]
    body: bytes
    received_at_ms: int
    status: int = 200


@dataclass(frozen=True)
class RawRecord:
    """One manifest row."""

    id: int
    provider: str
    endpoint: str
    params: str
    received_at_ms: int
    status: int
    sha256: str
    size: int
    revision_of: int | None


def canonical_params(params: Mapping[str, object]) -> str:
    """Return the parameters as canonical JSON (sorted keys, compact), refusing secret-looking names.

    Raises
    ------
    DataError
        When a parameter name looks like a credential (key, secret, token, sign, auth, password, nonce).
    """
    for name in params:
        if _SECRET_NAME.search(name):
            raise DataError(f"request parameter {name!r} looks like a credential and is never recorded")
    return json.dumps({k: params[k] for k in sorted(params)}, separators=(",", ":"), default=str)


class RawStore:
    """Append-only raw body store with a SQLite manifest.

    Parameters
    ----------
    root : Path
        Folder of the store (created when missing).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "objects").mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(root / "manifest.sqlite", timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed put_many is on disk (its bodies are used as soon as it returns).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the manifest connection."""
        self._db.close()

    def object_path(self, sha256: str) -> Path:
        """Return where the body with this digest lives."""
        return self.root / "objects" / sha256[:2] / sha256

    def _write_object(self, sha256: str, body: bytes) -> None:
        path = self.object_path(sha256)
        if path.is_file():
            return  # same digest, same bytes: content addressing makes a rewrite pointless
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{sha256}.tmp-{os.getpid()}")
        with tmp.open("wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def put(
        self,
        provider: str,
        endpoint: str,
        params: Mapping[str, object],
        body: bytes,
        received_at_ms: int,
        status: int = 200,
    ) -> RawRecord:
        """Keep ``body`` and return its manifest row (a new row only for a new body of this request).

        The body is written (and synced) before the manifest row, so a crash can leave an unreferenced
        object but never a row without its body.
        """
        canonical_params(params)  # refuse a credential-looking name before anything is written
        sha256 = hashlib.sha256(body).hexdigest()
        self._write_object(sha256, body)
        return self._row(RawEntry(provider, endpoint, params, body, received_at_ms, status), sha256)

    def put_many(self, entries: Sequence[RawEntry]) -> list[RawRecord]:
        """Keep every entry's body and return their manifest rows, in order, in one synced transaction.

        Bodies and rows are committed together (nothing of a failed call is kept), and the commit is
        synced (WAL, ``synchronous=FULL``) before this returns: one append for a whole poll. A body
        already kept, as a file or a row, is not stored again.

        Raises
        ------
        DataError
            When a parameter name looks like a credential (nothing is kept then).
        """
        hashed = [(entry, hashlib.sha256(entry.body).hexdigest()) for entry in entries]
        for entry, _ in hashed:
            canonical_params(entry.params)
        with transaction(self._db):
            for entry, sha256 in hashed:
                if not self.object_path(sha256).is_file():
                    self._db.execute("INSERT OR IGNORE INTO raw_object (sha256, body) VALUES (?, ?)", (sha256, entry.body))
            return [self._row(entry, sha256) for entry, sha256 in hashed]

    def _row(self, entry: RawEntry, sha256: str) -> RawRecord:
        params_json = canonical_params(entry.params)
        request_key = hashlib.sha256(f"{entry.provider}\n{entry.endpoint}\n{params_json}".encode()).hexdigest()
        latest = self._db.execute(
            "SELECT * FROM raw_response WHERE request_key = ? AND status = ? ORDER BY id DESC LIMIT 1",
            (request_key, entry.status),
        ).fetchone()
        if latest is not None and latest[7] == sha256:
            return _record(latest)
        cursor = self._db.execute(
            "INSERT INTO raw_response (provider, endpoint, params, request_key, received_at_ms, status, sha256,"
            " size, revision_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.provider, entry.endpoint, params_json, request_key, entry.received_at_ms, entry.status, sha256,
             len(entry.body), None if latest is None else latest[0]),
        )  # fmt: skip
        return self.get(int(cursor.lastrowid))  # type: ignore[arg-type]

    def get(self, record_id: int) -> RawRecord:
        """Return the manifest row ``record_id``.

        Raises
        ------
        DataError
            When there is no such row.
        """
        row = self._db.execute("SELECT * FROM raw_response WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise DataError(f"no raw record with id {record_id}")
        return _record(row)

    def read(self, record: RawRecord) -> bytes:
        """Return the body of ``record``, checking its digest.

        Raises
        ------
        DataError
            When the object is missing or its bytes no longer match the recorded sha256.
        """
        path = self.object_path(record.sha256)
        if path.is_file():
            body = path.read_bytes()
        else:
            row = self._db.execute("SELECT body FROM raw_object WHERE sha256 = ?", (record.sha256,)).fetchone()
            if row is None:
                raise DataError(f"raw object {record.sha256} of record {record.id} is missing")
            body = bytes(row[0])
        if hashlib.sha256(body).hexdigest() != record.sha256:
            raise DataError(f"raw object {record.sha256} of record {record.id} is corrupt")
        return body

    def records(self) -> list[RawRecord]:
        """Return every manifest row, oldest first."""
        return [_record(row) for row in self._db.execute("SELECT * FROM raw_response ORDER BY id")]


def _record(row: tuple) -> RawRecord:
    return RawRecord(
        id=row[0], provider=row[1], endpoint=row[2], params=row[3], received_at_ms=row[5], status=row[6],
        sha256=row[7], size=row[8], revision_of=row[9],
    )  # fmt: skip
