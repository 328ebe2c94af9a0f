"""The historical-data credential and policy surface (governance section 7D), read from the environment.

Every setting is an environment variable of the same name in upper case. Secrets are ``SecretStr``:
their ``repr`` and ``str`` are masked, and only the provider client ever reads their value (to put it
in a request header, never in a URL, a log line or a file).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.errors import ConfigError, ProviderCallRefused


class Provider(str, enum.Enum):
    """The two historical market data providers ACTS speaks to."""

    COINAPI = "COINAPI"
    KRAKEN_PUBLIC = "KRAKEN_PUBLIC"


class RankingSource(str, enum.Enum):
    """How a new universe version is ranked (``UNIVERSE_RANKING_SOURCE``)."""

    MARKET_CAP_SNAPSHOT = "MARKET_CAP_SNAPSHOT"  # a dated market-cap ranking file, recorded with the version
    KRAKEN_USD_VOLUME = "KRAKEN_USD_VOLUME"  # Kraken 24 h USD volume from a recorded Ticker snapshot


Url = Annotated[str, Field(min_length=8, max_length=300, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")]


class HistDataSettings(BaseSettings):
    """Settings of section 7D; unknown environment variables are ignored, bad values refused."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False, env_file=None)

    hist_market_data_provider: Provider = Provider.KRAKEN_PUBLIC
    hist_market_data_api_key: SecretStr | None = None
    hist_market_data_api_secret: SecretStr | None = None
    hist_market_data_base_url: Url = "https://rest.coinapi.io"
    kraken_public_base_url: Url = "https://api.kraken.com"
    universe_ranking_source: RankingSource = RankingSource.MARKET_CAP_SNAPSHOT
    force_local_data_for_training: bool = True
    allow_provider_calls_during_training: bool = False

    @model_validator(mode="after")
    def _coherent_training_policy(self) -> HistDataSettings:
        if self.force_local_data_for_training and self.allow_provider_calls_during_training:
            raise ValueError(
                "FORCE_LOCAL_DATA_FOR_TRAINING=true contradicts ALLOW_PROVIDER_CALLS_DURING_TRAINING=true; "
                "set one of them to false"
            )
        return self


def _describe(error: dict) -> str:
    field = ".".join(str(part) for part in error.get("loc", ())).upper() or "<settings>"
    if error["type"] == "enum":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"{field} must be one of {allowed}, was {error.get('input')!r}"
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    # Secret fields are SecretStr and accept any text, so only non-secret values can reach this line.
    return f"{field} {error['msg'][:1].lower()}{error['msg'][1:]}, was {error.get('input')!r}"


def load_settings() -> HistDataSettings:
    """Read the settings from the environment.

    Returns
    -------
    HistDataSettings
        The validated, frozen settings.

    Raises
    ------
    ConfigError
        Naming the variable, the allowed values or bound and the value given (secrets are never shown).
    """
    try:
        return HistDataSettings()
    except ValidationError as error:
        raise ConfigError("; ".join(_describe(e) for e in error.errors())) from None


class TrainingDataSource(str, enum.Enum):
    """Where the training path may take its bars from."""

    LAKE_ONLY = "lake_only"  # read the local lake; never fetch
    LAKE_AFTER_INGEST = "lake_after_ingest"  # an incremental ingest may top the lake up first


@dataclass(frozen=True)
class TrainingDataPolicy:
    """What the training path is allowed to do for data."""

    source: TrainingDataSource
    provider_calls_allowed: bool

    def check_provider_call(self, what: str) -> None:
        """Refuse a provider call made on behalf of training when the policy forbids it.

        Raises
        ------
        ProviderCallRefused
            Naming the call and the settings that forbid it.
        """
        if not self.provider_calls_allowed:
            raise ProviderCallRefused(
                f"provider call {what!r} refused during training: ALLOW_PROVIDER_CALLS_DURING_TRAINING=false "
                f"(training reads the local lake only)"
            )


def training_data_policy(settings: HistDataSettings) -> TrainingDataPolicy:
    """Return the training data policy the settings ask for.

    ``FORCE_LOCAL_DATA_FOR_TRAINING`` (default true) restricts training to the lake;
    ``ALLOW_PROVIDER_CALLS_DURING_TRAINING`` (default false) lets the training path run an
    incremental ingest first. The two cannot both be true (refused when the settings load).
    """
    if settings.allow_provider_calls_during_training:
        return TrainingDataPolicy(TrainingDataSource.LAKE_AFTER_INGEST, provider_calls_allowed=True)
    return TrainingDataPolicy(TrainingDataSource.LAKE_ONLY, provider_calls_allowed=False)
