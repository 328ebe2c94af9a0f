"""Canonical JSON and content hashes: equal content gives equal bytes, any change gives a new id."""

from __future__ import annotations

import hashlib

import pytest

from backend.config.canonical import canonical_json, content_hash, sha256_hex
from backend.config.schema import ExposureLimitSpec, RunSpec
from tests.stubs import small_spec


@pytest.fixture(scope="module")
def spec() -> RunSpec:
    return small_spec()


def test_keys_are_sorted_at_every_level_with_compact_separators() -> None:
    assert canonical_json({"b": 1, "a": {"d": [3, 2], "c": None}}) == '{"a":{"c":null,"d":[3,2]},"b":1}'


def test_key_order_does_not_change_the_text_or_the_hash() -> None:
    first = {"x": 1, "y": {"p": 2.5, "q": "s"}}
    second = {"y": {"q": "s", "p": 2.5}, "x": 1}
    assert canonical_json(first) == canonical_json(second)
    assert content_hash(first) == content_hash(second)


def test_non_ascii_text_is_kept_verbatim() -> None:
    assert canonical_json({"name": "Zürich €"}) == '{"name":"Zürich €"}'


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"value": bad})


def test_a_model_serialises_through_its_json_dump() -> None:
    limit = ExposureLimitSpec(mode="absolute", value=5000)
    assert canonical_json(limit) == '{"mode":"absolute","value":5000.0}'
    assert content_hash(limit) == content_hash({"value": 5000.0, "mode": "absolute"})


def test_sha256_of_text_is_the_digest_of_its_utf8_bytes() -> None:
    assert sha256_hex("é") == hashlib.sha256("é".encode()).hexdigest()
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex("abc") == sha256_hex(b"abc")


def test_equal_specs_have_the_same_hash(spec: RunSpec) -> None:
    again = small_spec()
    assert again is not spec
    assert content_hash(again) == content_hash(spec)
    assert len(content_hash(spec)) == 64


def test_a_spec_and_its_json_dump_hash_alike(spec: RunSpec) -> None:
    assert content_hash(spec) == content_hash(spec.model_dump(mode="json"))


@pytest.mark.parametrize(
    "update",
    [
        {"seed": 8},
        {"name": "other"},
        {"risk": {"max_concurrent_positions": 14}},
        {"execution": {"taker_fee_bps": 26.0}},
        {"data": {"days": 11}},
    ],
)
def test_any_changed_value_changes_the_hash(spec: RunSpec, update: dict) -> None:
    tree = spec.model_dump(mode="json")
    for key, value in update.items():
        tree[key] = {**tree[key], **value} if isinstance(value, dict) else value
    changed = RunSpec.model_validate(tree)
    assert changed != spec
    assert content_hash(changed) != content_hash(spec)


def test_integer_and_float_of_equal_value_hash_differently() -> None:
    # The canonical text records the type; validation through a schema normalises it first.
    assert content_hash({"v": 1}) != content_hash({"v": 1.0})
    assert content_hash(ExposureLimitSpec(mode="absolute", value=1)) == content_hash(
        ExposureLimitSpec(mode="absolute", value=1.0)
    )
