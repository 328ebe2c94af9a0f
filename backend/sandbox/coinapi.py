"""CoinAPI Market Data REST emulator (``/v1/*``), wire-compatible with rest.coinapi.io.

Authenticated by ``X-CoinAPI-Key`` (or the ``apikey`` query parameter); a wrong or missing key gets
401 ``{"message": "Invalid API key"}``. Every authenticated response carries the ``X-RateLimit-*``
and ``X-ConcurrencyLimit-*`` headers; a request costs 1 credit, or 1 per 100 items returned when
``limit`` was given. Rate limits answer 429 with ``Retry-After``. Errors are ``{"message": ...}``.
Times are ISO 8601 with seven fractional digits; prices and volumes are JSON numbers. See
``EXCHANGE_API_FACTS.md`` section 10 and 12.2.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from backend.config.schema import AssetSpec, UniverseSpec
from backend.sandbox.bars import Bars
from backend.sandbox.faults import Admission, FaultSpec, retry_after_header
from backend.sandbox.server import Emulator, Request, Response

DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000
ITEMS_PER_CREDIT = 100
CONCURRENCY_LIMIT = 10
DAY_MS = 86_400_000
_UNIT_MS = {"SEC": 1_000, "MIN": 60_000, "HRS": 3_600_000, "DAY": DAY_MS}
# CoinAPI's period ids (GET /v1/ohlcv/periods) that have a fixed length; months and years do not.
PERIOD_IDS = {
    f"{n}{unit}": n * _UNIT_MS[unit]
    for unit, counts in (
        ("SEC", (1, 2, 3, 4, 5, 6, 10, 15, 20, 30)),
        ("MIN", (1, 2, 3, 4, 5, 6, 10, 15, 20, 30)),
        ("HRS", (1, 2, 3, 4, 6, 8, 12)),
        ("DAY", (1, 2, 3, 5, 7, 10)),
    )
    for n in counts
}
_OHLCV_PATH = re.compile(r"^/v1/ohlcv/([^/]+)/(history|latest)$")
_TRADES_PATH = re.compile(r"^/v1/trades/([^/]+)/history$")
_UUID_NAMESPACE = uuid.UUID("6f1b7c1e-2d0a-4f5e-9a57-0c3f4d1e8b21")


def iso7(ts_ns: int) -> str:
    """Return CoinAPI's time text: ``2017-01-01T00:00:00.0000000Z`` (UTC, 100 ns digits)."""
    seconds, rest = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 100:07d}Z"


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps({"message": message}).encode(), headers or {})


class _BadRequest(Exception):
    pass


def _parse_time(params: dict[str, str], name: str) -> int | None:
    text = params.get(name, "")
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise _BadRequest(f"Invalid value of parameter '{name}': {text!r} is not an ISO 8601 time") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _limit(params: dict[str, str]) -> int:
    text = params.get("limit", "")
    if not text:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise _BadRequest(f"Invalid value of parameter 'limit': must be an integer in [1, {MAX_LIMIT}], was {text!r}")
    return int(text)


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "false").lower() == "true"


