"""The vectorised CoinAPI OHLCV reader: identical to the strict JSON path whenever it answers, None otherwise."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from backend.data import normalize
from backend.data.normalize import BadPayload, PayloadProblem, parse_coinapi_ohlcv

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
FIVE = 300_000


def iso7(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".0000000Z"


def item(i: int, price: object = None, start: int = T0) -> dict:
    t = start + i * FIVE
    base = 100.0 + i if price is None else price
    return {"time_period_start": iso7(t), "time_period_end": iso7(t + FIVE), "time_open": iso7(t),
            "time_close": iso7(t + FIVE - 1000), "price_open": base, "price_high": 102.5 + i, "price_low": 0.5,
            "price_close": 101.0 + i, "volume_traded": 3.25, "trades_count": 7}  # fmt: skip


def page(n: int, **dumps: object) -> bytes:
    return json.dumps([item(i) for i in range(n)], **dumps).encode()


COMPACT = {"separators": (",", ":")}


def strict(body: bytes) -> pl.DataFrame:
    return normalize._coinapi_bars(normalize._coinapi_strict(body))


def assert_same_bits(fast: pl.DataFrame, slow: pl.DataFrame) -> None:
    """Equal frames, and every float equal bit for bit (so 0.0 and -0.0 differ)."""
    assert fast.schema == slow.schema and fast.equals(slow)
    for name, dtype in fast.schema.items():
        if dtype == pl.Float64:
            assert np.array_equal(fast[name].to_numpy().view(np.int64), slow[name].to_numpy().view(np.int64)), name


def with_token(body: bytes, field: str, token: str, index: int = 1) -> bytes:
    """Replace the text of number ``field`` in item ``index`` of a compact page by ``token``."""
    key = f'"{field}":'.encode()
    at = -1
    for _ in range(index + 1):
        at = body.index(key, at + 1)
    start = at + len(key)
    end = min(body.find(b",", start) % len(body), body.index(b"}", start))
    return body[:start] + token.encode() + body[end:]


@pytest.mark.parametrize(
    "dumps",
    [COMPACT, {}, {"indent": 2}, {"indent": "\t", "separators": (",", " : ")}],
    ids=["compact", "spaced", "pretty", "tabs"],
)
@pytest.mark.parametrize("n", [1, 2, 9, 17])
def test_the_vectorised_reader_matches_the_strict_path_in_every_layout(dumps: dict, n: int) -> None:
    body = page(n, **dumps)

    fast = normalize._coinapi_vectorised(body)

    assert fast is not None
    assert fast.height == n
    assert_same_bits(fast, strict(body))


def test_crlf_line_ends_and_whitespace_around_the_array_are_read() -> None:
    body = b" \r\n" + page(5, indent=1).replace(b"\n", b"\r\n") + b"\r\n"

    fast = normalize._coinapi_vectorised(body)

    assert fast is not None
    assert_same_bits(fast, strict(body))


AWKWARD = ["1e-07", "1E+5", "2.5e3", "0.1", "100", "7", "0", "0.0", "60168.526514994905", "5e-324",
           "1.7976931348623157e308", "123456789012345678901234567890", "9007199254740993", "0.30000000000000004",
           "1E-2", "12.5e-0"]  # fmt: skip


@pytest.mark.parametrize("token", AWKWARD)
@pytest.mark.parametrize("field", ["price_open", "volume_traded", "trades_count"])
def test_awkward_json_numbers_are_read_as_python_reads_them(token: str, field: str) -> None:
    body = with_token(with_token(page(3, **COMPACT), field, token, 0), field, token, 2)

    fast = normalize._coinapi_vectorised(body)

    assert fast is not None
    assert_same_bits(fast, strict(body))


def test_17_digit_floats_of_a_whole_page_are_bit_identical() -> None:
    rng = np.random.default_rng(7)
    items = [item(i, price=float(p)) for i, p in enumerate(rng.lognormal(8, 3, 500))]
    items[3]["volume_traded"] = 1e-300
    items[4]["volume_traded"] = 2.2250738585072014e-308
    body = json.dumps(items, separators=(",", ":")).encode()

    fast = normalize._coinapi_vectorised(body)

    assert fast is not None
    assert_same_bits(fast, strict(body))


def test_a_page_longer_than_one_scan_chunk_and_one_block_of_items_is_read_whole() -> None:
    body = page(normalize._ITEMS + 700, **COMPACT)
    assert len(body) > normalize._CHUNK

    fast = normalize._coinapi_vectorised(body)

    assert fast is not None
    assert_same_bits(fast, strict(body))
    assert normalize._coinapi_vectorised(with_token(body, "price_low", "01", normalize._ITEMS + 5)) is None


@pytest.mark.parametrize(
    "token",
    ["+1", ".5", "5.", "-.5", "01", "-01", "00", "1.e5", "1.E5", "nan", "NaN", "Infinity", "-Infinity", "inf", "1.2.3",
     "1e5e3", "1e", "1e+", "-", "1-2", "1e400", "-1e400", "-0", "-0.0", "-0e5", '"1"', "null", "true", "1 2", "0x10"],
)  # fmt: skip
def test_a_token_that_is_not_a_plain_json_number_is_left_to_the_other_paths(token: str) -> None:
    body = with_token(page(3, **COMPACT), "volume_traded", token)

    assert normalize._coinapi_vectorised(body) is None


@pytest.mark.parametrize(("token", "problem"), [("+1", PayloadProblem.MALFORMED), ("01", PayloadProblem.MALFORMED),
                                                ("1.e5", PayloadProblem.MALFORMED), ("NaN", PayloadProblem.BAD_VALUE),
                                                ("1e400", PayloadProblem.BAD_VALUE)])  # fmt: skip
def test_a_refused_token_still_gets_the_strict_paths_error(token: str, problem: PayloadProblem) -> None:
    with pytest.raises(BadPayload) as error:
        parse_coinapi_ohlcv(with_token(page(3, **COMPACT), "volume_traded", token), "BTC", "5m", "coinapi", "b")

    assert error.value.problem is problem


@pytest.mark.parametrize("token", ["-0", "-0.0"])
def test_negative_zero_volumes_keep_the_sign_the_json_paths_give(token: str) -> None:
    body = with_token(page(3, **COMPACT), "volume_traded", token)

    frame = parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b")

    assert np.signbit(frame["volume"][1]) == (token == "-0.0")  # json reads -0 as the integer 0


def test_a_string_or_null_trades_count_is_left_to_the_other_paths() -> None:
    for token in ('"7"', "null"):
        body = with_token(page(3, **COMPACT), "trades_count", token)
        assert normalize._coinapi_vectorised(body) is None
        assert parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b").height == 3


def _replace_in_item(body: bytes, index: int, old: bytes, new: bytes) -> bytes:
    starts = [i for i in range(len(body)) if body[i : i + 1] == b"{"]
    at = body.index(old, starts[index])
    return body[:at] + new + body[at + len(old) :]


def test_an_item_laid_out_unlike_the_first_is_left_to_the_other_paths() -> None:
    body = page(12, **COMPACT)
    spaced_early = _replace_in_item(body, 3, b'"price_low":', b'"price_low": ')  # inside a whole block of 8 items
    spaced_late = _replace_in_item(body, 10, b'"price_low":', b'"price_low": ')  # in the items after the blocks
    renamed_late = _replace_in_item(body, 11, b'"time_open"', b'"time_opex"')

    for changed in (spaced_early, spaced_late, renamed_late):
        assert normalize._coinapi_vectorised(changed) is None
    assert parse_coinapi_ohlcv(spaced_late, "BTC", "5m", "coinapi", "b").equals(
        parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b")
    )
    assert parse_coinapi_ohlcv(renamed_late, "BTC", "5m", "coinapi", "b").equals(  # time_open is not read
        parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b")
    )
    renamed_price = _replace_in_item(body, 11, b'"price_low"', b'"price_lox"')
    assert normalize._coinapi_vectorised(renamed_price) is None
    with pytest.raises(BadPayload, match="item 11 has no field 'price_low'") as error:
        parse_coinapi_ohlcv(renamed_price, "BTC", "5m", "coinapi", "b")
    assert error.value.problem is PayloadProblem.SCHEMA


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"message": "Invalid API key"}',
        json.dumps([{**item(0), "extra": 1}]).encode(),  # an eleventh field
        json.dumps([{k: v for k, v in reversed(item(0).items())}]).encode(),  # fields in another order
        json.dumps([{**item(0), "time_open": "yesterday"}]).encode(),
        page(3, **COMPACT) + b"x",  # junk after the array
        page(3, **COMPACT)[:-1] + b",{}]",  # an item too short to end the page
    ],
    ids=["empty", "envelope", "extra-field", "reordered", "odd-time_open", "junk-after", "short-last-item"],
)
def test_a_page_not_in_the_documented_shape_is_left_to_the_other_paths(body: bytes) -> None:
    assert normalize._coinapi_vectorised(body) is None


def test_a_comma_inside_a_free_text_time_is_left_to_the_other_paths() -> None:
    body = _replace_in_item(page(3, **COMPACT), 1, b".0000000Z", b",0000000Z")  # time_period_start of item 1

    assert normalize._coinapi_vectorised(body) is None
    with pytest.raises(BadPayload, match="does not last 5m"):  # its seconds are still readable: the strict path goes on
        parse_coinapi_ohlcv(_replace_in_item(body, 1, b"2024", b"2023"), "BTC", "5m", "coinapi", "b")


def test_an_empty_number_is_left_to_the_other_paths() -> None:
    body = with_token(page(3, **COMPACT), "price_high", "")

    assert normalize._coinapi_vectorised(body) is None
    with pytest.raises(BadPayload) as error:
        parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b")
    assert error.value.problem is PayloadProblem.MALFORMED


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"2024-01-01T00:05:00", b"2024-01-01T00:0::00"),  # a ":" byte where a digit belongs
        (b"2024-01-01T00:05:00", b"2024-02-30T00:05:00"),  # no such day
        (b"2024-01-01T00:05:00", b"2024-13-01T00:05:00"),
        (b"2024-01-01T00:05:00", b"2024-00-01T00:05:00"),
        (b"2024-01-01T00:05:00", b"2024-01-00T00:05:00"),
        (b"2024-01-01T00:05:00", b"2024-01-01T24:05:00"),
        (b"2024-01-01T00:05:00", b"2024-01-01T00:60:00"),
        (b"2024-01-01T00:05:00", b"2024-01-01T00:05:60"),
        (b"2024-01-01T00:05:00", b"1969-12-31T23:55:00"),  # before 1970: left to polars
    ],
)
def test_an_impossible_or_unusual_time_is_left_to_the_other_paths(old: bytes, new: bytes) -> None:
    body = _replace_in_item(page(3, **COMPACT), 1, old, new)

    assert normalize._coinapi_vectorised(body) is None
    with pytest.raises(BadPayload) as error:
        parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b")
    assert error.value.problem in (PayloadProblem.SCHEMA, PayloadProblem.NON_MONOTONIC)


def test_free_text_fields_and_the_fraction_of_a_second_do_not_change_the_bars() -> None:
    body = _replace_in_item(page(3, **COMPACT), 1, b".0000000Z", b".9:;<=>?Z")  # the strict path ignores these

    fast = normalize._coinapi_vectorised(body)

    assert fast is not None
    assert_same_bits(fast, strict(body))


def test_leap_days_and_far_years_are_converted_exactly() -> None:
    starts = [datetime(2024, 2, 29, 23, 55, tzinfo=UTC), datetime(2000, 2, 29, tzinfo=UTC),
              datetime(2100, 3, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC),
              datetime(9999, 12, 31, 23, 50, tzinfo=UTC)]  # fmt: skip
    items = [item(0, start=int(s.timestamp() * 1000)) for s in starts]
    body = json.dumps(items, separators=(",", ":")).encode()

    fast = normalize._coinapi_vectorised(body)

    assert fast is not None
    assert_same_bits(fast, strict(body))
    assert fast["start"].to_list() == [int(s.timestamp() * 1000) for s in starts]


def test_a_non_leap_february_29th_is_left_to_the_other_paths() -> None:
    items = [item(0, start=int(datetime(2023, 2, 28, 23, 55, tzinfo=UTC).timestamp() * 1000))]
    body = json.dumps(items, separators=(",", ":")).encode().replace(b"2023-03-01T00:00", b"2023-02-29T00:00")

    assert b"2023-02-29" in body and normalize._coinapi_vectorised(body) is None
    with pytest.raises(BadPayload, match="not an ISO 8601 UTC time"):
        parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b")


MUTATIONS = b'0123456789.eE+-,:"{}[] \n\\xN'


def test_single_byte_mutations_never_make_the_vectorised_reader_disagree_with_json() -> None:
    """Whatever the vectorised reader accepts, the strict JSON path accepts with the same bits."""
    rng = random.Random(20240101)
    body = page(10, **COMPACT)
    accepted = 0
    for _ in range(3_000):
        at = rng.randrange(len(body))
        kind = rng.randrange(3)
        byte = bytes([rng.choice(MUTATIONS)])
        changed = body[:at] + (b"" if kind == 0 else byte) + body[at + (kind != 2) :]
        fast = normalize._coinapi_vectorised(changed)
        if fast is None:
            continue
        accepted += 1
        assert_same_bits(fast, strict(changed))
    assert accepted > 100  # digit-for-digit changes are still read here


def test_random_number_texts_are_accepted_only_when_json_reads_them_the_same() -> None:
    rng = random.Random(5)
    alphabet = "0123456789.eE+-"
    for _ in range(2_000):
        token = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 7)))
        body = with_token(page(2, **COMPACT), "price_close", token)
        fast = normalize._coinapi_vectorised(body)
        if fast is not None:
            assert_same_bits(fast, strict(body))


def test_parse_uses_the_vectorised_reader_and_gives_the_same_bars_as_the_json_paths() -> None:
    body = page(50, **COMPACT)
    fast = parse_coinapi_ohlcv(body, "BTC", "5m", "coinapi", "b")
    raw = normalize._coinapi_fast(body)
    assert raw is not None

    slow = normalize._lake_frame(
        normalize._coinapi_bars(raw).select(pl.col("start").alias("ts"), "open", "high", "low", "close", "volume"),
        "BTC", "5m", "coinapi", "b",
    )  # fmt: skip

    assert_same_bits(fast, slow)


def test_a_page_mixing_layouts_is_read_by_the_strict_path() -> None:
    compact = page(3, **COMPACT)
    mixed = compact.replace(b"},{", b"}, {", 1)  # the first separator only: neither reader's shape

    assert normalize._coinapi_vectorised(mixed) is None and normalize._coinapi_fast(mixed) is None
    assert parse_coinapi_ohlcv(mixed, "BTC", "5m", "coinapi", "b").equals(
        parse_coinapi_ohlcv(compact, "BTC", "5m", "coinapi", "b")
    )
