"""A paper session on the Kraken feed, SIGKILLed where the decision is journaled but the poll is not written down.

A worker process (``kraken_kill_worker.py``) runs the session of ``acts run --source kraken`` and is
killed by the runtime's crash seam (after an event's commit: the poll's evidence, lake bars and cursors
are not written yet; before the commit: mid-event), or inside a poll's settlement after its second
series. The restarted session, on the same home and state folder, must end with an uninterrupted
session's decision log, lake files, evidence and cursors.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from kraken_helpers import BAR_MS, run_model
from kraken_kill_clock import FileBarClock
from paper_helpers import record_run

from backend.data.state import IngestState
from backend.runtime.live import DECISION_KEY
from backend.runtime.paper import JOURNAL_FILE
from backend.sandbox.kraken import KrakenEmulator

START_BAR = 2600
POLLS = 30
KILL_EVENT = 12
WORKER = Path(__file__).with_name("kraken_kill_worker.py")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("kraken_kill")
    run_dir, _ = record_run(root)
    return (*run_model(run_dir, root), run_dir)


def session(model: tuple, root: Path, url: str, clock_file: Path, polls: int, crash: str = "none") -> int:
    """Run the worker; return its exit status (negative: the signal that ended it)."""
    command = [sys.executable, str(WORKER), str(model[3]), str(root), url, str(clock_file), str(polls), crash]
    paths = [str(WORKER.parent), str(WORKER.parents[1]), str(WORKER.parents[2]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run(command, cwd=WORKER.parent, env=env, timeout=300, check=False).returncode


def decisions(root: Path) -> pl.DataFrame:
    with sqlite3.connect(root / "state" / JOURNAL_FILE) as conn:
        rows = [json.loads(r[0]) for r in conn.execute("SELECT row FROM paper_decisions ORDER BY seq")]
    return pl.DataFrame(rows).select(*DECISION_KEY, "order_id")


def facts(root: Path) -> dict[str, object]:
    files = sorted((root / "home" / "lake").rglob("*.parquet"))
    state = IngestState(root / "home" / "data" / "ingest.sqlite")
    try:
        return {
            "lake": {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
            "evidence": [(e.kind, e.symbol, e.ts_start, e.ts_end, e.detail, e.resolution) for e in state.evidence()],
            "cursors": state.cursors(),
            "pending": state.pending_pages("kraken", "5m"),
        }
    finally:
        state.close()


@pytest.mark.parametrize("crash", [f"{KILL_EVENT}:after_commit", f"{KILL_EVENT}:before_commit", "settle:2"])
def test_a_killed_kraken_session_restarts_to_the_uninterrupted_sessions_decisions_and_lake(
    model: tuple, tmp_path: Path, crash: str
) -> None:
    bars = model[2]
    start = int(bars["ts"].min()) + START_BAR * BAR_MS + 1
    whole_clock = FileBarClock(tmp_path / "whole.clock", start)
    with KrakenEmulator(bars, "5m", universe=model[0].spec.universe, now_ms=whole_clock) as emu:
        assert session(model, tmp_path / "whole", emu.base_url, tmp_path / "whole.clock", POLLS) == 0
    killed_clock = FileBarClock(tmp_path / "killed.clock", start, start - 1 + KILL_EVENT * BAR_MS)
    with KrakenEmulator(bars, "5m", universe=model[0].spec.universe, now_ms=killed_clock) as emu:
        assert session(model, tmp_path / "killed", emu.base_url, tmp_path / "killed.clock", POLLS, crash) == -signal.SIGKILL
        done = (killed_clock() - start) // BAR_MS  # polls finished before the one the worker died in
        assert 0 < done < POLLS - 1
        assert session(model, tmp_path / "killed", emu.base_url, tmp_path / "killed.clock", POLLS - done) == 0
    expected = decisions(tmp_path / "whole")
    assert expected.height > 0 and decisions(tmp_path / "killed").equals(expected)
    assert facts(tmp_path / "killed") == facts(tmp_path / "whole")
