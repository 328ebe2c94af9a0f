"""Defects an adversarial pass found in the command line (issue 16), each pinned by the test that found it.

Forged log lines, non-finite numbers, writes before validation, commits on a broken chain, a missing
parent reported as stale, actions nobody signed, and a ``--speed`` nobody could read.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from paper_helpers import record_run

from backend.profiles.store import ProfileStore
from scripts.argtypes import speed
from scripts.cli import build_parser, main, parse

START = 1_795_000_000_000


class TickClock:
    def __init__(self) -> None:
        self.now = START

    def now_ms(self) -> int:
        self.now += 1000
        return self.now


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_run(tmp_path_factory.mktemp("adversarial"))[0]


def acts(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def refused_by_argparse(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(list(argv))
    assert stopped.value.code == 2
    return capsys.readouterr().err


def files_under(root: Path) -> dict[str, object]:
    """Every file under ``root`` with its bytes; a SQLite database by its rows (its -wal/-shm files are not content)."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")) if root.exists() else []:
        if path.suffix == ".db":
            with sqlite3.connect(path) as conn:
                found[path.name] = list(conn.iterdump())
        elif path.is_file() and not path.name.endswith(("-wal", "-shm")):
            found[path.name] = path.read_bytes()
    return found


@pytest.fixture
def db(acts_home: Path) -> Path:
    acts_home.mkdir(parents=True)
    with ProfileStore(acts_home / "acts.db", TickClock()) as store:
        store.set("balanced", {"position_size_pct": 0.12}, "alice", "widen", 1)
    return acts_home / "acts.db"


# ---------------------------------------------------------------- 1. free text that reaches a log
@pytest.mark.parametrize("argv", [
    ("profile", "set", "position_size_pct=0.2", "--author", "mallory", "--reason", "ok\nv9  2026-01-01T00:00:00.000Z  root  parent v8"),
    ("profile", "set", "position_size_pct=0.2", "--author", "mal\rlory", "--reason", "r"),
    ("profile", "activate", "2", "--profile", "balanced", "--author", "mallory", "--reason", "go\x1b[2J"),
    ("control", "kill", "--author", "mallory", "--reason", "stop\u2028#2 resume by admin"),
])  # fmt: skip
def test_control_characters_in_any_logged_free_text_are_refused_and_nothing_is_written(db: Path, argv: tuple[str, ...]) -> None:
    before = files_under(db.parent)

    code, out, err = acts(*argv)

    assert (code, out) == (2, "")
    assert "must not contain control characters, found U+" in err and err.count("\n") == 1
    assert files_under(db.parent) == before


def test_a_forged_row_already_stored_renders_on_one_line_of_the_log(db: Path) -> None:
    with sqlite3.connect(db) as conn:  # written around the rule, e.g. by an older version
        conn.execute("UPDATE profile_commits SET reason = ?, author = ? WHERE name = 'balanced' AND version = 2",
                     ("widen\nv3  2026-12-06T00:00:00.000Z  root  parent v2", "al\tice"))  # fmt: skip
        conn.execute("UPDATE profile_activations SET reason = 'x\ny'")

    code, out, _ = acts("profile", "log", "balanced")

    assert code == 0
    entries = [line for line in out.splitlines() if line.startswith("v")]
    assert [line.split()[0] for line in entries] == ["v2", "v1"]
    assert "    reason: widen\\nv3  2026-12-06T00:00:00.000Z  root  parent v2" in out.splitlines()
    assert "al\\tice" in entries[0]
    assert "reason: x\\ny" in out
    code, out, _ = acts("profile", "show", "balanced")
    assert "reason: widen\\nv3" in out and "author: al\\tice" in out.splitlines()


def test_control_status_renders_a_stored_control_character_escaped(acts_home: Path) -> None:
    acts_home.mkdir(parents=True)
    assert acts("control", "kill", "--author", "ops", "--reason", "outage")[0] == 0
    with sqlite3.connect(acts_home / "acts.db") as conn:
        conn.execute("INSERT INTO control_actions (ts, action, author, reason, killed_before, killed_after)"
                     " VALUES (1, 'resume', 'ev\nil', 'fine\n  last action  kill by admin', 1, 1)")  # fmt: skip

    out = acts("control", "status")[1]

    assert "  last action  resume by ev\\nil at " in out and out.endswith("\n") and out.count("last action") == 2
    assert out.count("\n") == 5


# ---------------------------------------------------------------- 3. non-finite floats
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_speed_nan_and_inf_are_refused_as_not_finite(capsys: pytest.CaptureFixture[str], recorded: Path, acts_home: Path, value: str) -> None:
    err = refused_by_argparse(capsys, "run", "--mode", "paper", "--source", "recorded", "--run-dir", str(recorded), f"--speed={value}")

    assert f"argument --speed: must be a finite number (or max), was '{value}'" in err
    assert not acts_home.exists()


