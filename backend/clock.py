"""Clocks are injected: the core reads time only from the clock it was given."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What the core may ask of time."""

    def now_ms(self) -> int:
        """Return the current time in UTC milliseconds."""
        ...


class SimulatedClock:
    """A clock moved by the event source (backtest, replay). It never goes backwards."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance_to(self, ts_ms: int) -> None:
        """Move to ``ts_ms``; refuse to move backwards, which would break event order."""
        if ts_ms < self._now:
            raise ValueError(f"clock cannot go back from {self._now} to {ts_ms}")
        self._now = ts_ms


class WallClock:
    """The real clock, for the shell (timings, live modes). The core never constructs one."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Return a monotonic reading in seconds, for measuring durations."""
        return time.perf_counter()
