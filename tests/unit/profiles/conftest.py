"""Fixtures for the profile store tests: a stepping clock and a store in the test's own home."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.profiles.store import ProfileStore

START_MS = 1_795_000_000_000  # 2026-11-18T...Z; any fixed instant works


class TickClock:
    """A clock that moves one second forward on every reading, so every stamp is distinct and known."""

    def __init__(self, start_ms: int = START_MS) -> None:
        self._ticks = itertools.count()
        self._start = start_ms

    def now_ms(self) -> int:
        return self._start + 1000 * next(self._ticks)


@pytest.fixture
def db_path(acts_home: Path) -> Path:
    acts_home.mkdir(parents=True, exist_ok=True)
    return acts_home / "acts.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[ProfileStore]:
    with ProfileStore(db_path, TickClock()) as opened:
        yield opened


@pytest.fixture
def clock_type() -> type[TickClock]:
    """The stepping clock class, for tests that need several independent clocks."""
    return TickClock


@pytest.fixture
def make_conf(tmp_path: Path):
    """Return a builder of minimal conf folders: ``config.yaml`` and ``risk/<name>.yaml`` files."""

    def build(presets: dict[str, str], config: str = "defaults:\n  - risk: balanced\n  - _self_\n") -> Path:
        conf = tmp_path / f"conf{len(list(tmp_path.glob('conf*')))}"
        (conf / "risk").mkdir(parents=True)
        (conf / "config.yaml").write_text(config, encoding="utf-8")
        for name, text in presets.items():
            (conf / "risk" / f"{name}.yaml").write_text(text, encoding="utf-8")
        return conf

    return build