@pytest.mark.parametrize(("argv", "flag"), [
    (("data", "backfill", "--rate", "nan"), "--rate"),
    (("data", "ingest", "--interval", "inf"), "--interval"),
    (("data", "reconcile", "--tolerance-bps=-inf"), "--tolerance-bps"),
    (("sandbox", "kraken", "--simulate-days", "2", "--max-seconds", "nan"), "--max-seconds"),
])  # fmt: skip
def test_every_float_flag_refuses_non_finite_values(capsys: pytest.CaptureFixture[str], acts_home: Path, argv: tuple[str, ...], flag: str) -> None:
    err = refused_by_argparse(capsys, *argv)

    assert f"argument {flag}: must be a finite number, was " in err
    assert not acts_home.exists()


@pytest.mark.parametrize(("argv", "flag", "value"), [
    (("data", "backfill", "--rate", "fast"), "--rate", "fast"),
    (("data", "reconcile", "--tolerance-bps", "50bps"), "--tolerance-bps", "50bps"),
    (("run", "--mode", "paper", "--poll-seconds", "1,5"), "--poll-seconds", "1,5"),
])  # fmt: skip
def test_every_float_flag_refuses_a_non_number_naming_the_flag_and_the_text(
    capsys: pytest.CaptureFixture[str], acts_home: Path, argv: tuple[str, ...], flag: str, value: str
) -> None:
    err = refused_by_argparse(capsys, *argv)

    assert f"argument {flag}: must be a number, was '{value}'" in err
    assert not acts_home.exists()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_profile_value_nan_or_inf_says_it_must_be_a_finite_number(db: Path, value: str) -> None:
    code, _, err = acts("profile", "set", f"position_size_pct={value}", "--author", "a", "--reason", "r")

    assert code == 2
    assert "'position_size_pct' must be a finite number, was " in err and "<=" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_hydra_override_nan_or_inf_says_it_must_be_a_finite_number(value: str) -> None:
    code, _, err = acts("config", "validate", f"risk.position_size_pct={value}")

    assert code == 2
    assert "'risk.position_size_pct' must be a finite number, was " in err and "<=" not in err


def test_a_replay_override_nan_says_it_must_be_a_finite_number(recorded: Path) -> None:
    code, out, err = acts("replay", str(recorded), "risk.entry_min_p_up=.nan")

    assert (code, out) == (2, "")
    assert "'risk.entry_min_p_up' must be a finite number, was nan" in err


# ---------------------------------------------------------------- 4. validate before writing
@pytest.mark.parametrize(("extra", "said"), [
    (("--speed=-1",), "argument --speed: must be > 0 and <= 1e+06 (or max), was '-1'"),
    (("--speed", "fast"), "argument --speed: must be a multiplier such as 1, 10x or 0.5, or max, was 'fast'"),
    (("--max-events=-5",), "argument --max-events: must be 1 to 1000000000000, was '-5'"),
    (("--max-events", "0"), "argument --max-events: must be 1 to 1000000000000, was '0'"),
    (("--max-events", "many"), "argument --max-events: must be an integer, was 'many'"),
])  # fmt: skip
def test_acts_run_with_a_bad_argument_writes_no_state_folder_and_no_journal(
    capsys: pytest.CaptureFixture[str], recorded: Path, acts_home: Path, tmp_path: Path, extra: tuple[str, ...], said: str
) -> None:
    state = tmp_path / "state"
    argv = ("run", "--mode", "paper", "--source", "recorded", "--run-dir", str(recorded), "--state", str(state), "--allow-run-bundle")

    err = refused_by_argparse(capsys, *argv, *extra)

    assert said in err
    assert not state.exists() and not acts_home.exists()


def test_acts_run_with_a_missing_profile_store_writes_nothing(recorded: Path, acts_home: Path, tmp_path: Path) -> None:
    state, store = tmp_path / "state", tmp_path / "typo.db"

    code, _, err = acts("run", "--mode", "paper", "--source", "recorded", "--run-dir", str(recorded), "--state", str(state),
                        "--allow-run-bundle", "--speed", "max", "--profile-store", str(store))  # fmt: skip

    assert code == 2 and f"--profile-store {store} does not exist" in err
    assert not state.exists() and not store.exists() and not acts_home.exists()


