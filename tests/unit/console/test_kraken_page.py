"""The console's Kraken page against the Kraken emulator, keys kept in a real Secret Service (gnome-keyring).

The same flow as ``acts kraken``: a withdraw-capable key is refused naming each offending permission and
the fix, nothing stored; a minimal key is stored and shows in ``acts kraken status``; re-check and
disconnect are logged with their author. The typed secret appears in no element, no input after
submission and no file of the home. The status page shows a shadow session running on the Kraken feed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import keyring
import polars as pl
import pytest
from console_helpers import RUN_ID
from kraken_helpers import BAR_MS, BarClock, run_model, settings_for
from keyring.backends import fail
from streamlit.testing.v1 import AppTest

from backend.config.compose import compose_spec
from backend.control.live import LiveEvent, LiveGate
from backend.control.onboarding import fingerprint
from backend.data.simulator import simulate_ohlcv
from backend.runtime.live import kraken_feed, shadow_broker
from backend.runtime.paper import PaperRuntime
from backend.sandbox.kraken import KrakenEmulator
from backend.secrets.keychain import Keychain
from scripts.cli import main

TIMEOUT = 120
LIVE = ("query-funds", "query-open-trades", "query-closed-trades", "modify-trades", "close-trades")


def _page(slug: str) -> None:
    from backend.console.app import run_page

    run_page(slug)


def _run(slug: str) -> AppTest:
    at = AppTest.from_function(_page, args=(slug,), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [e.value for e in at.error] + [s.value for s in at.success]
    parts += [w.value for w in at.warning] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def _every_value(at: AppTest) -> str:
    """Every text the page holds: shown elements and the inputs' current values."""
    return _texts(at) + "\n".join(str(t.value) for t in at.text_input)


def _button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


@pytest.fixture(scope="module")
def emulator() -> Iterator[KrakenEmulator]:
    bars = simulate_ohlcv(["BTC", "ETH"], compose_spec([]).universe.clusters, "5m", 1_735_689_600_000, 60, seed=2)
    with KrakenEmulator(bars, "5m") as emu:
        yield emu


def _connect(at: AppTest, emu: KrakenEmulator, permissions: tuple[str, ...], author: str = "alice", mode: str = "live"):  # type: ignore[no-untyped-def]
    key = emu.account.create_key(permissions)
    at.selectbox(key="kraken_mode").select(mode)
    at.text_input(key="kraken_api_key").input(key.key)
    at.text_input(key="kraken_secret").input(key.secret)
    at.text_input(key="kraken_author").input(author)
    at.text_input(key="kraken_url").input(emu.base_url)
    _button(at, "Check and connect").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return key


def _files(home: Path) -> list[bytes]:
    return [p.read_bytes() for p in home.rglob("*") if p.is_file()]


def test_the_key_inputs_are_password_fields() -> None:
    at = AppTest.from_function(_page, args=("kraken",), default_timeout=TIMEOUT)
    at.run()
    assert at.text_input(key="kraken_api_key").proto.type == at.text_input(key="kraken_secret").proto.type == 1  # PASSWORD
    assert at.text_input(key="kraken_author").proto.type == 0  # DEFAULT


def test_a_withdraw_capable_key_is_refused_naming_the_permission_and_the_fix(
    emulator: KrakenEmulator, os_keyring: dict, acts_home: Path
) -> None:
    at = _run("kraken")
    key = _connect(at, emulator, (*LIVE, "withdraw-funds", "export-data"))
    errors = [e.value for e in at.error]
    assert errors[0] == "key REFUSED for live mode (checked with GetApiKeyInfo)"
    assert any(e.startswith("refused: withdraw-funds (Funds permissions - Withdraw): the key can move funds")
               and "untick it on Kraken > Settings > API" in e for e in errors)  # fmt: skip
    assert any(e.startswith("refused: export-data (Data - Export data): more than the live mode needs") for e in errors)
    assert "nothing was stored" in _texts(at) and "No Kraken key is connected" in _texts(at)
    assert Keychain().load() is None
    with LiveGate(acts_home / "acts.db") as gate:
        assert gate.events() == []
    for secret in (key.secret, key.key):
        assert secret not in _every_value(at)
        assert all(secret.encode() not in data for data in _files(acts_home))


def test_a_minimal_key_is_stored_shown_like_the_cli_rechecked_and_disconnected(
    emulator: KrakenEmulator, os_keyring: dict, acts_home: Path
) -> None:
    at = _run("kraken")
    key = _connect(at, emulator, LIVE)
    print_ = fingerprint(key.key)
    assert [m.value for m in at.success] == [f"key {print_} stored in the OS credential store",
                                             "key accepted for live mode (checked with GetApiKeyInfo)"]  # fmt: skip
    assert f"key {print_} stored in the OS credential store" in _texts(at)
    assert f"Key {print_}: connected" in _texts(at) and "Onboarded by** alice" in _texts(at)
    assert at.text_input(key="kraken_api_key").value == "" and at.text_input(key="kraken_secret").value == ""
    assert key.secret not in _every_value(at) and Keychain().load().secret == key.secret  # type: ignore[union-attr]
    out = io.StringIO()
    assert main(["kraken", "status", "--json"], out, io.StringIO()) == 0
    cli = json.loads(out.getvalue())
    assert cli["connected"] and cli["key_fingerprint"] == print_ and cli["onboarded_by"] == "alice"

    at.text_input(key="kraken_check_author").input("bob")
    at.text_input(key="kraken_check_url").input(emulator.base_url)
    _button(at, "Re-check connectivity and permissions").click().run()
    assert [m.value for m in at.success] == ["key accepted for live mode (checked with GetApiKeyInfo)"]
    at.text_input(key="kraken_gone_author").input("carol")
    _button(at, "Disconnect").click().run()
    assert "disconnected: the key was removed from the OS credential store" in _texts(at)
    assert "No Kraken key is connected" in _texts(at) and Keychain().load() is None
    with LiveGate(acts_home / "acts.db") as gate:
        logged = [(e.event, e.author) for e in gate.events()]
    assert logged == [(LiveEvent.ONBOARDED, "alice"), (LiveEvent.CONNECTIVITY_PASSED, "alice"),
                      (LiveEvent.CONNECTIVITY_PASSED, "bob"), (LiveEvent.DISCONNECTED, "carol")]  # fmt: skip
    assert all(key.secret.encode() not in data for data in _files(acts_home))
    at.text_input(key="kraken_gone_author").input("carol")
    _button(at, "Disconnect").click().run()
    assert "no key was connected" in _texts(at)


