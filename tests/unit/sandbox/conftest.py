"""Fixtures of the emulator tests: the universe and seeded bars."""

from __future__ import annotations

import polars as pl
import pytest
from sandbox_helpers import START_MS

from backend.config.compose import compose_spec
from backend.config.schema import UniverseSpec
from backend.data.simulator import simulate_ohlcv


@pytest.fixture(scope="session")
def universe() -> UniverseSpec:
    """The composed default universe (V1)."""
    return compose_spec([]).universe


@pytest.fixture(scope="session")
def bars(universe: UniverseSpec) -> pl.DataFrame:
    """Three symbols, 1000 five-minute bars each, from 2025-01-01."""
    return simulate_ohlcv(["BTC", "ETH", "DOGE"], universe.clusters, "5m", START_MS, 1000, seed=3)