def test_acts_run_with_a_state_path_that_is_a_file_is_refused(recorded: Path, acts_home: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a folder", encoding="utf-8")

    code, _, err = acts("run", "--mode", "paper", "--source", "recorded", "--run-dir", str(recorded), "--state", str(state),
                        "--allow-run-bundle", "--speed", "max")  # fmt: skip

    assert code == 2 and f"--state {state} is not a folder" in err
    assert not acts_home.exists()


@pytest.mark.parametrize("argv", [
    ("control", "kill", "--author", "", "--reason", "r"),
    ("control", "resume", "--author", "ops", "--reason", " "),
    ("profile", "set", "position_size_pct=0.2", "--author", "a", "--reason", ""),
    ("profile", "activate", "1", "--profile", "balanced", "--author", "a" * 65, "--reason", "r"),
    ("live", "enable", "--confirm", "--author", " "),
    ("live", "disable", "--author", "ops", "--reason", ""),
    ("kraken", "disconnect", "--author", "a" * 65),
    ("kraken", "status", "--check", "--author", ""),
])  # fmt: skip
def test_a_refused_attribution_creates_no_database_in_a_fresh_home(acts_home: Path, argv: tuple[str, ...]) -> None:
    code, _, err = acts(*argv)

    assert code == 2 and "must be 1 to" in err
    assert not acts_home.exists()


# ---------------------------------------------------------------- 5. broken chain
@pytest.mark.parametrize("argv", [
    ("profile", "set", "position_size_pct=0.2", "--author", "a", "--reason", "r"),
    ("profile", "activate", "2", "--profile", "balanced", "--author", "a", "--reason", "r"),
])  # fmt: skip
def test_no_commit_or_activation_on_a_broken_chain_names_the_first_bad_version_and_the_recovery(
    db: Path, argv: tuple[str, ...]
) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE profile_commits SET reason = 'edited' WHERE name = 'balanced' AND version = 2")
    before = files_under(db.parent)

    code, out, err = acts(*argv)

    assert (code, out) == (2, "")
    assert "while the profile history is broken (1 problems; first: profile 'balanced' v2: chain hash does not match" in err
    assert f"restore {db} from a backup" in err and "`acts profile verify`" in err
    assert files_under(db.parent) == before
    assert acts("profile", "verify")[0] == 1


# ---------------------------------------------------------------- 6. a parent that does not exist
def test_a_parent_version_that_does_not_exist_is_reported_as_missing_not_stale(db: Path) -> None:
    code, out, err = acts("profile", "set", "position_size_pct=0.2", "--parent", "99", "--author", "a", "--reason", "r")

    assert (code, out) == (2, "")
    assert err == (
        "acts: error: profile 'balanced' v99 does not exist: the latest is v2; nothing written "
        "(base the change on v2, or leave --parent out)\n"
    )


# ---------------------------------------------------------------- 7. one attribution rule
@pytest.mark.parametrize("argv", [
    ("control", "kill", "--reason", "outage"),
    ("control", "resume", "--reason", "fixed"),
    ("profile", "set", "position_size_pct=0.2", "--reason", "r"),
    ("profile", "activate", "1", "--reason", "r"),
    ("kraken", "connect", "--stdin"),
    ("kraken", "disconnect"),
    ("live", "enable", "--confirm"),
    ("live", "disable", "--reason", "r"),
])  # fmt: skip
def test_every_attributable_action_requires_an_author_with_no_login_name_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, acts_home: Path, argv: tuple[str, ...]
) -> None:
    monkeypatch.setenv("USER", "root")
    monkeypatch.setenv("LOGNAME", "root")

    err = refused_by_argparse(capsys, *argv)

    assert "the following arguments are required: --author" in err
    assert not acts_home.exists()


# ---------------------------------------------------------------- 8. --speed is a multiplier
@pytest.mark.parametrize(("text", "value"), [("1", 1.0), ("10", 10.0), ("10x", 10.0), ("0.5", 0.5), (" 2X ", 2.0),
                                             ("max", 0.0), ("MAX", 0.0), ("0", 0.0)])  # fmt: skip
def test_speed_reads_a_multiplier_or_max(text: str, value: float) -> None:
    assert speed(text) == value


def test_run_help_explains_speed_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())

    assert "10 or 10x = ten times faster (a 5-minute bar every 30 s)" in text
    assert "0.5 = half speed" in text and "max = no waiting between bars" in text
    assert "--speed 10x (ten times faster)" in text


def test_a_replay_override_that_is_not_yaml_exits_2_naming_it(recorded: Path) -> None:
    code, out, err = acts("replay", str(recorded), "risk.entry_min_p_up=[0.6")

    assert (code, out) == (2, "")
    assert "override 'risk.entry_min_p_up': the value is not valid YAML, was '[0.6'" in err


@pytest.mark.parametrize(
    ("argv", "overrides"),
    [
        (["models", "promote", "m", "--author", "dana", "a=1", "b=2"], ["a=1", "b=2"]),  # after an option
        (["models", "promote", "m", "a=1", "--author", "dana", "b=2"], ["a=1", "b=2"]),  # on both sides
        (["models", "promote", "m", "--author", "dana", "--", "-5e16"], ["-5e16"]),  # after --, any word
        (["replay", "run", "--json", "risk=aggressive"], ["risk=aggressive"]),
        (["backtest", "seed=3"], ["seed=3"]),
    ],
)
def test_overrides_after_an_option_are_still_overrides(argv: list[str], overrides: list[str]) -> None:
    assert parse(build_parser(), argv).overrides == overrides


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["models", "promote", "m", "--author", "dana", "--bogus"], "unrecognized arguments: --bogus"),
        (["models", "list", "extra"], "unrecognized arguments: extra"),  # a command without overrides
    ],
)
def test_a_left_over_option_or_a_word_where_no_overrides_go_is_refused_naming_it(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse(build_parser(), argv)

    assert stopped.value.code == 2 and said in capsys.readouterr().err


def test_a_promotion_with_overrides_after_author_reaches_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTS_HOME", str(tmp_path))

    code, _, err = acts("models", "promote", "m@0000000000000000", "--author", "dana", "training.promotion.min_auc=0.55")

    assert code == 2 and "model m@0000000000000000 is not in the registry" in err  # parsed, then refused by the registry
