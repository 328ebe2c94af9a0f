"""Kraken credentials in the OS credential store through ``keyring``, and nowhere else.

macOS Keychain, the Secret Service on Linux (gnome-keyring, KWallet) or Windows Credential Locker:
whatever ``keyring`` finds, provided it is a real credential store. Plaintext, null and failing
backends (``keyrings.alt``, ``keyring.backends.fail``/``null``, anything of priority <= 0) are refused: a
secret is never written to a file ACTS controls.
"""

from __future__ import annotations

import contextlib
import json

import keyring
import keyring.backend
import keyring.core
import keyring.errors
from keyring.backend import KeyringBackend
from keyring.backends.chainer import ChainerBackend

from backend.errors import ActsError
from backend.kraken.client import Credentials

SERVICE = "acts.kraken"
ENTRY = "api-credentials"
_REFUSED_MODULES = ("keyrings.alt", "keyring.backends.fail", "keyring.backends.null")
# The Secret Service backend raises RuntimeError when its D-Bus session has gone away.
_STORE_ERRORS = (keyring.errors.KeyringError, RuntimeError)


class SecretStoreError(ActsError):
    """The OS credential store is unavailable or refused an operation (the message never holds a secret)."""


def _acceptable(backend: KeyringBackend) -> bool:
    return not type(backend).__module__.startswith(_REFUSED_MODULES) and backend.priority > 0


def os_keyring() -> KeyringBackend:
    """Return the OS credential store ``keyring`` chooses, refusing anything that is not one.

    When the current choice is not a real store (keyring looked before the session bus was up),
    keyring is asked to look again.

    Raises
    ------
    SecretStoreError
        When no plaintext-free, non-failing backend of priority > 0 is available.
    """
    backend = keyring.get_keyring()
    if not _acceptable(backend) or isinstance(backend, ChainerBackend):
        with contextlib.suppress(KeyError):  # nothing remembered yet
            keyring.backend.get_all_keyring.reset()
        keyring.core.init_backend()
        backend = keyring.get_keyring()
    candidates = [b for b in getattr(backend, "backends", [backend]) if _acceptable(b)]
    if not candidates:
        raise SecretStoreError(
            f"no OS credential store is available (keyring chose {type(backend).__module__}.{type(backend).__name__}); on "
            "Linux run inside a desktop session with the Secret Service (gnome-keyring) unlocked; macOS uses the Keychain"
        )
    return max(candidates, key=lambda b: b.priority)


class Keychain:
    """The one place Kraken credentials are kept: an entry of the OS credential store."""

    def __init__(self, backend: KeyringBackend | None = None, service: str = SERVICE) -> None:
        self._backend = backend
        self.service = service

    @property
    def backend(self) -> KeyringBackend:
        """The credential store (resolved on first use)."""
        if self._backend is None:
            self._backend = os_keyring()
        return self._backend

    def store(self, credentials: Credentials) -> None:
        """Store ``credentials``, replacing any stored before."""
        text = json.dumps({"api_key": credentials.api_key, "secret": credentials.secret})
        try:
            self.backend.set_password(self.service, ENTRY, text)
        except _STORE_ERRORS as error:
            raise SecretStoreError(f"the credential store refused to save the Kraken key: {type(error).__name__}") from None

    def load(self) -> Credentials | None:
        """Return the stored credentials, or None when none are stored."""
        try:
            text = self.backend.get_password(self.service, ENTRY)
        except _STORE_ERRORS as error:
            raise SecretStoreError(f"the credential store refused to read the Kraken key: {type(error).__name__}") from None
        if text is None:
            return None
        try:
            value = json.loads(text)
            return Credentials(str(value["api_key"]), str(value["secret"]))
        except (ValueError, TypeError, KeyError):
            # Never quote the entry: it may hold the secret.
            raise SecretStoreError(
                f"the credential store's entry {self.service}/{ENTRY} is not ACTS' (corrupted or written by another tool); "
                "run `acts kraken disconnect --author NAME` and connect the key again"
            ) from None

    def delete(self) -> bool:
        """Remove the stored credentials; False when there were none."""
        try:
            self.backend.delete_password(self.service, ENTRY)
        except keyring.errors.PasswordDeleteError:
            return False
        return True
