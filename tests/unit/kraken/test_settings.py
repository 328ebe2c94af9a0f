"""Kraken settings: the shipped file validates; overrides and bad files are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.errors import ConfigError
from backend.kraken.settings import load_settings


def test_shipped_settings_and_overrides() -> None:
    settings = load_settings()
    assert settings.base_url == "https://api.kraken.com" and settings.min_shadow_ms == 1440 * 60_000
    assert load_settings(base_url="http://127.0.0.1:8080", rate_limit=None).base_url == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError, match="'poll_seconds' must be > 0"):
        load_settings(poll_seconds=0)


def test_unreadable_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read Kraken settings"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_url: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read Kraken settings"):
        load_settings(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- base_url\n")
    with pytest.raises(ConfigError, match="must hold a mapping of settings, found list"):
        load_settings(listed)
