"""Compose the Hydra config tree in ``conf/`` and validate it, once, into a RunSpec."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from backend.config.errors_format import format_validation_error
from backend.config.schema import RunSpec
from backend.errors import ConfigError
from backend.home import acts_home

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


OmegaConf.register_new_resolver("acts_home", lambda: str(acts_home()), replace=True)


def compose_with_hydra(overrides: Sequence[str] = (), conf_dir: Path = CONF_DIR) -> tuple[dict[str, Any], Path]:
    """Compose ``conf/config.yaml`` with Hydra ``overrides``; return the resolved tree and ``hydra.run.dir``.

    Raises
    ------
    ConfigError
        When Hydra cannot compose (unknown group option, bad override syntax, missing value).
    """
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        run_dir = Path(str(cfg.hydra.run.dir))
        # The hydra node holds job-time values (sweep numbers) that do not exist outside a job.
        with open_dict(cfg):
            del cfg["hydra"]
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"cannot compose config with overrides {list(overrides)}: {error}") from error
    return raw, run_dir  # type: ignore[return-value]


def compose_raw(overrides: Sequence[str] = (), conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Compose ``conf/config.yaml`` with Hydra ``overrides`` into a plain resolved dict."""
    return compose_with_hydra(overrides, conf_dir)[0]


def validate_raw(raw: dict[str, Any]) -> RunSpec:
    """Validate a plain config tree into a frozen RunSpec, or raise ConfigError naming each problem."""
    try:
        return RunSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError("invalid config:\n" + format_validation_error(error)) from error


def compose_spec(overrides: Sequence[str] = (), conf_dir: Path = CONF_DIR) -> RunSpec:
    """Compose and validate: the one boundary every command crosses."""
    return validate_raw(compose_raw(overrides, conf_dir))


def load_spec_file(path: Path) -> RunSpec:
    """Load a resolved spec written by a run (``spec.json``) or any JSON/YAML spec file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read spec file {path}: {error.strerror}") from error
    try:
        # Bad UTF-8 is a ValueError; a YAML scalar at the top is an OSError from OmegaConf.load.
        text = data.decode("utf-8")
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            raw = OmegaConf.to_container(OmegaConf.load(io.StringIO(text)), resolve=True)
    except (ValueError, OSError, yaml.YAMLError, OmegaConfBaseException) as error:
        raise ConfigError(f"spec file {path} is not valid {path.suffix.lstrip('.') or 'text'}: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"spec file {path} must hold a mapping at the top, found {type(raw).__name__}")
    return validate_raw(raw)
