"""Helpers of the ingestion integration tests: seeded bars, a settable clock, CLI runs, file scans."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import polars as pl

from backend.config.compose import compose_spec
from backend.config.schema import UniverseSpec
from backend.data.simulator import simulate_ohlcv
from scripts.cli import main

START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
BAR_MS = 300_000
CANARY = "canary-XYZ-7f3a91"
CANARY_SECRET = "canary-SECRET-55e0b2"


@functools.cache
def universe() -> UniverseSpec:
    """Return the composed default universe (composed once per session)."""
    return compose_spec([]).universe


def seeded_bars(symbols: list[str], n: int, seed: int = 7) -> pl.DataFrame:
    """Return ``n`` simulated 5-minute bars per symbol from 2025-01-01."""
    return simulate_ohlcv(symbols, universe().clusters, "5m", START_MS, n, seed)


class FakeTime:
    """A clock in UTC ms that only moves when something sleeps on it."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms
        self.slept: list[float] = []

    def now_ms(self) -> int:
        return self.now

    def __call__(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1000.0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += int(round(seconds * 1000))


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``acts`` in-process and return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def use_coinapi(monkeypatch, base_url: str, key: str = CANARY) -> None:
    """Point the settings at a CoinAPI endpoint with ``key``."""
    monkeypatch.setenv("HIST_MARKET_DATA_PROVIDER", "COINAPI")
    monkeypatch.setenv("HIST_MARKET_DATA_API_KEY", key)
    monkeypatch.setenv("HIST_MARKET_DATA_API_SECRET", CANARY_SECRET)
    monkeypatch.setenv("HIST_MARKET_DATA_BASE_URL", base_url)


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Return every file under ``root`` whose bytes contain ``needle``."""
    return sorted(p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def lake_rows(home: Path, source: str, symbols: list[str]) -> pl.DataFrame:
    """Read every bar of ``source`` for ``symbols`` (value columns only)."""
    from backend.data.lake import read_ohlcv

    return read_ohlcv(home / "lake", source, "5m", symbols).select("ts", "symbol", "open", "high", "low", "close", "volume")


def environment_without_secrets() -> dict[str, str]:
    """Return a copy of the environment (for subprocesses)."""
    return dict(os.environ)
