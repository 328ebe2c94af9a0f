"""Argument types shared by the ``acts`` subcommands: every number a user types is checked while parsing.

argparse calls these before any handler runs, so a refused flag (``--speed nan``, ``--max-events -5``)
stops the command before anything is written, with ``acts <command>: error: argument --flag: ...`` and
exit code 2. Kept outside ``scripts/commands`` so the command discovery does not take it for a command.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

SPEED_HELP = (
    "playback speed as a multiple of real time: 1 = real time (a 5-minute bar every 5 minutes), "
    "10 or 10x = ten times faster (a 5-minute bar every 30 s), 0.5 = half speed (every 10 min), "
    "max = no waiting between bars (0, the old spelling, also means max); default 1"
)


def finite_float(text: str) -> float:
    """Parse a finite float; refuse NaN, infinities and non-numbers."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, was {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, was {text!r}")
    return value


def positive_float(text: str) -> float:
    """Parse a finite float greater than 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, was {text!r}")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """Return a parser of integers in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, was {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, was {text!r}")
        return value

    return parse


MAX_SPEED = 1e6


def speed(text: str) -> float:
    """Parse ``--speed``: a multiplier of real time (``10``, ``10x``, ``0.5``) or ``max``; return 0.0 for max.

    0.0 is the paper runtime's "no waiting"; every other value divides the bar gap, so 10 sleeps a
    tenth of the gap (ten times faster than real time).
    """
    cleaned = text.strip().lower()
    if cleaned in ("max", "0", "0x", "0.0"):
        return 0.0
    number = cleaned[:-1] if cleaned.endswith("x") else cleaned
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a multiplier such as 1, 10x or 0.5, or max, was {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (or max), was {text!r}")
    if not 0 < value <= MAX_SPEED:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= {MAX_SPEED:g} (or max), was {text!r}")
    return value
