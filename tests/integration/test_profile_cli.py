"""Integration tests for `acts profile`: the command in-process and through the installed entry point."""

from __future__ import annotations

import io
import itertools
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from backend.profiles.core import format_time_ms
from backend.profiles.store import ProfileStore
from scripts.cli import main

ACTS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "acts"
START = 1_795_000_000_000


class TickClock:
    """One second forward on every reading."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def now_ms(self) -> int:
        return START + 1000 * next(self._ticks)


def acts(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def db(acts_home: Path) -> Path:
    acts_home.mkdir(parents=True)
    return acts_home / "acts.db"


@pytest.fixture
def history(db: Path) -> Path:
    """balanced v1..v3 at known times, v2 active; the CLI then reads this home."""
    with ProfileStore(db, TickClock()) as store:
        store.set("balanced", {"position_size_pct": 0.12, "max_total_exposure.value": 0.9}, "alice", "widen", 1)
        store.set("balanced", {"max_concurrent_positions": 6}, "carol", "fewer", 2)
        store.activate("balanced", 2, "bob", "go")
    return db


@pytest.fixture(autouse=True)
def user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "dana")


def open_store(db: Path) -> ProfileStore:
    return ProfileStore(db, TickClock())


def snapshot(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return [*conn.execute("SELECT * FROM profile_commits ORDER BY id"), *conn.execute("SELECT * FROM profile_activations ORDER BY id")]


# ---------------------------------------------------------------- show
def test_show_without_arguments_prints_the_active_profiles_latest_version(history: Path) -> None:
    with open_store(history) as store:
        v3 = store.show("balanced", 3)

    code, out, err = acts("profile", "show")

    assert (code, err) == (0, "")
    assert out == (
        f"balanced@v3#{v3.content_hash[:12]}  not active\n"
        "version: 3 (parent v2)\n"
        "author: carol\n"
        f"time: {format_time_ms(START + 5000)}\n"
        "reason: fewer\n"
        f"content_hash: {v3.content_hash}\n"
        f"chain_hash: {v3.chain_hash}\n"
        "---\n" + yaml.safe_dump(v3.tree(), sort_keys=True)
    )


@pytest.mark.parametrize("version", ["2", "v2"])
def test_show_a_named_version_marks_it_active(history: Path, version: str) -> None:
    code, out, _ = acts("profile", "show", "balanced", "--version", version)

    assert code == 0
    assert out.splitlines()[0].endswith("  active")
    assert out.splitlines()[1] == "version: 2 (parent v1)"


def test_show_a_first_version_says_it_has_no_parent(history: Path) -> None:
    code, out, _ = acts("profile", "show", "aggressive")

    assert code == 0
    assert out.splitlines()[1:4] == ["version: 1 (no parent)", "author: acts-presets", f"time: {format_time_ms(START)}"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("show", "--version", "two"), "'version' must be a positive integer such as 3 or v3, was 'two'"),
        (("show", "--version", "0"), "'version' must be a positive integer such as 3 or v3, was '0'"),
        (("show", "ghost"), "no profile 'ghost' in the store"),
        (("show", "balanced", "--version", "9"), "no profile 'balanced' v9 in the store"),
        (("log", "ghost"), "no profile 'ghost' in the store"),
        (("diff", "1", "x"), "'version' must be a positive integer such as 3 or v3, was 'x'"),
    ],
)
def test_bad_names_and_versions_exit_2_with_the_reason(history: Path, argv: tuple[str, ...], message: str) -> None:
    assert acts("profile", *argv) == (2, "", f"acts: error: {message}\n")


def test_without_an_active_profile_a_name_is_required(history: Path) -> None:
    with sqlite3.connect(history) as conn:
        conn.execute("DELETE FROM profile_activations")

    assert acts("profile", "show") == (2, "", "acts: error: no profile is active: name one (--profile NAME)\n")
    assert acts("profile", "show", "balanced")[0] == 0


# ---------------------------------------------------------------- set
def test_set_commits_on_the_latest_version_of_the_active_profile(history: Path) -> None:
    code, out, err = acts("profile", "set", "max_cluster_exposure.mode=absolute", "max_cluster_exposure.value=25000", "--reason", "usd caps", "--author", "dana")

    with open_store(history) as store:
        v4 = store.show("balanced")
        active = store.active()[0]
    assert (code, err) == (0, "")
    assert out == (
        f"committed balanced@v4#{v4.content_hash[:12]} (parent v3)\n"
        '  max_cluster_exposure.mode: "pct_of_pv" -> "absolute"\n'
        "  max_cluster_exposure.value: 0.35 -> 25000.0\n"
        "not active yet: `acts profile activate 4 --profile balanced --reason TEXT` uses it\n"
    )
    assert (v4.version, v4.parent_version, v4.author, v4.reason) == (4, 3, "dana", "usd caps")
    assert active.startswith("balanced@v2#")


def test_set_takes_author_profile_and_parent_from_options(history: Path) -> None:
    code, out, _ = acts("profile", "set", "kill_switch=true", "--profile", "aggressive", "--parent", "v1", "--author", "erin", "--reason", "halt")

    with open_store(history) as store:
        commit = store.show("aggressive")
    assert code == 0
    assert out.splitlines()[1] == "  kill_switch: false -> true"
    assert (commit.version, commit.author, commit.spec().kill_switch) == (2, "erin", True)


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["max_concurrent_positions=31"], "profile 'balanced' not changed (v3 stays the latest):\n'max_concurrent_positions' must be <= 30, was 31"),
        (["position_size_pct=2"], "profile 'balanced' not changed (v3 stays the latest):\n'position_size_pct' must be <= 1.0, was 2"),
        (["max_total_exposure.value=1.5"], "profile 'balanced' not changed (v3 stays the latest):\n'max_total_exposure': 'value' must be <= 1.0 in pct_of_pv mode (no leverage), was 1.5"),
        (["warp=9"], "profile 'balanced' not changed (v3 stays the latest):\n'warp' is not a known key (unknown keys are refused), was 9"),
        (["max_total_exposure.cap=1"], "profile 'balanced' not changed (v3 stays the latest):\n'max_total_exposure.cap' is not a known key (unknown keys are refused), was 1"),
        (["kill_switch=maybe"], "profile 'balanced' not changed (v3 stays the latest):\n'kill_switch' input should be a valid boolean, unable to interpret input, was 'maybe'"),
        (["no.such.group=1"], "'no.such.group' is not a known key (unknown keys are refused), was 1"),
        (["name=other"], "'name' is the profile's identity and cannot be set, was 'other'"),
        (["position_size_pct"], "expected KEY=VALUE, was 'position_size_pct'"),
        (["=0.2"], "expected KEY=VALUE, was '=0.2'"),
        (["position_size_pct=0.2", "position_size_pct=0.3"], "'position_size_pct' is set twice"),
        (["position_size_pct=[0.2"], "'position_size_pct' value is not valid YAML, was '[0.2'"),
        (["max_concurrent_positions=6"], "profile 'balanced': v3 already holds max_concurrent_positions=6; no change to make, nothing written"),
    ],
)
def test_set_refuses_bad_values_exits_2_and_writes_nothing(history: Path, assignments: list[str], message: str) -> None:
    before = snapshot(history)

    assert acts("profile", "set", *assignments, "--reason", "try", "--author", "dana") == (2, "", f"acts: error: {message}\n")
    assert snapshot(history) == before


def test_set_on_a_stale_parent_is_refused(history: Path) -> None:
    before = snapshot(history)

    code, out, err = acts("profile", "set", "position_size_pct=0.2", "--parent", "2", "--reason", "late", "--author", "dana")

    assert (code, out) == (2, "")
    assert err == (
        "acts: error: profile 'balanced' edit based on v2 is stale: the latest is v3; nothing written "
        "(review `acts profile diff 2 3 --profile balanced` and set again on v3)\n"
    )
    assert snapshot(history) == before


def test_set_without_any_author_is_refused_even_with_a_login_name(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(history)

    with pytest.raises(SystemExit) as stopped:
        main(["profile", "set", "position_size_pct=0.2", "--reason", "r"])

    assert stopped.value.code == 2
    assert "the following arguments are required: --author" in capsys.readouterr().err
    assert snapshot(history) == before


# ---------------------------------------------------------------- log / diff
def test_log_prints_every_version_newest_first_with_changes_and_activations(history: Path) -> None:
    with open_store(history) as store:
        v1, v2, v3 = store.log("balanced")

    code, out, err = acts("profile", "log")

    def line(c, parent: str) -> str:
        return f"v{c.version}  {format_time_ms(c.ts_ms)}  {c.author}  {parent}  content {c.content_hash[:12]}  chain {c.chain_hash[:12]}"

    assert (code, err) == (0, "")
    assert out == "\n".join([
        "profile balanced: 3 versions, active v2",
        line(v3, "parent v2"),
        "    reason: fewer",
        "    max_concurrent_positions: 8 -> 6",
        line(v2, "parent v1"),
        "    reason: widen",
        "    max_total_exposure.value: 0.8 -> 0.9",
        "    position_size_pct: 0.1 -> 0.12",
        line(v1, "no parent"),
        "    reason: shipped preset conf/risk/balanced.yaml",
        "activations of balanced:",
        "  #1  2026-11-18T11:06:43.000Z  v1  acts-presets  reason: default preset (conf/config.yaml risk: balanced)",
        "  #2  2026-11-18T11:06:46.000Z  v2  bob  reason: go",
    ]) + "\n"
    assert (v1.ts_ms, v2.ts_ms, v3.ts_ms) == (START + 1000, START + 4000, START + 5000)


def test_log_of_an_inactive_profile_says_so(history: Path) -> None:
    code, out, _ = acts("profile", "log", "conservative")

    assert code == 0
    assert out.splitlines()[0] == "profile conservative: 1 versions, not active"
    assert out.splitlines()[-1] == "activations of conservative:"


def test_diff_prints_the_changed_keys_between_two_versions(history: Path) -> None:
    assert acts("profile", "diff", "1", "v3") == (
        0,
        "balanced v1 -> v3\n"
        "max_concurrent_positions: 8 -> 6\n"
        "max_total_exposure.value: 0.8 -> 0.9\n"
        "position_size_pct: 0.1 -> 0.12\n",
        "",
    )
    assert acts("profile", "diff", "2", "2", "--profile", "balanced") == (0, "balanced v2 -> v2\nno differences\n", "")


# ---------------------------------------------------------------- activate / verify
def test_activate_makes_a_version_active(history: Path) -> None:
    code, out, err = acts("profile", "activate", "3", "--reason", "ship it", "--author", "dana")

    with open_store(history) as store:
        version, spec = store.active()
        [*_, last] = store.activations()
    assert (code, err) == (0, "")
    assert out == f"active: {version} (activation #3 by dana)\n"
    assert version.startswith("balanced@v3#")
    assert spec.max_concurrent_positions == 6
    assert (last.author, last.reason) == ("dana", "ship it")


def test_activate_another_profile_and_refusals(history: Path) -> None:
    assert acts("profile", "activate", "1", "--profile", "conservative", "--reason", "calm", "--author", "erin")[0] == 0
    before = snapshot(history)

    assert acts("profile", "activate", "1", "--profile", "conservative", "--reason", "again", "--author", "dana") == (
        2, "", "acts: error: profile 'conservative': v1 is already active; no change to make, nothing written\n"
    )
    assert acts("profile", "activate", "7", "--reason", "x", "--author", "dana")[0] == 2
    assert snapshot(history) == before


def test_verify_reports_an_intact_chain_and_its_heads(history: Path) -> None:
    with open_store(history) as store:
        heads = [store.show(name) for name in store.names()]

    assert acts("profile", "verify") == (
        0,
        "chain ok (3 profiles, 5 commits, 2 activations)\n" + "".join(f"  {c.name} v{c.version} chain {c.chain_hash}\n" for c in heads),
        "",
    )


def test_verify_exits_1_naming_each_tampered_row(history: Path) -> None:
    with sqlite3.connect(history) as conn:
        conn.execute("UPDATE profile_commits SET author = 'mallory' WHERE name = 'balanced' AND version = 2")

    assert acts("profile", "verify") == (
        1,
        "chain BROKEN (3 profiles, 5 commits, 2 activations): 1 problems\n"
        "  profile 'balanced' v2: chain hash does not match the row (edited) or its parent's chain\n",
        "",
    )


# ---------------------------------------------------------------- two processes
def test_two_processes_editing_one_parent_one_wins_and_the_other_is_refused_as_stale(history: Path, acts_home: Path) -> None:
    env = {**os.environ, "ACTS_HOME": str(acts_home)}
    commands = [
        [str(ACTS), "profile", "set", "position_size_pct=0.2", "--parent", "3", "--reason", "p1", "--author", "p1"],
        [str(ACTS), "profile", "set", "max_concurrent_positions=4", "--parent", "3", "--reason", "p2", "--author", "p2"],
    ]
    processes = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = sorted((p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in processes)

    assert [code for code, _, _ in results] == [0, 2]
    assert results[0][1].startswith("committed balanced@v4#")
    assert "edit based on v3 is stale: the latest is v4; nothing written" in results[1][2]
    with open_store(history) as store:
        assert [c.version for c in store.log("balanced")] == [1, 2, 3, 4]
        assert store.verify_chain().ok
