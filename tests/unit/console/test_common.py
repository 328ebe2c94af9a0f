"""Display helpers shared by the console pages."""

from __future__ import annotations

import pytest

from backend.console.common import duration, utc


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "n/a"), (500, "0.5 s"), (90_000, "1.5 min"), (7_200_000, "2.0 h"), (3 * 86_400_000, "3.0 days")],
)
def test_duration_uses_the_largest_fitting_unit(ms: int | None, text: str) -> None:
    assert duration(ms) == text


def test_utc_formats_milliseconds_and_never() -> None:
    assert utc(None) == "never"
    assert utc(1_735_689_600_000) == "2025-01-01 00:00:00 UTC"
