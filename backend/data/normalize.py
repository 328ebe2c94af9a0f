"""Raw provider bodies to canonical lake frames: CoinAPI OHLCV, Kraken OHLC, and bars rebuilt from Kraken trades.

Pure functions of bytes: no files, no network, no clock. Every function either returns a frame that
passes :func:`backend.data.lake.validate_ohlcv` or raises :class:`BadPayload` naming the problem, so a
bad page is quarantined as a whole and never half-written.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from backend.data.lake import OHLCV_SCHEMA, TIMEFRAME_MS, validate_ohlcv
from backend.errors import DataError, PayloadError


class PayloadProblem(str, enum.Enum):
    """Why a payload was quarantined."""

    MALFORMED = "malformed"  # not JSON, or truncated
    SCHEMA = "schema"  # JSON of the wrong shape: a missing field, a wrong type
    API_ERROR = "api_error"  # the provider answered with an error envelope
    UNKNOWN_SYMBOL = "unknown_symbol"  # data for a symbol or pair that was not asked for
    DUPLICATE = "duplicate"  # the same bar time twice in one page
    NON_MONOTONIC = "non_monotonic"  # bar times going backwards in one page
    BAD_VALUE = "bad_value"  # a value breaking a lake rule: negative price, high < low, misaligned time


class BadPayload(PayloadError):
    """A payload that cannot become bars; ``problem`` says why."""

    def __init__(self, problem: PayloadProblem, message: str) -> None:
        super().__init__(f"{problem.value}: {message}")
        self.problem = problem


_COINAPI_SCHEMA: dict[str, pl.DataType] = {
    "time_period_start": pl.String(),
    "time_period_end": pl.String(),
    "price_open": pl.Float64(),
    "price_high": pl.Float64(),
    "price_low": pl.Float64(),
    "price_close": pl.Float64(),
    "volume_traded": pl.Float64(),
}
_COINAPI_PRICES = {"price_open": "open", "price_high": "high", "price_low": "low", "price_close": "close",
                   "volume_traded": "volume"}  # fmt: skip
_OPEN_BRACE, _COMMA, _NEWLINE, _SPACE = ord("{"), ord(","), ord("\n"), ord(" ")


def batch_id_for(source: str, digests: list[str]) -> str:
    """Return the ingestion batch id: the source and 16 hex of the sha256 over the raw bodies' digests.

    A page fetched again with the same bytes gets the same batch id, so re-ingesting it rewrites nothing.
    """
    joined = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    return f"{source}:{joined[:16]}"


def _coinapi_fast(body: bytes) -> pl.DataFrame | None:
    """Parse a compact ``[{...},{...}]`` array with the parallel NDJSON reader, or return None.

    Items of a CoinAPI OHLCV page hold no nested object, so every ``{`` after the first opens an item
    and the byte before it is the separating comma; turning those commas into newlines (same length,
    in place) makes the array NDJSON. Anything unexpected returns None and the strict path decides.
    """
    if not (body.startswith(b"[{") and body.endswith(b"}]")):
        return None
    buffer = np.frombuffer(body, dtype=np.uint8).copy()
    separators = np.flatnonzero(buffer == _OPEN_BRACE)[1:] - 1
    if not bool((buffer[separators] == _COMMA).all()):
        return None
    buffer[separators] = _NEWLINE
    buffer[0] = buffer[-1] = _SPACE
    try:
        frame = pl.read_ndjson(io.BytesIO(buffer.data), schema=_COINAPI_SCHEMA)
    except pl.exceptions.PolarsError:  # any reader failure means: let the strict path explain it
        return None
    if sum(frame.null_count().row(0)):
        return None
    return frame


def _coinapi_strict(body: bytes) -> pl.DataFrame:
    try:
        items = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadPayload(PayloadProblem.MALFORMED, f"CoinAPI body is not valid JSON ({error})") from None
    if isinstance(items, dict) and ("message" in items or "error" in items):
        raise BadPayload(PayloadProblem.API_ERROR, f"CoinAPI error: {items.get('message', items.get('error'))}")
    if not isinstance(items, list):
        raise BadPayload(PayloadProblem.SCHEMA, f"CoinAPI OHLCV body must be a JSON array, was {type(items).__name__}")
    columns: dict[str, list] = {name: [] for name in _COINAPI_SCHEMA}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadPayload(PayloadProblem.SCHEMA, f"item {index} must be an object, was {type(item).__name__}")
        for name, dtype in _COINAPI_SCHEMA.items():
            if name not in item:
                raise BadPayload(PayloadProblem.SCHEMA, f"item {index} has no field {name!r}")
            value = item[name]
            wanted = (str,) if dtype == pl.String() else (int, float)
            if not isinstance(value, wanted) or isinstance(value, bool):
                raise BadPayload(PayloadProblem.SCHEMA, f"item {index} field {name!r} has the wrong type: {value!r}")
            columns[name].append(value)
    return pl.DataFrame(columns, schema=_COINAPI_SCHEMA)


def _period_ms(frame: pl.DataFrame, column: str) -> pl.Series:
    try:
        parsed = frame.select(
            pl.col(column).str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", time_zone="UTC", strict=True)
            .dt.epoch("ms")
        )  # fmt: skip
    except pl.exceptions.PolarsError:  # a time text strptime cannot read
        bad = frame.filter(~pl.col(column).str.contains(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"))[column]
        shown = bad[0] if bad.len() else frame[column][0]
        raise BadPayload(PayloadProblem.SCHEMA, f"field {column!r} is not an ISO 8601 UTC time: {shown!r}") from None
    return parsed.to_series()


def check_order(ts: pl.Series, symbol: str) -> None:
    """Refuse bar times that repeat or go backwards within one page.

    Raises
    ------
    BadPayload
        DUPLICATE or NON_MONOTONIC, naming the symbol and the first offending time.
    """
    if ts.len() < 2:
        return
    step = ts.diff().slice(1)
    if (step == 0).any():
        at = ts.slice(1).filter(step == 0)[0]
        raise BadPayload(PayloadProblem.DUPLICATE, f"bar time {at} appears twice for {symbol!r}")
    if (step < 0).any():
        at = ts.slice(1).filter(step < 0)[0]
        raise BadPayload(PayloadProblem.NON_MONOTONIC, f"bar time {at} goes backwards for {symbol!r}")


def _lake_frame(frame: pl.DataFrame, symbol: str, timeframe: str, source: str, batch_id: str) -> pl.DataFrame:
    """Add the identity columns, check order, then apply every lake rule."""
    check_order(frame["ts"], symbol)
    frame = frame.with_columns(
        symbol=pl.lit(symbol, dtype=pl.String), source=pl.lit(source, dtype=pl.String),
        batch_id=pl.lit(batch_id, dtype=pl.String),
    ).select(list(OHLCV_SCHEMA))  # fmt: skip
    try:
        return validate_ohlcv(frame, timeframe)
    except DataError as error:
        raise BadPayload(PayloadProblem.BAD_VALUE, str(error)) from None


def parse_coinapi_ohlcv(body: bytes, symbol: str, timeframe: str, source: str, batch_id: str) -> pl.DataFrame:
    """Turn a ``GET /v1/ohlcv/{symbol_id}/history`` body into lake bars.

    ``ts`` is ``time_period_start`` in UTC ms; every period must last exactly one ``timeframe``.

    Raises
    ------
    BadPayload
        MALFORMED, SCHEMA, API_ERROR, DUPLICATE, NON_MONOTONIC or BAD_VALUE.
    """
    bar_ms = TIMEFRAME_MS[timeframe]
    raw = _coinapi_fast(body)
    if raw is None:
        raw = _coinapi_strict(body)
    start = _period_ms(raw, "time_period_start")
    end = _period_ms(raw, "time_period_end")
    wrong = (end - start) != bar_ms
    if wrong.any():
        at = start.filter(wrong)[0]
        raise BadPayload(PayloadProblem.SCHEMA, f"period starting {at} does not last {timeframe} ({bar_ms} ms)")
    frame = raw.select(
        start.alias("ts"), *(pl.col(name).alias(target) for name, target in _COINAPI_PRICES.items())
    )
    return _lake_frame(frame, symbol, timeframe, source, batch_id)


def _kraken_result(body: bytes, pair_key: str) -> tuple[list, object]:
    """Return the rows under ``pair_key`` and the ``last`` value of a Kraken public envelope."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadPayload(PayloadProblem.MALFORMED, f"Kraken body is not valid JSON ({error})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("error"), list):
        raise BadPayload(PayloadProblem.SCHEMA, "Kraken body must be an object with an 'error' list")
    errors = [e for e in payload["error"] if str(e).startswith("E")]
    if errors:
        raise BadPayload(PayloadProblem.API_ERROR, f"Kraken error: {', '.join(map(str, errors))}")
    result = payload.get("result")
    if not isinstance(result, dict) or "last" not in result:
        raise BadPayload(PayloadProblem.SCHEMA, "Kraken 'result' must be an object with 'last'")
    keys = sorted(k for k in result if k != "last")
    if keys != [pair_key]:
        raise BadPayload(PayloadProblem.UNKNOWN_SYMBOL, f"Kraken result holds pairs {keys}, expected [{pair_key!r}]")
    rows = result[pair_key]
    if not isinstance(rows, list):
        raise BadPayload(PayloadProblem.SCHEMA, f"Kraken rows of {pair_key!r} must be a list")
    return rows, result["last"]


