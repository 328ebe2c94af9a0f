"""Onboarding against the Kraken emulator, with keys stored in a real Secret Service (gnome-keyring).

Covers the acceptance points: a withdraw-capable key is refused and a minimal one accepted; the
fallback probes; `acts kraken connect | status | disconnect`; and the canary: no secret in any file
under ACTS_HOME, in any output or error line.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from backend.config.compose import compose_spec
from backend.control.live import LiveEvent, LiveGate
from backend.control.onboarding import (
    KrakenEndpoint,
    OnboardingError,
    connect,
    connection_status,
    disconnect,
    fingerprint,
    read_credentials,
    recheck,
)
from backend.data.simulator import simulate_ohlcv
from backend.clock import WallClock
from backend.kraken.client import Credentials
from backend.kraken.permissions import KeyMode, ProblemKind
from backend.sandbox.faults import FaultSpec, PrivateFault
from backend.sandbox.kraken import KrakenEmulator
from backend.secrets.keychain import Keychain
from scripts.cli import main

LIVE = ("query-funds", "query-open-trades", "query-closed-trades", "modify-trades", "close-trades")
SHADOW = ("query-funds", "query-open-trades", "query-closed-trades")
START_MS = 1_735_689_600_000


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    universe = compose_spec([]).universe
    return simulate_ohlcv(["BTC", "ETH"], universe.clusters, "5m", START_MS, 60, seed=2)


@pytest.fixture()
def emulator(bars: pl.DataFrame) -> Iterator[KrakenEmulator]:
    with KrakenEmulator(bars, "5m") as emu:
        yield emu


@pytest.fixture()
def gate(acts_home: Path) -> Iterator[LiveGate]:
    with LiveGate(acts_home / "acts.db") as store:
        yield store


def endpoint(emu: KrakenEmulator) -> KrakenEndpoint:
    return KrakenEndpoint(emu.base_url, 2_000, rate_limit=False)


def creds(emu: KrakenEmulator, permissions: tuple[str, ...]) -> Credentials:
    key = emu.account.create_key(permissions)
    return Credentials(key.key, key.secret)


def test_withdraw_capable_key_is_refused_and_nothing_is_stored(emulator: KrakenEmulator, gate: LiveGate, os_keyring: dict) -> None:
    result = connect(creds(emulator, (*LIVE, "withdraw-funds")), endpoint(emulator), KeyMode.LIVE, "ops", Keychain(), gate, WallClock())
    assert not result.stored and not result.report.accepted
    assert [p.subject for p in result.report.problems] == ["withdraw-funds (Funds permissions - Withdraw)"]
    assert Keychain().load() is None and gate.events() == []
    assert result.as_dict()["problems"][0].startswith("withdraw-funds")


def test_minimal_key_is_accepted_stored_and_logged(emulator: KrakenEmulator, gate: LiveGate, os_keyring: dict) -> None:
    key = creds(emulator, LIVE)
    result = connect(key, endpoint(emulator), KeyMode.LIVE, "ops", Keychain(), gate, WallClock())
    assert result.stored and result.report.accepted and result.connectivity["status"] == "ok"
    assert Keychain().load() == key
    assert [e.event for e in gate.events()] == [LiveEvent.ONBOARDED, LiveEvent.CONNECTIVITY_PASSED]
    assert gate.events()[0].key_fingerprint == fingerprint(key.api_key) and key.secret not in json.dumps(gate.events()[0].detail)
    status = connection_status(Keychain(), gate, 0)
    assert status["connected"] and status["permissions"] == sorted(LIVE) and status["live"]["missing"] == ["SHADOW_SESSION", "OPERATOR_CONFIRMATION"]
    assert recheck(endpoint(emulator), "ops", Keychain(), gate, WallClock()).report.accepted
    assert gate.nonce_floor(fingerprint(key.api_key)) > 0
    assert disconnect("ops", Keychain(), gate, WallClock()) and Keychain().load() is None
    assert not disconnect("ops", Keychain(), gate, WallClock())
    assert connection_status(Keychain(), gate, 0) == {"connected": False, "in_credential_store": False,
                                                      "live": gate.readiness(0).as_dict()}  # fmt: skip
    with pytest.raises(OnboardingError, match="no Kraken key is connected"):
        recheck(endpoint(emulator), "ops", Keychain(), gate, WallClock())


def test_probes_replace_get_api_key_info_when_it_is_unknown(emulator: KrakenEmulator, gate: LiveGate, os_keyring: dict) -> None:
    emulator.account.key_info_available = False
    chain = Keychain()
    refused = connect(creds(emulator, (*SHADOW, "withdraw-funds")), endpoint(emulator), KeyMode.SHADOW, "ops", chain, gate, WallClock())
    assert refused.report.source == "probes" and refused.report.problems[0].kind is ProblemKind.MOVES_FUNDS
    no_funds = connect(creds(emulator, ("query-open-trades",)), endpoint(emulator), KeyMode.SHADOW, "ops", chain, gate, WallClock())
    assert no_funds.report.problems[0].kind is ProblemKind.MISSING and not no_funds.stored
    accepted = connect(creds(emulator, SHADOW), endpoint(emulator), KeyMode.SHADOW, "ops", chain, gate, WallClock())
    assert accepted.stored and "GetApiKeyInfo is unavailable" in accepted.report.warnings[0]


@pytest.mark.parametrize(
    ("faults", "key_info", "expected"),
    [
        ((PrivateFault(endpoint="GetApiKeyInfo", calls=(1,), error="EAPI:Rate limit exceeded"),), True, "GetApiKeyInfo rate_limit"),
        ((PrivateFault(endpoint="Balance", calls=(1,), status=502),), False, "Balance unavailable"),
        ((PrivateFault(endpoint="WithdrawMethods", calls=(1,), error="EService:Busy"),), False, "unavailable: EService:Busy"),
    ],
)
def test_inconclusive_answers_store_nothing(bars: pl.DataFrame, os_keyring: dict, gate: LiveGate,
                                            faults: tuple, key_info: bool, expected: str) -> None:  # fmt: skip
    with KrakenEmulator(bars, "5m", FaultSpec(private_faults=faults)) as emu:
        emu.account.key_info_available = key_info
        result = connect(creds(emu, LIVE), endpoint(emu), KeyMode.LIVE, "ops", Keychain(), gate, WallClock())
    assert not result.stored and result.report.problems[0].kind is ProblemKind.INCONCLUSIVE
    assert expected in result.report.problems[0].fix and Keychain().load() is None


def test_a_nonce_error_is_retried_once_and_bad_credentials_are_named(bars: pl.DataFrame, gate: LiveGate, os_keyring: dict) -> None:
    faults = FaultSpec(private_faults=(PrivateFault(endpoint="GetApiKeyInfo", calls=(1,), error="EAPI:Invalid nonce"),))
    with KrakenEmulator(bars, "5m", faults) as emu:
        assert connect(creds(emu, LIVE), endpoint(emu), KeyMode.LIVE, "ops", Keychain(), gate, WallClock()).stored
        forged = Credentials(creds(emu, LIVE).api_key, "c2VjcmV0LXRoYXQtaXMtd3Jvbmc=")
        with pytest.raises(OnboardingError, match=r"refused the credentials \(EAPI:Invalid signature\)"):
            connect(forged, endpoint(emu), KeyMode.LIVE, "ops", Keychain(), gate, WallClock())
    with pytest.raises(OnboardingError, match="Kraken is not reachable"):
        connect(forged, KrakenEndpoint("http://127.0.0.1:1", 500, False), KeyMode.LIVE, "ops", Keychain(), gate, WallClock())


def test_typed_credentials_are_checked_without_echoing_them() -> None:
    with pytest.raises(OnboardingError, match="'api_key' must be 16 to 512 printable characters") as caught:
        read_credentials("short", "c2VjcmV0")
    assert "short" not in str(caught.value)
    with pytest.raises(OnboardingError, match="'secret' must be base64"):
        read_credentials("A" * 20, "not-base64-at-all!!!")
    assert read_credentials(" " + "A" * 20 + "\n", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n") == Credentials("A" * 20, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")


def run_cli(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_connect_status_disconnect(emulator: KrakenEmulator, os_keyring: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    url = ["--base-url", emulator.base_url]
    bad = creds(emulator, (*LIVE, "withdraw-funds"))
    code, out, _ = run_cli(["kraken", "connect", "--stdin", "--author", "ops", *url], f"{bad.api_key}\n{bad.secret}\n", monkeypatch)
    assert code == 1 and "refused: withdraw-funds" in out and "nothing was stored" in out
    good = creds(emulator, LIVE)
    code, out, _ = run_cli(["kraken", "connect", "--stdin", "--author", "ops", *url], f"{good.api_key}\n{good.secret}\n", monkeypatch)
    assert code == 0 and "stored in the OS credential store" in out
    code, out, _ = run_cli(["kraken", "status", *url], "", monkeypatch)
    assert code == 0 and f"Kraken key {fingerprint(good.api_key)}: connected" in out and "live trading not ready" in out
    code, out, _ = run_cli(["kraken", "status", "--check", "--author", "ops", "--json", *url], "", monkeypatch)
    assert json.loads(out[out.index("{"):])["connected"] is True
    code, _, err = run_cli(["kraken", "status", "--check", *url], "", monkeypatch)
    assert code == 2 and "'--author' is required with --check" in err
    code, out, _ = run_cli(["live", "status"], "", monkeypatch)
    assert "met      an onboarded key" in out and "missing  a shadow session" in out
    code, out, _ = run_cli(["live", "status", "--json"], "", monkeypatch)
    assert json.loads(out)["missing"] == ["SHADOW_SESSION", "OPERATOR_CONFIRMATION"]
    code, _, err = run_cli(["live", "enable", "--confirm", "--author", "ops"], "", monkeypatch)
    assert code == 2 and "missing, in order: a shadow session" in err
    code, out, _ = run_cli(["live", "disable", "--author", "ops", "--reason", "not yet"], "", monkeypatch)
    assert code == 0 and "disabled by ops" in out
    code, out, _ = run_cli(["kraken", "disconnect", "--author", "ops"], "", monkeypatch)
    assert code == 0 and "removed" in out
    code, out, _ = run_cli(["kraken", "disconnect", "--author", "ops"], "", monkeypatch)
    assert out == "no key was connected\n"
    code, out, _ = run_cli(["kraken", "status"], "", monkeypatch)
    assert out.startswith("no Kraken key is connected")
    code, _, err = run_cli(["kraken", "connect", "--stdin", "--author", "ops", *url], "", monkeypatch)
    assert code == 2 and "'api_key' must be" in err
    code, _, err = run_cli(["kraken", "status", "--base-url", "ftp://x"], "", monkeypatch)
    assert code == 2 and "'base_url'" in err


def test_cli_prompts_without_echo_when_not_reading_stdin(emulator: KrakenEmulator, os_keyring: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    good = creds(emulator, SHADOW)
    answers = iter([good.api_key, good.secret])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    code, out, _ = run_cli(["kraken", "connect", "--mode", "shadow", "--author", "ops", "--base-url", emulator.base_url], "", monkeypatch)
    assert code == 0 and "accepted for shadow mode" in out


def test_a_failed_recheck_logs_no_passed_check(bars: pl.DataFrame, gate: LiveGate, os_keyring: dict) -> None:
    faults = FaultSpec(private_faults=(PrivateFault(endpoint="GetApiKeyInfo", calls=(2,), error="EAPI:Rate limit exceeded"),))
    with KrakenEmulator(bars, "5m", faults) as emu:
        assert connect(creds(emu, LIVE), endpoint(emu), KeyMode.LIVE, "ops", Keychain(), gate, WallClock()).stored
        assert not recheck(endpoint(emu), "ops", Keychain(), gate, WallClock()).report.accepted
    assert [e.event for e in gate.events()] == [LiveEvent.ONBOARDED, LiveEvent.CONNECTIVITY_PASSED]


def test_canary_secret_appears_in_no_file_log_or_output(emulator: KrakenEmulator, os_keyring: dict, acts_home: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    canary = creds(emulator, LIVE)
    refused = creds(emulator, (*LIVE, "withdraw-funds"))
    env = {**os.environ, **os_keyring, "ACTS_HOME": str(acts_home)}
    acts = [sys.executable, "-c", "from scripts.cli import run; run()"]
    url = ["--base-url", emulator.base_url]
    outputs = []
    # The real entry point (log redaction and the crash hook installed) for a connect and a failing connect.
    for argv in (["--author", "ops", *url], ["--author", "ops", "--base-url", "http://127.0.0.1:1"]):
        done = subprocess.run([*acts, "kraken", "connect", "--stdin", *argv], input=f"{canary.api_key}\n{canary.secret}\n",
                              capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
        outputs.append(done.stdout + done.stderr)
    for argv, stdin in (
        (["kraken", "connect", "--stdin", "--author", "ops", *url], f"{refused.api_key}\n{refused.secret}\n"),
        (["kraken", "status", "--check", "--author", "ops", "--json", *url], ""),
        (["kraken", "disconnect", "--author", "ops"], ""),
    ):
        code, out, err = run_cli(argv, stdin, monkeypatch)
        outputs.append(out + err)
    assert "stored in the OS credential store" in outputs[0] and "Kraken is not reachable" in outputs[1]
    files = [p for p in acts_home.rglob("*") if p.is_file()]
    assert files, "the runs wrote their database under ACTS_HOME"
    for secret in (canary.secret, canary.api_key, refused.secret, refused.api_key):
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
        for text in outputs:
            assert secret not in text


def test_the_prompt_reads_the_secret_from_a_real_terminal_without_echo(emulator: KrakenEmulator, os_keyring: dict,
                                                                        acts_home: Path) -> None:  # fmt: skip
    import pty
    import select

    good = creds(emulator, SHADOW)
    env = {**os.environ, **os_keyring, "ACTS_HOME": str(acts_home)}
    argv = [sys.executable, "-c", "from scripts.cli import run; run()", "kraken", "connect", "--mode", "shadow",
            "--author", "ops", "--base-url", emulator.base_url]  # fmt: skip
    pid, fd = pty.fork()  # the child gets the terminal as its controlling tty, as a shell would give it
    if pid == 0:  # the child: exec at once
        os.execve(sys.executable, argv, env)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        while marker not in seen:
            ready, _, _ = select.select([fd], [], [], 120)
            assert ready, f"no {marker!r} from the prompt; seen {seen!r}"
            seen += os.read(fd, 4096)

    try:
        read_until(b"Kraken API key: ")
        os.write(fd, good.api_key.encode() + b"\n")
        read_until(b"Kraken API secret: ")
        os.write(fd, good.secret.encode() + b"\n")
        while True:
            ready, _, _ = select.select([fd], [], [], 120)
            try:
                chunk = os.read(fd, 4096) if ready else b""
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"accepted for shadow mode" in seen and b"stored in the OS credential store" in seen
    assert good.secret.encode() not in seen and good.api_key.encode() not in seen  # the terminal never echoed them
    assert Keychain().load() == good


def test_a_session_rechecks_the_key_and_refuses_one_widened_or_revoked_since_onboarding(
    emulator: KrakenEmulator, gate: LiveGate, os_keyring: dict
) -> None:
    from backend.kraken.settings import KrakenSettings
    from backend.runtime.live import LiveRefused, connected_client

    settings = KrakenSettings(base_url=emulator.base_url, timeout_ms=2000, rate_limit=False)
    with pytest.raises(LiveRefused, match="shadow mode needs an onboarded Kraken key"):
        connected_client(settings, KeyMode.SHADOW, gate, Keychain(), WallClock())
    key = emulator.account.create_key(SHADOW)
    assert connect(Credentials(key.key, key.secret), endpoint(emulator), KeyMode.SHADOW, "ops", Keychain(), gate, WallClock()).stored
    assert connected_client(settings, KeyMode.SHADOW, gate, Keychain(), WallClock()).apiKey == key.key
    key.permissions = frozenset({*SHADOW, "withdraw-funds"})  # widened on Kraken's key page after onboarding
    with pytest.raises(LiveRefused, match=r"no longer passes the shadow policy: withdraw-funds \(Funds permissions - Withdraw\)"):
        connected_client(settings, KeyMode.SHADOW, gate, Keychain(), WallClock())
    del emulator.account.keys[key.key]  # deleted on Kraken
    with pytest.raises(LiveRefused, match=r"Kraken refused the credentials \(EAPI:Invalid key\)"):
        connected_client(settings, KeyMode.SHADOW, gate, Keychain(), WallClock())


def test_cli_enables_live_once_every_earlier_step_is_logged_and_disable_takes_it_back(acts_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.kraken.settings import load_settings

    minimum = load_settings().min_shadow_ms
    with LiveGate(acts_home / "acts.db") as gate:
        for event, detail in ((LiveEvent.ONBOARDED, {"mode": "live", "permissions": list(LIVE)}), (LiveEvent.CONNECTIVITY_PASSED, {}),
                              (LiveEvent.SHADOW_SESSION, {"duration_ms": minimum})):  # fmt: skip
            gate.record(event, "ops", "a1b2c3d4e5f6", detail, WallClock())
    code, out, _ = run_cli(["live", "enable", "--confirm", "--author", "ops"], "", monkeypatch)
    assert code == 0 and out.startswith("live trading enabled by ops at ") and out.endswith("for key a1b2c3d4e5f6\n")
    assert json.loads(run_cli(["live", "status", "--json"], "", monkeypatch)[1])["ready"] is True
    assert run_cli(["live", "disable", "--author", "ops", "--reason", "drill over"], "", monkeypatch)[0] == 0
    assert json.loads(run_cli(["live", "status", "--json"], "", monkeypatch)[1])["missing"] == ["OPERATOR_CONFIRMATION"]
