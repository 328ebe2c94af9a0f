"""`acts run --source kraken` from the command line: paper, shadow (logged, with divergence) and live refusals."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kraken_helpers import BAR_MS, run_model
from paper_helpers import record_run

from backend.control.live import LiveEvent, LiveGate
from backend.control.onboarding import KrakenEndpoint, connect
from backend.clock import WallClock
from backend.kraken.client import Credentials
from backend.kraken.permissions import KeyMode
from backend.sandbox.kraken import KrakenEmulator
from backend.sandbox.kraken_account import KrakenAccount
from backend.secrets.keychain import Keychain
from scripts.cli import main

SHADOW = ("query-funds", "query-open-trades", "query-closed-trades")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple]:
    root = tmp_path_factory.mktemp("kraken_cli")
    run_dir, _ = record_run(root)
    return run_dir, run_model(run_dir, root)


@pytest.fixture()
def emulator(recorded: tuple[Path, tuple]) -> Iterator[KrakenEmulator]:
    _, (pipeline, _, bars) = recorded
    start, begun = int(bars["ts"].min()) + 2600 * BAR_MS + 1, time.monotonic()
    # Kraken's clock for the test: one bar every 0.2 s of wall time.
    clock = lambda: start + int((time.monotonic() - begun) / 0.2) * BAR_MS  # noqa: E731
    account = KrakenAccount({"ZUSD": "50000"})
    with KrakenEmulator(bars, "5m", universe=pipeline.spec.universe, now_ms=clock, account=account) as emu:
        yield emu


def acts(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def test_paper_on_the_kraken_feed_from_the_command_line(recorded: tuple[Path, tuple], emulator: KrakenEmulator) -> None:
    run_dir = str(recorded[0])
    code, out, err = acts("run", "--mode", "paper", "--source", "kraken", "--run-dir", run_dir, "--allow-run-bundle",
                          "--base-url", emulator.base_url, "--poll-seconds", "0.25", "--max-polls", "6")  # fmt: skip
    result = json.loads(out)
    assert code == 0 and result["processed"] >= 1 and result["ledger_reconciles"] and "paper run of" in err
    assert Path(result["state"], "decisions.parquet").is_file()


def test_shadow_is_logged_and_reports_divergence_then_live_is_refused(
    recorded: tuple[Path, tuple], emulator: KrakenEmulator, os_keyring: dict, acts_home: Path
) -> None:
    run_dir = str(recorded[0])
    key = emulator.account.create_key(SHADOW)
    with LiveGate(acts_home / "acts.db") as gate:
        assert connect(Credentials(key.key, key.secret), KrakenEndpoint(emulator.base_url, 2000, False), KeyMode.SHADOW,
                       "ops", Keychain(), gate, WallClock()).stored  # fmt: skip
    code, out, _ = acts("run", "--mode", "shadow", "--source", "kraken", "--run-dir", run_dir, "--allow-run-bundle",
                        "--author", "ops", "--base-url", emulator.base_url, "--poll-seconds", "0.25", "--max-polls", "6")  # fmt: skip
    result = json.loads(out)
    assert code == 0 and result["processed"] >= 1 and emulator.account.orders == {}
    found = result["divergence"]
    assert found["shadow_decisions"] >= 0 and json.loads(Path(result["state"], "divergence.json").read_text()) == found
    with LiveGate(acts_home / "acts.db") as gate:
        sessions = [e for e in gate.events() if e.event is LiveEvent.SHADOW_SESSION]
    assert len(sessions) == 1 and sessions[0].author == "ops" and sessions[0].detail["bars"] == result["processed"]
    code, _, err = acts("run", "--mode", "live", "--source", "kraken", "--run-dir", run_dir, "--allow-run-bundle",
                        "--author", "ops", "--base-url", emulator.base_url)  # fmt: skip
    assert code == 2 and "live mode refused; missing, in order: a shadow session of the configured minimum length" in err
    # A shadow session that saw no closed bar (one poll: the warm-up) logs no session.
    code, out, _ = acts("run", "--mode", "shadow", "--source", "kraken", "--run-dir", run_dir, "--allow-run-bundle",
                        "--author", "ops", "--base-url", emulator.base_url, "--max-polls", "1",
                        "--state", str(acts_home / "shadow_empty"))  # fmt: skip
    assert code == 0 and json.loads(out)["processed"] == 0 and json.loads(out)["divergence"]["shadow_decisions"] == 0
    with LiveGate(acts_home / "acts.db") as gate:
        assert sum(e.event is LiveEvent.SHADOW_SESSION for e in gate.events()) == 1


def test_market_facing_modes_check_their_arguments_before_writing(recorded: tuple[Path, tuple], acts_home: Path) -> None:
    run_dir = str(recorded[0])
    cases = [
        (("--mode", "shadow", "--source", "recorded"), "'--mode shadow' runs only on '--source kraken'"),
        (("--mode", "live", "--source", "kraken"), "'--author' is required with --mode live (the session is logged; no default)"),
        (("--mode", "shadow", "--source", "kraken", "--author", "op\u202eops"), "'author' must not contain control characters"),
        (("--mode", "live", "--source", "kraken", "--author", "ops"), "live mode refused; missing, in order: an onboarded key"),
        (("--mode", "paper", "--source", "kraken", "--base-url", "ftp://x"), "'base_url'"),
        (("--mode", "paper", "--source", "kraken", "--poll-seconds", "7200"), "'poll_seconds' must be <= 3600.0, was 7200.0"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = acts("run", "--run-dir", run_dir, "--allow-run-bundle", *argv)
        assert code == 2 and message in err, (argv, err)
    assert not acts_home.exists()  # every refusal above came before anything was written
    code, _, err = acts("run", "--run-dir", run_dir, "--allow-run-bundle", "--mode", "shadow", "--source", "kraken",
                        "--author", "ops", "--base-url", "http://127.0.0.1:1")  # fmt: skip
    assert code == 2 and "shadow mode needs an onboarded Kraken key" in err


@pytest.mark.parametrize(("flag", "value", "said"), [
    ("--max-polls", "0", "argument --max-polls: must be 1 to 1000000000, was '0'"),
    ("--idle-polls", "many", "argument --idle-polls: must be an integer, was 'many'"),
    ("--poll-seconds", "nan", "argument --poll-seconds: must be a finite number, was 'nan'"),
    ("--poll-seconds", "0", "argument --poll-seconds: must be > 0, was '0'"),
])  # fmt: skip
def test_kraken_numbers_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str], acts_home: Path, flag: str, value: str,
                                                  said: str) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--mode", "paper", "--source", "kraken", "--run-dir", "x", f"{flag}={value}"])
    assert stopped.value.code == 2 and said in capsys.readouterr().err
    assert not acts_home.exists()
