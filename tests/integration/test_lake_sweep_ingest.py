"""An ingest (or a gap refetch) starts by sweeping the temporaries a killed writer left in the lake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ingest_helpers import run_cli, seeded_bars, universe

from backend.sandbox.kraken import KrakenEmulator


def leave_temporaries(home: Path) -> tuple[Path, Path]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    folder = home / "lake" / "ohlcv" / "source=kraken" / "timeframe=5m" / "symbol=BTC"
    folder.mkdir(parents=True)
    stale, live = folder / f".2024-12.parquet.tmp-{child.pid}", folder / f".2024-11.parquet.tmp-{os.getpid()}"
    stale.write_bytes(b"torn")
    live.write_bytes(b"in progress")
    return stale, live


@pytest.mark.parametrize("action", [["ingest"], ["reconcile", "--refetch-gaps"]])
def test_an_ingest_removes_a_dead_writers_temporary_and_logs_it(
    action: list[str], monkeypatch: pytest.MonkeyPatch, acts_home: Path
) -> None:
    stale, live = leave_temporaries(acts_home)
    with KrakenEmulator(seeded_bars(["BTC"], 50), universe=universe()) as kraken:
        monkeypatch.setenv("KRAKEN_PUBLIC_BASE_URL", kraken.base_url)
        code, out, err = run_cli("data", *action, "--source", "kraken", "--symbols", "BTC")

    assert code == 0, out + err
    assert not stale.exists() and live.read_bytes() == b"in progress"
    assert f"removed stale lake temporary {stale} (writer pid " in err
