"""SIGKILL drills: kill a child at a random point, restart, and count lost, duplicated and torn records.

Each drill has an uninterrupted reference. A trial starts a child that runs the product code (the
``*_child`` functions below), kills it with SIGKILL at a point drawn from a seeded generator, restarts
the work in this process the way an operator would (the same command again, or a store opened again),
and compares what is on disk with the reference:

- **lost**: a record the reference holds (or the child acknowledged) that the restarted state lacks;
- **duplicated**: a record held twice, or one the reference does not hold;
- **torn**: a file or database that cannot be read, fails its integrity or hash chain, or whose state
  disagrees with its own log (a checkpoint with other open orders than the journal, a kill switch whose
  state is not its last action's).
"""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from backend.audit.artifacts import read_parquet
from backend.config.compose import compose_spec
from backend.control.store import ControlStore
from backend.data.lake import lake_files, read_ohlcv, snapshot
from backend.data.simulator import simulate_ohlcv
from backend.clock import WallClock
from backend.models.registry import ModelRegistry
from backend.profiles.store import ProfileStore
from backend.runtime.paper import CRASH_ENV, CRASH_POINTS, JOURNAL_FILE, PaperRuntime, PaperRuntimeError, crash_hook, load_recorded
from backend.sandbox.coinapi import CoinApiEmulator
from execution.orders.journal import OrderJournal

START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
SYMBOLS = ("BTC", "ETH")
KEY = "drill-key-0001"
PRELOAD = ["scripts.cli", "scripts.drills.kills"]
DIFFERING = "restarts whose month files differ byte for byte from the uninterrupted lake"
# The tables of a paper state folder that must equal the reference (paper_actions logs each session's
# profile pickup, so a restart adds a row there by design).
PAPER_TABLES = ("orders", "order_events", "paper_fills", "paper_decisions", "paper_checkpoint")


