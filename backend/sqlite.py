"""The transaction rule shared by every SQLite store (orders, profiles, control, ingestion)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


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
