"""Fixtures of the console tests: a session-built demo home, copied into each test's ACTS_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_helpers import copy_home, demo_home


@pytest.fixture(scope="session")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo home, built once per session."""
    return demo_home(tmp_path_factory.getbasetemp())


@pytest.fixture
def filled_home(built_home: Path, acts_home: Path) -> Path:
    """This test's ACTS_HOME holding a copy of the demo home."""
    return copy_home(built_home, acts_home)