@dataclass
class KillDrill:
    """The counts of one SIGKILL drill."""

    name: str
    trials: int = 0
    killed: int = 0
    lost: int = 0
    duplicated: int = 0
    torn: int = 0
    identical: int = 0
    seconds: float = 0.0
    notes: dict[str, int] = field(default_factory=dict)

    def add(self, lost: int, duplicated: int, torn: int) -> None:
        """Count one trial: its lost, duplicated and torn records (identical when all are 0)."""
        self.trials += 1
        self.lost += lost
        self.duplicated += duplicated
        self.torn += torn
        self.identical += lost == duplicated == torn == 0

    def note(self, key: str, amount: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + amount

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def context() -> Any:
    """A forkserver that imported the product once: a child starts in milliseconds, with no inherited threads."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def kill_when(process: Any, ready: Callable[[], bool], delay: float, timeout: float = 120.0) -> bool:
    """Start ``process``; once ``ready()`` holds, wait ``delay`` seconds and SIGKILL it. Return whether the kill ended it."""
    process.start()
    deadline = time.monotonic() + timeout
    while process.is_alive() and not ready() and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(delay)
    process.kill()
    process.join(timeout)
    return process.exitcode == -signal.SIGKILL


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def _acks(path: Path) -> list[int]:
    return [int(line) for line in path.read_text(encoding="utf-8").split()] if path.exists() else []


# ---------------------------------------------------------------- children (also called in-process by the tests)
def cli_child(env: dict[str, str], argv: list[str]) -> int:
    """Run ``acts ARGV`` with ``env`` set (in a child: the process the drill kills)."""
    from scripts.cli import main

    with environment(env):  # restored afterwards: in-process callers keep their environment
        return main(argv, io.StringIO(), io.StringIO())


def profile_child(db: str, count: int, ack: str) -> None:
    """Commit ``count`` versions of ``balanced``, appending each committed version number to ``ack``."""
    fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with ProfileStore(Path(db), WallClock()) as store:
        for _ in range(count):
            latest = store.show("balanced").version
            size = 0.11 if latest % 2 else 0.12  # always a change from the parent
            commit = store.set("balanced", {"position_size_pct": size}, "drill", f"drill commit on v{latest}", latest)
            os.write(fd, f"{commit.version}\n".encode())
    os.close(fd)


def control_child(db: str, count: int, ack: str) -> None:
    """Engage and release the kill switch ``count`` times, appending each logged action's number to ``ack``."""
    fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with ControlStore(Path(db)) as store:
        for i in range(count):
            act = store.kill if i % 2 == 0 else store.resume
            os.write(fd, f"{act('drill', f'drill action {i}', WallClock()).actions}\n".encode())
    os.close(fd)


def paper_child(run_dir: str, state: str, crash: str, events: int) -> None:
    """Continue the paper run in ``state`` for ``events`` events; ``crash`` is ``EVENT:POINT`` (SIGKILL there)."""
    feed = load_recorded(Path(run_dir), ModelRegistry(Path(state) / "no-registry"), True)
    runtime = PaperRuntime(feed, Path(state), None, None, crash_hook({CRASH_ENV: crash}))
    try:
        runtime.run(0.0, events)
    finally:
        runtime.close()


# ---------------------------------------------------------------- lake drills
def drill_bars(n: int, seed: int) -> pl.DataFrame:
    """Seeded 5-minute bars of :data:`SYMBOLS` from 2025-01-01."""
    return simulate_ohlcv(list(SYMBOLS), compose_spec([]).universe.clusters, "5m", START_MS, n, seed)


def lake_counts(home: Path, bars: pl.DataFrame) -> tuple[int, int, int]:
    """Return (lost, duplicated, torn) of the lake in ``home`` against ``bars``.

    Torn: a leftover temporary, a month file that does not read, or a stored bar whose values differ.
    """
    files = lake_files(home / "lake", "coinapi", "5m", list(SYMBOLS))
    torn = sum(1 for path in (home / "lake").rglob("*") if path.is_file() and ".tmp-" in path.name)
    unreadable = 0
    for path in files:
        try:
            pl.read_parquet(path)
        except pl.exceptions.PolarsError:
            unreadable += 1
    rows = read_ohlcv(home / "lake", "coinapi", "5m", list(SYMBOLS)).select(bars.columns) if not unreadable else bars.head(0)
    keys = Counter(zip(rows["ts"].to_list(), rows["symbol"].to_list()))
    expected = set(zip(bars["ts"].to_list(), bars["symbol"].to_list()))
    lost = len(expected - set(keys))
    duplicated = sum(n - 1 for n in keys.values()) + len(set(keys) - expected)
    common = rows.unique(["ts", "symbol"]).join(bars, on=["ts", "symbol"], suffix="_want")
    torn += unreadable + sum(int((common[c] != common[f"{c}_want"]).sum()) for c in ("open", "high", "low", "close", "volume"))
    return lost, duplicated, torn


def _lake_snapshot(home: Path) -> dict[str, str]:
    return snapshot(lake_files(home / "lake", "coinapi", "5m", list(SYMBOLS)), home / "lake")


def lake_drill(name: str, trials: int, seed: int, root: Path, bars_n: int = 300, seeded_n: int = 0) -> KillDrill:
    """Backfill (``seeded_n`` = 0) or incremental ingest (a lake holding the first ``seeded_n`` bars) under SIGKILL."""
    started = time.monotonic()
    drill, rng, ctx = KillDrill(name), random.Random(seed), context()
    bars = drill_bars(bars_n, seed)
    argv = ["data", "backfill" if seeded_n == 0 else "ingest", "--symbols", ",".join(SYMBOLS), "--page-limit", "40"]
    template = root / "template"
    if seeded_n:
        with CoinApiEmulator(bars.filter(pl.col("ts") < START_MS + seeded_n * 300_000), api_key=KEY, universe=compose_spec([]).universe) as early:
            assert cli_child(_env(early.base_url, template), ["data", "backfill", "--symbols", ",".join(SYMBOLS), "--page-limit", "40"]) == 0
    with CoinApiEmulator(bars, api_key=KEY, universe=compose_spec([]).universe) as emulator:
        clean = root / "clean"
        _copy_home(template, clean)
        with environment(_env(emulator.base_url, clean)):
            assert cli_child({}, argv) == 0
        requests = len(emulator.request_log)
        reference = _lake_snapshot(clean)
        for trial in range(trials):
            home = root / f"trial-{trial}"
            _copy_home(template, home)
            env = _env(emulator.base_url, home)
            before, after = len(emulator.request_log), rng.randint(1, requests - 1)
            child = ctx.Process(target=cli_child, args=(env, argv))
            drill.killed += kill_when(child, lambda: len(emulator.request_log) >= before + after, rng.uniform(0, 0.02))
            with environment(env):
                code = cli_child({}, argv)  # the operator runs the same command again
            lost, duplicated, torn = lake_counts(home, bars)
            drill.add(lost, duplicated, torn + (code != 0))
            drill.note(DIFFERING, _lake_snapshot(home) != reference)
            shutil.rmtree(home)
    drill.seconds = time.monotonic() - started
    return drill


def _env(base_url: str, home: Path) -> dict[str, str]:
    return {"ACTS_HOME": str(home), "HIST_MARKET_DATA_PROVIDER": "COINAPI", "HIST_MARKET_DATA_API_KEY": KEY,
            "HIST_MARKET_DATA_BASE_URL": base_url}  # fmt: skip


def _copy_home(template: Path, home: Path) -> None:
    if template.exists():
        shutil.copytree(template, home)
    else:
        home.mkdir(parents=True)


# ---------------------------------------------------------------- store drills
def profile_drill(trials: int, seed: int, root: Path, commits: int = 12) -> KillDrill:
    """Kill a child committing profile versions; every acknowledged commit must survive, the chain must verify."""
    started = time.monotonic()
    drill, rng, ctx = KillDrill("profile commit"), random.Random(seed), context()
    for trial in range(trials):
        folder = root / f"profile-{trial}"
        folder.mkdir(parents=True)
        db, ack = folder / "acts.db", folder / "ack"
        ProfileStore(db, WallClock()).close()  # the home as an operator has it: presets seeded
        wait = rng.randint(0, commits - 1)
        child = ctx.Process(target=profile_child, args=(str(db), commits, str(ack)))
        drill.killed += kill_when(child, lambda: len(_acks(ack)) >= wait, rng.uniform(0, 0.01))
        acked = _acks(ack)
        with ProfileStore(db, WallClock()) as store:  # opened again after the crash
            report = store.verify_chain()
            versions = [c.version for c in store.log("balanced")]
            # Restarted work: one more commit on the latest version must still be possible.
            latest = versions[-1]
            store.set("balanced", {"position_size_pct": 0.2}, "drill", "after the crash", latest)
        counts = (
            len(set(acked) - set(versions)),
            len(versions) - len(set(versions)) + (versions != list(range(1, len(versions) + 1))),
            (not report.ok) + _integrity_failures(db),
        )
        drill.add(*counts)
        drill.note("commits acknowledged before the kill", len(acked))
        drill.note("commits durable after the kill (acknowledged or not)", len(versions) - 1)
        shutil.rmtree(folder)
    drill.seconds = time.monotonic() - started
    return drill


def control_drill(trials: int, seed: int, root: Path, actions: int = 12) -> KillDrill:
    """Kill a child engaging and releasing the kill switch; the state must equal its last logged action."""
    started = time.monotonic()
    drill, rng, ctx = KillDrill("kill-switch engage"), random.Random(seed), context()
    for trial in range(trials):
        folder = root / f"control-{trial}"
        folder.mkdir(parents=True)
        db, ack = folder / "acts.db", folder / "ack"
        wait = rng.randint(0, actions - 1)
        child = ctx.Process(target=control_child, args=(str(db), actions, str(ack)))
        drill.killed += kill_when(child, lambda: len(_acks(ack)) >= wait, rng.uniform(0, 0.01))
        acked = _acks(ack)
        with ControlStore(db) as store:
            logged = store.actions()
            seqs = [a.seq for a in logged]
            consistent = not logged or store.is_killed() == logged[-1].killed_after
            store.kill("drill", "after the crash", WallClock())  # the operator engages it again
        drill.add(len(set(acked) - set(seqs)), int(seqs != list(range(1, len(seqs) + 1))),
                  (not consistent) + _integrity_failures(db))  # fmt: skip
        drill.note("actions acknowledged before the kill", len(acked))
        drill.note("actions durable after the kill (acknowledged or not)", len(seqs))
        shutil.rmtree(folder)
    drill.seconds = time.monotonic() - started
    return drill


def _integrity_failures(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok")


# ---------------------------------------------------------------- paper runtime drill
def _backup(conn: sqlite3.Connection, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(target) as out:
        conn.backup(out)
    out.close()


def _rows(db: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(db) as conn:
        tables = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in PAPER_TABLES}  # noqa: S608 (fixed names)
    conn.close()
    return tables


def order_events(run_dir: Path, ts_ms: Any) -> list[int]:
    """Event indices at which the recorded run placed an order (paper and backtest decide alike)."""
    decisions = read_parquet(run_dir / "decisions.parquet")
    placed = set(decisions.filter(pl.col("order_id").is_not_null())["ts"].to_list())
    return [i for i, ts in enumerate(ts_ms.tolist()) if ts in placed]


def paper_reference(run_dir: Path, root: Path, window: int) -> tuple[Any, list[int]]:
    """Run the recorded run's paper session once, uninterrupted, keeping the journal before and after each order window.

    Returns the feed and the order events ``e`` used: ``root/after-{e-1}`` is the state before event ``e``
    places an order, ``root/after-{e+window-1}`` the state ``window`` events later.
    """
    feed = load_recorded(run_dir, ModelRegistry(root / "no-registry"), True)
    events = [e for e in order_events(run_dir, feed.matrix.ts_ms) if e >= 1 and e + window <= len(feed.matrix.ts_ms)]
    keep = {e - 1 for e in events} | {e + window - 1 for e in events}
    reference = PaperRuntime(feed, root / "reference")
    for batch in itertools.islice(feed.batches(0), max(keep) + 1):
        reference.step(batch)
        if batch.index in keep:
            _backup(reference.conn, root / f"after-{batch.index}" / JOURNAL_FILE)
    reference.close()
    return feed, events


def paper_drill(
    run_dir: Path, trials: int, seed: int, root: Path, window: int = 6, reference: tuple[Any, list[int]] | None = None
) -> KillDrill:
    """Kill the paper runtime around the events that place orders; restart; compare the journal with the reference.

    ``reference`` is :func:`paper_reference`'s result for ``root`` when it was already run.
    """
    started = time.monotonic()
    drill, rng, ctx = KillDrill("paper runtime"), random.Random(seed), context()
    feed, events = reference or paper_reference(run_dir, root, window)
    for trial in range(trials):
        event = rng.choice(events)
        state = root / f"paper-{trial}"
        shutil.copytree(root / f"after-{event - 1}", state)
        # Every third trial kills just before the event that fills the orders placed at ``event``: a cost-aware
        # strategy trades sparsely, so a random kill point would rarely find orders in flight.
        crash = f"{event + 1}:before_event" if trial % 3 == 0 else f"{event + rng.randint(0, 2)}:{rng.choice(CRASH_POINTS)}"
        child = ctx.Process(target=paper_child, args=(str(run_dir), str(state), crash, window))
        drill.killed += kill_when(child, lambda: False, 0.0, timeout=120.0)
        open_orders, positions = _at_kill(state / JOURNAL_FILE)
        drill.note("trials with open orders at the kill", open_orders > 0)
        drill.note("trials with positions at the kill", positions > 0)
        drill.note("trials with both", open_orders > 0 and positions > 0)
        drill.add(*paper_counts(feed, state, root / f"after-{event + window - 1}" / JOURNAL_FILE, event + window))
        shutil.rmtree(state)
    drill.seconds = time.monotonic() - started
    return drill


def paper_counts(feed: Any, state: Path, reference: Path, horizon: int) -> tuple[int, int, int]:
    """Restart the paper run in ``state`` up to event ``horizon``; return (lost, duplicated, torn) against ``reference``.

    A state folder the runtime refuses to continue from (journal and checkpoint disagree) is torn.
    """
    try:
        runtime = PaperRuntime(feed, state)  # restart: restore the checkpoint, continue at the next event
    except PaperRuntimeError:
        return 0, 0, 1
    for batch in itertools.islice(feed.batches(runtime.next_index), max(0, horizon - runtime.next_index)):
        runtime.step(batch)  # up to the horizon (the child may have reached it)
    runtime.close()
    want, have = _rows(reference), _rows(state / JOURNAL_FILE)
    lost = duplicated = 0
    for table in ("orders", "paper_fills", "paper_decisions"):
        lost += len(set(want[table]) - set(have[table]))
        duplicated += len(have[table]) - len(set(have[table])) + len(set(have[table]) - set(want[table]))
    torn = (want["order_events"] != have["order_events"]) + (want["paper_checkpoint"] != have["paper_checkpoint"])
    return lost, duplicated, torn + _integrity_failures(state / JOURNAL_FILE)


def _at_kill(journal: Path) -> tuple[int, int]:
    """Open orders and non-zero positions in the state the kill left (the last committed event)."""
    orders = OrderJournal(journal)
    open_orders = len(orders.open_orders())
    orders.close()
    with sqlite3.connect(journal) as conn:
        (state,) = conn.execute("SELECT state FROM paper_checkpoint").fetchone()
    conn.close()
    return open_orders, sum(1 for q in json.loads(state)["qty"] if Decimal(q) > 0)
