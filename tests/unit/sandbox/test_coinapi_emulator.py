"""The CoinAPI emulator over real HTTP: OHLCV paging, trades, symbols, key, credits, rate limits, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import polars as pl
import pytest
from sandbox_helpers import BAR_MS, START_MS, Clock, make_trades

from backend.config.schema import UniverseSpec
from backend.sandbox import CoinApiEmulator, FaultSpec
from backend.sandbox.coinapi import iso7

KEY = {"X-CoinAPI-Key": "sandbox-key"}
CLIENT = httpx.Client(timeout=5)
BTC_HISTORY = "/v1/ohlcv/KRAKEN_SPOT_BTC_USD/history"


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(emulator: CoinApiEmulator, path: str, headers: dict | None = KEY, **params: object) -> httpx.Response:
    return CLIENT.get(emulator.base_url + path, params=params, headers=headers)


@pytest.fixture
def coinapi(bars: pl.DataFrame, universe: UniverseSpec):
    trades = make_trades("BTC", 3000)
    with CoinApiEmulator(bars, "5m", trades=trades, universe=universe, now_ms=Clock(1_800_000_000_000)) as emulator:
        yield emulator


def test_ohlcv_history_items_have_coinapi_fields_numbers_and_seven_digit_times(coinapi: CoinApiEmulator, bars: pl.DataFrame) -> None:
    response = _get(coinapi, BTC_HISTORY, period_id="5MIN", time_start="2025-01-01T00:00:00Z", limit=2)
    assert response.status_code == 200
    first = response.json()[0]
    btc = bars.filter(pl.col("symbol") == "BTC").row(0, named=True)
    assert first == {
        "time_period_start": "2025-01-01T00:00:00.0000000Z",
        "time_period_end": "2025-01-01T00:05:00.0000000Z",
        "time_open": "2025-01-01T00:00:00.0000000Z",
        "time_close": "2025-01-01T00:04:59.0000000Z",
        "price_open": btc["open"],
        "price_high": btc["high"],
        "price_low": btc["low"],
        "price_close": btc["close"],
        "volume_traded": btc["volume"],
        "trades_count": 1,
    }


def test_paging_by_time_start_reproduces_every_bar_exactly_once(coinapi: CoinApiEmulator, bars: pl.DataFrame) -> None:
    btc = bars.filter(pl.col("symbol") == "BTC").sort("ts")
    seen: list[dict] = []
    time_start = "2024-12-31T00:00:00.0000000Z"
    while True:
        page = _get(coinapi, BTC_HISTORY, period_id="5MIN", time_start=time_start, limit=300).json()
        if not page:
            break
        seen.extend(page)
        time_start = page[-1]["time_period_end"]
    assert len(seen) == btc.height
    assert [item["price_close"] for item in seen] == btc["close"].to_list()
    assert len({item["time_period_start"] for item in seen}) == btc.height


def test_time_end_is_exclusive_and_default_limit_is_100(coinapi: CoinApiEmulator) -> None:
    items = _get(coinapi, BTC_HISTORY, period_id="5MIN", time_start=_iso(START_MS), time_end=_iso(START_MS + 3 * BAR_MS)).json()
    assert [i["time_period_start"][11:19] for i in items] == ["00:00:00", "00:05:00", "00:10:00"]
    assert len(_get(coinapi, BTC_HISTORY, period_id="5MIN", time_start=_iso(START_MS)).json()) == 100
    assert len(_get(coinapi, BTC_HISTORY, period_id="1HRS").json()) == 84  # no time_start: from the first bar


def test_periods_roll_up_and_latest_is_descending(coinapi: CoinApiEmulator, bars: pl.DataFrame) -> None:
    day = _get(coinapi, BTC_HISTORY, period_id="1DAY", time_start="2025-01-01").json()
    btc = bars.filter(pl.col("symbol") == "BTC")
    assert [d["time_period_start"][:10] for d in day] == ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]
    assert day[0]["volume_traded"] == pytest.approx(btc.head(288)["volume"].sum())
    assert day[0]["trades_count"] == 288
    latest = _get(coinapi, "/v1/ohlcv/KRAKEN_SPOT_BTC_USD/latest", period_id="5MIN", limit=3).json()
    assert [i["price_close"] for i in latest] == btc["close"].reverse().head(3).to_list()


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"period_id": "7MIN"}, "period_id"),
        ({"period_id": "1MIN"}, "not served by this emulator"),
        ({"period_id": "5MIN", "limit": "0"}, "limit"),
        ({"period_id": "5MIN", "limit": "100001"}, "limit"),
        ({"period_id": "5MIN", "time_start": "yesterday"}, "time_start"),
        ({"period_id": "5MIN", "include_empty_items": "true"}, "include_empty_items"),
    ],
)
def test_bad_ohlcv_parameters_are_400_with_a_message(coinapi: CoinApiEmulator, params: dict, fragment: str) -> None:
    response = _get(coinapi, BTC_HISTORY, **params)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_unknown_symbol_is_550_and_unknown_path_404(coinapi: CoinApiEmulator) -> None:
    response = _get(coinapi, "/v1/ohlcv/KRAKEN_SPOT_FOO_USD/history", period_id="5MIN")
    assert response.status_code == 550
    assert "don't have" in response.json()["message"]
    assert _get(coinapi, "/v1/trades/KRAKEN_SPOT_FOO_USD/history", date="2025-01-01").status_code == 550
    assert _get(coinapi, "/v1/exchangerate/BTC/USD").status_code == 404


def test_symbol_without_bars_answers_an_empty_list(coinapi: CoinApiEmulator) -> None:
    assert _get(coinapi, "/v1/ohlcv/KRAKEN_SPOT_SOL_USD/history", period_id="5MIN").json() == []


def test_api_key_is_required_by_header_or_query(coinapi: CoinApiEmulator) -> None:
    for headers in (None, {"X-CoinAPI-Key": "wrong"}):
        response = _get(coinapi, "/v1/symbols", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"message": "Invalid API key"}
        assert "x-ratelimit-limit" not in response.headers
    assert _get(coinapi, "/v1/symbols", headers=None, apikey="sandbox-key").status_code == 200
    assert _get(coinapi, "/v1/symbols", headers={"Authorization": "sandbox-key"}).status_code == 200
    assert coinapi.faults.request_count == 2  # refused keys are not counted


def test_rate_limit_headers_count_credits_per_100_items(coinapi: CoinApiEmulator) -> None:
    first = _get(coinapi, "/v1/symbols")
    assert first.headers["x-ratelimit-request-cost"] == "1"
    assert (first.headers["x-ratelimit-used"], first.headers["x-ratelimit-remaining"]) == ("1", "999999")
    assert first.headers["x-ratelimit-limit"] == "1000000"
    assert first.headers["x-ratelimit-overage"] == "disabled"
    assert first.headers["x-concurrencylimit-limit"] == "10"
    assert first.headers["x-ratelimit-reset"] == "2027-01-16T08:00:00.0000000Z"
    page = _get(coinapi, BTC_HISTORY, period_id="5MIN", limit=250)
    assert page.headers["x-ratelimit-request-cost"] == "3"
    assert page.headers["x-ratelimit-used"] == "4"
    assert _get(coinapi, BTC_HISTORY, period_id="5MIN").headers["x-ratelimit-request-cost"] == "1"
    assert _get(coinapi, BTC_HISTORY, period_id="5MIN", limit=5, time_start="2030-01-01").headers["x-ratelimit-request-cost"] == "1"


def test_token_bucket_answers_429_with_retry_after_and_limit_headers(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    clock = Clock(START_MS)
    with CoinApiEmulator(bars, "5m", faults=FaultSpec(rate_limit_per_second=2.0), universe=universe, now_ms=clock) as emulator:
        statuses = [_get(emulator, "/v1/symbols").status_code for _ in range(2)]
        refused = _get(emulator, "/v1/symbols")
        assert statuses == [200, 200]
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-ratelimit-request-cost"] == "0"
        assert "message" in refused.json()
        clock.now += 500
        assert _get(emulator, "/v1/symbols").status_code == 200
        assert [s for _, _, s in emulator.request_log] == [200, 200, 429, 200]


def test_exhausted_credits_answer_429_until_the_window_resets(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    with CoinApiEmulator(bars, "5m", universe=universe, credit_quota=3) as emulator:
        assert _get(emulator, BTC_HISTORY, period_id="5MIN", limit=300).status_code == 200
        refused = _get(emulator, "/v1/symbols")
        assert refused.status_code == 429
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["retry-after"] == "86400"


def test_injected_faults_keep_coinapi_shapes(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    faults = FaultSpec(fail_429_every=2, fail_5xx_every=3, truncate_every=5, malformed_every=7)
    with CoinApiEmulator(bars, "5m", faults=faults, universe=universe) as emulator:
        responses = [_get(emulator, "/v1/symbols") for _ in range(7)]
        assert [r.status_code for r in responses] == [200, 429, 500, 429, 200, 429, 200]
        assert responses[1].headers["retry-after"] == "1"
        assert responses[2].json() == {"message": "Internal Server Error"}
        assert responses[2].headers["x-ratelimit-request-cost"] == "0"
        assert responses[4].content == responses[0].content[: len(responses[0].content) // 2]
        assert responses[6].headers["content-type"] == "text/html"
        with pytest.raises(json.JSONDecodeError):
            responses[6].json()


def test_revised_and_hidden_bars_through_coinapi(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    faults = FaultSpec(hidden_bars=(START_MS + BAR_MS,), revised_bars={START_MS: 99.5})
    with CoinApiEmulator(bars, "5m", faults=faults, universe=universe) as emulator:
        first = _get(emulator, BTC_HISTORY, period_id="5MIN", limit=3).json()
        second = _get(emulator, BTC_HISTORY, period_id="5MIN", limit=3).json()
        assert [i["time_period_start"][11:16] for i in first] == ["00:00", "00:10", "00:15"]
        assert second[0]["price_close"] == 99.5 != first[0]["price_close"]
        assert second[0]["price_low"] == 99.5


def test_trades_history_pages_within_one_day(coinapi: CoinApiEmulator) -> None:
    trades = make_trades("BTC", 3000)
    day_end = START_MS + 86_400_000
    expected = trades.filter(pl.col("ts_ms") < day_end)
    seen: dict[str, dict] = {}
    time_start = iso7(START_MS * 1_000_000)
    while True:
        page = _get(coinapi, "/v1/trades/KRAKEN_SPOT_BTC_USD/history", time_start=time_start, limit=1000, include_id="true").json()
        new = [item for item in page if item["uuid"] not in seen]
        if not new:
            break
        seen.update((item["uuid"], item) for item in new)
        time_start = page[-1]["time_exchange"]  # inclusive: the client dedupes by uuid
    items = sorted(seen.values(), key=lambda i: int(i["id_trade"]))
    assert [int(i["id_trade"]) for i in items] == expected["trade_id"].to_list()
    first = items[0]
    assert set(first) == {"symbol_id", "time_exchange", "time_coinapi", "uuid", "price", "size", "taker_side", "id_trade"}
    assert first["symbol_id"] == "KRAKEN_SPOT_BTC_USD"
    assert first["taker_side"] == ("BUY" if expected["side"][0] == "b" else "SELL")
    assert first["price"] == expected["price"][0] and first["size"] == expected["volume"][0]
    assert {i["taker_side"] for i in items} == {"BUY", "SELL"}
    by_date = _get(coinapi, "/v1/trades/KRAKEN_SPOT_BTC_USD/history", date="2025-01-01", limit=5).json()
    assert "id_trade" not in by_date[0] and by_date[0]["uuid"] == items[0]["uuid"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "'date' or 'time_start' is required"),
        ({"time_start": "2025-01-01T10:00:00Z", "time_end": "2025-01-02T10:00:00Z"}, "same day"),
    ],
)
def test_trades_history_refuses_bad_windows(coinapi: CoinApiEmulator, params: dict, fragment: str) -> None:
    response = _get(coinapi, "/v1/trades/KRAKEN_SPOT_BTC_USD/history", **params)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_trades_of_a_symbol_without_trades_and_a_bounded_window(coinapi: CoinApiEmulator) -> None:
    assert _get(coinapi, "/v1/trades/KRAKEN_SPOT_ETH_USD/history", date="2025-01-01").json() == []
    window = _get(coinapi, "/v1/trades/KRAKEN_SPOT_BTC_USD/history", time_start=_iso(START_MS),
                  time_end=_iso(START_MS + 60_000), limit=1000).json()  # fmt: skip
    assert window and all(i["time_exchange"] < "2025-01-01T00:01:00" for i in window)


def test_symbols_list_the_universe_with_filters(coinapi: CoinApiEmulator) -> None:
    everything = _get(coinapi, "/v1/symbols").json()
    assert len(everything) == 30
    kraken = _get(coinapi, "/v1/symbols", filter_exchange_id="KRAKEN").json()
    assert kraken == everything
    assert _get(coinapi, "/v1/symbols", filter_exchange_id="BINANCE").json() == []
    btc = _get(coinapi, "/v1/symbols", filter_symbol_id="KRAKEN_SPOT_BTC_").json()
    assert [s["symbol_id"] for s in btc] == ["KRAKEN_SPOT_BTC_USD"]
    assert btc[0]["symbol_id_exchange"] == "XXBTZUSD" and btc[0]["asset_id_base_exchange"] == "XBT"
    assert (btc[0]["data_start"], btc[0]["data_end"]) == ("2025-01-01", "2025-01-04")
    doge = _get(coinapi, "/v1/symbols", filter_asset_id="DOGE;ETH").json()
    assert sorted(s["asset_id_base"] for s in doge) == ["DOGE", "ETH"]
    sol = next(s for s in everything if s["asset_id_base"] == "SOL")
    assert "data_start" not in sol  # no bars held


def test_iso7_prints_100ns_digits() -> None:
    assert iso7(1_483_228_800_123_456_789) == "2017-01-01T00:00:00.1234567Z"


def test_duplicated_and_disordered_items_in_an_ohlcv_page(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    faults = FaultSpec(duplicated_bars=(START_MS + 3_600_000,), disordered_bars=(START_MS,))
    with CoinApiEmulator(bars, "5m", faults=faults, universe=universe) as emulator:
        items = _get(emulator, BTC_HISTORY, period_id="1HRS", limit=3).json()
        assert [i["time_period_start"][11:13] for i in items] == ["01", "01", "00", "02"]
