"""Unit tests for backend.profiles.core: applying dotted changes, attribution, hashes and version names."""

from __future__ import annotations

import json

import pytest
import yaml

from backend.config.canonical import canonical_json, sha256_hex
from backend.config.compose import CONF_DIR
from backend.config.schema import RiskProfileSpec
from backend.errors import ConfigError
from backend.profiles.core import (
    GENESIS,
    ProfileCommit,
    activation_chain_hash,
    apply_changes,
    check_attribution,
    commit_chain_hash,
    format_time_ms,
    validate_profile,
    version_string,
)
from backend.profiles.errors import ProfileIntegrityError, ProfileValueError


@pytest.fixture
def balanced() -> dict:
    return RiskProfileSpec.model_validate(yaml.safe_load((CONF_DIR / "risk" / "balanced.yaml").read_text())).model_dump(mode="json")


def commit_of(tree: dict, content: str | None = None) -> ProfileCommit:
    text = canonical_json(tree) if content is None else content
    return ProfileCommit("balanced", 2, 1, "alice", 0, "why", text, sha256_hex(canonical_json(tree)), "c" * 64)


def test_apply_changes_sets_top_level_and_dotted_keys_on_a_copy(balanced: dict) -> None:
    before = json.loads(json.dumps(balanced))

    new = apply_changes(balanced, {"position_size_pct": 0.2, "max_total_exposure.mode": "absolute", "max_total_exposure.value": 5000})

    assert new == {**before, "position_size_pct": 0.2, "max_total_exposure": {"mode": "absolute", "value": 5000}}
    assert balanced == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "no changes given (expected KEY=VALUE)"),
        ({"name": "other"}, "'name' is the profile's identity and cannot be set, was 'other'"),
        ({"name.x": 1}, "'name' is the profile's identity and cannot be set, was 1"),
        ({"foo.bar": 1}, "'foo.bar' is not a known key (unknown keys are refused), was 1"),
        ({"kill_switch.on": True}, "'kill_switch.on' is not a known key (unknown keys are refused), was True"),
    ],
)
def test_apply_changes_refuses_what_cannot_be_a_change(balanced: dict, changes: dict, message: str) -> None:
    with pytest.raises(ProfileValueError) as caught:
        apply_changes(balanced, changes)

    assert str(caught.value) == message
    assert isinstance(caught.value, ConfigError)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_concurrent_positions": 31}, "'max_concurrent_positions' must be <= 30, was 31"),
        ({"max_concurrent_positions": 0}, "'max_concurrent_positions' must be >= 1, was 0"),
        ({"position_size_pct": 1.5}, "'position_size_pct' must be <= 1.0, was 1.5"),
        ({"max_total_exposure.value": 0}, "'max_total_exposure.value' must be > 0.0, was 0"),
        ({"unknown_knob": 1}, "'unknown_knob' is not a known key (unknown keys are refused), was 1"),
        ({"max_cluster_exposure.cap": 1}, "'max_cluster_exposure.cap' is not a known key (unknown keys are refused), was 1"),
    ],
)
def test_validate_profile_names_field_bound_and_value(balanced: dict, changes: dict, message: str) -> None:
    with pytest.raises(ProfileValueError) as caught:
        validate_profile(apply_changes(balanced, changes), "profile 'balanced' not changed")

    assert str(caught.value) == f"profile 'balanced' not changed:\n{message}"


def test_validate_profile_returns_the_spec_for_a_valid_tree(balanced: dict) -> None:
    assert validate_profile(balanced, "ctx") == RiskProfileSpec.model_validate(balanced)


@pytest.mark.parametrize(
    ("author", "reason", "message"),
    [
        ("", "why", "'author' must be 1 to 64 characters (after trimming), was 0: ''"),
        ("   ", "why", "'author' must be 1 to 64 characters (after trimming), was 0: '   '"),
        ("a" * 65, "why", f"'author' must be 1 to 64 characters (after trimming), was 65: {'a' * 65!r}"),
        ("a\nb", "why", "'author' must not contain control characters, found U+000A at position 1: 'a\\nb'"),
        ("alice", "", "'reason' must be 1 to 500 characters (after trimming), was 0: ''"),
        ("alice", " ", "'reason' must be 1 to 500 characters (after trimming), was 0: ' '"),
        ("alice", "r" * 501, f"'reason' must be 1 to 500 characters (after trimming), was 501: {'r' * 501!r}"),
        ("alice", "forged\nv9  line", "'reason' must not contain control characters, found U+000A at position 6: 'forged\\nv9  line'"),
    ],
)
def test_check_attribution_refuses_missing_or_oversized_author_and_reason(author: str, reason: str, message: str) -> None:
    with pytest.raises(ProfileValueError) as caught:
        check_attribution(author, reason)

    assert str(caught.value) == message


def test_check_attribution_accepts_an_author_and_a_reason() -> None:
    assert check_attribution(" " + "a" * 64, "r" * 500 + "\n") == ("a" * 64, "r" * 500)


def test_version_string_is_name_version_and_twelve_hex_of_the_content_hash() -> None:
    assert version_string("balanced", 3, "0123456789abcdef" * 4) == "balanced@v3#0123456789ab"


def test_commit_chain_hash_is_the_sha256_of_the_canonical_field_list() -> None:
    expected = sha256_hex('["p","balanced",2,1,"h","alice",5,"why"]')

    assert commit_chain_hash("p", "balanced", 2, 1, "h", "alice", 5, "why") == expected
    # Field boundaries are unambiguous: moving a character between author and reason changes the hash.
    assert commit_chain_hash("p", "balanced", 2, 1, "h", "alicew", 5, "hy") != expected


def test_activation_chain_hash_is_the_sha256_of_the_canonical_field_list() -> None:
    expected = sha256_hex('["","balanced",2,"c","bob",7,"go"]')

    assert activation_chain_hash(GENESIS, "balanced", 2, "c", "bob", 7, "go") == expected


def test_commit_spec_validates_content_that_matches_its_hash(balanced: dict) -> None:
    commit = commit_of(balanced)

    assert commit.spec() == RiskProfileSpec.model_validate(balanced)
    assert commit.tree() == balanced
    assert commit.version_string == f"balanced@v2#{commit.content_hash[:12]}"


def test_commit_spec_refuses_content_that_does_not_match_its_hash(balanced: dict) -> None:
    edited = canonical_json({**balanced, "position_size_pct": 0.5})

    with pytest.raises(ProfileIntegrityError, match=r"^profile 'balanced' v2: content does not match its hash$"):
        commit_of(balanced, edited).spec()


def test_commit_spec_refuses_content_the_current_schema_rejects(balanced: dict) -> None:
    stale = {**balanced, "retired_knob": 1}

    with pytest.raises(ProfileIntegrityError) as caught:
        commit_of(stale).spec()

    assert str(caught.value) == (
        "profile 'balanced' v2 no longer validates:\n'retired_knob' is not a known key (unknown keys are refused), was 1"
    )


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [(0, "1970-01-01T00:00:00.000Z"), (1_795_000_000_123, "2026-11-18T11:06:40.123Z"), (999, "1970-01-01T00:00:00.999Z")],
)
def test_format_time_ms_is_utc_iso_with_milliseconds(ts_ms: int, text: str) -> None:
    assert format_time_ms(ts_ms) == text
