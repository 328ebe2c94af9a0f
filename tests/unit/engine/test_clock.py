"""Tests for backend.clock: the simulated clock moves only forward; the wall clock reads real time."""

from __future__ import annotations

import time

import pytest

from backend.clock import SimulatedClock, WallClock


def test_simulated_clock_starts_at_the_given_time() -> None:
    assert SimulatedClock(1_700_000_000_000).now_ms() == 1_700_000_000_000
    assert SimulatedClock().now_ms() == 0


@pytest.mark.parametrize("steps", [[5, 5], [5, 6, 100], [0]])
def test_simulated_clock_advances_forward_or_stays(steps: list[int]) -> None:
    clock = SimulatedClock()
    for ts in steps:
        clock.advance_to(ts)
        assert clock.now_ms() == ts


def test_simulated_clock_refuses_to_go_back_and_keeps_its_time() -> None:
    clock = SimulatedClock(1_000)
    with pytest.raises(ValueError, match="cannot go back from 1000 to 999"):
        clock.advance_to(999)
    assert clock.now_ms() == 1_000


def test_wall_clock_reads_utc_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    now = WallClock().now_ms()
    after = time.time_ns() // 1_000_000
    assert isinstance(now, int)
    assert before <= now <= after


def test_wall_clock_monotonic_reads_the_performance_counter_in_seconds() -> None:
    wall = WallClock()
    before = time.perf_counter()
    reading = wall.monotonic()
    after = time.perf_counter()
    assert before <= reading <= after
    assert wall.monotonic() >= reading
