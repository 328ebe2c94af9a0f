"""Kraken public market data through ccxt, with every body in the raw store before anything parses it.

:class:`CcxtKrakenFetcher` offers the :class:`backend.data.providers.base.Fetcher` interface (``get``,
``limiter``, ``last_record``) on top of ccxt's implicit Kraken methods, so the backfill's providers
(:class:`backend.data.providers.kraken_public.KrakenOhlcProvider`) and the ingestion pipeline
(raw store, parse, reconciliation evidence, lake) run unchanged on it. ccxt paces the calls; a
rate limit, a 5xx or a timeout is retried with back-off, any other refusal is a ``ProviderError``.
:meth:`CcxtKrakenFetcher.get_many` sends a whole poll's requests, then keeps all their answers in one
synced raw-store transaction before returning them (the live feed's path).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

import ccxt

from backend.data.providers.base import Fetched, RateLimiter
from backend.data.raw import RawEntry, RawRecord, RawStore
from backend.clock import Clock
from backend.errors import ProviderError
from backend.kraken.client import KrakenErrorClass, classify, kraken_error_of

_METHODS = {
    "/0/public/OHLC": "publicGetOHLC",
    "/0/public/Time": "publicGetTime",
    "/0/public/SystemStatus": "publicGetSystemStatus",
    "/0/public/Assets": "publicGetAssets",
    "/0/public/AssetPairs": "publicGetAssetPairs",
    "/0/public/Trades": "publicGetTrades",
}
RETRIED = frozenset({KrakenErrorClass.RATE_LIMIT, KrakenErrorClass.UNAVAILABLE, KrakenErrorClass.TIMEOUT})


class CcxtKrakenFetcher:
    """Public Kraken GETs through a ccxt client; raw bodies kept first; retried on throttling and outages.

    Parameters
    ----------
    client : ccxt.kraken
        From :func:`backend.kraken.client.make_client` (its response hook is taken over).
    raw : RawStore
        The raw store the backfill uses.
    clock : Clock
        Stamps ``received_at`` of raw rows.
    sleep : callable
        Waits between retries.
    max_attempts, backoff_seconds : int, float
        Retry bound and first back-off (doubled each retry).
    """

    provider = "kraken_public"  # the raw manifest name the backfill uses

    def __init__(self, client: ccxt.kraken, raw: RawStore, clock: Clock, sleep: Callable[[float], None] = time.sleep,
                 max_attempts: int = 4, backoff_seconds: float = 0.5) -> None:  # fmt: skip
        self.client = client
        self._raw = raw
        self._clock = clock
        self._sleep = sleep
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.limiter = RateLimiter(None, time.monotonic, sleep)  # ccxt paces; the ingestor only reads .interval
        self.last_record: RawRecord | None = None
        self.requests = 0
        self.retries = 0
        self.failures: list[str] = []  # the class and Kraken error of every retried failure, oldest first
        self._query: dict[str, str] = {}
        self._held: list[RawEntry] = []
        client.response_hook = self._keep

    def _keep(self, status: int, url: str, body: str) -> None:
        # Only held here: the poll's answers are kept together, in one synced append, before anything reads them.
        self._held.append(RawEntry(self.provider, urlsplit(url).path, dict(self._query), body.encode("utf-8"),
                                   self._clock.now_ms(), status))  # fmt: skip

    def close(self) -> None:
        """Nothing to close: the ccxt session belongs to the client."""

    def get(self, endpoint: str, params: Mapping[str, object]) -> Fetched:
        """GET ``endpoint`` through ccxt; return the kept body of the first good answer.

        Raises
        ------
        ProviderError
            For an endpoint ccxt is not asked to serve here, for a permanent refusal, or after
            ``max_attempts`` throttled, failed or timed-out attempts.
        """
        (answer,) = self.get_many([(endpoint, params)])
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    def get_many(self, requests: Sequence[tuple[str, Mapping[str, object]]]) -> list[Fetched | ProviderError]:
        """GET every request in order (each retried as :meth:`get` does); keep every answer, then read them.

        Every response received (failed attempts too) is kept by one :meth:`RawStore.put_many` after
        the last request: bodies are durable before any caller sees them. A request that fails is
        answered by its ``ProviderError``; the others still run.
        """
        self._held = []
        outcomes: list[int | ProviderError] = []  # a good answer's index in the held responses, or the failure
        for endpoint, params in requests:
            try:
                outcomes.append(self._request(endpoint, params))
            except ProviderError as error:
                outcomes.append(error)
        held, self._held = self._held, []
        records = self._raw.put_many(held)
        self.last_record = records[-1] if records else None
        return [outcome if isinstance(outcome, ProviderError)
                else Fetched(held[outcome].endpoint, dict(held[outcome].params), records[outcome], held[outcome].body)
                for outcome in outcomes]  # fmt: skip

    def kept(self, record_ids: Sequence[int]) -> tuple[Fetched, ...]:
        """Return the answers already kept under ``record_ids``, read back from the raw store (digest checked)."""
        records = [self._raw.get(record_id) for record_id in record_ids]
        return tuple(Fetched(r.endpoint, json.loads(r.params), r, self._raw.read(r)) for r in records)

    def _request(self, endpoint: str, params: Mapping[str, object]) -> int:
        method = _METHODS.get(endpoint)
        if method is None:
            raise ProviderError(f"kraken {endpoint} is not a public endpoint the feed reads; known: {sorted(_METHODS)}")
        self._query = {k: str(v) for k, v in params.items()}
        for attempt in range(1, self.max_attempts + 1):
            self.requests += 1
            try:
                getattr(self.client, method)(dict(self._query))
            except ccxt.BaseError as error:
                error_class = classify(error)
                detail = f"{error_class.value}: {kraken_error_of(str(error))[:200]}"
                if error_class not in RETRIED:
                    raise ProviderError(f"kraken {endpoint} refused: {detail}") from None
                self.failures.append(detail)
                if attempt < self.max_attempts:
                    self.retries += 1
                    self._sleep(self.backoff_seconds * 2 ** (attempt - 1))
                continue
            return len(self._held) - 1  # ccxt calls the hook for every response it returns
        raise ProviderError(f"kraken {endpoint} failed {self.max_attempts} times; last: {self.failures[-1]}")
