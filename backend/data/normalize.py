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
import os
import re
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

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


# ---- CoinAPI OHLCV: a vectorised reader for the documented item layout -------------------------------------

_FIELDS = ("time_period_start", "time_period_end", "time_open", "time_close", "price_open", "price_high",
           "price_low", "price_close", "volume_traded", "trades_count")  # fmt: skip
_N_TIMES, _N_FIELDS = 4, len(_FIELDS)
_WS = rb"[ \t\n\r]*"
_TIME = rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z"'
_TOKEN = rb'[^ \t\n\r,{}\[\]"]+'  # a number, checked later
_ITEM = re.compile(
    _WS + rb"\[" + _WS + rb"(\{)"
    + b"".join(
        _WS + b'"' + name.encode() + b'"' + _WS + b":" + _WS + b"(" + (_TIME if i < _N_TIMES else _TOKEN) + b")"
        + (_WS + b"(,)" if i < _N_FIELDS - 1 else b"")
        for i, name in enumerate(_FIELDS)
    )
    + rb"(" + _WS + rb"\}" + _WS + rb")(?:(,)(" + _WS + rb")\{|\]" + _WS + rb"\Z)"
)  # fmt: skip
_TAIL = re.compile(rb"(" + _TOKEN + rb")" + _WS + rb"\}" + _WS + rb"\]" + _WS + rb"\Z")
# Offsets of the digits YYYYMMDDhhmmss and fffffff in the quoted time text "YYYY-MM-DDTHH:MM:SS.fffffffZ".
_TIME_DIGITS = np.array([1, 2, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, *range(21, 28)])
_DIGIT_0, _MINUS, _DOT, _LOWER_E = ord("0"), ord("-"), ord("."), ord("e")
_YEARS = np.arange(10_000)
_LEAP = (_YEARS % 4 == 0) & ((_YEARS % 100 != 0) | (_YEARS % 400 == 0))
_YEAR_DAYS = np.concatenate([[0], np.cumsum(365 + _LEAP)[:-1]])
_YEAR_DAYS = (_YEAR_DAYS - _YEAR_DAYS[1970]).astype(np.int32)  # days from 1970-01-01 to 1 January
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 0], dtype=np.int32)  # 13: any month > 12
_DAYS_BEFORE = np.concatenate([[0], np.cumsum(_MONTH_DAYS)[:-1]]).astype(np.int32)
_CHUNK = 1 << 20  # bytes scanned at once for commas: small enough to stay in cache
_BLOCK = 2048  # rows of eight items compared with the template at once, for the same reason
_ITEMS = 16_384  # items read at once
_PIECES = 1 + 2 * (_N_FIELDS - _N_TIMES)  # boundaries per item


@dataclass(frozen=True)
class _Layout:
    """The byte layout of the first item: every other item must repeat it, only the numbers varying.

    An item is its head (from ``{`` to the first number, holding the four time texts), then six
    numbers, each followed by a gap (the text up to the next number; the last gap runs to the next
    item's ``{`` and is empty for a one-item page). ``template`` is an item without its numbers; a
    byte ``b`` of the page is valid when ``b & mask == template``: equal literal text, and any
    ``0x30``-``0x3F`` byte where the first item has a time digit (a plain string byte either way;
    the 14 digits that make ``time_period_start`` and ``time_period_end`` are checked as digits apart).
    """

    brace: int  # where the first item's "{" is
    head: int  # bytes from "{" to the first number
    pre: tuple[int, ...]  # bytes from the comma before numbers 1..5 to the number
    post: tuple[int, ...]  # bytes from numbers 0..5 to the comma after them
    last_gap: int  # bytes of the last gap
    template: np.ndarray  # uint8
    mask: np.ndarray  # uint8: 0xFF, or 0xF0 under a time digit
    digits: np.ndarray  # template offsets of YYYYMMDDhhmmss of time_period_start, then of time_period_end
    template8: np.ndarray  # uint64: the template of eight items back to back
    mask8: np.ndarray