class CoinApiEmulator(Emulator):
    """Serve CoinAPI's OHLCV history, trades history and symbols from bars (and trades) on 127.0.0.1.

    Parameters
    ----------
    bars, timeframe, faults, trades, universe, now_ms, port
        As :class:`backend.sandbox.kraken.KrakenEmulator`; ``period_id`` values equal to or coarser
        than ``timeframe`` (and multiples of it) are rolled up from the bars.
    api_key : str
        The only key accepted.
    credit_quota : int
        Credits of the (never resetting) quota window; past it every request is 429.
    """

    def __init__(
        self,
        bars: pl.DataFrame,
        timeframe: str = "5m",
        faults: FaultSpec = FaultSpec(),
        trades: pl.DataFrame | None = None,
        universe: UniverseSpec | None = None,
        api_key: str = "sandbox-key",
        now_ms: Callable[[], int] | None = None,
        port: int = 0,
        credit_quota: int = 1_000_000,
    ) -> None:
        super().__init__(bars, timeframe, faults, trades, universe, now_ms, port)
        self._api_key = api_key
        self._quota = credit_quota
        self._used = 0
        self._credit_lock = threading.Lock()
        self._by_id: dict[str, AssetSpec] = {a.coinapi_symbol_id: a for a in self.assets.values()}
        self._started_ms = self.wall_ms()

    # ------------------------------------------------------------- pipeline hooks
    def _limit_headers(self, cost: int) -> dict[str, str]:
        reset = datetime.fromtimestamp(self._started_ms / 1000, tz=UTC) + timedelta(days=1)
        return {
            "X-RateLimit-Limit": str(self._quota),
            "X-RateLimit-Remaining": str(self._quota - self._used),
            "X-RateLimit-Used": str(self._used),
            "X-RateLimit-Request-Cost": str(cost),
            "X-RateLimit-Reset": iso7(int(reset.timestamp()) * 1_000_000_000),
            "X-RateLimit-Overage": "disabled",
            "X-ConcurrencyLimit-Limit": str(CONCURRENCY_LIMIT),
            "X-ConcurrencyLimit-Remaining": str(CONCURRENCY_LIMIT),
        }

    def precheck(self, request: Request) -> Response | None:
        """Refuse a wrong or missing key (401) and an exhausted quota (429) before counting."""
        key = request.headers.get("x-coinapi-key") or request.params.get("apikey") or request.headers.get("authorization")
        if key != self._api_key:
            return _message(401, "Invalid API key")
        if self._used >= self._quota:
            headers = self._limit_headers(0) | {"Retry-After": retry_after_header(DAY_MS / 1000)}
            return _message(429, "Too many requests - You have exceeded your API key rate limits", headers)
        return None

    def handle(self, request: Request) -> Response:
        """Answer, charge the request's credits and add the rate-limit headers."""
        response = super().handle(request)
        if response.status in (401, 429):
            return response
        cost = int(response.headers.get("X-RateLimit-Request-Cost", "0"))
        with self._credit_lock:
            self._used += cost
            headers = response.headers | self._limit_headers(cost)
        return replace(response, headers=headers)

    def fault_response(self, admission: Admission) -> Response:
        """429 with Retry-After for rate limits, ``{"message": ...}`` 5xx for server errors."""
        if admission.status == 429:
            headers = self._limit_headers(0) | {"Retry-After": retry_after_header(admission.retry_after_seconds)}
            return _message(429, "Too many requests - You have exceeded your API key rate limits", headers)
        return _message(admission.status, "Internal Server Error")

    def route(self, request: Request, admission: Admission) -> Response:
        """Dispatch ``/v1/ohlcv``, ``/v1/trades`` and ``/v1/symbols``; unknown paths are 404."""
        try:
            if request.path == "/v1/symbols":
                return self._symbols(request)
            match = _OHLCV_PATH.match(request.path)
            if match:
                return self._ohlcv(request, admission, match.group(1), latest=match.group(2) == "latest")
            match = _TRADES_PATH.match(request.path)
            if match:
                return self._trades(request, match.group(1))
        except _BadRequest as error:
            return _message(400, str(error))
        return _message(404, f"Not found: {request.path}")

    # ------------------------------------------------------------- endpoints
    def _ohlcv(self, request: Request, admission: Admission, symbol_id: str, latest: bool) -> Response:
        params = request.params
        period_id = params.get("period_id", "")
        if period_id not in PERIOD_IDS:
            raise _BadRequest(f"Invalid value of parameter 'period_id': {period_id!r}")
        period_ms = PERIOD_IDS[period_id]
        if period_ms % self.bar_ms:
            raise _BadRequest(f"period_id {period_id!r} is not served by this emulator (bars are {self.timeframe})")
        if _flag(params, "include_empty_items"):
            raise _BadRequest("include_empty_items=true is not served by this emulator")
        limit = _limit(params)
        start_ms, end_ms = _parse_time(params, "time_start"), _parse_time(params, "time_end")
        if symbol_id.upper() not in self._by_id:
            return _no_data()
        asset = self._by_id[symbol_id.upper()]
        bars = self.data.bars(asset.symbol, admission.number, self.faults, self.now_ms(), period_ms)
        if latest:
            chosen = np.arange(len(bars))[::-1][:limit]
        else:
            lo = 0 if start_ms is None else int(np.searchsorted(bars.ts, start_ms, side="left"))
            hi = len(bars) if end_ms is None else int(np.searchsorted(bars.ts, end_ms, side="left"))
            chosen = np.arange(lo, min(hi, lo + limit))
        rows = bars.take(chosen)
        if len(rows):
            first, last = sorted((int(rows.ts[0]), int(rows.ts[-1])))
            self.data.mark_served(asset.symbol, self.faults, admission.number, first, last, period_ms)
        rows = rows.take(self.faults.page_order(rows.ts))
        body = json.dumps(_ohlcv_items(rows, period_ms), separators=(",", ":")).encode()
        return Response(200, body, {"X-RateLimit-Request-Cost": str(_cost(params, len(rows)))})

    def _trades(self, request: Request, symbol_id: str) -> Response:
        params = request.params
        limit = _limit(params)
        start_ms = _parse_time(params, "time_start")
        start_ms = _parse_time(params, "date") if start_ms is None else start_ms
        if start_ms is None:
            raise _BadRequest("Parameter 'date' or 'time_start' is required")
        day_end = start_ms - start_ms % DAY_MS + DAY_MS
        end_ms = _parse_time(params, "time_end")
        if end_ms is not None and end_ms > day_end:
            raise _BadRequest("Parameters 'time_start' and 'time_end' must be from the same day")
        if symbol_id.upper() not in self._by_id:
            return _no_data()
        asset = self._by_id[symbol_id.upper()]
        frame = self.data.trades(asset.symbol, self.now_ms())
        items: list[dict[str, object]] = []
        if frame is not None:
            end_ns = (end_ms if end_ms is not None else day_end) * 1_000_000
            page = frame.filter((pl.col("ts_ns") >= start_ms * 1_000_000) & (pl.col("ts_ns") < end_ns)).head(limit)
            include_id = _flag(params, "include_id")
            for ns, price, size, side, trade_id in page.select("ts_ns", "price", "volume", "side", "trade_id").iter_rows():
                item: dict[str, object] = {
                    "symbol_id": asset.coinapi_symbol_id,
                    "time_exchange": iso7(ns),
                    "time_coinapi": iso7(ns + 50_000_000),
                    "uuid": str(uuid.uuid5(_UUID_NAMESPACE, f"{asset.coinapi_symbol_id}/{trade_id}")),
                    "price": price,
                    "size": size,
                    "taker_side": "BUY" if side == "b" else "SELL",
                }
                if include_id:
                    item["id_trade"] = str(trade_id)
                items.append(item)
        body = json.dumps(items, separators=(",", ":")).encode()
        return Response(200, body, {"X-RateLimit-Request-Cost": str(_cost(params, len(items)))})

    def _symbols(self, request: Request) -> Response:
        params = request.params
        exchange = params.get("filter_exchange_id", "")
        parts = [p for p in re.split("[,;]", params.get("filter_symbol_id", "")) if p]
        assets_wanted = {p.upper() for p in re.split("[,;]", params.get("filter_asset_id", "")) if p}
        spans = self.data.first_last_ms
        items: list[dict[str, object]] = []
        for asset in self.assets.values():
            symbol_id = asset.coinapi_symbol_id
            base = symbol_id.removeprefix("KRAKEN_SPOT_").removesuffix("_USD")
            if exchange and exchange.upper() != "KRAKEN":
                continue
            if parts and not any(part.upper() in symbol_id for part in parts):
                continue
            if assets_wanted and not assets_wanted & {base, "USD"}:
                continue
            item: dict[str, object] = {
                "symbol_id": symbol_id,
                "exchange_id": "KRAKEN",
                "symbol_type": "SPOT",
                "asset_id_base": base,
                "asset_id_quote": "USD",
                "symbol_id_exchange": asset.kraken.pair_key,
                "asset_id_base_exchange": asset.kraken.altname.removesuffix("USD"),
                "asset_id_quote_exchange": "USD",
                "size_precision": 1e-08,
            }
            if asset.symbol in spans:
                first, last = spans[asset.symbol]
                item["data_start"] = iso7(first * 1_000_000)[:10]
                item["data_end"] = iso7(last * 1_000_000)[:10]
            items.append(item)
        return Response(200, json.dumps(items, separators=(",", ":")).encode(), {"X-RateLimit-Request-Cost": "1"})


