"""The sweep of lake temporaries a killed writer left behind: dead writers' files go, live ones stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from backend.data.lake import STALE_TEMPORARY_SECONDS, sweep_temporaries


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process any more
    return child.pid


def month_dir(root: Path) -> Path:
    folder = root / "ohlcv" / "source=kraken" / "timeframe=5m" / "symbol=BTC"
    folder.mkdir(parents=True)
    (folder / "2025-01.parquet").write_bytes(b"month")
    return folder


def test_a_dead_writers_temporary_is_removed_and_logged_and_a_live_ones_is_kept(tmp_path: Path) -> None:
    folder = month_dir(tmp_path)
    pid = dead_pid()
    stale = folder / f".2025-01.parquet.tmp-{pid}"
    live = folder / f".2025-02.parquet.tmp-{os.getpid()}"
    stale.write_bytes(b"torn")
    live.write_bytes(b"being written")
    lines: list[str] = []

    removed = sweep_temporaries(tmp_path, lines.append)

    assert removed == [stale] and not stale.exists()
    assert live.read_bytes() == b"being written" and (folder / "2025-01.parquet").read_bytes() == b"month"
    assert lines == [f"removed stale lake temporary {stale} (writer pid {pid} is not alive)"]


def test_a_temporary_without_a_pid_goes_only_once_older_than_the_bound(tmp_path: Path) -> None:
    folder = month_dir(tmp_path)
    old, fresh, zero = folder / ".2025-01.parquet.tmp-abc", folder / ".2025-02.parquet.tmp-xyz", folder / ".2025-03.parquet.tmp-0"
    for path in (old, fresh, zero):
        path.write_bytes(b"?")
    past = 1_000_000.0
    os.utime(old, (past, past))
    os.utime(zero, (past, past))
    dangling = folder / ".2025-04.parquet.tmp-q"
    dangling.symlink_to(folder / "gone")
    lines: list[str] = []

    removed = sweep_temporaries(tmp_path, lines.append, now=lambda: past + STALE_TEMPORARY_SECONDS + 1)

    assert removed == [old, zero, dangling]
    assert fresh.exists() and not old.exists() and not zero.exists() and not dangling.is_symlink()
    assert lines[0] == f"removed stale lake temporary {old} (no writer pid and 86,401 s old)"
    assert lines[2] == f"removed stale lake temporary {dangling} (unreadable (dangling))"


def test_a_lake_without_files_has_nothing_to_sweep(tmp_path: Path) -> None:
    assert sweep_temporaries(tmp_path / "missing", print) == []
