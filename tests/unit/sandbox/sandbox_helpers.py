"""Helpers of the emulator tests: constants, seeded trades, a settable clock."""

from __future__ import annotations

import numpy as np
import polars as pl

START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
BAR_MS = 300_000


def make_trades(symbol: str, n: int, seed: int = 5) -> pl.DataFrame:
    """Return ``n`` seeded trades of ``symbol``; about a third share their millisecond with the previous one."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(0, 3000, n)
    steps[rng.random(n) < 0.3] = 0
    return pl.DataFrame(
        {
            "ts_ms": START_MS + np.cumsum(steps),
            "symbol": [symbol] * n,
            "price": np.round(60000 + np.cumsum(rng.normal(0, 5, n)), 1),
            "volume": np.round(rng.uniform(0.0001, 2.0, n), 8),
            "side": rng.choice(["b", "s"], n).tolist(),
            "ordertype": rng.choice(["m", "l"], n).tolist(),
            "trade_id": np.arange(1000, 1000 + n),
        }
    )


class Clock:
    """A clock the test moves."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        return self.now
