"""The shipped presets (``conf/risk/*.yaml``) that seed an empty store, and the default active one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from backend.config.schema import RiskProfileSpec
from backend.errors import ConfigError
from backend.profiles.core import validate_profile


@dataclass(frozen=True)
class Preset:
    """A validated preset and the file it came from (relative to the conf folder)."""

    spec: RiskProfileSpec
    source: str


def load_presets(conf_dir: Path) -> list[Preset]:
    """Validate every ``conf_dir/risk/*.yaml``, sorted by profile name.

    Raises
    ------
    ConfigError
        When a preset does not validate (naming the file, the field, the bound and the value) or two share a name.
    """
    presets: dict[str, Preset] = {}
    for path in sorted((conf_dir / "risk").glob("*.yaml")):
        source = path.relative_to(conf_dir.parent).as_posix()
        spec = validate_profile(yaml.safe_load(path.read_text(encoding="utf-8")), f"preset {source} is invalid")
        if spec.name in presets:
            raise ConfigError(f"presets {presets[spec.name].source} and {source} share the name {spec.name!r}")
        presets[spec.name] = Preset(spec, source)
    return [presets[name] for name in sorted(presets)]


def default_profile_name(conf_dir: Path) -> str | None:
    """Return the ``risk`` option of the root defaults list in ``conf_dir/config.yaml``, if any."""
    root = yaml.safe_load((conf_dir / "config.yaml").read_text(encoding="utf-8"))
    for entry in root["defaults"]:
        if isinstance(entry, dict) and "risk" in entry:
            return str(entry["risk"])
    return None
