"""Shared fixtures: every test gets its own ACTS home, so nothing touches ~/.acts."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def acts_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ACTS_HOME at a fresh folder inside the test's temporary directory."""
    home = tmp_path / "acts_home"
    monkeypatch.setenv("ACTS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real bundle (trained, gated, exported once a session): ``.../bundles/tiny/1.0.0``. Copy before altering."""
    from bundle_helpers import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny_bundle")).path
