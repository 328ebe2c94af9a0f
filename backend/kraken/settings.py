"""Kraken connection settings: ``conf/kraken/default.yaml``, validated once, overridable per command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.config.errors_format import format_validation_error
from backend.errors import ConfigError

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "conf" / "kraken" / "default.yaml"


class KrakenSettings(BaseModel):
    """Where Kraken is and how patiently to talk to it; how long a shadow session must run before live."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")]
    timeout_ms: Annotated[int, Field(ge=100, le=120_000)] = 10_000
    rate_limit: bool = True
    poll_seconds: Annotated[float, Field(gt=0.0, le=3600.0, allow_inf_nan=False)] = 5.0
    min_shadow_minutes: Annotated[int, Field(ge=0, le=10_080)] = 1440

    @property
    def min_shadow_ms(self) -> int:
        """The minimum shadow session in milliseconds."""
        return self.min_shadow_minutes * 60_000


def load_settings(path: Path | None = None, **overrides: object) -> KrakenSettings:
    """Read the settings file (default :data:`DEFAULT_FILE`) and apply ``overrides`` (None values ignored), validating the result.

    Raises
    ------
    ConfigError
        When the file cannot be read or a value breaks a bound (naming the key, the bound and the value).
    """
    path = DEFAULT_FILE if path is None else path
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read Kraken settings {path}: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"Kraken settings {path} must hold a mapping of settings, found {type(raw).__name__}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return KrakenSettings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError("invalid Kraken settings:\n" + format_validation_error(error)) from None
