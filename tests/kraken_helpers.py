"""Shared setup of the Kraken-feed tests: a recorded SMALL run whose bars the emulator serves, bar by bar."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from backend.config.schema import TIMEFRAME_MS
from backend.engine.pipeline import Pipeline
from backend.kraken.settings import KrakenSettings
from backend.models.bundle import ModelBundle
from backend.models.registry import ModelRegistry
from backend.runtime.paper import load_run_model

BAR_MS = TIMEFRAME_MS["5m"]


class BarClock:
    """The emulator's and the feed's now: moved one bar per poll by the feed's sleep."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        return self.now

    def now_ms(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += BAR_MS


def run_model(run_dir: Path, root: Path) -> tuple[Pipeline, ModelBundle, pl.DataFrame]:
    """Return the run's pipeline, its own bundle and its recorded bars."""
    pipeline, bundle = load_run_model(run_dir, ModelRegistry(root / "registry"), allow_run_bundle=True)
    return pipeline, bundle, pl.read_parquet(run_dir / "inputs.parquet")


def settings_for(base_url: str) -> KrakenSettings:
    return KrakenSettings(base_url=base_url, timeout_ms=1500, rate_limit=False, poll_seconds=0.01, min_shadow_minutes=60)
