"""Unit tests for backend.profiles.watcher: the engine sees an activation at its next event."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backend.profiles.errors import ProfileError, ProfileIntegrityError
from backend.profiles.store import ProfileStore
from backend.profiles.watcher import ProfileWatcher


def test_current_returns_the_active_version_and_spec(store: ProfileStore) -> None:
    assert ProfileWatcher(store).current() == store.active()


def test_current_is_cached_until_a_new_activation(store: ProfileStore) -> None:
    watcher = ProfileWatcher(store)
    first = watcher.current()

    store.set("balanced", {"position_size_pct": 0.12}, "alice", "widen", 1)  # a commit alone changes nothing

    again = watcher.current()
    assert again == first
    assert again[1] is first[1]


def test_an_activation_between_two_events_is_seen_at_the_next_event(store: ProfileStore) -> None:
    watcher = ProfileWatcher(store)
    before = watcher.current()
    commit = store.set("balanced", {"position_size_pct": 0.12}, "alice", "widen", 1)

    store.activate("balanced", 2, "bob", "go")

    assert before[0].startswith("balanced@v1#")
    assert watcher.current() == (commit.version_string, commit.spec())


def test_an_activation_by_another_connection_is_seen_at_the_next_event(store: ProfileStore, db_path: Path, clock_type) -> None:
    watcher = ProfileWatcher(store)
    watcher.current()

    with ProfileStore(db_path, clock_type(2_000_000_000_000)) as operator:
        operator.activate("conservative", 1, "bob", "calm down")
        expected = operator.active()

    assert watcher.current() == expected
    assert watcher.current()[0].startswith("conservative@v1#")


def test_current_refuses_when_nothing_is_active(db_path: Path, make_conf, clock_type) -> None:
    conf = make_conf({}, config="defaults:\n  - _self_\n")

    with ProfileStore(db_path, clock_type(), conf) as empty:
        with pytest.raises(ProfileError, match="^no profile is active"):
            ProfileWatcher(empty).current()


def test_current_refuses_a_newly_activated_commit_that_was_tampered(store: ProfileStore, db_path: Path) -> None:
    watcher = ProfileWatcher(store)
    watcher.current()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE profile_commits SET content = replace(content, '\"kill_switch\":false', '\"kill_switch\":true') WHERE name = 'aggressive'")
        conn.execute(
            "INSERT INTO profile_activations (name, version, commit_chain_hash, author, ts_ms, reason, chain_hash)"
            " SELECT name, version, chain_hash, 'mallory', 0, 'x', 'x' FROM profile_commits WHERE name = 'aggressive'"
        )

    with pytest.raises(ProfileIntegrityError, match="content does not match its hash"):
        watcher.current()
