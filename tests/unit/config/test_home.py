"""The ACTS home: $ACTS_HOME when set, ~/.acts otherwise, with the lake and runs inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.home import Home
from backend.home import acts_home as resolve_home


def test_acts_home_comes_from_the_environment(acts_home: Path) -> None:
    assert resolve_home() == acts_home


def test_acts_home_expands_a_user_relative_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ACTS_HOME", "~/trading")
    assert resolve_home() == tmp_path / "trading"


@pytest.mark.parametrize("unset", [True, False])
def test_acts_home_defaults_to_dot_acts_in_the_user_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unset: bool
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if unset:
        monkeypatch.delenv("ACTS_HOME")
    else:
        monkeypatch.setenv("ACTS_HOME", "")  # empty counts as unset
    assert resolve_home() == tmp_path / ".acts"


def test_home_places_the_lake_and_runs_under_its_root(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert (home.lake, home.runs) == (tmp_path / "lake", tmp_path / "runs")


def test_home_is_immutable(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with pytest.raises(AttributeError):
        home.root = tmp_path / "other"  # type: ignore[misc]