def _layout(body: bytes) -> _Layout | None:
    """Read the layout of the first item, or None when the body does not open with one in the expected shape."""
    match = _ITEM.match(body)
    if match is None:
        return None
    brace = match.start(1)
    values = [match.span(2 * i + 2) for i in range(_N_FIELDS)]
    commas = [match.start(2 * i + 3) for i in range(_N_FIELDS - 1)] + [match.start(2 * _N_FIELDS + 2)]
    last_gap = match.end(2 * _N_FIELDS + 3) - values[-1][1] if commas[-1] >= 0 else 0  # a second item follows
    numbers = range(_N_TIMES, _N_FIELDS)
    text = body[brace : values[_N_TIMES][0]] + b"".join(body[values[j][1] : values[j + 1][0]] for j in numbers[:-1])
    template = np.frombuffer(text + body[values[-1][1] : values[-1][1] + last_gap], dtype=np.uint8).copy()
    mask = np.full(template.size, 0xFF, dtype=np.uint8)
    for start, _ in values[:_N_TIMES]:
        mask[start - brace + _TIME_DIGITS] = 0xF0
    template &= mask
    times = [values[i][0] - brace + _TIME_DIGITS[:14] for i in (0, 1)]
    return _Layout(
        brace, values[_N_TIMES][0] - brace, tuple(values[j][0] - commas[j - 1] for j in numbers[1:]),
        tuple(commas[j] - values[j][1] for j in numbers[:-1]) + (commas[-1] - values[-1][1] if last_gap else 0,),
        last_gap, template, mask, np.concatenate(times), np.tile(template, 8).view("<u8"), np.tile(mask, 8).view("<u8"),
    )  # fmt: skip


def _scratch(size: int, dtype: type[np.generic]) -> np.ndarray:
    """An uninitialised array from arrow's memory pool, which keeps freed memory for the next page.

    Large numpy temporaries come from fresh pages each time (malloc hands them back to the system), and
    touching fresh pages costs more than the arithmetic done on them.
    """
    return np.frombuffer(pa.allocate_buffer(size * np.dtype(dtype).itemsize), dtype=dtype)


def _commas(buf: np.ndarray) -> np.ndarray:
    parts = [np.flatnonzero(buf[i : i + _CHUNK] == _COMMA) for i in range(0, buf.size, _CHUNK)]
    for i, part in enumerate(parts):
        part += i * _CHUNK
    return np.concatenate(parts, out=_scratch(sum(part.size for part in parts), np.int64))


def _bounds(body: bytes, layout: _Layout) -> np.ndarray | None:
    """Cut the items into pieces: ``[head 0, number 0.0, gap 0.0, ..., number n-1.5]`` as piece boundaries.

    Each item has 13 boundaries: its ``{`` and the start and end of its six numbers; the last gap of an
    item runs to the next item's ``{``.

    The commas propose where each number ends; nothing is trusted: the pieces are checked afterwards.
    """
    commas = _commas(np.frombuffer(body, dtype=np.uint8))
    if commas.size % _N_FIELDS != _N_FIELDS - 1:
        return None
    tail = _TAIL.match(body, int(commas[-1]) + layout.pre[-1])
    if tail is None:
        return None
    n = (commas.size + 1) // _N_FIELDS
    bounds = _scratch(n * _PIECES, np.int64)
    items = bounds.reshape(n, _PIECES)  # per item: its "{", then the start and end of each number in turn
    for j in range(_N_FIELDS - _N_TIMES - 1):
        after = commas[_N_TIMES + j :: _N_FIELDS]  # the comma after number j
        np.subtract(after, layout.post[j], out=items[:, 2 * j + 2])
        np.add(after, layout.pre[j], out=items[:, 2 * j + 3])
    last = commas[_N_FIELDS - 1 :: _N_FIELDS]  # the comma after an item (none after the last one)
    np.subtract(last, layout.post[-1], out=items[:-1, -1])
    np.add(items[:-1, -1], layout.last_gap, out=items[1:, 0])
    items[-1, -1], items[0, 0] = tail.end(1), layout.brace
    np.add(items[:, 0], layout.head, out=items[:, 1])
    if not (items[:, 2::2] > items[:, 1::2]).all():  # the text pieces have their fixed, positive lengths
        return None
    return bounds


