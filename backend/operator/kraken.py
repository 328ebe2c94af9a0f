"""The control plane's Kraken onboarding: connect, re-check, status and disconnect for the console.

The same functions as ``acts kraken`` (:mod:`backend.control.onboarding`), with the same checks in the
same order: the author (required, no default; :mod:`backend.config.text`), the settings (the base URL
the operator chose, validated by :class:`~backend.kraken.settings.KrakenSettings`) and the typed key are
checked before anything is written; a key is stored in the OS credential store only when its
permissions pass, and never returned, logged or shown.
"""

from __future__ import annotations

from typing import Any

from backend.clock import Clock
from backend.config.text import AUTHOR_MAX_CHARS, checked_text
from backend.control.live import LiveGate
from backend.control.onboarding import (
    ConnectResult,
    KrakenEndpoint,
    OnboardingError,
    connect,
    connection_status,
    disconnect,
    read_credentials,
    recheck,
)
from backend.home import Home
from backend.kraken.permissions import KeyMode, KeyReport, describe
from backend.kraken.settings import KrakenSettings, load_settings
from backend.operator.plane import database
from backend.secrets.keychain import Keychain

__all__ = ["KeyMode", "connect_key", "describe", "disconnect_key", "kraken_settings", "kraken_status", "recheck_key"]


def kraken_settings(base_url: str | None = None) -> KrakenSettings:
    """The Kraken settings (``conf/kraken``), with the operator's base URL if given (validated)."""
    return load_settings(base_url=(base_url or "").strip() or None)


def _endpoint(settings: KrakenSettings) -> KrakenEndpoint:
    return KrakenEndpoint(settings.base_url, settings.timeout_ms, settings.rate_limit)


def _author(author: str) -> str:
    return checked_text("author", author, AUTHOR_MAX_CHARS, OnboardingError)


def connect_key(home: Home, api_key: str, secret: str, mode: str, author: str, base_url: str | None, clock: Clock) -> ConnectResult:
    """Check a typed key and store it if accepted, logged like ``acts kraken connect``.

    Raises
    ------
    ActsError
        Naming the field (author, base URL, key, secret, mode) before anything is written, or when Kraken
        cannot be reached or refuses the credentials (nothing stored).
    """
    who = _author(author)
    settings = kraken_settings(base_url)
    try:
        key_mode = KeyMode(mode)
    except ValueError:
        raise OnboardingError(f"'mode' must be one of {[m.value for m in KeyMode]}, was {mode!r}") from None
    credentials = read_credentials(api_key, secret)
    with LiveGate(database(home)) as gate:
        return connect(credentials, _endpoint(settings), key_mode, who, Keychain(), gate, clock)


def recheck_key(home: Home, author: str, base_url: str | None, clock: Clock) -> KeyReport:
    """Re-check the stored key's connectivity and permissions, logged like ``acts kraken status --check``."""
    who = _author(author)
    settings = kraken_settings(base_url)
    with LiveGate(database(home)) as gate:
        return recheck(_endpoint(settings), who, Keychain(), gate, clock).report


def disconnect_key(home: Home, author: str, clock: Clock) -> bool:
    """Remove the stored key, logged like ``acts kraken disconnect``; False when nothing was connected."""
    who = _author(author)
    with LiveGate(database(home)) as gate:
        return disconnect(who, Keychain(), gate, clock)


def kraken_status(home: Home) -> dict[str, Any]:
    """What ``acts kraken status`` shows (never a secret); an unavailable credential store is named in it."""
    settings = kraken_settings()
    with LiveGate(database(home)) as gate:
        return connection_status(Keychain(), gate, settings.min_shadow_ms)
