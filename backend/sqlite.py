"""What every SQLite store shares (orders, profiles, control, ingestion): the transaction rule and closing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the body in one ``BEGIN IMMEDIATE`` transaction: all of it is committed, or none of it.

    SQLite ends the transaction itself on some errors (SQLITE_FULL, SQLITE_IOERR); a ROLLBACK then
    would fail and hide the original error, so it is issued only while a transaction is open.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteStore:
    """Base of the stores that own one connection (``self._conn``): close it, or use the store in ``with``."""

    _conn: sqlite3.Connection

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
