"""Credentials live in a real OS credential store (gnome-keyring over D-Bus here), never in a plaintext backend."""

from __future__ import annotations

import keyring
import keyring.errors
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from backend.kraken.client import Credentials
from backend.secrets.keychain import ENTRY, SERVICE, Keychain, SecretStoreError, os_keyring


def test_credentials_round_trip_through_the_secret_service(os_keyring: dict[str, str]) -> None:
    chain = Keychain()
    assert type(chain.backend).__module__ == "keyring.backends.SecretService"
    assert chain.load() is None and chain.delete() is False
    chain.store(Credentials("PUBLICKEY-0123456789", "c2VjcmV0LXNlY3JldC1zZWNyZXQ="))
    assert Keychain().load() == Credentials("PUBLICKEY-0123456789", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
    assert keyring.get_password(SERVICE, ENTRY) is not None
    assert chain.delete() is True and Keychain().load() is None


@pytest.mark.parametrize("refused", ["keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"])
def test_failing_and_null_backends_are_refused(refused: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", refused)
    keyring.set_keyring(fail.Keyring())
    with pytest.raises(SecretStoreError, match="no OS credential store is available"):
        os_keyring()


def test_a_real_store_already_chosen_is_kept(os_keyring: dict[str, str]) -> None:
    from backend.secrets import keychain

    first = keychain.os_keyring()
    keyring.set_keyring(first)
    assert keychain.os_keyring() is first


class BrokenStore(KeyringBackend):
    """A credential store that refuses every operation (the locked-keyring case)."""

    priority = 1  # type: ignore[assignment]

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("locked")

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringLocked("locked")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.PasswordDeleteError("none")


# keyring offers every subclass of KeyringBackend to its own discovery: a locked-store double left there is chosen
# by keyring (priority 1) whenever the Secret Service is not reachable, and later tests in the process then read a
# "locked" store. It is passed to Keychain explicitly, never discovered.
KeyringBackend._classes.discard(BrokenStore)  # type: ignore[attr-defined]


def test_store_refusals_are_reported_without_the_secret() -> None:
    chain = Keychain(BrokenStore())
    with pytest.raises(SecretStoreError, match="refused to save") as caught:
        chain.store(Credentials("PUBLICKEY-0123456789", "dG9wLXNlY3JldC12YWx1ZQ=="))
    assert "dG9wLXNlY3JldC12YWx1ZQ" not in str(caught.value)
    with pytest.raises(SecretStoreError, match="refused to read"):
        chain.load()
    assert chain.delete() is False


@pytest.mark.parametrize("entry", ["not json {", '["a list"]', '{"api_key": "PUBLICKEY-0123456789"}'])
def test_a_corrupted_entry_is_refused_without_quoting_it(os_keyring: dict[str, str], entry: str) -> None:
    keyring.set_password(SERVICE, ENTRY, entry)
    with pytest.raises(SecretStoreError, match="is not ACTS'.*acts kraken disconnect") as caught:
        Keychain().load()
    assert entry not in str(caught.value) and "PUBLICKEY" not in str(caught.value)
