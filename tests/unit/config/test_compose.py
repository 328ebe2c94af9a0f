"""Hydra composition and spec files: the one boundary every command crosses, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.config.canonical import canonical_json
from backend.config.compose import CONF_DIR, compose_raw, compose_with_hydra, load_spec_file
from backend.config.schema import RunSpec
from backend.errors import ConfigError
from tests.stubs import small_spec


@pytest.fixture(scope="module")
def spec() -> RunSpec:
    return small_spec()


def test_conf_dir_is_the_repository_conf_tree() -> None:
    assert (CONF_DIR / "config.yaml").is_file()
    assert CONF_DIR.name == "conf"


def test_run_dir_is_a_timestamped_folder_under_the_acts_home_runs(acts_home: Path) -> None:
    raw, run_dir = compose_with_hydra(["seed=3"])
    assert raw["seed"] == 3
    assert run_dir.parent == acts_home / "runs"
    assert len(run_dir.name) == len("20250101T000000_000000")
    assert run_dir.name[8] == "T" and run_dir.name[15] == "_"


def test_composed_tree_is_resolved_plain_data_without_the_hydra_node() -> None:
    raw = compose_raw(["data.days=9"])
    assert "hydra" not in raw
    assert set(raw) == {
        "name", "seed", "mode", "universe", "data", "features", "model", "training", "risk", "strategy", "execution"
    }  # fmt: skip
    assert raw["data"]["days"] == 9
    assert isinstance(raw["universe"]["assets"], list)


def test_later_overrides_win(spec: RunSpec) -> None:
    # SMALL sets risk=aggressive and 10 days; a later override of the same key wins.
    assert (spec.risk.name, spec.data.days) == ("aggressive", 10)
    later = small_spec("data.days=12", "risk=conservative")
    assert (later.risk.name, later.data.days) == ("conservative", 12)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("risk=nope", "Could not find 'risk/nope'"),
        ("run=paper_trading", "Could not find 'run/paper_trading'"),
        ("data=kraken", "Could not find 'data/kraken'"),
    ],
)
def test_unknown_group_option_is_refused_listing_the_available_options(override: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_raw([override])
    message = str(caught.value)
    assert message.startswith(f"cannot compose config with overrides ['{override}']: In 'config': {named}")
    assert "Available options in" in message


def test_unknown_group_option_lists_the_real_profiles() -> None:
    with pytest.raises(ConfigError, match="Available options in 'risk':\n\taggressive\n\tbalanced\n\tconservative"):
        compose_raw(["risk=reckless"])


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("risk.max_concurrent_positions", "Error parsing override 'risk.max_concurrent_positions'"),
        ("data.days=[1,", "no viable alternative at input '[1,'"),
        ("risk.leverage=2", "Could not override 'risk.leverage'"),
        ("data.days=???", "Missing mandatory value: days"),
    ],
)
def test_bad_override_is_refused_as_a_config_error(override: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_raw([override])
    assert str(caught.value).startswith(f"cannot compose config with overrides ['{override}']: {named}")


def test_conf_dir_without_a_root_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot compose config with overrides \\[\\]"):
        compose_raw([], conf_dir=tmp_path)


# ---------------------------------------------------------------- spec files


def test_spec_json_round_trips_to_an_equal_spec(spec: RunSpec, tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(canonical_json(spec), encoding="utf-8")
    loaded = load_spec_file(path)
    assert loaded == spec
    assert canonical_json(loaded) == canonical_json(spec)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_spec_yaml_round_trips_to_an_equal_spec(spec: RunSpec, tmp_path: Path, suffix: str) -> None:
    # JSON is valid YAML, so the canonical text doubles as a YAML document.
    path = tmp_path / f"spec{suffix}"
    path.write_text(canonical_json(spec), encoding="utf-8")
    assert load_spec_file(path) == spec


def test_hand_written_yaml_spec_keeps_dates_and_resolves_interpolations(spec: RunSpec, tmp_path: Path) -> None:
    tree = spec.model_dump(mode="json")
    tree["name"] = "${risk.name}_copy"
    lines = json.dumps(tree, indent=1).replace('"2025-01-01"', "2025-01-01")
    path = tmp_path / "spec.yaml"
    path.write_text(lines, encoding="utf-8")
    loaded = load_spec_file(path)
    assert loaded.name == "aggressive_copy"
    assert loaded.data.start_ms == spec.data.start_ms


def test_missing_spec_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError) as caught:
        load_spec_file(path)
    assert str(caught.value) == f"cannot read spec file {path}: No such file or directory"


def test_directory_given_as_spec_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read spec file .*: Is a directory"):
        load_spec_file(tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("spec.json", b'{"name": "x",', "json"),
        ("spec.json", b"\xff\xfe not utf-8", "json"),
        ("spec.yaml", b"a: [1", "yaml"),
        ("spec.yaml", b"a: b: c", "yaml"),
        ("spec.yaml", b"42", "yaml"),
        ("spec", b"name: [", "text"),
    ],
)
def test_unparsable_spec_file_is_refused_naming_path_and_format(
    tmp_path: Path, name: str, content: bytes, kind: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_spec_file(path)
    assert str(caught.value).startswith(f"spec file {path} is not valid {kind}: ")


@pytest.mark.parametrize(
    ("name", "content", "found"),
    [
        ("spec.json", "[1, 2]", "list"),
        ("spec.json", '"a spec"', "str"),
        ("spec.json", "3.5", "float"),
        ("spec.json", "null", "NoneType"),
        ("spec.yaml", "- a\n- b\n", "list"),
    ],
)
def test_spec_file_without_a_mapping_at_the_top_is_refused(tmp_path: Path, name: str, content: str, found: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_spec_file(path)
    assert str(caught.value) == f"spec file {path} must hold a mapping at the top, found {found}"


def test_spec_file_with_an_invalid_value_is_refused_like_a_composed_config(spec: RunSpec, tmp_path: Path) -> None:
    tree = spec.model_dump(mode="json")
    tree["risk"]["max_concurrent_positions"] = 31
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(tree), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_spec_file(path)
    assert str(caught.value) == "invalid config:\n'risk.max_concurrent_positions' must be <= 30, was 31"


def test_empty_yaml_spec_file_reports_every_missing_group(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_spec_file(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid config:"
    assert lines[1:] == sorted(
        f"'{key}' is required and missing"
        for key in ("data", "execution", "features", "mode", "model", "name", "risk", "seed", "strategy", "training", "universe")
    )
