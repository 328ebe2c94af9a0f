"""The section 7D settings: provider choice, secrets, URLs and the training data policy."""

from __future__ import annotations

import pytest

from backend.data.settings import (
    Provider,
    RankingSource,
    TrainingDataSource,
    load_settings,
    training_data_policy,
)
from backend.errors import ConfigError, ProviderCallRefused

VARIABLES = (
    "HIST_MARKET_DATA_PROVIDER", "HIST_MARKET_DATA_API_KEY", "HIST_MARKET_DATA_API_SECRET",
    "HIST_MARKET_DATA_BASE_URL", "KRAKEN_PUBLIC_BASE_URL", "UNIVERSE_RANKING_SOURCE",
    "FORCE_LOCAL_DATA_FOR_TRAINING", "ALLOW_PROVIDER_CALLS_DURING_TRAINING",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_kraken_public_local_training_and_no_secret() -> None:
    settings = load_settings()

    assert settings.hist_market_data_provider is Provider.KRAKEN_PUBLIC
    assert settings.hist_market_data_api_key is None
    assert settings.hist_market_data_base_url == "https://rest.coinapi.io"
    assert settings.kraken_public_base_url == "https://api.kraken.com"
    assert settings.universe_ranking_source is RankingSource.MARKET_CAP_SNAPSHOT
    assert settings.force_local_data_for_training is True
    assert settings.allow_provider_calls_during_training is False


def test_every_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "HIST_MARKET_DATA_PROVIDER": "COINAPI", "HIST_MARKET_DATA_API_KEY": "canary-XYZ",
        "HIST_MARKET_DATA_API_SECRET": "canary-SECRET", "HIST_MARKET_DATA_BASE_URL": "http://127.0.0.1:9/",
        "KRAKEN_PUBLIC_BASE_URL": "http://127.0.0.1:8", "UNIVERSE_RANKING_SOURCE": "KRAKEN_USD_VOLUME",
        "FORCE_LOCAL_DATA_FOR_TRAINING": "false", "ALLOW_PROVIDER_CALLS_DURING_TRAINING": "true",
    }  # fmt: skip
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.hist_market_data_provider is Provider.COINAPI
    assert settings.hist_market_data_api_key.get_secret_value() == "canary-XYZ"
    assert settings.hist_market_data_api_secret.get_secret_value() == "canary-SECRET"
    assert settings.hist_market_data_base_url == "http://127.0.0.1:9/"
    assert settings.universe_ranking_source is RankingSource.KRAKEN_USD_VOLUME
    assert "canary" not in repr(settings) and "canary" not in str(settings)


@pytest.mark.parametrize("value", ["OTHER", "coinapi ", "BINANCE"])
def test_an_unknown_provider_is_refused_naming_the_field_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("HIST_MARKET_DATA_PROVIDER", value)

    with pytest.raises(ConfigError) as error:
        load_settings()

    assert str(error.value) == f"HIST_MARKET_DATA_PROVIDER must be one of 'COINAPI' or 'KRAKEN_PUBLIC', was {value!r}"


def test_a_bad_url_is_refused_naming_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKEN_PUBLIC_BASE_URL", "api.kraken.com/0")

    with pytest.raises(ConfigError, match="KRAKEN_PUBLIC_BASE_URL string should match pattern .* was 'api.kraken.com/0'"):
        load_settings()


def test_forcing_local_data_while_allowing_provider_calls_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOW_PROVIDER_CALLS_DURING_TRAINING", "true")

    with pytest.raises(ConfigError, match="FORCE_LOCAL_DATA_FOR_TRAINING=true contradicts ALLOW_PROVIDER"):
        load_settings()


@pytest.mark.parametrize("force_local", ["true", "false"])
def test_training_reads_the_lake_only_unless_provider_calls_are_allowed(
    monkeypatch: pytest.MonkeyPatch, force_local: str
) -> None:
    monkeypatch.setenv("FORCE_LOCAL_DATA_FOR_TRAINING", force_local)

    policy = training_data_policy(load_settings())

    assert policy.source is TrainingDataSource.LAKE_ONLY
    assert policy.provider_calls_allowed is False
    with pytest.raises(ProviderCallRefused, match="'open coinapi' refused during training"):
        policy.check_provider_call("open coinapi")


def test_allowing_provider_calls_lets_training_top_up_the_lake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_LOCAL_DATA_FOR_TRAINING", "false")
    monkeypatch.setenv("ALLOW_PROVIDER_CALLS_DURING_TRAINING", "true")

    policy = training_data_policy(load_settings())

    assert policy.source is TrainingDataSource.LAKE_AFTER_INGEST
    policy.check_provider_call("open coinapi")  # allowed: returns without raising
