"""Kraken spot public REST emulator (``/0/public/*``), wire-compatible with api.kraken.com.

Envelope ``{"error": [], "result": {...}}``; API errors are HTTP 200 with a non-empty ``error`` list
(``{"error": ["EQuery:Unknown asset pair"], "result": {}}``). Prices and volumes are decimal strings,
results are keyed by the pair key whatever alias was asked. OHLC serves the 720 most recent committed
bars plus the provisional current bar (always last, whatever ``since``); ``last`` is the open time of
the newest committed bar. Trades page with ``since``/``last`` (nanoseconds; a ``since`` below 10^11
is read as seconds). See ``EXCHANGE_API_FACTS.md`` sections 1, 2, 5 and 12.1.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import numpy as np
import polars as pl

from backend.config.schema import AssetSpec, UniverseSpec
from backend.sandbox.bars import Bars
from backend.sandbox.faults import Admission, FaultSpec, PrivateFault
from backend.sandbox.kraken_account import KrakenAccount, Market, PrivateError, call, parse_json_body
from backend.sandbox.server import Emulator, Request, Response

PRIVATE_PREFIX = "/0/private/"

OHLC_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)  # minutes
OHLC_MAX_COMMITTED = 720
TRADES_MAX_COUNT = 1000
SECONDS_SINCE_BELOW = 10**11  # a Trades `since` below this is seconds, otherwise nanoseconds

# Kraken's 2025 spot fee schedule for USD pairs (volume in USD, percent), as AssetPairs serves it.
TAKER_FEES = [[0, 0.4], [10000, 0.35], [50000, 0.24], [100000, 0.22], [250000, 0.2], [500000, 0.18],
              [1000000, 0.16], [2500000, 0.14], [5000000, 0.12], [10000000, 0.1]]  # fmt: skip
MAKER_FEES = [[0, 0.25], [10000, 0.2], [50000, 0.14], [100000, 0.12], [250000, 0.1], [500000, 0.08],
              [1000000, 0.06], [2500000, 0.04], [5000000, 0.02], [10000000, 0.0]]  # fmt: skip
# Legacy assets keep an X-prefixed key whose altname differs from the pair altname's base.
_LEGACY_ASSET_KEYS = {"XDG": "XXDG"}

_CLOUDFLARE_BODY = (
    "<html><head><title>{status} Bad Gateway</title></head><body><center><h1>{status}</h1></center>"
    "<hr><center>cloudflare</center></body></html>"
)


def decimal_text(value: float) -> str:
    """Return the shortest decimal text that reads back as ``value``, never in exponent form."""
    text = repr(float(value))
    if "e" in text:
        text = np.format_float_positional(value, unique=True, trim="0")
    return text


def _base_asset(asset: AssetSpec) -> tuple[str, str]:
    """Return (asset key, asset altname) of the pair's base, e.g. (XXBT, XBT), (SOL, SOL)."""
    pair = asset.kraken
    altname = pair.altname.removesuffix("USD")
    if pair.pair_key.endswith("ZUSD") and len(pair.pair_key) == 8:
        return pair.pair_key[:4], altname
    return _LEGACY_ASSET_KEYS.get(altname, altname), altname


def _pair_decimals(price: float) -> int:
    """Price decimals giving about six significant digits (BTC 1, ETH 2, XRP 6), clamped to 0..10."""
    if not 0.0 < price < math.inf:  # bad data is served as it is; NaN fails this test too
        return 5
    return min(10, max(0, 6 - (math.floor(math.log10(price)) + 1)))


def _json(result: object, errors: list[str] | None = None) -> Response:
    body = {"error": errors or [], "result": result}
    return Response(200, json.dumps(body, separators=(",", ":")).encode())


def _error(message: str) -> Response:
    return _json({}, [message])


def _decimal_param(params: dict[str, str], name: str) -> Decimal | None:
    text = params.get(name, "")
    if text == "":
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise _InvalidArguments(name) from error
    if not value.is_finite():
        raise _InvalidArguments(name)
    return value


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    value = _decimal_param(params, name)
    return default if value is None else int(value)