@pytest.mark.parametrize(("author", "url", "said"), [
    ("", None, "Refused: 'author' must be 1 to 64 characters (after trimming), was 0"),
    ("al\u202eice", None, "Refused: 'author' must not contain control characters, found U+202E at position 2"),
    ("alice", "ftp://example", "Refused: invalid Kraken settings"),
])  # fmt: skip
def test_a_bad_author_or_base_url_is_refused_before_anything_is_written(
    emulator: KrakenEmulator, os_keyring: dict, acts_home: Path, author: str, url: str | None, said: str
) -> None:
    at = _run("kraken")
    key = emulator.account.create_key(LIVE)
    at.text_input(key="kraken_api_key").input(key.key)
    at.text_input(key="kraken_secret").input(key.secret)
    at.text_input(key="kraken_author").input(author)
    at.text_input(key="kraken_url").input(url or emulator.base_url)
    _button(at, "Check and connect").click().run()
    assert said in _texts(at)
    assert Keychain().load() is None and key.secret not in _every_value(at)
    with LiveGate(acts_home / "acts.db") as gate:
        assert gate.events() == [] and gate.nonce_floor(fingerprint(key.key)) == 0  # Kraken was never called


def test_a_typed_key_that_is_not_a_kraken_key_is_refused_without_echoing_it(os_keyring: dict) -> None:
    at = _run("kraken")
    at.text_input(key="kraken_api_key").input("too-short")
    at.text_input(key="kraken_secret").input("not base64 at all!!")
    at.text_input(key="kraken_author").input("alice")
    _button(at, "Check and connect").click().run()
    assert "Refused: 'api_key' must be 16 to 512 printable characters" in _texts(at)
    assert "too-short" not in _every_value(at)


def test_recheck_and_disconnect_need_an_author_and_a_connected_key(os_keyring: dict) -> None:
    at = _run("kraken")
    _button(at, "Disconnect").click().run()
    assert "Refused: 'author' must be 1 to 64 characters" in _texts(at)
    at.text_input(key="kraken_check_author").input("bob")
    _button(at, "Re-check connectivity and permissions").click().run()
    assert "Refused: no Kraken key is connected; run `acts kraken connect` first" in _texts(at)


def test_without_a_credential_store_the_page_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    keyring.set_keyring(fail.Keyring())
    at = _run("kraken")
    assert "The OS credential store cannot be read: no OS credential store is available" in _texts(at)
    assert "No Kraken key is connected" in _texts(at)


def test_a_bad_settings_file_is_shown_as_a_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from backend.kraken import settings

    broken = tmp_path / "kraken.yaml"
    broken.write_text("base_url: [unclosed\n", encoding="utf-8")
    monkeypatch.setattr(settings, "DEFAULT_FILE", broken)
    at = AppTest.from_function(_page, args=("kraken",), default_timeout=TIMEOUT)
    at.run()
    assert "Refused: cannot read Kraken settings" in _texts(at)


def test_status_shows_a_shadow_session_running_on_the_kraken_feed(filled_home: Path) -> None:
    pipeline, bundle, bars = run_model(filled_home / "runs" / RUN_ID, filled_home)
    first = int(bars["ts"].min())
    clock = BarClock(first + 600 * BAR_MS + 1)
    with KrakenEmulator(bars, "5m", universe=pipeline.spec.universe, now_ms=clock) as emu:
        source, close = kraken_feed(pipeline, bundle, filled_home, settings_for(emu.base_url), clock, first,
                                    sleep=clock.sleep, max_polls=4)  # fmt: skip
        runtime = PaperRuntime(source, filled_home / "shadow" / "kraken_demo", broker_factory=shadow_broker(pipeline))
        try:
            runtime.run(0.0)
        finally:
            runtime.close()
            close()
    assert runtime.next_index == 3
    at = _run("status")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Health"] == "running" and metrics["Mode"] == "shadow"
    assert "**Source** shadow/kraken_demo: shadow session kraken_demo on the Kraken feed" in _texts(at)
    assert pl.DataFrame(at.dataframe[0].value).height >= 4  # every gate against its bound


def test_the_control_plane_refuses_an_unknown_key_mode_before_anything_is_written(os_keyring: dict, acts_home: Path) -> None:
    from backend.clock import WallClock
    from backend.control.onboarding import OnboardingError
    from backend.home import Home
    from backend.operator.kraken import connect_key

    with pytest.raises(OnboardingError, match=r"'mode' must be one of \['shadow', 'live'\], was 'margin'"):
        connect_key(Home(acts_home), "A" * 20, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", "margin", "alice", None, WallClock())
    assert not acts_home.exists()
