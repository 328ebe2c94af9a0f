"""A backfill killed with SIGKILL mid-run and restarted ends exactly like an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from ingest_helpers import CANARY, lake_rows, run_cli, seeded_bars, universe, use_coinapi

from backend.data.lake import lake_files, snapshot
from backend.sandbox.coinapi import CoinApiEmulator

SYMBOLS = ["BTC", "ETH", "SOL"]
REPO = Path(__file__).resolve().parents[2]
ARGV = ["data", "backfill", "--symbols", ",".join(SYMBOLS), "--page-limit", "150"]


def lake_state(home: Path) -> dict[str, str]:
    return snapshot(lake_files(home / "lake", "coinapi", "5m", SYMBOLS), home / "lake")


def test_sigkill_mid_backfill_then_restart_leaves_no_duplicate_torn_or_missing_row(
    monkeypatch: pytest.MonkeyPatch, acts_home: Path, tmp_path: Path
) -> None:
    bars = seeded_bars(SYMBOLS, 1200)
    with CoinApiEmulator(bars, api_key=CANARY, universe=universe()) as emulator:
        use_coinapi(monkeypatch, emulator.base_url)
        # The data command alone, as `acts data backfill` runs it, without importing the training stack.
        script = (
            "import argparse, sys\nfrom scripts.commands import data\n"
            "parser = argparse.ArgumentParser()\ndata.register(parser.add_subparsers(dest='command'))\n"
            f"args = parser.parse_args({ARGV!r})\nsys.exit(args.handler(args, sys.stdout, sys.stderr))\n"
        )
        child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=dict(os.environ),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while len(emulator.request_log) < 10 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        pages_before_kill = len(emulator.request_log)
        assert 0 < pages_before_kill < 3 * 9  # killed part way through

        code, out, err = run_cli(*ARGV)
        assert code == 0, out + err

        clean_home = tmp_path / "clean_home"
        monkeypatch.setenv("ACTS_HOME", str(clean_home))
        assert run_cli(*ARGV)[0] == 0

    rows = lake_rows(acts_home, "coinapi", SYMBOLS)
    assert rows.height == 3 * 1200
    assert rows.unique(["ts", "symbol"]).height == rows.height
    assert rows.equals(bars.select(rows.columns).sort("ts", "symbol"))
    for path in lake_files(acts_home / "lake", "coinapi", "5m", SYMBOLS):
        pl.read_parquet(path)  # every month file is whole
    assert lake_state(acts_home) == lake_state(clean_home)