@dataclass(frozen=True)
class KrakenOhlcPage:
    """Committed bars of one OHLC page and Kraken's ``last`` (start of the newest committed bar, ms)."""

    bars: pl.DataFrame
    last_ms: int


def parse_kraken_ohlc(
    body: bytes, pair_key: str, symbol: str, timeframe: str, source: str, batch_id: str
) -> KrakenOhlcPage:
    """Turn a ``GET /0/public/OHLC`` body into lake bars, leaving out the provisional newest bar.

    Kraken always appends the current, not yet committed period; only rows at or before ``last``
    are committed and kept.

    Raises
    ------
    BadPayload
        MALFORMED, SCHEMA, API_ERROR, UNKNOWN_SYMBOL, DUPLICATE, NON_MONOTONIC or BAD_VALUE.
    """
    rows, last = _kraken_result(body, pair_key)
    if not isinstance(last, int) or isinstance(last, bool):
        raise BadPayload(PayloadProblem.SCHEMA, f"Kraken OHLC 'last' must be an integer, was {last!r}")
    for index, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 8 and isinstance(row[0], int)
                and all(isinstance(v, str) for v in row[1:7])):  # fmt: skip
            raise BadPayload(PayloadProblem.SCHEMA, f"OHLC row {index} must be [int, 6 decimal strings, int]: {row!r}")
    frame = pl.DataFrame(
        [row[:5] + [row[6]] for row in rows], schema=["time", "open", "high", "low", "close", "volume"],
        orient="row", schema_overrides={"time": pl.Int64, **dict.fromkeys(("open", "high", "low", "close", "volume"), pl.String)},
    )  # fmt: skip
    try:
        frame = frame.select(
            (pl.col("time") * 1000).alias("ts"),
            *(pl.col(c).cast(pl.Float64, strict=True) for c in ("open", "high", "low", "close", "volume")),
        )
    except pl.exceptions.PolarsError:  # a decimal text that is not a number
        raise BadPayload(PayloadProblem.SCHEMA, "an OHLC price or volume is not a decimal number") from None
    last_ms = last * 1000
    frame = frame.filter(pl.col("ts") <= last_ms)
    return KrakenOhlcPage(_lake_frame(frame, symbol, timeframe, source, batch_id), last_ms)


