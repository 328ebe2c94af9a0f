"""Market data providers behind one protocol, built from the settings (the composition root for data)."""

from __future__ import annotations

import enum
from collections.abc import Callable

from backend.clock import Clock
from backend.data.providers.base import Fetcher, Monotonic, OhlcvProvider, RateLimiter, RetryPolicy, Sleep
from backend.data.providers.coinapi import CoinApiProvider
from backend.data.providers.kraken_public import KrakenOhlcProvider, KrakenTradesProvider, is_throttled
from backend.data.raw import RawStore
from backend.data.settings import HistDataSettings, Provider, training_data_policy
from backend.errors import ConfigError


class Source(str, enum.Enum):
    """Lake sources a provider fills."""

    COINAPI = "coinapi"  # CoinAPI OHLCV history
    KRAKEN = "kraken"  # Kraken OHLC (the 720 most recent bars)
    KRAKEN_TRADES = "kraken_trades"  # bars rebuilt from Kraken's full trade history


class Purpose(str, enum.Enum):
    """Why a provider is opened: ingestion, or on behalf of training (subject to the training policy)."""

    INGEST = "ingest"
    TRAINING = "training"


DEFAULT_SOURCE = {Provider.COINAPI: Source.COINAPI, Provider.KRAKEN_PUBLIC: Source.KRAKEN_TRADES}


def source_for(settings: HistDataSettings, name: str | None) -> Source:
    """Return the named source, or the default of ``HIST_MARKET_DATA_PROVIDER``.

    Raises
    ------
    ConfigError
        For an unknown source name (naming the allowed ones).
    """
    if name is None:
        return DEFAULT_SOURCE[settings.hist_market_data_provider]
    try:
        return Source(name)
    except ValueError:
        raise ConfigError(f"source must be one of {[s.value for s in Source]}, was {name!r}") from None


def open_provider(
    settings: HistDataSettings,
    source: Source,
    raw: RawStore,
    clock: Clock,
    monotonic: Monotonic,
    sleep: Sleep,
    rate_per_second: float | None = None,
    retry: RetryPolicy = RetryPolicy(),
    purpose: Purpose = Purpose.INGEST,
    page_limit: int | None = None,
) -> OhlcvProvider:
    """Build the provider of ``source`` from the settings.

    Raises
    ------
    ProviderCallRefused
        When ``purpose`` is training and the training policy forbids provider calls.
    ConfigError
        When CoinAPI is asked for without ``HIST_MARKET_DATA_API_KEY``.
    """
    if purpose is Purpose.TRAINING:
        training_data_policy(settings).check_provider_call(f"open {source.value}")
    limiter = RateLimiter(rate_per_second, monotonic, sleep)
    if source is Source.COINAPI:
        key = settings.hist_market_data_api_key
        if key is None:
            raise ConfigError("HIST_MARKET_DATA_API_KEY is required for the coinapi source and is not set")
        fetcher = Fetcher("coinapi", settings.hist_market_data_base_url, raw, clock, limiter, retry,
                          {"X-CoinAPI-Key": key.get_secret_value()})  # fmt: skip
        return CoinApiProvider(fetcher, page_limit or 100_000, source.value)
    fetcher = Fetcher("kraken_public", settings.kraken_public_base_url, raw, clock, limiter, retry, None, is_throttled)
    builders: dict[Source, Callable[[], OhlcvProvider]] = {
        Source.KRAKEN: lambda: KrakenOhlcProvider(fetcher, source.value),
        Source.KRAKEN_TRADES: lambda: KrakenTradesProvider(fetcher, source.value),
    }
    return builders[source]()
