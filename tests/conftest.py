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


@pytest.fixture(scope="session")
def secret_service_env(tmp_path_factory: pytest.TempPathFactory):
    """A real Secret Service (D-Bus session bus + unlocked gnome-keyring) for the whole test session."""
    from secret_service import secret_service

    with secret_service(tmp_path_factory.mktemp("secret_service")) as env:
        yield env


@pytest.fixture()
def os_keyring(secret_service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """Point keyring at the test Secret Service; yield its env; remove ACTS' entry afterwards."""
    from backend.secrets.keychain import Keychain, os_keyring

    for name, value in secret_service_env.items():
        monkeypatch.setenv(name, value)
    os_keyring()
    yield secret_service_env
    Keychain().delete()
