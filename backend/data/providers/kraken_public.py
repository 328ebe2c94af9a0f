"""Kraken public REST: Time, SystemStatus, Assets, AssetPairs, OHLC (720 recent bars), Trades (full history).

Kraken answers API errors, rate limits included, as HTTP 200 with a non-empty ``error`` list; the
fetcher treats ``EAPI:Rate limit exceeded`` and ``EService:*`` as throttling and retries them.
"""

from __future__ import annotations

import json

import polars as pl

from backend.config.schema import AssetSpec
from backend.data.lake import TIMEFRAME_MS
from backend.data.normalize import (
    TRADES_SCHEMA,
    BadPayload,
    PayloadProblem,
    batch_id_for,
    bars_from_trades,
    parse_kraken_ohlc,
    parse_kraken_trades,
)
from backend.data.providers.base import Fetched, Fetcher, OhlcvPage, closed_since

INTERVAL_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}
TRADES_PER_PAGE = 1000


def is_throttled(body: bytes) -> bool:
    """Return True when a Kraken 200 body refuses for rate or service reasons (worth retrying)."""
    return len(body) < 4096 and (b"EAPI:Rate limit exceeded" in body or b'"EService:' in body)


class KrakenPublic:
    """Kraken's public endpoints; every body is kept raw by the fetcher before it is read."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher

    def _result(self, endpoint: str, params: dict[str, object]) -> dict:
        fetched = self.fetcher.get(endpoint, params)
        try:
            payload = json.loads(fetched.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadPayload(PayloadProblem.MALFORMED, f"Kraken {endpoint} body is not JSON ({error})") from None
        if not isinstance(payload, dict) or payload.get("error") or not isinstance(payload.get("result"), dict):
            detail = payload.get("error") if isinstance(payload, dict) else payload
            raise BadPayload(PayloadProblem.API_ERROR, f"Kraken {endpoint}: {detail}")
        return payload["result"]

    def server_time_ms(self) -> int:
        """Return Kraken's clock (``/0/public/Time``) in UTC ms."""
        return int(self._result("/0/public/Time", {})["unixtime"]) * 1000

    def system_status(self) -> str:
        """Return ``online``, ``maintenance``, ``cancel_only`` or ``post_only``."""
        return str(self._result("/0/public/SystemStatus", {})["status"])

    def assets(self) -> dict:
        """Return ``/0/public/Assets`` keyed by asset key."""
        return self._result("/0/public/Assets", {})

    def asset_pairs(self, altnames: list[str]) -> dict:
        """Return ``/0/public/AssetPairs`` for ``altnames``, keyed by pair key."""
        return self._result("/0/public/AssetPairs", {"pair": ",".join(altnames)})


