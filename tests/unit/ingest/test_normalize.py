"""Raw bodies to lake frames: CoinAPI OHLCV, Kraken OHLC, and bars rebuilt from Kraken trades."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from backend.data.lake import OHLCV_SCHEMA
from backend.data.normalize import (
    BadPayload,
    PayloadProblem,
    bars_from_trades,
    batch_id_for,
    parse_coinapi_ohlcv,
    OhlcBody,
    parse_kraken_ohlc,
    parse_kraken_ohlc_many,
    parse_kraken_trades,
)
from backend.data.shared_loader import default_shared_dir
from backend.errors import DataError

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
FIVE = 300_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".0000000Z"


def coinapi_items(n: int, start: int = T0, step: int = FIVE, period: int = FIVE) -> list[dict]:
    return [
        {"time_period_start": iso(start + i * step), "time_period_end": iso(start + i * step + period),
         "time_open": iso(start + i * step), "time_close": iso(start + i * step + period - 1000),
         "price_open": 100.0 + i, "price_high": 102.5 + i, "price_low": 99.0 + i, "price_close": 101.0 + i,
         "volume_traded": 3.25, "trades_count": 7}
        for i in range(n)
    ]  # fmt: skip


def compact(items: object) -> bytes:
    return json.dumps(items, separators=(",", ":")).encode()


def test_coinapi_rows_become_canonical_lake_bars() -> None:
    frame = parse_coinapi_ohlcv(compact(coinapi_items(3)), "BTC", "5m", "coinapi", "coinapi:abc")

    assert frame.schema == pl.Schema(OHLCV_SCHEMA)
    assert frame.row(0) == (T0, "BTC", 100.0, 102.5, 99.0, 101.0, 3.25, "coinapi", "coinapi:abc")
    assert frame["ts"].to_list() == [T0, T0 + FIVE, T0 + 2 * FIVE]


def test_the_fast_path_and_the_strict_path_give_identical_frames() -> None:
    items = coinapi_items(500)
    fast = parse_coinapi_ohlcv(compact(items), "BTC", "5m", "coinapi", "b")
    pretty = parse_coinapi_ohlcv(json.dumps(items, indent=2).encode(), "BTC", "5m", "coinapi", "b")
    spaced = parse_coinapi_ohlcv(json.dumps(items).encode(), "BTC", "5m", "coinapi", "b")

    assert fast.equals(pretty) and fast.equals(spaced)


def test_an_empty_page_is_an_empty_frame() -> None:
    assert parse_coinapi_ohlcv(b"[]", "BTC", "5m", "coinapi", "b").height == 0


def _items_with(**changes: object) -> list[dict]:
    items = coinapi_items(3)
    items[1] = {**items[1], **changes}
    return items


@pytest.mark.parametrize(
    ("body", "problem", "text"),
    [
        (b"<html>upstream sent garbage</html>", PayloadProblem.MALFORMED, "not valid JSON"),
        (compact(coinapi_items(4))[:-40], PayloadProblem.MALFORMED, "not valid JSON"),
        (b'{"message": "Invalid API key"}', PayloadProblem.API_ERROR, "Invalid API key"),
        (b'{"data": []}', PayloadProblem.SCHEMA, "must be a JSON array, was dict"),
        (b"[1, 2]", PayloadProblem.SCHEMA, "item 0 must be an object"),
        (compact([{k: v for k, v in coinapi_items(1)[0].items() if k != "price_close"}]), PayloadProblem.SCHEMA,
         "item 0 has no field 'price_close'"),
        (compact(_items_with(price_open="100")), PayloadProblem.SCHEMA, "field 'price_open' has the wrong type"),
        (compact(_items_with(price_open=True)), PayloadProblem.SCHEMA, "field 'price_open' has the wrong type"),
        (compact(_items_with(time_period_start="yesterday")), PayloadProblem.SCHEMA, "'yesterday'"),
        (compact(coinapi_items(2, period=60_000)), PayloadProblem.SCHEMA, "does not last 5m"),
        (compact(coinapi_items(2, step=0)), PayloadProblem.DUPLICATE, f"bar time {T0} appears twice for 'BTC'"),
        (compact(coinapi_items(2, start=T0 + FIVE, step=-FIVE)), PayloadProblem.NON_MONOTONIC, "goes backwards"),
        (compact(_items_with(price_low=-5.0)), PayloadProblem.BAD_VALUE, "'low' must be finite and > 0"),
        (compact(_items_with(volume_traded=-1.0)), PayloadProblem.BAD_VALUE, "'volume' must be finite and >= 0"),
        (compact(coinapi_items(2, start=T0 + 1000)), PayloadProblem.BAD_VALUE, "must be aligned"),
    ],
)
def test_a_bad_coinapi_page_raises_naming_the_problem(body: bytes, problem: PayloadProblem, text: str) -> None:
    with pytest.raises(BadPayload) as error:
        parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b")

    assert error.value.problem is problem
    assert text in str(error.value)


def test_a_missing_value_in_a_compact_page_is_explained_by_the_strict_path() -> None:
    items = coinapi_items(3)
    del items[2]["volume_traded"]

    with pytest.raises(BadPayload, match="item 2 has no field 'volume_traded'"):
        parse_coinapi_ohlcv(compact(items), "BTC", "5m", "coinapi", "b")


def test_batch_ids_are_a_pure_function_of_the_source_and_the_raw_digests() -> None:
    assert batch_id_for("coinapi", ["a", "b"]) == batch_id_for("coinapi", ["a", "b"])
    assert batch_id_for("coinapi", ["a"]) != batch_id_for("coinapi", ["b"])
    assert batch_id_for("kraken", ["a"]).startswith("kraken:") and len(batch_id_for("kraken", ["a"])) == 23


def kraken_ohlc(rows: list, last: int, key: str = "XXBTZUSD") -> bytes:
    return compact({"error": [], "result": {key: rows, "last": last}})


def ohlc_row(t: int, price: float = 10.0) -> list:
    return [t, str(price), str(price + 1), str(price - 1), str(price + 0.5), str(price), "2.5", 3]


def test_kraken_ohlc_keeps_committed_bars_and_drops_the_provisional_one() -> None:
    seconds = T0 // 1000
    body = kraken_ohlc([ohlc_row(seconds), ohlc_row(seconds + 300, 11.0), ohlc_row(seconds + 600, 12.0)], seconds + 300)

    page = parse_kraken_ohlc(body, "XXBTZUSD", "BTC", "5m", "kraken", "kraken:x")

    assert page.last_ms == T0 + FIVE
    assert page.bars["ts"].to_list() == [T0, T0 + FIVE]
    assert page.bars.row(1) == (T0 + FIVE, "BTC", 11.0, 12.0, 10.0, 11.5, 2.5, "kraken", "kraken:x")


@pytest.mark.parametrize(
    ("body", "problem", "text"),
    [
        (b"{", PayloadProblem.MALFORMED, "not valid JSON"),
        (b"[]", PayloadProblem.SCHEMA, "'error' list"),
        (compact({"error": ["EQuery:Unknown asset pair"]}), PayloadProblem.API_ERROR, "EQuery:Unknown asset pair"),
        (compact({"error": [], "result": {"XXBTZUSD": []}}), PayloadProblem.SCHEMA, "with 'last'"),
        (kraken_ohlc([], 1, key="XETHZUSD"), PayloadProblem.UNKNOWN_SYMBOL, "expected ['XXBTZUSD']"),
        (compact({"error": [], "result": {"XXBTZUSD": {}, "last": 1}}), PayloadProblem.SCHEMA, "must be a list"),
        (kraken_ohlc([], "1"), PayloadProblem.SCHEMA, "'last' must be an integer"),
        (kraken_ohlc([[1, 2, 3]], 1), PayloadProblem.SCHEMA, "OHLC row 0"),
        (kraken_ohlc([[T0 // 1000, "x", "1", "1", "1", "1", "1", 1]], T0 // 1000), PayloadProblem.SCHEMA, "not a decimal"),
        (kraken_ohlc([ohlc_row(T0 // 1000, -3.0)], T0 // 1000), PayloadProblem.BAD_VALUE, "must be finite and > 0"),
    ],
)
def test_a_bad_kraken_ohlc_page_raises_naming_the_problem(body: bytes, problem: PayloadProblem, text: str) -> None:
    with pytest.raises(BadPayload) as error:
        parse_kraken_ohlc(body, "XXBTZUSD", "BTC", "5m", "kraken", "b")

    assert error.value.problem is problem
    assert text in str(error.value)


BAD_OHLC_PAGES = [
    (b"{", PayloadProblem.MALFORMED),  # refused by the shape checks, before the common frame
    (kraken_ohlc([[T0 // 1000, "x", "1", "1", "1", "1", "1", 1]], T0 // 1000), PayloadProblem.SCHEMA),  # the cast
    (kraken_ohlc([ohlc_row(T0 // 1000, -3.0)], T0 // 1000), PayloadProblem.BAD_VALUE),  # a lake rule
    (kraken_ohlc([ohlc_row(T0 // 1000), ohlc_row(T0 // 1000)], T0 // 1000), PayloadProblem.DUPLICATE),  # the order
]


def many_pages(bad: bytes | None = None) -> list[OhlcBody]:
    seconds = T0 // 1000
    pages = [
        OhlcBody(kraken_ohlc([ohlc_row(seconds), ohlc_row(seconds + 300, 11.0), ohlc_row(seconds + 600)], seconds + 300),
                 "XXBTZUSD", "BTC", "kraken:b"),
        OhlcBody(kraken_ohlc([ohlc_row(seconds, 20.0)], seconds, key="XETHZUSD"), "XETHZUSD", "ETH", "kraken:e"),
        OhlcBody(kraken_ohlc([], seconds, key="SOLUSD"), "SOLUSD", "SOL", "kraken:s"),
    ]
    if bad is not None:
        pages.insert(1, OhlcBody(bad, "XXBTZUSD", "ADA", "kraken:a"))
    return pages


def each_alone(pages: list[OhlcBody]) -> tuple[pl.DataFrame, dict[int, PayloadProblem]]:
    frames, problems = [pl.DataFrame(schema=OHLCV_SCHEMA)], {}
    for index, page in enumerate(pages):
        try:
            frames.append(parse_kraken_ohlc(page.body, page.pair_key, page.symbol, "5m", "kraken", page.batch_id).bars)
        except BadPayload as error:
            problems[index] = error.problem
    return pl.concat(frames), problems


@pytest.mark.parametrize(("bad", "problem"), [(None, None), *BAD_OHLC_PAGES])
def test_pages_parsed_together_equal_each_page_parsed_alone(bad: bytes | None, problem: PayloadProblem | None) -> None:
    pages = many_pages(bad)

    bars, refused = parse_kraken_ohlc_many(pages, "5m", "kraken")

    want, want_refused = each_alone(pages)
    assert bars.equals(want) and bars.height == 3
    assert {i: e.problem for i, e in refused.items()} == want_refused == ({} if bad is None else {1: problem})


def test_pages_parsed_together_need_one_page_per_symbol() -> None:
    pages = many_pages()
    with pytest.raises(DataError, match=r"one page per symbol, got \['BTC', 'BTC', 'ETH', 'SOL'\]"):
        parse_kraken_ohlc_many([*pages, pages[0]], "5m", "kraken")


def test_a_kraken_warning_is_not_an_error() -> None:
    body = compact({"error": ["WGeneral:Deprecated"], "result": {"XXBTZUSD": [ohlc_row(T0 // 1000)], "last": T0 // 1000}})

    assert parse_kraken_ohlc(body, "XXBTZUSD", "BTC", "5m", "kraken", "b").bars.height == 1


def trades_body(rows: list, last: str = "1", key: str = "XXBTZUSD") -> bytes:
    return compact({"error": [], "result": {key: rows, "last": last}})


def test_kraken_trades_keep_nanosecond_times_and_trade_ids() -> None:
    body = trades_body([["100.5", "0.25", 1704067200.123456, "b", "m", "", 7], ["101", "1", 1704067201.5, "s", "l", "", 8]], "1704067201500000000")

    page = parse_kraken_trades(body, "XXBTZUSD")

    assert page.last_ns == 1_704_067_201_500_000_000
    assert page.trades.rows() == [(1_704_067_200_123_456_000, 100.5, 0.25, 7), (1_704_067_201_500_000_000, 101.0, 1.0, 8)]


@pytest.mark.parametrize(
    ("rows", "last", "problem", "text"),
    [
        ([], 5, PayloadProblem.SCHEMA, "string of digits"),
        ([["1", "1"]], "1", PayloadProblem.SCHEMA, "wrong shape"),
        ([["x", "1", 1.0, "b", "m", ""]], "1", PayloadProblem.SCHEMA, "not a number"),
        ([["-1", "1", 1.0, "b", "m", ""]], "1", PayloadProblem.BAD_VALUE, "out of range"),
        ([["1", "-2", 1.0, "b", "m", ""]], "1", PayloadProblem.BAD_VALUE, "out of range"),
    ],
)
def test_a_bad_trades_page_raises(rows: list, last: object, problem: PayloadProblem, text: str) -> None:
    with pytest.raises(BadPayload) as error:
        parse_kraken_trades(trades_body(rows, last), "XXBTZUSD")

    assert error.value.problem is problem and text in str(error.value)


def trades(rows: list[tuple[int, float, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["ts_ns", "price", "volume", "trade_id"], orient="row")


def test_bars_rebuilt_from_trades_are_deterministic_and_leave_the_open_bar_out() -> None:
    ns = T0 * 1_000_000
    rows = [(ns + 1, 10.0, 1.0, 1), (ns + 2, 12.0, 2.0, 2), (ns + 2, 9.0, 1.0, 3), (ns + 3, 11.0, 1.0, 4),
            (ns + FIVE * 2_000_000, 20.0, 5.0, 5), (ns + FIVE * 3_000_000, 30.0, 1.0, 6)]  # fmt: skip
    frame = trades(rows)
    shuffled = pl.concat([frame.reverse(), frame.head(2)])  # reordered and with repeated trades

    bars = bars_from_trades(frame, "BTC", "5m", "kraken_trades", "k:1", T0 + 3 * FIVE)

    assert bars.equals(bars_from_trades(shuffled, "BTC", "5m", "kraken_trades", "k:1", T0 + 3 * FIVE))
    assert bars.select("ts", "open", "high", "low", "close", "volume").rows() == [
        (T0, 10.0, 12.0, 9.0, 11.0, 5.0),  # ids 2 and 3 share a time: the id orders them
        (T0 + 2 * FIVE, 20.0, 20.0, 20.0, 20.0, 5.0),  # no trade between: T0 + FIVE is a gap
    ]


SHARED = default_shared_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared/data is absent")


@needs_shared
@pytest.mark.parametrize(("name", "pair"), [("xchange/marketdata/example-ohlc-data.json", "XXBTZUSD"),
                                            ("nautilus_trader/spot/http_ohlc.json", "XBTUSDT")])  # fmt: skip
def test_recorded_kraken_ohlc_payloads_normalise(name: str, pair: str) -> None:
    body = (Path(SHARED) / "kraken_api" / name).read_bytes()
    rows = json.loads(body)["result"][pair]

    page = parse_kraken_ohlc(body, pair, "BTC", "1m", "kraken", "kraken:rec")

    assert page.bars.height == sum(1 for r in rows if r[0] * 1000 <= page.last_ms)
    assert page.bars.height >= 719
    assert page.bars["ts"].is_sorted()


@needs_shared
def test_recorded_kraken_trades_rebuild_into_bars() -> None:
    body = (Path(SHARED) / "kraken_api" / "nautilus_trader/spot/http_trades.json").read_bytes()
    page = parse_kraken_trades(body, "XBTUSDT")
    before = int(page.trades["ts_ns"].max()) // 1_000_000

    bars = bars_from_trades(page.trades, "BTC", "5m", "kraken_trades", "kraken_trades:rec", before)

    assert page.trades.height == 1000
    assert bars.height > 0 and bars["volume"].sum() <= page.trades["volume"].sum()
    assert (bars["high"] >= bars["low"]).all()