TRADES_SCHEMA: dict[str, pl.DataType] = {
    "ts_ns": pl.Int64(), "price": pl.Float64(), "volume": pl.Float64(), "trade_id": pl.Int64(),
}  # fmt: skip


@dataclass(frozen=True)
class KrakenTradesPage:
    """Trades of one page and Kraken's ``last`` (nanoseconds, the next ``since``)."""

    trades: pl.DataFrame
    last_ns: int


def parse_kraken_trades(body: bytes, pair_key: str) -> KrakenTradesPage:
    """Turn a ``GET /0/public/Trades`` body into a trades frame (:data:`TRADES_SCHEMA`).

    Rows are ``[price, volume, time, side, ordertype, misc, trade_id]`` (older responses lack the
    id; the row number then stands in). Times are float seconds, kept as integer nanoseconds.

    Raises
    ------
    BadPayload
        MALFORMED, SCHEMA, API_ERROR, UNKNOWN_SYMBOL or BAD_VALUE (a price <= 0 or a negative volume).
    """
    rows, last = _kraken_result(body, pair_key)
    if not (isinstance(last, str) and last.isdigit()):
        raise BadPayload(PayloadProblem.SCHEMA, f"Kraken Trades 'last' must be a string of digits, was {last!r}")
    columns: dict[str, list] = {name: [] for name in TRADES_SCHEMA}
    for index, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) in (6, 7) and isinstance(row[0], str) and isinstance(row[1], str)
                and isinstance(row[2], (int, float))):  # fmt: skip
            raise BadPayload(PayloadProblem.SCHEMA, f"Trades row {index} has the wrong shape: {row!r}")
        try:
            price, volume = float(row[0]), float(row[1])
        except ValueError:
            raise BadPayload(PayloadProblem.SCHEMA, f"Trades row {index} price/volume is not a number: {row!r}") from None
        if not (math.isfinite(price) and price > 0 and math.isfinite(volume) and volume >= 0):
            raise BadPayload(PayloadProblem.BAD_VALUE, f"Trades row {index} has price {price} or volume {volume} out of range")
        columns["ts_ns"].append(round(row[2] * 1e6) * 1000)  # microseconds: the precision Kraken prints
        columns["price"].append(price)
        columns["volume"].append(volume)
        columns["trade_id"].append(row[6] if len(row) == 7 else index)
    return KrakenTradesPage(pl.DataFrame(columns, schema=TRADES_SCHEMA), int(last))


def bars_from_trades(
    trades: pl.DataFrame, symbol: str, timeframe: str, source: str, batch_id: str, complete_before_ms: int
) -> pl.DataFrame:
    """Rebuild OHLCV bars from trades, deterministically, for periods that end by ``complete_before_ms``.

    Trades are de-duplicated by ``trade_id`` and ordered by (time, trade_id); each bar's open is the
    first trade, close the last, high/low the extremes, volume the sum. A period without trades has
    no bar (a gap, as on Kraken). A period still open at ``complete_before_ms`` is left out.
    """
    bar_ms = TIMEFRAME_MS[timeframe]
    frame = (
        trades.unique("trade_id", keep="first")
        .sort("ts_ns", "trade_id")
        .with_columns(ts=(pl.col("ts_ns") // 1_000_000) // bar_ms * bar_ms)
        .filter(pl.col("ts") + bar_ms <= complete_before_ms)
        .group_by("ts", maintain_order=True)
        .agg(
            open=pl.col("price").first(), high=pl.col("price").max(), low=pl.col("price").min(),
            close=pl.col("price").last(), volume=pl.col("volume").sum(),
        )  # fmt: skip
    )
    return _lake_frame(frame, symbol, timeframe, source, batch_id)