def _no_data() -> Response:
    return _message(550, "You requested specific single item that we don't have at this moment.")


def _cost(params: dict[str, str], items: int) -> int:
    if "limit" not in params:
        return 1
    return max(1, math.ceil(items / ITEMS_PER_CREDIT))


def _iso7_ms(ts_ms: np.ndarray) -> list[str]:
    """Vectorised :func:`iso7` for millisecond times."""
    text = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms")
    return np.char.add(text.astype(str), "0000Z").tolist()


def _ohlcv_items(bars: Bars, period_ms: int) -> list[dict[str, object]]:
    columns = zip(
        _iso7_ms(bars.ts), _iso7_ms(bars.ts + period_ms), _iso7_ms(bars.ts + period_ms - 1_000),
        bars.open.tolist(), bars.high.tolist(), bars.low.tolist(), bars.close.tolist(),
        bars.volume.tolist(), bars.count.tolist(), strict=True,
    )  # fmt: skip
    return [
        {
            "time_period_start": start,
            "time_period_end": end,
            "time_open": start,
            "time_close": close_time,
            "price_open": o,
            "price_high": h,
            "price_low": low,
            "price_close": c,
            "volume_traded": v,
            "trades_count": n,
        }
        for start, end, close_time, o, h, low, c, v, n in columns
    ]
