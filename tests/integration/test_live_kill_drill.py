"""SIGKILL drill: live order submission killed at random points, 50 times; no order twice, no fill lost.

Each trial gives a fresh emulator account and state folder to one live session (recorded bars, the
Kraken broker through ccxt), SIGKILLs it at a random point of a random event that sends an order
(after the journal row, after the send, after the fills, before or after the commit), restarts it
to the end, and checks the exchange against the state folder: every client order id on Kraken once,
every decided order on Kraken, every Kraken fill exactly once in the ledger, and the ledger reconciling.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from paper_helpers import record_run

from backend.audit.decisions import read_decisions
from backend.sandbox.kraken import KrakenEmulator
from backend.sandbox.kraken_account import KrakenAccount
from execution.brokers.kraken import kraken_client_id

TRIALS = 50
FIRST, LAST = 2595, 2680  # recorded events around the run's busiest trading
POINTS = ("after_record_new", "after_send", "after_fills", "before_commit", "after_commit", "before_event")
LIVE = ("query-funds", "query-open-trades", "query-closed-trades", "modify-trades", "close-trades")
WORKER = Path(__file__).with_name("live_kill_worker.py")


def test_fifty_sigkills_during_live_submission_send_no_order_twice_and_lose_no_fill(tmp_path: Path) -> None:
    run_dir, _ = record_run(tmp_path)
    bars = pl.read_parquet(run_dir / "inputs.parquet")
    decided = read_decisions(run_dir / "decisions.parquet")
    times = sorted(bars["ts"].unique().to_list())[FIRST:LAST]
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen([sys.executable, str(WORKER), str(run_dir), str(FIRST), str(LAST), str(tmp_path / "registry")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    rng = random.Random(13)
    killed = 0
    try:
        assert json.loads(worker.stdout.readline())["ready"] == LAST - FIRST  # type: ignore[union-attr]
        reference: list[int] | None = None
        for trial in range(TRIALS + 1):
            account = KrakenAccount({"ZUSD": "100000"})
            key = account.create_key(LIVE)
            with KrakenEmulator(bars, "5m", account=account) as emulator:
                state = tmp_path / f"trial{trial}"
                base = {"url": emulator.base_url, "key": key.key, "secret": key.secret, "state": str(state)}
                if reference is None:  # trial 0: an uninterrupted session finds the events that send orders
                    worker.stdin.write(json.dumps({**base, "crash": None}) + "\n")  # type: ignore[union-attr]
                    worker.stdin.flush()  # type: ignore[union-attr]
                    assert json.loads(worker.stdout.readline()) == {"exit": 0}  # type: ignore[union-attr]
                    sent = read_decisions_of(state).filter(pl.col("order_id").is_not_null())["ts"].to_list()
                    reference = sorted({times.index(t) for t in sent})
                    assert len(reference) >= 5
                    expected_orders = len(account.orders)
                    continue
                crash = f"{rng.choice(reference)}:{rng.choice(POINTS)}"
                for command in ({**base, "crash": crash}, {**base, "crash": None}):
                    worker.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
                    worker.stdin.flush()  # type: ignore[union-attr]
                    answer = json.loads(worker.stdout.readline())  # type: ignore[union-attr]
                    killed += answer.get("signal") == 9
                    assert answer in ({"signal": 9}, {"exit": 0}), (crash, answer)
                check_trial(state, account, expected_orders, crash)
    finally:
        worker.stdin.close()  # type: ignore[union-attr]
        worker.wait(timeout=60)
    assert killed == TRIALS
    assert decided.height > 0


def read_decisions_of(state: Path) -> pl.DataFrame:
    with sqlite3.connect(state / "journal.sqlite") as conn:
        rows = [json.loads(r[0]) for r in conn.execute("SELECT row FROM paper_decisions ORDER BY seq")]
    return pl.DataFrame(rows, infer_schema_length=None)


def check_trial(state: Path, account: KrakenAccount, expected_orders: int, crash: str) -> None:
    client_ids = [o.cl_ord_id for o in account.orders.values()]
    assert len(client_ids) == len(set(client_ids)) == expected_orders, f"{crash}: orders {client_ids}"
    decisions = read_decisions_of(state)
    orders = decisions.filter(pl.col("order_id").is_not_null())["order_id"].to_list()
    assert sorted(client_ids) == sorted(kraken_client_id(o) for o in orders), crash
    with sqlite3.connect(state / "journal.sqlite") as conn:
        ledger = conn.execute("SELECT order_id, qty FROM paper_fills").fetchall()
        pending = json.loads(conn.execute("SELECT state FROM paper_checkpoint").fetchone()[0])["pending"]
    by_txid = {o.txid: o.cl_ord_id for o in account.orders.values()}
    exchange = sorted((by_txid[f["ordertxid"]], Decimal(f["vol"])) for f in account.fills.values())
    # Orders sent at the session's last event are filled by Kraken after it; the session reads those fills at its
    # next event. They are still pending in the final checkpoint, with their full quantity, and in no ledger row.
    waiting = sorted((kraken_client_id(order_id), Decimal(qty)) for order_id, _, _, qty, _ in pending)
    assert set(waiting) <= set(exchange), f"{crash}: pending orders not on Kraken"
    read = sorted(f for f in exchange if f not in set(waiting))
    assert sorted((kraken_client_id(o), Decimal(q)) for o, q in ledger) == read, f"{crash}: fills"


@pytest.mark.parametrize("point", POINTS)
def test_every_drill_point_is_a_crash_point(point: str) -> None:
    from backend.runtime.paper import CRASH_POINTS

    assert point in CRASH_POINTS