class _InvalidArguments(Exception):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class KrakenEmulator(Emulator):
    """Serve Kraken's public market-data REST API from bars (and trades) on 127.0.0.1.

    Parameters
    ----------
    bars : pl.DataFrame
        Canonical lake bars (``ts`` ms bar open, ``symbol``, OHLCV; optional ``vwap``, ``trades``).
    timeframe : str
        Their bar length; OHLC serves that interval and coarser Kraken intervals rolled up from it.
    faults : FaultSpec
        Faults to inject (deterministic).
    trades : pl.DataFrame or None
        Trades (``ts_ms, symbol, price, volume, side, ordertype, trade_id``); None serves none.
    universe : UniverseSpec or None
        Pair names; default the composed ``conf/universe`` of the default run.
    now_ms : Callable[[], int] or None
        The emulator's now: bars opening later are not served yet. None serves every bar.
    port : int
        Port on 127.0.0.1; 0 picks a free one.
    account : KrakenAccount or None
        The private API's account (keys, balances, orders); default an account holding 10,000 USD.
    """

    def __init__(
        self,
        bars: pl.DataFrame,
        timeframe: str = "5m",
        faults: FaultSpec = FaultSpec(),
        trades: pl.DataFrame | None = None,
        universe: UniverseSpec | None = None,
        now_ms: Callable[[], int] | None = None,
        port: int = 0,
        account: KrakenAccount | None = None,
    ) -> None:
        super().__init__(bars, timeframe, faults, trades, universe, now_ms, port)
        self.account = account if account is not None else KrakenAccount()
        self._account_lock = threading.Lock()
        self._caller = threading.local()  # the authenticated key of the request this thread serves
        self._by_name: dict[str, AssetSpec] = {}
        for asset in self.assets.values():
            pair = asset.kraken
            for name in (pair.pair_key, pair.altname, pair.wsname, f"{asset.symbol}/USD", f"{asset.symbol}USD"):
                self._by_name.setdefault(name.upper(), asset)
        self._decimals = {symbol: self._price_decimals(symbol) for symbol in self.assets}
        self._routes: dict[str, Callable[[Request, Admission], Response]] = {
            "/0/public/Time": self._time,
            "/0/public/SystemStatus": self._system_status,
            "/0/public/Assets": self._assets,
            "/0/public/AssetPairs": self._asset_pairs,
            "/0/public/Ticker": self._ticker,
            "/0/public/OHLC": self._ohlc,
            "/0/public/Trades": self._trades,
        }

    def _price_decimals(self, symbol: str) -> int:
        bars = self.data.bars(symbol, 0, self.faults, None)
        return _pair_decimals(float(bars.close[0])) if len(bars) else 5

    # ------------------------------------------------------------- pipeline hooks
    def precheck(self, request: Request) -> Response | None:
        """Authenticate a private call (key, signature, nonce) before it is counted; a refusal is answered here."""
        if not request.path.startswith(PRIVATE_PREFIX):
            return None
        if request.method != "POST":
            return _error("EGeneral:Invalid arguments:method")
        try:
            params = parse_json_body(request.body) if "json" in request.headers.get("content-type", "") else request.params
            with self._account_lock:
                record = self.account.authenticate(request.path, request.headers, request.body, params, self.wall_ms() // 1000)
        except PrivateError as error:
            return _error(error.message)
        self._caller.auth = (record, params)
        return None

    def _private(self, request: Request) -> Response:
        record, params = self._caller.auth
        method = request.path.removeprefix(PRIVATE_PREFIX)
        now_s = self.wall_ms() / 1000.0
        with self._account_lock:
            fault = self.account.scripted_fault(method, self.faults.spec.private_faults)
            if fault is not None and not fault.after_accept:
                return self._fault_answer(fault)
            try:
                result = call(self.account, method, record, params, self._market, now_s)
            except PrivateError as error:
                return _error(error.message)
        return self._fault_answer(fault) if fault is not None else _json(result)

    def _fault_answer(self, fault: PrivateFault) -> Response:
        if fault.error is not None:
            return _error(fault.error)
        if fault.status is not None:
            return Response(fault.status, _CLOUDFLARE_BODY.format(status=fault.status).encode(), content_type="text/html")
        return Response(504, b"", content_type="text/html", delay_seconds=self.faults.spec.timeout_seconds)

    def _market(self, name: str) -> Market | None:
        asset = self._by_name.get(name.strip().upper())
        if asset is None:
            return None
        bars = self.data.bars(asset.symbol, self.faults.request_count, self.faults, self.now_ms())
        if not len(bars):
            raise PrivateError("EService:Unavailable")
        return Market(asset, _base_asset(asset)[0], float(bars.open[-1]))

    def route(self, request: Request, admission: Admission) -> Response:
        """Dispatch an endpoint; unknown paths answer ``EGeneral:Unknown method``."""
        if request.path.startswith(PRIVATE_PREFIX):
            return self._private(request)
        endpoint = self._routes.get(request.path)
        if endpoint is None:
            return _error("EGeneral:Unknown method")
        try:
            return endpoint(request, admission)
        except _InvalidArguments as error:
            return _error(f"EGeneral:Invalid arguments:{error.field}")

    def fault_response(self, admission: Admission) -> Response:
        """Rate limits are API errors (HTTP 200); server errors come from the CDN as HTML."""
        if admission.status == 429:
            return _error("EAPI:Rate limit exceeded")
        body = _CLOUDFLARE_BODY.format(status=admission.status).encode()
        return Response(admission.status, body, content_type="text/html")

    # ------------------------------------------------------------- helpers
    def _pairs(self, params: dict[str, str], required: bool) -> list[AssetSpec] | Response:
        text = params.get("pair", "")
        if not text:
            if required:
                raise _InvalidArguments("pair")
            return list(self.assets.values())
        found: list[AssetSpec] = []
        for name in text.split(","):
            asset = self._by_name.get(name.strip().upper())
            if asset is None:
                return _error("EQuery:Unknown asset pair")
            found.append(asset)
        return found

    def _one_pair(self, params: dict[str, str]) -> AssetSpec | Response:
        pairs = self._pairs(params, required=True)
        if isinstance(pairs, Response):
            return pairs
        if len(pairs) != 1:
            raise _InvalidArguments("pair")
        return pairs[0]

    # ------------------------------------------------------------- endpoints
    def _time(self, request: Request, admission: Admission) -> Response:
        now = datetime.fromtimestamp(self.wall_ms() // 1000, tz=UTC)
        return _json({"unixtime": int(now.timestamp()), "rfc1123": now.strftime("%a, %d %b %y %H:%M:%S +0000")})

    def _system_status(self, request: Request, admission: Admission) -> Response:
        now = datetime.fromtimestamp(self.wall_ms() // 1000, tz=UTC)
        return _json({"status": "online", "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ")})

    def _assets(self, request: Request, admission: Admission) -> Response:
        table = {"ZUSD": {"aclass": "currency", "altname": "USD", "decimals": 4, "display_decimals": 2,
                          "collateral_value": 1, "status": "enabled"}}  # fmt: skip
        for asset in self.assets.values():
            key, altname = _base_asset(asset)
            table[key] = {"aclass": "currency", "altname": altname, "decimals": 10, "display_decimals": 5,
                          "status": "enabled"}  # fmt: skip
        wanted = request.params.get("asset", "")
        if not wanted:
            return _json(dict(sorted(table.items())))
        by_name = {name: key for key, info in table.items() for name in (key, info["altname"])}
        chosen: dict[str, object] = {}
        for name in wanted.split(","):
            key = by_name.get(name.strip().upper())
            if key is None:
                return _error("EQuery:Unknown asset")
            chosen[key] = table[key]
        return _json(chosen)

    def _pair_info(self, asset: AssetSpec) -> dict[str, object]:
        decimals = self._decimals[asset.symbol]
        base, _ = _base_asset(asset)
        return {
            "altname": asset.kraken.altname,
            "wsname": asset.kraken.wsname,
            "aclass_base": "currency",
            "base": base,
            "aclass_quote": "currency",
            "quote": "ZUSD",
            "lot": "unit",
            "cost_decimals": 5,
            "pair_decimals": decimals,
            "lot_decimals": 8,
            "lot_multiplier": 1,
            "leverage_buy": [],
            "leverage_sell": [],
            "fees": TAKER_FEES,
            "fees_maker": MAKER_FEES,
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": decimal_text(asset.ordermin).removesuffix(".0"),
            "costmin": "0.5",
            "tick_size": decimal_text(10.0**-decimals).removesuffix(".0"),
            "status": "online",
            "long_position_limit": 0,
            "short_position_limit": 0,
        }

    def _asset_pairs(self, request: Request, admission: Admission) -> Response:
        pairs = self._pairs(request.params, required=False)
        if isinstance(pairs, Response):
            return pairs
        info = request.params.get("info", "info") or "info"
        fields = {
            "info": None,
            "leverage": ("leverage_buy", "leverage_sell"),
            "fees": ("fees", "fees_maker", "fee_volume_currency"),
            "margin": ("margin_call", "margin_stop"),
        }
        if info not in fields:
            raise _InvalidArguments("info")
        result: dict[str, object] = {}
        for asset in pairs:
            full = self._pair_info(asset)
            keep = fields[info]
            result[asset.kraken.pair_key] = full if keep is None else {k: full[k] for k in keep}
        return _json(result)

    def _ticker(self, request: Request, admission: Admission) -> Response:
        pairs = self._pairs(request.params, required=False)
        if isinstance(pairs, Response):
            return pairs
        result: dict[str, object] = {}
        for asset in pairs:
            bars = self.data.bars(asset.symbol, admission.number, self.faults, self.now_ms())
            if len(bars):
                result[asset.kraken.pair_key] = _ticker_entry(bars)
        return _json(result)

    def _ohlc(self, request: Request, admission: Admission) -> Response:
        asset = self._one_pair(request.params)
        if isinstance(asset, Response):
            return asset
        interval = _int_param(request.params, "interval", 1)
        interval_ms = interval * 60_000
        if interval not in OHLC_INTERVALS or interval_ms % self.bar_ms:
            raise _InvalidArguments("interval")
        since = _int_param(request.params, "since", 0)
        bars = self.data.bars(asset.symbol, admission.number, self.faults, self.now_ms(), interval_ms)
        key = asset.kraken.pair_key
        if not len(bars):
            return _json({key: [], "last": since})
        committed = np.arange(max(0, len(bars) - 1 - OHLC_MAX_COMMITTED), len(bars) - 1)
        chosen = np.r_[committed[bars.ts[committed] // 1000 > since], len(bars) - 1]
        rows = bars.take(chosen)
        self.data.mark_served(asset.symbol, self.faults, admission.number, int(rows.ts[0]), int(rows.ts[-1]), interval_ms)
        last = int(bars.ts[committed[-1]] // 1000) if committed.size else since
        return _json({key: _ohlc_rows(rows.take(self.faults.page_order(rows.ts))), "last": last})

    def _trades(self, request: Request, admission: Admission) -> Response:
        asset = self._one_pair(request.params)
        if isinstance(asset, Response):
            return asset
        count = _int_param(request.params, "count", TRADES_MAX_COUNT)
        if count < 1:
            raise _InvalidArguments("count")
        count = min(count, TRADES_MAX_COUNT)
        since = _decimal_param(request.params, "since")
        since_ns: int | None = None
        if since is not None:
            since_ns = int(since * 10**9) if since < SECONDS_SINCE_BELOW else int(since)
        frame = self.data.trades(asset.symbol, self.now_ms())
        key = asset.kraken.pair_key
        if frame is None or frame.height == 0:
            return _json({key: [], "last": str(since_ns or 0)})
        if since_ns is None:
            page = frame.tail(count)
        else:
            page = frame.filter(pl.col("ts_ns") > since_ns).head(count + 1)
            if page.height > count:
                # Never split trades sharing a timestamp across pages: `since` is exclusive.
                boundary = page["ts_ns"][count]
                page = page.head(count)
                if page["ts_ns"][0] != boundary:
                    page = page.filter(pl.col("ts_ns") != boundary)
        if page.height == 0:
            return _json({key: [], "last": str(since_ns)})
        rows = [
            [decimal_text(p), decimal_text(v), ns / 1e9, side, kind, "", tid]
            for p, v, ns, side, kind, tid in zip(
                page["price"].to_list(), page["volume"].to_list(), page["ts_ns"].to_list(),
                page["side"].to_list(), page["ordertype"].to_list(), page["trade_id"].to_list(), strict=True,
            )
        ]  # fmt: skip
        return _json({key: rows, "last": str(page["ts_ns"][-1])})


def decimal_texts(values: np.ndarray) -> list[str]:
    """Return :func:`decimal_text` of every value; ``repr`` directly when none would print an exponent."""
    magnitude = np.abs(values)
    if np.any(((magnitude < 1e-4) & (magnitude > 0)) | (magnitude >= 1e16)):
        return [decimal_text(x) for x in values.tolist()]
    return list(map(repr, values.tolist()))


def _ohlc_rows(bars: Bars) -> list[list[object]]:
    columns = [bars.ts // 1000] + [decimal_texts(getattr(bars, name)) for name in ("open", "high", "low", "close", "vwap", "volume")]
    return [[int(t), o, h, low, c, vw, v, n] for t, o, h, low, c, vw, v, n in zip(*columns, bars.count.tolist(), strict=True)]


def _ticker_entry(bars: Bars) -> dict[str, object]:
    last_ts = int(bars.ts[-1])
    day = bars.take(bars.ts >= last_ts - last_ts % 86_400_000)
    recent = bars.take(bars.ts > last_ts - 86_400_000)
    counts = bars.count
    def vwap(part: Bars) -> str:
        volume = float(part.volume.sum())
        return decimal_text(float((part.vwap * part.volume).sum()) / volume if volume > 0 else float(part.close[-1]))

    close = decimal_text(float(bars.close[-1]))
    return {
        "a": [close, "1", "1.000"],
        "b": [close, "1", "1.000"],
        "c": [close, decimal_text(float(bars.volume[-1]))],
        "v": [decimal_text(float(day.volume.sum())), decimal_text(float(recent.volume.sum()))],
        "p": [vwap(day), vwap(recent)],
        "t": [int(counts[-len(day):].sum()), int(counts[-len(recent):].sum())],
        "l": [decimal_text(float(day.low.min())), decimal_text(float(recent.low.min()))],
        "h": [decimal_text(float(day.high.max())), decimal_text(float(recent.high.max()))],
        "o": decimal_text(float(day.open[0])),
    }
