"""Kraken onboarding, as functions the CLI and the console share: connect, check, status, disconnect.

``connect`` checks connectivity (Time, SystemStatus), reads the key's permissions with GetApiKeyInfo
(or, where that endpoint does not answer, the safe probes Balance then WithdrawMethods), judges them
for the mode (:mod:`backend.kraken.permissions`), and only when the key is accepted stores it in the
OS credential store and logs the onboarding and the passed check (author, time, fingerprint, the
permissions; never the key or the secret). Any refusal or inconclusive answer stores nothing.
Every call goes through ccxt (:func:`backend.kraken.client.make_client`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ccxt

from backend.control.live import LiveEvent, LiveGate
from backend.clock import Clock
from backend.errors import ControlError
from backend.kraken.client import (
    Credentials,
    KrakenCallError,
    KrakenErrorClass,
    NonceSource,
    call,
    make_client,
)
from backend.kraken.permissions import KeyMode, KeyReport, check_key_info, check_probes
from backend.secrets.keychain import Keychain, SecretStoreError
from backend.secrets.redact import register_secret


class OnboardingError(ControlError):
    """The key could not be checked (bad credentials, no connectivity); nothing was stored."""


@dataclass(frozen=True)
class KrakenEndpoint:
    """Where and how to reach Kraken: the base URL (the real API or the emulator) and ccxt's limits."""

    base_url: str
    timeout_ms: int = 10_000
    rate_limit: bool = True


def fingerprint(api_key: str) -> str:
    """Return the key's public fingerprint: 12 hex of its SHA-256 (shown and logged instead of the key)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def client_for(endpoint: KrakenEndpoint, credentials: Credentials, gate: LiveGate, clock: Clock) -> ccxt.kraken:
    """Return a ccxt client whose nonces continue from the last one persisted for the key (its secrets redacted)."""
    register_secret(credentials.secret)
    register_secret(credentials.api_key)
    key = fingerprint(credentials.api_key)
    nonce = NonceSource(clock.now_ms, gate.nonce_floor(key), lambda n: gate.save_nonce(key, n))
    return make_client(endpoint.base_url, credentials, nonce, endpoint.timeout_ms, endpoint.rate_limit)


def _with_nonce_retry(action: Callable[[], Any], endpoint: str) -> Any:
    try:
        return call(endpoint, action)
    except KrakenCallError as error:
        if error.error_class is not KrakenErrorClass.NONCE:
            raise
        return call(endpoint, action)  # once, with a fresh nonce


def check_connectivity(client: ccxt.kraken) -> dict[str, Any]:
    """Read Kraken's time and system status; raise :class:`OnboardingError` when either fails."""
    try:
        server_ms = call("Time", client.fetch_time)
        system = call("SystemStatus", client.fetch_status)
    except KrakenCallError as error:
        raise OnboardingError(f"Kraken is not reachable at {client.urls['api']['public']}: {error}") from None
    return {"server_time_ms": server_ms, "status": system["status"]}


def probe_permissions(client: ccxt.kraken, mode: KeyMode, now_s: int) -> KeyReport:
    """Return the key's report: GetApiKeyInfo, or the safe probes when it is unknown to the server.

    Raises
    ------
    OnboardingError
        When Kraken refuses the credentials (``EAPI:Invalid key``, ``EAPI:Invalid signature``).
    """
    try:
        info = _with_nonce_retry(client.privatePostGetApiKeyInfo, "GetApiKeyInfo")
        return check_key_info(info["result"], mode, now_s)
    except KrakenCallError as error:
        if error.error_class is KrakenErrorClass.AUTH:
            raise OnboardingError(f"Kraken refused the credentials ({error.kraken_error}); check the key and secret") from None
        if error.error_class is not KrakenErrorClass.UNKNOWN_METHOD:
            return check_probes(True, f"GetApiKeyInfo {error.error_class.value}: {error.kraken_error}", mode)
    try:
        _with_nonce_retry(client.privatePostBalance, "Balance")
        balance_ok = True
    except KrakenCallError as error:
        balance_ok = False
        if error.error_class is not KrakenErrorClass.PERMISSION:
            return check_probes(True, f"Balance {error.error_class.value}: {error.kraken_error}", mode)
    try:
        _with_nonce_retry(client.privatePostWithdrawMethods, "WithdrawMethods")
        probe = "allowed"
    except KrakenCallError as error:
        probe = "denied" if error.error_class is KrakenErrorClass.PERMISSION else f"{error.error_class.value}: {error.kraken_error}"
    return check_probes(balance_ok, probe, mode)


