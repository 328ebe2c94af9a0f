"""Unit tests for backend.profiles.presets: the shipped presets and the default active profile."""

from __future__ import annotations

import pytest
import yaml

from backend.config.compose import CONF_DIR
from backend.config.schema import RiskProfileSpec
from backend.errors import ConfigError
from backend.profiles.presets import default_profile_name, load_presets


def preset_text(name: str, **changes: object) -> str:
    tree = yaml.safe_load((CONF_DIR / "risk" / "balanced.yaml").read_text(encoding="utf-8"))
    return yaml.safe_dump({**tree, "name": name, **changes})


def test_load_presets_validates_every_shipped_preset_sorted_by_name() -> None:
    presets = load_presets(CONF_DIR)

    assert [p.spec.name for p in presets] == ["aggressive", "balanced", "conservative"]
    assert [p.source for p in presets] == ["conf/risk/aggressive.yaml", "conf/risk/balanced.yaml", "conf/risk/conservative.yaml"]
    for preset in presets:
        raw = yaml.safe_load((CONF_DIR.parent / preset.source).read_text(encoding="utf-8"))
        assert preset.spec == RiskProfileSpec.model_validate(raw)


def test_load_presets_refuses_an_out_of_bound_preset_naming_the_file(make_conf) -> None:
    conf = make_conf({"wild": preset_text("wild", max_concurrent_positions=99)})

    with pytest.raises(ConfigError) as caught:
        load_presets(conf)

    assert str(caught.value) == f"preset {conf.name}/risk/wild.yaml is invalid:\n'max_concurrent_positions' must be <= 30, was 99"


def test_load_presets_refuses_two_files_with_one_name(make_conf) -> None:
    conf = make_conf({"a": preset_text("same"), "b": preset_text("same")})

    with pytest.raises(ConfigError, match=r"^presets conf0/risk/a.yaml and conf0/risk/b.yaml share the name 'same'$"):
        load_presets(conf)


def test_default_profile_name_is_the_risk_option_of_the_root_defaults() -> None:
    assert default_profile_name(CONF_DIR) == "balanced"


def test_default_profile_name_is_none_without_a_risk_default(make_conf) -> None:
    conf = make_conf({}, config="defaults:\n  - _self_\n  - universe: v1\n")

    assert default_profile_name(conf) is None
    assert load_presets(conf) == []