def _template_ok(data: np.ndarray, layout: _Layout) -> bool:
    """True when ``data``, item texts back to back, repeats the template (the last one may stop short)."""
    whole = data.size - data.size % layout.template8.nbytes  # eight items make a whole number of 8-byte words
    words = data[:whole].view("<u8").reshape(-1, layout.template8.size)
    masked = _scratch(min(_BLOCK, words.shape[0]) * words.shape[1], np.uint64).reshape(-1, words.shape[1])
    for block in range(0, words.shape[0], _BLOCK):
        rows = np.bitwise_and(words[block : block + _BLOCK], layout.mask8, out=masked[: words.shape[0] - block])
        if not np.array_equal(rows, np.broadcast_to(layout.template8, rows.shape)):
            return False
    rest = data[whole:]
    return bool(((rest & np.resize(layout.mask, rest.size)) == np.resize(layout.template, rest.size)).all())


def _times(texts: pa.LargeStringArray, layout: _Layout, items: int, last: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Check the text of ``items`` items against the template; return their period starts and ends in UTC ms.

    The last item of the page has no last gap.
    """
    size = layout.template.size
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)[: items * size - (layout.last_gap if last else 0)]
    if not _template_ok(data, layout):
        return None
    rows = data[: (items - 1) * size].reshape(items - 1, size)
    digits = np.concatenate([rows.T[layout.digits], data[(items - 1) * size + layout.digits][:, None]], axis=1)
    digits -= np.uint8(_DIGIT_0)
    if not (digits <= 9).all():
        return None
    start, end = _epoch_ms(digits[:14]), _epoch_ms(digits[14:])
    return None if start is None or end is None else (start, end)


def _epoch_ms(digits: np.ndarray) -> np.ndarray | None:
    """UTC ms of ``(14, n)`` time digits (YYYYMMDDhhmmss), or None if a time is impossible or before 1970."""
    columns = digits.astype(np.int32)
    century, year, month, day, hour, minute, second = columns[0::2] * 10 + columns[1::2]
    year += century * 100
    month = np.minimum(month, 13)
    leap_day = _LEAP[year] & (month == 2)
    if not ((year >= 1970) & (month >= 1) & (day >= 1) & (day <= _MONTH_DAYS[month] + leap_day)
            & (hour < 24) & (minute < 60) & (second < 60)).all():  # fmt: skip
        return None
    days = _YEAR_DAYS[year] + _DAYS_BEFORE[month] + (_LEAP[year] & (month > 2)) + day - 1
    return (days.astype(np.int64) * 86_400 + (hour * 3600 + minute * 60 + second)) * 1000


def _json_numbers(tokens: pa.LargeStringArray) -> bool:
    """True when every token is a JSON number, given that arrow's cast then reads it as a finite float.

    Arrow's cast refuses ``1.2.3``, ``1e``, ``1-2``, ``1.+5`` and spaces, but also reads ``+1``,
    ``.5``, ``5.``, ``-.5``, ``01``, ``1.e5``, ``nan`` and ``inf``: those are refused here.
    """
    offsets = np.frombuffer(tokens.buffers()[1], dtype=np.int64)[tokens.offset : tokens.offset + len(tokens) + 1]
    data = np.frombuffer(tokens.buffers()[2], dtype=np.uint8)[: offsets[-1]]
    first = data[offsets[:-1]]
    minus = first == _MINUS
    if not ((_is_digit(first) | minus).all() and _is_digit(data[offsets[1:] - 1]).all()):
        return False  # "+1", ".5", "nan", "5."
    lead = offsets[:-1] + minus  # the first digit (a one-byte token is a digit, so lead stays inside)
    lead_byte = data[lead] if minus.any() else first
    zero = lead_byte == _DIGIT_0
    after = lead[zero] + 1
    followed = _is_digit(data[np.minimum(after, data.size - 1)])[after < offsets[1:][zero]]
    if not _is_digit(lead_byte).all() or followed.any():
        return False  # "-.5", "-inf", or a leading zero followed by a digit
    lowered = np.bitwise_or(data[offsets[0] :], 0x20, out=_scratch(data.size - offsets[0], np.uint8))
    exponents = np.flatnonzero(lowered == _LOWER_E) + offsets[0]  # never first in a token
    return not (data[exponents - 1] == _DOT).any()  # "1.e5"


def _is_digit(values: np.ndarray) -> np.ndarray:
    return (values - np.uint8(_DIGIT_0)) <= 9


def _numbers(tokens: pa.LargeStringArray) -> np.ndarray | None:
    """The ``(n, 6)`` floats of the number tokens, or None if one is not a JSON number."""
    if not _json_numbers(tokens):
        return None
    try:
        values = pc.cast(tokens, pa.float64()).to_numpy()
    except pa.ArrowInvalid:  # "1.2.3", "1e", "1 2": not numbers
        return None
    if not np.isfinite(values).all() or np.signbit(values[values == 0]).any():
        return None  # "-0" is 0.0 to json but -0.0 to arrow; inf is left to the other paths
    return values.reshape(-1, _N_FIELDS - _N_TIMES)


def _coinapi_vectorised(body: bytes) -> pl.DataFrame | None:
    """Parse a page whose items all repeat the first item's layout, or return None for the other paths.

    Only the documented CoinAPI item is read here: its ten fields in order, times as
    ``YYYY-MM-DDTHH:MM:SS.fffffffZ``, numbers as JSON numbers, with the whitespace of the first item
    repeated everywhere. Nothing is guessed: any other byte returns None.
    """
    layout = _layout(body)
    bounds = None if layout is None else _bounds(body, layout)
    if bounds is None:
        return None
    pieces = pa.LargeStringArray.from_buffers(bounds.size - 1, pa.py_buffer(bounds), pa.py_buffer(body))
    n = bounds.size // _PIECES
    # A few thousand items at a time: the copies stay in cache. numpy and arrow release the GIL, so the
    # blocks of a large page are read on both cores; the parts come back in order either way.
    read = partial(_vectorised_part, pieces, layout, n=n)
    blocks = [(first, min(first + _ITEMS, n)) for first in range(0, n, _ITEMS)]
    parts = list(_pool().map(lambda block: read(*block), blocks)) if len(blocks) > 1 else [read(*blocks[0])]
    if any(part is None for part in parts):
        return None
    return pl.concat(parts, rechunk=True)


@cache
def _pool() -> ThreadPoolExecutor:
    """The threads that read a large page's blocks (one per core, at most two)."""
    return ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1), thread_name_prefix="acts-normalize")


