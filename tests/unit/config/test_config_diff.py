"""Config diffs: flattened dotted keys, added, removed and changed values, and their text."""

from __future__ import annotations

from backend.config.diff import ConfigChange, diff_configs, flatten, format_changes
from tests.stubs import small_spec


def test_flatten_joins_nested_keys_with_dots_in_sorted_order() -> None:
    flat = flatten({"b": {"y": 2, "x": 1}, "a": 0})
    assert flat == {"a": 0, "b.x": 1, "b.y": 2}
    assert list(flat) == ["a", "b.x", "b.y"]


def test_flatten_indexes_lists_and_tuples() -> None:
    assert flatten({"assets": [{"symbol": "BTC"}, {"symbol": "ETH"}], "pair": ("a", "b")}) == {
        "assets.0.symbol": "BTC",
        "assets.1.symbol": "ETH",
        "pair.0": "a",
        "pair.1": "b",
    }


def test_flatten_keeps_empty_containers_and_scalars_as_leaves() -> None:
    assert flatten({"empty_map": {}, "empty_list": [], "none": None}) == {
        "empty_list": [],
        "empty_map": {},
        "none": None,
    }
    assert flatten(5) == {"": 5}


def test_identical_trees_have_no_changes() -> None:
    tree = {"a": {"b": [1, 2]}, "c": "x"}
    assert diff_configs(tree, {"c": "x", "a": {"b": [1, 2]}}) == []
    assert format_changes([]) == "no differences"


def test_added_removed_and_changed_keys_are_reported_sorted() -> None:
    old = {"risk": {"max": 8, "name": "balanced"}, "gone": True, "list": [1, 2, 3]}
    new = {"risk": {"max": 9, "name": "balanced"}, "new": {"k": "v"}, "list": [1, 2]}
    assert diff_configs(old, new) == [
        ConfigChange("gone", True, "<absent>"),
        ConfigChange("list.2", 3, "<absent>"),
        ConfigChange("new.k", "<absent>", "v"),
        ConfigChange("risk.max", 8, 9),
    ]


def test_int_to_float_of_equal_value_is_a_change() -> None:
    assert diff_configs({"v": 1}, {"v": 1.0}) == [ConfigChange("v", 1, 1.0)]


def test_format_changes_renders_one_canonical_line_per_change() -> None:
    changes = [
        ConfigChange("data.symbols", None, ["BTC", "ETH"]),
        ConfigChange("name", "a", "b"),
        ConfigChange("risk.max", 8, "<absent>"),
    ]
    assert format_changes(changes) == (
        'data.symbols: null -> ["BTC","ETH"]\nname: "a" -> "b"\nrisk.max: 8 -> "<absent>"'
    )


def test_diff_of_two_composed_specs_lists_exactly_the_overridden_fields() -> None:
    base = small_spec().model_dump(mode="json")
    changed = small_spec("data.days=12", "seed=9").model_dump(mode="json")
    assert format_changes(diff_configs(base, changed)) == "data.days: 10 -> 12\nseed: 7 -> 9"


def test_diff_of_two_risk_profiles_names_each_changed_bound() -> None:
    base = small_spec().model_dump(mode="json")
    changed = small_spec("risk=conservative").model_dump(mode="json")
    lines = format_changes(diff_configs(base, changed)).splitlines()
    assert 'risk.name: "aggressive" -> "conservative"' in lines
    assert "risk.max_concurrent_positions: 15 -> 4" in lines
    assert {line.split(":")[0].split(".")[0] for line in lines} == {"risk"}