@dataclass(frozen=True)
class ConnectResult:
    """What ``connect`` found and did."""

    report: KeyReport
    stored: bool
    key_fingerprint: str
    connectivity: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data (no secret)."""
        return {
            "accepted": self.report.accepted, "stored": self.stored, "key_fingerprint": self.key_fingerprint,
            "mode": self.report.mode.value, "permissions": list(self.report.permissions), "source": self.report.source,
            "problems": [str(p) for p in self.report.problems], "warnings": list(self.report.warnings),
            "connectivity": self.connectivity,
        }  # fmt: skip


def read_credentials(api_key: str, secret: str) -> Credentials:
    """Validate what the operator typed (no control characters, a base64 secret) and return it.

    Raises
    ------
    OnboardingError
        Naming the field and the rule (never echoing the value).
    """
    for value in (api_key, secret):
        register_secret(value.strip())  # from now on no log, error or traceback of this process shows it
    for field, value in (("api_key", api_key), ("secret", secret)):
        text = value.strip()
        if not 16 <= len(text) <= 512 or any(ord(ch) < 33 or ord(ch) > 126 for ch in text):
            raise OnboardingError(f"'{field}' must be 16 to 512 printable characters without spaces (was {len(text)} characters)")
    try:
        base64.b64decode(secret.strip(), validate=True)
    except binascii.Error:
        raise OnboardingError("'secret' must be base64 text, as Kraken shows it (it did not decode)") from None
    return Credentials(api_key.strip(), secret.strip())


def connect(
    credentials: Credentials, endpoint: KrakenEndpoint, mode: KeyMode, author: str, keychain: Keychain, gate: LiveGate, clock: Clock
) -> ConnectResult:
    """Check and, if accepted, store a key; log the onboarding and the connectivity check."""
    client = client_for(endpoint, credentials, gate, clock)
    connectivity = check_connectivity(client)
    report = probe_permissions(client, mode, clock.now_ms() // 1000)
    key = fingerprint(credentials.api_key)
    if not report.accepted:
        return ConnectResult(report, False, key, connectivity)
    keychain.store(credentials)
    detail = {"mode": mode.value, "permissions": list(report.permissions), "source": report.source,
              "warnings": list(report.warnings), "base_url": endpoint.base_url}  # fmt: skip
    gate.record(LiveEvent.ONBOARDED, author, key, detail, clock)
    gate.record(LiveEvent.CONNECTIVITY_PASSED, author, key, connectivity, clock)
    return ConnectResult(report, True, key, connectivity)


def recheck(endpoint: KrakenEndpoint, author: str, keychain: Keychain, gate: LiveGate, clock: Clock) -> ConnectResult:
    """Re-check the stored key (connectivity and permissions, for its onboarded mode); log a passed check.

    Raises
    ------
    OnboardingError
        When no key is connected.
    """
    connected = gate.connected()
    credentials = keychain.load()
    if connected is None or credentials is None or fingerprint(credentials.api_key) != connected.key_fingerprint:
        raise OnboardingError("no Kraken key is connected; run `acts kraken connect` first")
    mode = KeyMode(connected.detail["mode"])
    client = client_for(endpoint, credentials, gate, clock)
    connectivity = check_connectivity(client)
    report = probe_permissions(client, mode, clock.now_ms() // 1000)
    if report.accepted:
        gate.record(LiveEvent.CONNECTIVITY_PASSED, author, connected.key_fingerprint, connectivity, clock)
    return ConnectResult(report, True, connected.key_fingerprint, connectivity)


def connection_status(keychain: Keychain, gate: LiveGate, min_shadow_ms: int) -> dict[str, Any]:
    """Return what is connected (fingerprint, mode, permissions, since) and the live readiness; never a secret.

    When the credential store cannot be read, ``credential_store_problem`` says why (and nothing counts as stored).
    """
    connected = gate.connected()
    problem: dict[str, str] = {}
    try:
        stored = keychain.load()
    except SecretStoreError as error:
        stored, problem = None, {"credential_store_problem": str(error)}
    in_store = stored is not None and connected is not None and fingerprint(stored.api_key) == connected.key_fingerprint
    readiness = gate.readiness(min_shadow_ms)
    if connected is None:
        return {"connected": False, "in_credential_store": stored is not None, "live": readiness.as_dict(), **problem}
    return {**problem,
        "connected": in_store, "in_credential_store": stored is not None, "key_fingerprint": connected.key_fingerprint,
        "mode": connected.detail["mode"], "permissions": connected.detail["permissions"],
        "onboarded_by": connected.author, "onboarded_ms": connected.ts_ms, "live": readiness.as_dict(),
    }  # fmt: skip


def disconnect(author: str, keychain: Keychain, gate: LiveGate, clock: Clock) -> bool:
    """Remove the stored key and log the disconnect; False when nothing was connected or stored."""
    connected = gate.connected()
    removed = keychain.delete()
    if connected is None and not removed:
        return False
    gate.record(LiveEvent.DISCONNECTED, author, connected.key_fingerprint if connected else "none", {"removed": removed}, clock)
    return True
