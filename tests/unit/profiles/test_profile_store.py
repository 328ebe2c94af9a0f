"""Unit tests for backend.profiles.store against a real SQLite database in the test's home."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import yaml

from backend.config.canonical import canonical_json, sha256_hex
from backend.config.compose import CONF_DIR
from backend.config.diff import ConfigChange
from backend.config.schema import RiskProfileSpec
from backend.profiles.core import GENESIS, activation_chain_hash, commit_chain_hash
from backend.profiles.errors import (
    NoChangeError,
    ProfileError,
    ProfileIntegrityError,
    ProfileValueError,
    StaleProfileError,
    UnknownProfileError,
)
from backend.profiles.presets import load_presets
from backend.profiles.store import PRESET_AUTHOR, ProfileStore, home_database

START = 1_795_000_000_000


def preset_text(name: str) -> str:
    tree = yaml.safe_load((CONF_DIR / "risk" / "balanced.yaml").read_text(encoding="utf-8"))
    return yaml.safe_dump({**tree, "name": name})


def snapshot(path: Path) -> list[tuple]:
    """Every row of both tables, to prove that a refused operation wrote nothing."""
    with sqlite3.connect(path) as conn:
        return [*conn.execute("SELECT * FROM profile_commits ORDER BY id"), *conn.execute("SELECT * FROM profile_activations ORDER BY id")]


def tamper(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql)


# ---------------------------------------------------------------- seeding
def test_first_use_seeds_each_preset_as_v1_and_activates_the_default(store: ProfileStore) -> None:
    presets = {p.spec.name: p for p in load_presets(CONF_DIR)}

    assert store.names() == ["aggressive", "balanced", "conservative"]
    for offset, name in enumerate(store.names()):
        [commit] = store.log(name)
        content = canonical_json(presets[name].spec)
        assert commit.content == content
        assert (commit.version, commit.parent_version, commit.author, commit.ts_ms) == (1, None, PRESET_AUTHOR, START + 1000 * offset)
        assert commit.reason == f"shipped preset conf/risk/{name}.yaml"
        assert commit.content_hash == sha256_hex(content)
        assert commit.chain_hash == commit_chain_hash(GENESIS, name, 1, None, sha256_hex(content), PRESET_AUTHOR, commit.ts_ms, commit.reason)
    [activation] = store.activations()
    assert (activation.seq, activation.name, activation.version, activation.ts_ms) == (1, "balanced", 1, START + 3000)
    assert activation.reason == "default preset (conf/config.yaml risk: balanced)"
    version, spec = store.active()
    assert version == f"balanced@v1#{sha256_hex(canonical_json(presets['balanced'].spec))[:12]}"
    assert spec == presets["balanced"].spec


def test_reopening_the_store_seeds_nothing_twice(store: ProfileStore, db_path: Path, clock_type) -> None:
    before = snapshot(db_path)

    with ProfileStore(db_path, clock_type(START + 10**6)):
        pass

    assert snapshot(db_path) == before


def test_a_preset_added_later_is_seeded_and_nothing_else_changes(store: ProfileStore, db_path: Path, make_conf, clock_type) -> None:
    before = snapshot(db_path)
    conf = make_conf({"balanced": preset_text("balanced"), "steady": preset_text("steady")})

    with ProfileStore(db_path, clock_type(START + 10**6), conf) as reopened:
        [steady] = reopened.log("steady")
        assert reopened.names() == ["aggressive", "balanced", "conservative", "steady"]

    assert (steady.version, steady.author, steady.reason) == (1, PRESET_AUTHOR, f"shipped preset {conf.name}/risk/steady.yaml")
    assert snapshot(db_path)[: len(before) - 1] == before[:-1]
    assert len(snapshot(db_path)) == len(before) + 1


def test_reopening_never_reactivates_a_preset_by_itself(store: ProfileStore, db_path: Path, clock_type) -> None:
    tamper(db_path, "DELETE FROM profile_activations")

    with ProfileStore(db_path, clock_type()) as reopened:
        assert reopened.head_activation() is None


def test_without_a_default_preset_nothing_is_active(db_path: Path, make_conf, clock_type) -> None:
    conf = make_conf({"steady": preset_text("steady")}, config="defaults:\n  - risk: missing\n")

    with ProfileStore(db_path, clock_type(), conf) as store:
        assert store.head_activation() is None
        assert store.head_activation_id() is None
        assert store.activations() == []
        with pytest.raises(ProfileError, match="^no profile is active"):
            store.active()


def test_home_database_is_acts_db_in_the_home_which_it_creates(tmp_path: Path) -> None:
    path = home_database(tmp_path / "new" / "home")

    assert path == tmp_path / "new" / "home" / "acts.db"
    assert path.parent.is_dir()


def test_the_database_runs_in_wal_mode(store: ProfileStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# ---------------------------------------------------------------- set
def test_set_commits_a_validated_canonical_version_on_its_parent(store: ProfileStore) -> None:
    parent = store.show("balanced")

    commit = store.set("balanced", {"position_size_pct": 0.12, "max_total_exposure.value": 0.9}, "alice", "widen", expected_parent=1)

    expected = RiskProfileSpec.model_validate({**parent.tree(), "position_size_pct": 0.12, "max_total_exposure": {"mode": "pct_of_pv", "value": 0.9}})
    assert commit.content == canonical_json(expected)
    assert (commit.name, commit.version, commit.parent_version, commit.author, commit.reason) == ("balanced", 2, 1, "alice", "widen")
    assert commit.ts_ms == START + 4000
    assert commit.chain_hash == commit_chain_hash(parent.chain_hash, "balanced", 2, 1, commit.content_hash, "alice", START + 4000, "widen")
    assert store.show("balanced") == commit
    assert store.show("balanced", 1) == parent
    assert store.log("balanced") == [parent, commit]
    assert store.diff("balanced", 1, 2) == [
        ConfigChange("max_total_exposure.value", 0.8, 0.9),
        ConfigChange("position_size_pct", 0.1, 0.12),
    ]
    assert store.active()[0].startswith("balanced@v1#")


def test_set_switches_an_exposure_to_absolute_mode(store: ProfileStore) -> None:
    commit = store.set("balanced", {"max_total_exposure.mode": "absolute", "max_total_exposure.value": 50_000}, "alice", "usd cap", 1)

    assert commit.spec().max_total_exposure.model_dump() == {"mode": "absolute", "value": 50_000.0}


@pytest.mark.parametrize(
    ("changes", "author", "reason", "message"),
    [
        ({"max_concurrent_positions": 31}, "alice", "r", "profile 'balanced' not changed (v1 stays the latest):\n'max_concurrent_positions' must be <= 30, was 31"),
        ({"position_size_pct": -0.1}, "alice", "r", "profile 'balanced' not changed (v1 stays the latest):\n'position_size_pct' must be > 0.0, was -0.1"),
        ({"max_total_exposure.value": 5.0}, "alice", "r", "profile 'balanced' not changed (v1 stays the latest):\n'max_total_exposure': 'value' must be <= 1.0 in pct_of_pv mode (no leverage), was 5.0"),
        ({"max_cluster_exposure.mode": "leveraged"}, "alice", "r", "profile 'balanced' not changed (v1 stays the latest):\n'max_cluster_exposure.mode' input should be 'pct_of_pv' or 'absolute', was 'leveraged'"),
        ({"warp_factor": 9}, "alice", "r", "profile 'balanced' not changed (v1 stays the latest):\n'warp_factor' is not a known key (unknown keys are refused), was 9"),
        ({"max_total_exposure.cap": 1}, "alice", "r", "profile 'balanced' not changed (v1 stays the latest):\n'max_total_exposure.cap' is not a known key (unknown keys are refused), was 1"),
        ({"engine.speed": 1}, "alice", "r", "'engine.speed' is not a known key (unknown keys are refused), was 1"),
        ({"name": "other"}, "alice", "r", "'name' is the profile's identity and cannot be set, was 'other'"),
        ({}, "alice", "r", "no changes given (expected KEY=VALUE)"),
        ({"position_size_pct": 0.2}, "", "r", "'author' must be 1 to 64 characters (after trimming), was 0: ''"),
        ({"position_size_pct": 0.2}, "alice", "", "'reason' must be 1 to 500 characters (after trimming), was 0: ''"),
    ],
)
def test_set_refuses_bad_changes_and_writes_nothing(
    store: ProfileStore, db_path: Path, changes: dict, author: str, reason: str, message: str
) -> None:
    before, active = snapshot(db_path), store.active()

    with pytest.raises(ProfileValueError) as caught:
        store.set("balanced", changes, author, reason, expected_parent=1)

    assert str(caught.value) == message
    assert snapshot(db_path) == before
    assert store.active() == active


def test_set_refuses_a_change_that_leaves_the_content_as_it_is(store: ProfileStore, db_path: Path) -> None:
    before = snapshot(db_path)

    with pytest.raises(NoChangeError, match=r"^profile 'balanced': v1 already holds max_total_exposure.value=0.8, "
                       r"position_size_pct=0.1; no change to make, nothing written$"):
        store.set("balanced", {"position_size_pct": "0.1", "max_total_exposure.value": 0.8}, "alice", "same", 1)

    assert snapshot(db_path) == before


@pytest.mark.parametrize("expected_parent", [1])
def test_set_on_a_version_that_is_not_the_latest_is_refused_as_stale(store: ProfileStore, db_path: Path, expected_parent: int) -> None:
    store.set("balanced", {"position_size_pct": 0.12}, "alice", "first", 1)
    before = snapshot(db_path)

    with pytest.raises(StaleProfileError) as caught:
        store.set("balanced", {"position_size_pct": 0.15}, "bob", "second", expected_parent)

    assert (caught.value.name, caught.value.expected_parent, caught.value.latest) == ("balanced", expected_parent, 2)
    assert str(caught.value) == (
        f"profile 'balanced' edit based on v{expected_parent} is stale: the latest is v2; nothing written "
        f"(review `acts profile diff {expected_parent} 2 --profile balanced` and set again on v2)"
    )
    assert snapshot(db_path) == before


def test_unknown_profiles_and_versions_are_refused(store: ProfileStore) -> None:
    with pytest.raises(UnknownProfileError, match=r"^no profile 'ghost' in the store$"):
        store.set("ghost", {"position_size_pct": 0.2}, "alice", "r", 1)
    with pytest.raises(UnknownProfileError, match=r"^no profile 'ghost' in the store$"):
        store.log("ghost")
    with pytest.raises(UnknownProfileError, match=r"^no profile 'balanced' v9 in the store$"):
        store.show("balanced", 9)
    with pytest.raises(UnknownProfileError, match=r"^no profile 'balanced' v9 in the store$"):
        store.diff("balanced", 1, 9)
    with pytest.raises(UnknownProfileError, match=r"^no profile 'balanced' v9 in the store$"):
        store.activate("balanced", 9, "alice", "r")
    with pytest.raises(UnknownProfileError, match=r"^no activation #99 in the store$"):
        store.active_at(99)


# ---------------------------------------------------------------- activate
def test_activate_changes_what_active_returns_and_chains_the_record(store: ProfileStore) -> None:
    commit = store.set("balanced", {"position_size_pct": 0.12}, "alice", "widen", 1)
    first = store.head_activation()

    activation = store.activate("balanced", 2, "bob", "go")

    assert store.active() == (commit.version_string, commit.spec())
    assert (activation.seq, activation.name, activation.version, activation.author, activation.reason) == (2, "balanced", 2, "bob", "go")
    assert activation.commit_chain_hash == commit.chain_hash
    assert activation.chain_hash == activation_chain_hash(first.chain_hash, "balanced", 2, commit.chain_hash, "bob", activation.ts_ms, "go")
    assert store.head_activation() == activation
    assert store.activations("balanced") == [first, activation]
    assert store.activations("aggressive") == []

    other = store.activate("aggressive", 1, "bob", "switch")

    assert store.active_commit() == store.show("aggressive", 1)
    assert store.activations() == [first, activation, other]
    assert store.active_at(2) == (commit.version_string, commit.spec())


def test_activating_an_older_version_rolls_back_to_it(store: ProfileStore) -> None:
    store.set("balanced", {"position_size_pct": 0.12}, "alice", "widen", 1)
    store.activate("balanced", 2, "bob", "go")

    store.activate("balanced", 1, "bob", "roll back")

    assert store.active() == (store.show("balanced", 1).version_string, store.show("balanced", 1).spec())


def test_activating_the_active_version_is_refused_and_writes_nothing(store: ProfileStore, db_path: Path) -> None:
    before = snapshot(db_path)

    with pytest.raises(NoChangeError, match=r"^profile 'balanced': v1 is already active; no change to make, nothing written$"):
        store.activate("balanced", 1, "bob", "again")
    with pytest.raises(ProfileValueError, match="^'reason' must be"):
        store.activate("aggressive", 1, "bob", "")

    assert snapshot(db_path) == before


def test_activate_is_the_first_activation_when_nothing_is_active(db_path: Path, make_conf, clock_type) -> None:
    conf = make_conf({"steady": preset_text("steady")}, config="defaults:\n  - _self_\n")

    with ProfileStore(db_path, clock_type(), conf) as store:
        activation = store.activate("steady", 1, "alice", "start")

        assert activation.chain_hash == activation_chain_hash(GENESIS, "steady", 1, store.show("steady").chain_hash, "alice", START + 1000, "start")
        assert store.active()[0] == store.show("steady").version_string


# ---------------------------------------------------------------- integrity on use
def test_activate_and_set_refuse_a_commit_whose_content_was_edited(store: ProfileStore, db_path: Path) -> None:
    tamper(db_path, "UPDATE profile_commits SET content = replace(content, '\"max_concurrent_positions\":15', '\"max_concurrent_positions\":30') WHERE name = 'aggressive'")
    before = snapshot(db_path)

    first = r"first: profile 'aggressive' v1: content does not match its content hash\); nothing written"
    with pytest.raises(ProfileIntegrityError, match=r"^no new activation while the profile history is broken \(1 problems; " + first):
        store.activate("aggressive", 1, "bob", "go")
    with pytest.raises(ProfileIntegrityError, match=r"^no new commit while the profile history is broken \(1 problems; " + first):
        store.set("aggressive", {"position_size_pct": 0.2}, "bob", "r", 1)

    assert snapshot(db_path) == before


def test_active_refuses_an_active_commit_that_was_edited(store: ProfileStore, db_path: Path) -> None:
    tamper(db_path, "UPDATE profile_commits SET content = replace(content, '\"max_concurrent_positions\":8', '\"max_concurrent_positions\":30') WHERE name = 'balanced'")

    with pytest.raises(ProfileIntegrityError, match="content does not match its hash"):
        store.active()


def test_active_refuses_an_activation_that_points_at_another_commit(store: ProfileStore, db_path: Path) -> None:
    tamper(db_path, "UPDATE profile_activations SET name = 'aggressive' WHERE id = 1")

    with pytest.raises(ProfileIntegrityError, match=r"^activation #1 of profile 'aggressive' v1 does not match the commit's chain hash$"):
        store.active()


def test_a_stored_version_the_schema_no_longer_accepts_cannot_be_activated(store: ProfileStore, db_path: Path) -> None:
    # A row whose hashes all hold (as after a schema change that retired a key): only the schema refuses it.
    v1 = store.show("aggressive")
    content = canonical_json({**v1.tree(), "retired_knob": 1})
    chain = commit_chain_hash(GENESIS, v1.name, 1, None, sha256_hex(content), v1.author, v1.ts_ms, v1.reason)
    tamper(db_path, f"UPDATE profile_commits SET content = '{content}', content_hash = '{sha256_hex(content)}', "
                    f"chain_hash = '{chain}' WHERE name = 'aggressive'")  # fmt: skip
    assert store.verify_chain().ok

    with pytest.raises(ProfileIntegrityError, match=r"^profile 'aggressive' v1 no longer validates:\n'retired_knob' is not a known key"):
        store.activate("aggressive", 1, "bob", "go")


# ---------------------------------------------------------------- verify_chain
@pytest.fixture
def history(store: ProfileStore) -> ProfileStore:
    """balanced v1..v3 with v2 active, aggressive v1."""
    store.set("balanced", {"position_size_pct": 0.12}, "alice", "widen", 1)
    store.set("balanced", {"max_concurrent_positions": 6}, "carol", "fewer", 2)
    store.activate("balanced", 2, "bob", "go")
    return store


def test_verify_chain_of_an_untouched_history_is_ok(history: ProfileStore) -> None:
    report = history.verify_chain()

    assert report.ok
    assert report.problems == ()
    assert (report.profiles, report.commits, report.activations) == (3, 5, 2)
    assert report.heads == tuple((n, c.version, c.chain_hash) for n, c in ((n, history.show(n)) for n in history.names()))
    assert report.heads[1][:2] == ("balanced", 3)


@pytest.mark.parametrize(
    ("sql", "problems"),
    [
        (
            "UPDATE profile_commits SET author = 'mallory' WHERE name = 'balanced' AND version = 2",
            ["profile 'balanced' v2: chain hash does not match the row (edited) or its parent's chain"],
        ),
        (
            "UPDATE profile_commits SET reason = 'nothing to see' WHERE name = 'balanced' AND version = 3",
            ["profile 'balanced' v3: chain hash does not match the row (edited) or its parent's chain"],
        ),
        (
            "UPDATE profile_commits SET ts_ms = ts_ms + 1 WHERE name = 'aggressive'",
            ["profile 'aggressive' v1: chain hash does not match the row (edited) or its parent's chain"],
        ),
        (
            "UPDATE profile_commits SET content = replace(content, '\"position_size_pct\":0.12', '\"position_size_pct\":0.5')"
            " WHERE name = 'balanced' AND version = 2",
            ["profile 'balanced' v2: content does not match its content hash"],
        ),
        (
            "UPDATE profile_commits SET content_hash = (CASE WHEN content_hash LIKE 'f%' THEN 'e' ELSE 'f' END) || substr(content_hash, 2) WHERE name = 'balanced' AND version = 2",
            [
                "profile 'balanced' v2: content does not match its content hash",
                "profile 'balanced' v2: chain hash does not match the row (edited) or its parent's chain",
            ],
        ),
        (
            "UPDATE profile_commits SET chain_hash = (CASE WHEN chain_hash LIKE 'f%' THEN 'e' ELSE 'f' END) || substr(chain_hash, 2) WHERE name = 'balanced' AND version = 1",
            [
                "profile 'balanced' v1: chain hash does not match the row (edited) or its parent's chain",
                "profile 'balanced' v2: chain hash does not match the row (edited) or its parent's chain",
                "activation #1 ('balanced' v1): does not match any commit's chain hash",
            ],
        ),
        (
            "DELETE FROM profile_commits WHERE name = 'balanced' AND version = 2",
            [
                "profile 'balanced' v3: expected v2 with parent 1, found parent 2 (a version is missing or renumbered)",
                "profile 'balanced' v3: chain hash does not match the row (edited) or its parent's chain",
                "activation #2 ('balanced' v2): does not match any commit's chain hash",
            ],
        ),
        (
            "UPDATE profile_commits SET parent_version = 1 WHERE name = 'balanced' AND version = 3",
            [
                "profile 'balanced' v3: expected v3 with parent 2, found parent 1 (a version is missing or renumbered)",
                "profile 'balanced' v3: chain hash does not match the row (edited) or its parent's chain",
            ],
        ),
        (
            "UPDATE profile_activations SET version = 3 WHERE id = 2",
            [
                "activation #2 ('balanced' v3): does not match any commit's chain hash",
                "activation #2 ('balanced' v3): chain hash does not match the row (edited) or the previous activation",
            ],
        ),
        (
            "UPDATE profile_activations SET author = 'mallory' WHERE id = 2",
            ["activation #2 ('balanced' v2): chain hash does not match the row (edited) or the previous activation"],
        ),
        (
            "DELETE FROM profile_activations WHERE id = 1",
            ["activation #2 ('balanced' v2): chain hash does not match the row (edited) or the previous activation"],
        ),
    ],
)
def test_verify_chain_detects_every_edited_or_deleted_row(history: ProfileStore, db_path: Path, sql: str, problems: list[str]) -> None:
    tamper(db_path, sql)

    report = history.verify_chain()

    assert not report.ok
    assert list(report.problems) == problems


# ---------------------------------------------------------------- determinism
def test_same_operations_on_the_same_clock_give_the_same_versions(tmp_path: Path, clock_type) -> None:
    def replay(folder: str) -> tuple:
        (tmp_path / folder).mkdir()
        with ProfileStore(tmp_path / folder / "acts.db", clock_type()) as store:
            commit = store.set("balanced", {"position_size_pct": 0.12}, "alice", "widen", 1)
            activation = store.activate("balanced", 2, "bob", "go")
            return commit, activation, store.active()[0], store.verify_chain().heads

    assert replay("a") == replay("b")


# ---------------------------------------------------------------- concurrency
def race(db_path: Path, clock_type, edits: list[tuple[dict, str, int]]) -> list[object]:
    """Run each edit in its own thread and connection, released together; return each result or error."""
    barrier = threading.Barrier(len(edits))
    results: list[object] = [None] * len(edits)

    def work(index: int) -> None:
        changes, author, parent = edits[index]
        with ProfileStore(db_path, clock_type()) as own:
            barrier.wait()
            try:
                results[index] = own.set("balanced", changes, author, "race", parent)
            except StaleProfileError as error:
                results[index] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(edits))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_two_concurrent_edits_of_one_parent_one_wins_and_the_other_is_stale(store: ProfileStore, db_path: Path, clock_type) -> None:
    results = race(db_path, clock_type, [({"position_size_pct": 0.12}, "alice", 1), ({"max_concurrent_positions": 5}, "bob", 1)])

    [winner] = [r for r in results if not isinstance(r, StaleProfileError)]
    [loser] = [r for r in results if isinstance(r, StaleProfileError)]
    assert (winner.version, winner.parent_version) == (2, 1)
    assert (loser.expected_parent, loser.latest) == (1, 2)
    assert [c.version for c in store.log("balanced")] == [1, 2]
    # Nothing is lost: the loser re-bases on the winner and both changes are in the result.
    retry = {"position_size_pct": 0.12} if winner.author == "bob" else {"max_concurrent_positions": 5}
    merged = store.set("balanced", retry, "loser", "rebased", 2).spec()
    assert (merged.position_size_pct, merged.max_concurrent_positions) == (0.12, 5)
    assert store.verify_chain().ok


def test_many_writers_retrying_on_stale_lose_no_edit(store: ProfileStore, db_path: Path, clock_type) -> None:
    writers, edits_each = 4, 5
    barrier = threading.Barrier(writers)
    committed: list[int] = []

    def work(index: int) -> None:
        with ProfileStore(db_path, clock_type()) as own:
            barrier.wait()
            for edit in range(edits_each):
                value = round(0.01 * (index * edits_each + edit + 1), 2)
                while True:
                    parent = own.show("balanced").version
                    try:
                        committed.append(own.set("balanced", {"position_size_pct": value}, f"writer{index}", f"edit {edit}", parent).version)
                        break
                    except StaleProfileError:
                        continue

    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    log = store.log("balanced")
    assert sorted(committed) == list(range(2, writers * edits_each + 2))
    assert [c.version for c in log] == list(range(1, writers * edits_each + 2))
    assert sorted(c.spec().position_size_pct for c in log[1:]) == [round(0.01 * i, 2) for i in range(1, writers * edits_each + 1)]
    assert store.verify_chain().ok
