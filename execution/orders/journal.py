"""The order journal: every order and every lifecycle event, durable in SQLite before it matters."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

from backend.sqlite import SqliteStore, transaction
from backend.errors import ActsError
from execution.orders.lifecycle import TERMINAL, OrderStatus, OrderTrigger, next_status

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS orders (
        client_order_id TEXT PRIMARY KEY,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        qty TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ts INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS order_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
        ts INTEGER NOT NULL,
        trigger TEXT,
        from_status TEXT,
        to_status TEXT NOT NULL,
        reason TEXT NOT NULL,
        qty TEXT,
        price TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS order_events_by_order ON order_events(client_order_id, seq)",
)


class UnknownOrderError(ActsError):
    """The journal holds no order with the given client order id."""

    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"no order with client_order_id {client_order_id!r} in the journal")
        self.client_order_id = client_order_id


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


class OrderJournal(SqliteStore):
    """SQLite journal of orders (WAL, synchronous=FULL); each write is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE below.
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._transaction():
            for statement in _SCHEMA:
                self._conn.execute(statement)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    def record_new(self, client_order_id: str, symbol: str, side: str, qty: Decimal, ts: int, reason: str) -> bool:
        """Journal an order as NEW before it is sent; False, changing nothing, if the id exists."""
        with self._transaction() as conn:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO orders (client_order_id, symbol, side, qty, status, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (client_order_id, symbol, side, str(qty), OrderStatus.NEW.value, ts),
            ).rowcount
            if inserted == 0:
                return False
            conn.execute(
                "INSERT INTO order_events (client_order_id, ts, trigger, from_status, to_status, reason, qty, price)"
                " VALUES (?, ?, NULL, NULL, ?, ?, ?, NULL)",
                (client_order_id, ts, OrderStatus.NEW.value, reason, str(qty)),
            )
        return True

    def apply(
        self,
        client_order_id: str,
        trigger: OrderTrigger,
        ts: int,
        reason: str,
        qty: Decimal | None = None,
        price: Decimal | None = None,
    ) -> OrderStatus:
        """Move an order by ``trigger`` and journal the event; an illegal trigger writes nothing."""
        with self._transaction() as conn:
            current = self._status(conn, client_order_id)
            target = next_status(current, trigger)
            conn.execute(
                "UPDATE orders SET status = ? WHERE client_order_id = ?",
                (target.value, client_order_id),
            )
            conn.execute(
                "INSERT INTO order_events (client_order_id, ts, trigger, from_status, to_status, reason, qty, price)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (client_order_id, ts, trigger.value, current.value, target.value, reason, _text(qty), _text(price)),
            )
        return target

    @staticmethod
    def _status(conn: sqlite3.Connection, client_order_id: str) -> OrderStatus:
        row = conn.execute("SELECT status FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        if row is None:
            raise UnknownOrderError(client_order_id)
        return OrderStatus(row["status"])

    def status(self, client_order_id: str) -> OrderStatus:
        """The current status of an order."""
        return self._status(self._conn, client_order_id)

    def events(self, client_order_id: str) -> list[dict[str, Any]]:
        """Every journalled event of an order, oldest first; the first is its creation (no trigger)."""
        self._status(self._conn, client_order_id)
        rows = self._conn.execute(
            "SELECT seq, client_order_id, ts, trigger, from_status, to_status, reason, qty, price"
            " FROM order_events WHERE client_order_id = ? ORDER BY seq",
            (client_order_id,),
        ).fetchall()
        return [
            {
                "seq": row["seq"],
                "client_order_id": row["client_order_id"],
                "ts": row["ts"],
                "trigger": None if row["trigger"] is None else OrderTrigger(row["trigger"]),
                "from_status": None if row["from_status"] is None else OrderStatus(row["from_status"]),
                "to_status": OrderStatus(row["to_status"]),
                "reason": row["reason"],
                "qty": _decimal(row["qty"]),
                "price": _decimal(row["price"]),
            }
            for row in rows
        ]

    def open_orders(self) -> list[dict[str, Any]]:
        """Every order not in a terminal status, by creation time then client order id."""
        terminal = sorted(status.value for status in TERMINAL)
        placeholders = ", ".join("?" for _ in terminal)
        rows = self._conn.execute(
            "SELECT client_order_id, symbol, side, qty, status, created_ts FROM orders"
            f" WHERE status NOT IN ({placeholders}) ORDER BY created_ts, client_order_id",
            terminal,
        ).fetchall()
        return [
            {
                "client_order_id": row["client_order_id"],
                "symbol": row["symbol"],
                "side": row["side"],
                "qty": Decimal(row["qty"]),
                "status": OrderStatus(row["status"]),
                "created_ts": row["created_ts"],
            }
            for row in rows
        ]

