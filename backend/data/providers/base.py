"""What every market data provider offers, and the HTTP shell they share: pacing, retries, raw first.

The :class:`Fetcher` is the only code that talks to a provider. Each response body is written to the
raw store before anyone parses it; 429s, 5xx, timeouts and transport errors are retried with the
wait the provider asks for (``Retry-After``) or an exponential backoff; after a 429 the client paces
itself to one request per ``Retry-After`` so a limit hit once is not hit again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx
import polars as pl

from backend.clock import Clock
from backend.config.schema import AssetSpec
from backend.data.raw import RawRecord, RawStore
from backend.errors import ProviderError

Sleep = Callable[[float], None]
Monotonic = Callable[[], float]


@dataclass(frozen=True)
class Fetched:
    """A successful response, already kept in the raw store."""

    endpoint: str
    params: dict[str, str]
    record: RawRecord
    body: bytes


@dataclass(frozen=True)
class OhlcvPage:
    """Bars parsed from one or more fetched pages, and where the next request starts."""

    bars: pl.DataFrame
    records: tuple[RawRecord, ...]
    next_cursor_ms: int
    complete: bool  # True when the provider has nothing newer right now


def closed_since(bars: pl.DataFrame, cursor_ms: int, bar_ms: int, now_ms: int) -> tuple[pl.DataFrame, int]:
    """Return the bars opening at or after ``cursor_ms`` that closed by ``now_ms``, and the next cursor.

    The next cursor follows the last closed bar, or stays at ``cursor_ms`` when none closed.
    """
    closed = bars.filter((pl.col("ts") >= cursor_ms) & (pl.col("ts") + bar_ms <= now_ms))
    return closed, int(closed["ts"].max()) + bar_ms if closed.height else cursor_ms  # type: ignore[arg-type]


class OhlcvProvider(Protocol):
    """A source of OHLCV bars: requests (raw kept) and a pure parse of what they returned."""

    source: str
    fetcher: Fetcher
    confirms_gaps: bool  # an empty answer for a window proves the provider has no bar there

    def history_start_ms(self, asset: AssetSpec) -> int | None:
        """Return when the provider's history of ``asset`` begins, or None when it cannot say."""
        ...

    def fetch(self, asset: AssetSpec, timeframe: str, cursor_ms: int, end_ms: int | None = None) -> tuple[Fetched, ...]:
        """Request the bars of ``asset`` opening at or after ``cursor_ms`` (and before ``end_ms``)."""
        ...

    def parse(
        self, fetched: tuple[Fetched, ...], asset: AssetSpec, timeframe: str, cursor_ms: int, now_ms: int
    ) -> OhlcvPage:
        """Turn fetched pages into closed bars; raise ``BadPayload`` when they cannot be."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a failing request is retried and how long to back off."""

    max_attempts: int = 6
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    timeout_seconds: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Return the wait before retry number ``attempt`` (1-based): doubling, capped."""
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))


class RateLimiter:
    """Client-side pacing: at most ``rate_per_second`` requests, slowed further by any 429.

    Parameters
    ----------
    rate_per_second : float or None
        Planned rate; None starts unpaced.
    monotonic, sleep : callables
        Time source and sleeper (injected so tests and the shell choose them).
    """

    def __init__(self, rate_per_second: float | None, monotonic: Monotonic, sleep: Sleep) -> None:
        self.interval = 0.0 if rate_per_second is None else 1.0 / rate_per_second
        self._monotonic = monotonic
        self._sleep = sleep
        self._next_at = monotonic()
        self.throttled = 0

    def acquire(self) -> None:
        """Wait until the next request may be sent, then reserve its slot."""
        now = self._monotonic()
        if now < self._next_at:
            self._sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + self.interval

    def on_throttled(self, retry_after_seconds: float) -> None:
        """Back off for ``retry_after_seconds`` and never again go faster than one request per it."""
        self.throttled += 1
        self.interval = max(self.interval, retry_after_seconds)
        self._next_at = max(self._next_at, self._monotonic() + retry_after_seconds)

    def seconds_for(self, requests: int) -> float:
        """Return how long ``requests`` more requests take at the current pace."""
        return requests * self.interval


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class Fetcher:
    """GET requests to one provider with pacing, retries and raw preservation.

    Parameters
    ----------
    provider : str
        Provider name recorded in the raw manifest.
    base_url : str
        Real endpoint or emulator; the only thing that differs between them.
    raw : RawStore
        Where every response body goes, before parsing.
    clock : Clock
        Stamps ``received_at`` of raw rows.
    limiter : RateLimiter
        Client-side pacing.
    retry : RetryPolicy
        Retries and timeouts.
    headers : Mapping[str, str]
        Extra request headers (may hold a credential: it is sent, never recorded or logged).
    is_throttled : callable
        Tells from a 200 body whether the provider refused for rate (Kraken answers 200 with an error).
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        raw: RawStore,
        clock: Clock,
        limiter: RateLimiter,
        retry: RetryPolicy,
        headers: Mapping[str, str] | None = None,
        is_throttled: Callable[[bytes], bool] = lambda body: False,
    ) -> None:
        self.provider = provider
        self._raw = raw
        self._clock = clock
        self.limiter = limiter
        self._retry = retry
        self._is_throttled = is_throttled
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers={"User-Agent": "acts-data/1", **(headers or {})},
            timeout=retry.timeout_seconds,
        )  # fmt: skip
        self.requests = 0
        self.retries = 0
        self._quota_note: str | None = None
        self.last_record: RawRecord | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def get(self, endpoint: str, params: Mapping[str, object]) -> Fetched:
        """GET ``endpoint`` with ``params``; return the first 200 response that is not a rate refusal.

        Raises
        ------
        ProviderError
            After ``max_attempts`` failures, or at once on a 4xx other than 429 (naming the status
            and the provider's message), or when an earlier response reported the quota used up.
        """
        if self._quota_note is not None:
            raise ProviderError(f"{self.provider} request quota used up ({self._quota_note}); not sending {endpoint}")
        query = {k: str(v) for k, v in params.items()}
        failure = ""
        for attempt in range(1, self._retry.max_attempts + 1):
            if attempt > 1:
                self.retries += 1
            self.limiter.acquire()
            self.requests += 1
            try:
                response = self._client.get(endpoint, params=query)
            except httpx.HTTPError as error:  # timeouts, refused or dropped connections
                failure = f"{type(error).__name__}"
                self.limiter.on_throttled(self._retry.backoff(attempt))
                continue
            body = response.content
            record = self._raw.put(self.provider, endpoint, query, body, self._clock.now_ms(), response.status_code)
            self.last_record = record
            status = response.status_code
            if status == 429 or (status == 200 and self._is_throttled(body)):
                wait = _retry_after(response.headers)
                self.limiter.on_throttled(wait if wait is not None else self._retry.backoff(attempt))
                failure = f"HTTP {status} rate limited"
                continue
            if status >= 500 and status != 550:  # CoinAPI's 550 means "no such data": retrying cannot help
                self.limiter.on_throttled(self._retry.backoff(attempt))
                failure = f"HTTP {status}"
                continue
            if status != 200:
                message = body[:200].decode("utf-8", "replace")
                raise ProviderError(f"{self.provider} {endpoint} answered HTTP {status}: {message}")
            remaining = response.headers.get("x-ratelimit-remaining")
            if remaining is not None and remaining.lstrip("-").isdigit() and int(remaining) <= 0:
                # This page is good; the next request would be refused until the quota resets.
                reset = response.headers.get("x-ratelimit-reset", "unknown")
                self._quota_note = f"x-ratelimit-remaining={remaining}, resets {reset}"
            return Fetched(endpoint, query, record, body)
        raise ProviderError(
            f"{self.provider} {endpoint} failed {self._retry.max_attempts} times; last failure: {failure}"
        )