def _vectorised_part(pieces: pa.LargeStringArray, layout: _Layout, first: int, end: int, n: int) -> pl.DataFrame | None:
    """Read items ``first`` to ``end`` (excluded) of ``n``: check their text (heads and gaps), cast their numbers."""
    at = np.arange(first * _PIECES, end * _PIECES, dtype=np.int64).reshape(-1, _PIECES)
    texts = at[:, 0::2].ravel()[: None if end < n else -1]  # the last item of the page has no last gap
    numbers = at[:, 1::2].ravel()
    times = _times(pieces.take(pa.Array.from_buffers(pa.int64(), texts.size, [None, pa.py_buffer(texts)])),
                   layout, end - first, end == n)  # fmt: skip
    values = _numbers(pieces.take(pa.Array.from_buffers(pa.int64(), numbers.size, [None, pa.py_buffer(numbers)])))
    if times is None or values is None:
        return None
    prices = {name: values[:, j] for j, name in enumerate(_COINAPI_PRICES.values())}
    return pl.DataFrame({"start": times[0], "end": times[1], **prices})


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


def _coinapi_bars(raw: pl.DataFrame) -> pl.DataFrame:
    """Period start and end in UTC ms and the renamed prices of a raw CoinAPI frame."""
    start = _period_ms(raw, "time_period_start")
    end = _period_ms(raw, "time_period_end")
    return raw.select(
        start.alias("start"), end.alias("end"),
        *(pl.col(name).alias(target) for name, target in _COINAPI_PRICES.items()),
    )


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
    Three readers give the same frame: a vectorised one for pages in the documented item layout, the
    parallel NDJSON reader for other compact pages, then ``json`` (which words every error).

    Raises
    ------
    BadPayload
        MALFORMED, SCHEMA, API_ERROR, DUPLICATE, NON_MONOTONIC or BAD_VALUE.
    """
    bar_ms = TIMEFRAME_MS[timeframe]
    bars = _coinapi_vectorised(body)
    if bars is None:
        raw = _coinapi_fast(body)
        if raw is None:
            raw = _coinapi_strict(body)
        bars = _coinapi_bars(raw)
    start, end = bars["start"], bars["end"]
    wrong = (end - start) != bar_ms
    if wrong.any():
        at = start.filter(wrong)[0]
        raise BadPayload(PayloadProblem.SCHEMA, f"period starting {at} does not last {timeframe} ({bar_ms} ms)")
    frame = bars.select(pl.col("start").alias("ts"), *_COINAPI_PRICES.values())
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
    rows, last = _kraken_ohlc_rows(body, pair_key)
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


def _kraken_ohlc_rows(body: bytes, pair_key: str) -> tuple[list, int]:
    """Return the checked rows and ``last`` of an OHLC body (the shape rules of :func:`parse_kraken_ohlc`)."""
    rows, last = _kraken_result(body, pair_key)
    if not isinstance(last, int) or isinstance(last, bool):
        raise BadPayload(PayloadProblem.SCHEMA, f"Kraken OHLC 'last' must be an integer, was {last!r}")
    for index, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 8 and isinstance(row[0], int)
                and all(isinstance(v, str) for v in row[1:7])):  # fmt: skip
            raise BadPayload(PayloadProblem.SCHEMA, f"OHLC row {index} must be [int, 6 decimal strings, int]: {row!r}")
    return rows, last


@dataclass(frozen=True)
class OhlcBody:
    """One OHLC body to parse, and the identity its bars get."""

    body: bytes
    pair_key: str
    symbol: str
    batch_id: str


_OHLC_VALUES = ("open", "high", "low", "close", "volume")


def parse_kraken_ohlc_many(pages: Sequence[OhlcBody], timeframe: str, source: str) -> tuple[pl.DataFrame, dict[int, BadPayload]]:
    """Parse the OHLC bodies of one poll (one page per symbol) as one frame, validated once.

    The frame is the concatenation, in page order, of :func:`parse_kraken_ohlc`'s bars of every good
    page, and a page is bad exactly when that function refuses it (with its problem): the pages are
    checked and cast together, and only when the whole frame breaks a rule is each page parsed alone
    to name the bad ones.

    Returns
    -------
    tuple
        The good pages' bars, and the refusal of each bad page by its index in ``pages``.

    Raises
    ------
    DataError
        When two pages are for the same symbol.
    """
    symbols = [page.symbol for page in pages]
    if len(set(symbols)) != len(symbols):
        raise DataError(f"parse_kraken_ohlc_many needs one page per symbol, got {sorted(symbols)}")
    bad: dict[int, BadPayload] = {}
    columns: dict[str, list] = {name: [] for name in ("time", *_OHLC_VALUES, "last", "symbol", "batch_id")}
    good: list[int] = []
    for index, page in enumerate(pages):
        try:
            rows, last = _kraken_ohlc_rows(page.body, page.pair_key)
        except BadPayload as error:
            bad[index] = error
            continue
        good.append(index)
        columns["time"].extend(row[0] for row in rows)
        for position, name in ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (6, "volume")):
            columns[name].extend(row[position] for row in rows)
        columns["last"].extend([last] * len(rows))
        columns["symbol"].extend([page.symbol] * len(rows))
        columns["batch_id"].extend([page.batch_id] * len(rows))
    frame = pl.DataFrame(columns, schema={"time": pl.Int64, **dict.fromkeys(_OHLC_VALUES, pl.String), "last": pl.Int64,
                                          "symbol": pl.String, "batch_id": pl.String})  # fmt: skip
    try:
        frame = frame.select(
            (pl.col("time") * 1000).alias("ts"), "symbol",
            *(pl.col(c).cast(pl.Float64, strict=True) for c in _OHLC_VALUES),
            pl.lit(source, dtype=pl.String).alias("source"), "batch_id", "last",
        ).filter(pl.col("ts") <= pl.col("last") * 1000).drop("last")  # fmt: skip
        return validate_ohlcv(frame, timeframe), bad
    except (pl.exceptions.PolarsError, DataError):
        pass  # some page breaks a rule: each page alone says which, with the problem parse_kraken_ohlc names
    frames = [pl.DataFrame(schema=OHLCV_SCHEMA)]
    for index in good:
        page = pages[index]
        try:
            frames.append(parse_kraken_ohlc(page.body, page.pair_key, page.symbol, timeframe, source, page.batch_id).bars)
        except BadPayload as error:
            bad[index] = error
    return pl.concat(frames), dict(sorted(bad.items()))


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