class KrakenOhlcProvider:
    """Bars from ``/0/public/OHLC``: only the 720 most recent, the provisional newest one dropped.

    Parameters
    ----------
    fetcher : Fetcher
        HTTP shell for the Kraken public base URL.
    source : str
        Lake source name of the bars.
    """

    confirms_gaps = False  # only the 720 newest bars are served: an old hole cannot be confirmed

    def __init__(self, fetcher: Fetcher, source: str = "kraken") -> None:
        self.fetcher = fetcher
        self.source = source

    def history_start_ms(self, asset: AssetSpec) -> int | None:
        """Return None: OHLC serves only the newest 720 bars, whatever the history."""
        return None

    def request(self, asset: AssetSpec, timeframe: str, cursor_ms: int) -> tuple[str, dict[str, object]]:
        """Return the endpoint and parameters asking for bars opening at or after ``cursor_ms`` (``since`` is exclusive, in seconds)."""
        return "/0/public/OHLC", {"pair": asset.kraken.altname, "interval": INTERVAL_MINUTES[timeframe], "since": cursor_ms // 1000 - 1}

    def fetch(self, asset: AssetSpec, timeframe: str, cursor_ms: int, end_ms: int | None = None) -> tuple[Fetched, ...]:
        """Request committed bars opening at or after ``cursor_ms``."""
        return (self.fetcher.get(*self.request(asset, timeframe, cursor_ms)),)

    def parse(
        self, fetched: tuple[Fetched, ...], asset: AssetSpec, timeframe: str, cursor_ms: int, now_ms: int
    ) -> OhlcvPage:
        """Keep committed, closed bars at or after the cursor; one request returns everything there is."""
        (page,) = fetched
        batch_id = batch_id_for(self.source, [page.record.sha256])
        parsed = parse_kraken_ohlc(page.body, asset.kraken.pair_key, asset.symbol, timeframe, self.source, batch_id)
        bars, next_cursor = closed_since(parsed.bars, cursor_ms, TIMEFRAME_MS[timeframe], now_ms)
        return OhlcvPage(bars, (page.record,), next_cursor, True)


class KrakenTradesProvider:
    """Bars rebuilt from ``/0/public/Trades``, paged with ``since``/``last`` (nanoseconds) from any point in history.

    A fetch reads pages until the trades reach past the cursor's bar or the provider has nothing
    newer, so one busy bar spanning several pages is never cut. Only bars whose period has ended
    (before the bar of the newest trade, or before ``now`` once caught up) are emitted; the cursor
    stays at the first open bar, whose trades are read again next time.

    Parameters
    ----------
    fetcher : Fetcher
        HTTP shell for the Kraken public base URL.
    source : str
        Lake source name of the rebuilt bars.
    max_pages : int
        Upper bound of pages per fetch.
    """

    confirms_gaps = True  # no trade in a period means no bar

    def __init__(self, fetcher: Fetcher, source: str = "kraken_trades", max_pages: int = 1000) -> None:
        self.fetcher = fetcher
        self.source = source
        self.max_pages = max_pages

    def history_start_ms(self, asset: AssetSpec) -> int | None:
        """Return None: the first Trades page (``since`` at the cursor) finds the start."""
        return None

    def fetch(self, asset: AssetSpec, timeframe: str, cursor_ms: int, end_ms: int | None = None) -> tuple[Fetched, ...]:
        """Read trades after ``cursor_ms - 1 ns`` until they pass the cursor's bar or run out."""
        bar_ms = TIMEFRAME_MS[timeframe]
        since = cursor_ms * 1_000_000 - 1
        pages: list[Fetched] = []
        for _ in range(self.max_pages):
            page = self.fetcher.get("/0/public/Trades", {"pair": asset.kraken.altname, "since": since,
                                                          "count": TRADES_PER_PAGE})  # fmt: skip
            pages.append(page)
            parsed = parse_kraken_trades(page.body, asset.kraken.pair_key)
            if parsed.trades.height < TRADES_PER_PAGE or parsed.last_ns <= since:
                break
            since = parsed.last_ns
            if since // 1_000_000 // bar_ms * bar_ms > cursor_ms:
                break
        return tuple(pages)

    def parse(
        self, fetched: tuple[Fetched, ...], asset: AssetSpec, timeframe: str, cursor_ms: int, now_ms: int
    ) -> OhlcvPage:
        """Rebuild the closed bars from the fetched trades."""
        bar_ms = TIMEFRAME_MS[timeframe]
        frames = [pl.DataFrame(schema=TRADES_SCHEMA)]
        caught_up = True
        for page in fetched:
            parsed = parse_kraken_trades(page.body, asset.kraken.pair_key)
            frames.append(parsed.trades)
            caught_up = parsed.trades.height < TRADES_PER_PAGE
        trades = pl.concat(frames).filter(pl.col("ts_ns") >= cursor_ms * 1_000_000)
        if caught_up:
            complete_before = now_ms // bar_ms * bar_ms
        else:
            complete_before = int(trades["ts_ns"].max()) // 1_000_000 // bar_ms * bar_ms  # type: ignore[arg-type]
        batch_id = batch_id_for(self.source, [page.record.sha256 for page in fetched])
        bars = bars_from_trades(trades, asset.symbol, timeframe, self.source, batch_id, complete_before)
        next_cursor = max(cursor_ms, complete_before)
        return OhlcvPage(bars, tuple(page.record for page in fetched), next_cursor, caught_up)
