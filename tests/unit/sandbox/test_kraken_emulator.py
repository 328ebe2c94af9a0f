"""The Kraken public REST emulator over real HTTP: shapes, OHLC and Trades paging, errors, faults."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from sandbox_helpers import BAR_MS, START_MS, Clock, make_trades

from backend.config.schema import UniverseSpec
from backend.data.shared_loader import default_shared_dir
from backend.sandbox import FaultSpec, KrakenEmulator
from backend.sandbox.kraken import decimal_text, decimal_texts


CLIENT = httpx.Client(timeout=5)  # one connection pool: building a client per request costs ~40 ms


def _get(emulator: KrakenEmulator, path: str, **params: object) -> dict:
    response = CLIENT.get(emulator.base_url + path, params=params)
    assert response.status_code == 200
    return response.json()


def _result(emulator: KrakenEmulator, path: str, **params: object) -> dict:
    body = _get(emulator, path, **params)
    assert body["error"] == []
    return body["result"]


@pytest.fixture
def kraken(bars: pl.DataFrame, universe: UniverseSpec):
    trades = make_trades("BTC", 2500)
    with KrakenEmulator(bars, "5m", trades=trades, universe=universe, now_ms=Clock(1_800_000_000_000)) as emulator:
        yield emulator


def _fixture(name: str) -> dict | None:
    shared = default_shared_dir()
    path = None if shared is None else shared / "kraken_api" / "nautilus_trader" / "spot" / name
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _types(value: object) -> object:
    if isinstance(value, list):
        return [_types(v) for v in value[:1]] if value and not isinstance(value[0], (int, float)) else "list"
    return type(value).__name__


# ----------------------------------------------------------------------------- shapes
def test_time_and_system_status_follow_the_injected_clock(kraken: KrakenEmulator) -> None:
    time_result = _result(kraken, "/0/public/Time")
    assert time_result == {"unixtime": 1_800_000_000, "rfc1123": "Fri, 15 Jan 27 08:00:00 +0000"}
    assert _result(kraken, "/0/public/SystemStatus") == {"status": "online", "timestamp": "2027-01-15T08:00:00Z"}


def test_assets_list_usd_and_every_base_with_kraken_keys(kraken: KrakenEmulator) -> None:
    assets = _result(kraken, "/0/public/Assets")
    assert assets["XXBT"]["altname"] == "XBT"
    assert assets["XXDG"]["altname"] == "XDG"
    assert assets["SOL"]["altname"] == "SOL"
    assert assets["ZUSD"] == {"aclass": "currency", "altname": "USD", "decimals": 4, "display_decimals": 2,
                              "collateral_value": 1, "status": "enabled"}  # fmt: skip
    assert len(assets) == 31
    assert set(_result(kraken, "/0/public/Assets", asset="XBT,xeth")) == {"XXBT", "XETH"}
    assert _get(kraken, "/0/public/Assets", asset="DOGE") == {"error": ["EQuery:Unknown asset"], "result": {}}


def test_asset_pairs_are_keyed_by_pair_key_whatever_alias_was_asked(kraken: KrakenEmulator) -> None:
    for alias in ("XBTUSD", "XXBTZUSD", "XBT/USD", "BTC/USD"):
        assert list(_result(kraken, "/0/public/AssetPairs", pair=alias)) == ["XXBTZUSD"]
    pairs = _result(kraken, "/0/public/AssetPairs")
    assert len(pairs) == 30
    btc = pairs["XXBTZUSD"]
    assert (btc["altname"], btc["wsname"], btc["base"], btc["quote"]) == ("XBTUSD", "XBT/USD", "XXBT", "ZUSD")
    assert (btc["ordermin"], btc["costmin"], btc["status"]) == ("0.00005", "0.5", "online")
    assert (btc["pair_decimals"], btc["tick_size"], btc["lot_decimals"]) == (1, "0.1", 8)
    assert pairs["PEPEUSD"]["ordermin"] == "1500000"
    assert pairs["XDGUSD"]["base"] == "XXDG"
    assert pairs["SOLUSD"]["pair_decimals"] == 5  # no bars held: the default precision


@pytest.mark.parametrize(
    ("info", "keys"),
    [
        ("info", None),
        ("leverage", {"leverage_buy", "leverage_sell"}),
        ("fees", {"fees", "fees_maker", "fee_volume_currency"}),
        ("margin", {"margin_call", "margin_stop"}),
    ],
)
def test_asset_pairs_info_selects_fields(kraken: KrakenEmulator, info: str, keys: set[str] | None) -> None:
    entry = _result(kraken, "/0/public/AssetPairs", pair="ETHUSD", info=info)["XETHZUSD"]
    assert set(entry) == (keys or set(_result(kraken, "/0/public/AssetPairs", pair="ETHUSD")["XETHZUSD"]))
    assert _get(kraken, "/0/public/AssetPairs", info="everything")["error"] == ["EGeneral:Invalid arguments:info"]


def test_ticker_summarises_the_last_day_of_bars(kraken: KrakenEmulator, bars: pl.DataFrame) -> None:
    ticker = _result(kraken, "/0/public/Ticker", pair="XBTUSD")["XXBTZUSD"]
    btc = bars.filter(pl.col("symbol") == "BTC").sort("ts")
    assert ticker["c"][0] == decimal_text(btc["close"][-1])
    last_ts = btc["ts"][-1]
    day = btc.filter(pl.col("ts") >= last_ts - last_ts % 86_400_000)
    assert float(ticker["o"]) == day["open"][0]
    assert float(ticker["h"][0]) == day["high"].max()
    assert float(ticker["v"][0]) == pytest.approx(day["volume"].sum())
    assert ticker["t"] == [day.height, 288]
    assert set(_result(kraken, "/0/public/Ticker")) == {"XXBTZUSD", "XETHZUSD", "XDGUSD"}  # pairs with bars


def test_every_endpoint_matches_the_recorded_kraken_shapes(kraken: KrakenEmulator) -> None:
    recorded = {name: _fixture(name) for name in ("http_ohlc.json", "http_trades.json", "http_asset_pairs.json",
                                                  "http_server_time.json", "http_system_status.json", "http_ticker.json")}  # fmt: skip
    if any(v is None for v in recorded.values()):
        pytest.skip("no shared Kraken fixtures")
    ohlc = _get(kraken, "/0/public/OHLC", pair="XBTUSD", interval=5)
    trades = _get(kraken, "/0/public/Trades", pair="XBTUSD")
    pairs = _get(kraken, "/0/public/AssetPairs", pair="XBTUSD")
    ticker = _get(kraken, "/0/public/Ticker", pair="XBTUSD")
    for ours, theirs in ((ohlc, recorded["http_ohlc.json"]), (trades, recorded["http_trades.json"])):
        assert set(ours) == set(theirs) == {"error", "result"}
        (key,) = [k for k in theirs["result"] if k != "last"]
        assert [type(v).__name__ for v in ours["result"]["XXBTZUSD"][0]] == [type(v).__name__ for v in theirs["result"][key][0]]
        assert type(ours["result"]["last"]) is type(theirs["result"]["last"])
    theirs_pair = next(iter(recorded["http_asset_pairs.json"]["result"].values()))
    ours_pair = pairs["result"]["XXBTZUSD"]
    assert set(ours_pair) == set(theirs_pair)
    assert {k: _types(v) for k, v in ours_pair.items()} == {k: _types(v) for k, v in theirs_pair.items()}
    theirs_ticker = next(iter(recorded["http_ticker.json"]["result"].values()))
    assert {k: _types(v) for k, v in ticker["result"]["XXBTZUSD"].items()} == {k: _types(v) for k, v in theirs_ticker.items()}
    for path, name in (("/0/public/Time", "http_server_time.json"), ("/0/public/SystemStatus", "http_system_status.json")):
        ours_plain = _get(kraken, path)
        assert {k: type(v) for k, v in ours_plain["result"].items()} == {k: type(v) for k, v in recorded[name]["result"].items()}


# ----------------------------------------------------------------------------- OHLC
def test_ohlc_serves_720_committed_bars_and_the_provisional_last_one(kraken: KrakenEmulator, bars: pl.DataFrame) -> None:
    result = _result(kraken, "/0/public/OHLC", pair="XBTUSD", interval=5)
    rows = result["XXBTZUSD"]
    btc = bars.filter(pl.col("symbol") == "BTC").sort("ts")
    assert len(rows) == 721
    assert [r[0] for r in rows] == (btc["ts"][-721:] // 1000).to_list()
    assert result["last"] == rows[-2][0]  # the newest committed bar, not the provisional one
    row = rows[100]
    source = btc.row(1000 - 721 + 100, named=True)
    assert [float(x) for x in row[1:5]] == [source["open"], source["high"], source["low"], source["close"]]
    assert float(row[6]) == source["volume"]
    assert all(isinstance(x, str) and "e" not in x for x in row[1:7])


def test_ohlc_since_is_exclusive_and_the_provisional_bar_is_always_present(kraken: KrakenEmulator, bars: pl.DataFrame) -> None:
    last_bar_s = (START_MS + 999 * BAR_MS) // 1000
    rows = _result(kraken, "/0/public/OHLC", pair="XBTUSD", interval=5, since=last_bar_s - 600)["XXBTZUSD"]
    assert [r[0] for r in rows] == [last_bar_s - 300, last_bar_s]
    rows = _result(kraken, "/0/public/OHLC", pair="XBTUSD", interval=5, since=last_bar_s + 10_000)["XXBTZUSD"]
    assert [r[0] for r in rows] == [last_bar_s]


def test_ohlc_rolls_bars_up_to_coarser_intervals(kraken: KrakenEmulator, bars: pl.DataFrame) -> None:
    rows = _result(kraken, "/0/public/OHLC", pair="ETHUSD", interval=60)["XETHZUSD"]
    expected = (
        bars.filter(pl.col("symbol") == "ETH")
        .sort("ts")
        .group_by((pl.col("ts") // 3_600_000) * 3600, maintain_order=True)
        .agg(pl.col("open").first(), pl.col("high").max(), pl.col("low").min(), pl.col("close").last(), pl.col("volume").sum())
    )
    assert len(rows) == expected.height == 84
    assert [r[0] for r in rows] == expected["ts"].to_list()
    assert [float(r[4]) for r in rows] == expected["close"].to_list()
    assert [float(r[2]) for r in rows] == expected["high"].to_list()
    assert [float(r[6]) for r in rows] == pytest.approx(expected["volume"].to_list())
    assert all(r[7] == 12 for r in rows[:-1])  # no trade counts held: one per bar with volume


@pytest.mark.parametrize("interval", ["1", "7", "abc"])
def test_ohlc_refuses_intervals_it_cannot_serve(kraken: KrakenEmulator, interval: str) -> None:
    body = _get(kraken, "/0/public/OHLC", pair="XBTUSD", interval=interval)
    assert body == {"error": ["EGeneral:Invalid arguments:interval"], "result": {}}


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, "EGeneral:Invalid arguments:pair"),
        ({"pair": "XBTUSD,ETHUSD"}, "EGeneral:Invalid arguments:pair"),
        ({"pair": "NOPEUSD"}, "EQuery:Unknown asset pair"),
        ({"pair": "XBTUSD", "interval": "5", "since": "yesterday"}, "EGeneral:Invalid arguments:since"),
    ],
)
def test_ohlc_bad_requests_get_kraken_errors(kraken: KrakenEmulator, params: dict, error: str) -> None:
    assert _get(kraken, "/0/public/OHLC", **params) == {"error": [error], "result": {}}


def test_unknown_method_and_unknown_pairs(kraken: KrakenEmulator) -> None:
    assert _get(kraken, "/0/public/Depthh")["error"] == ["EGeneral:Unknown method"]
    assert _get(kraken, "/0/public/Ticker", pair="FOOUSD")["error"] == ["EQuery:Unknown asset pair"]
    assert _get(kraken, "/0/public/AssetPairs", pair="FOOUSD")["error"] == ["EQuery:Unknown asset pair"]
    assert _get(kraken, "/0/public/Trades", pair="FOOUSD")["error"] == ["EQuery:Unknown asset pair"]


def test_ohlc_of_a_pair_without_bars_is_empty(kraken: KrakenEmulator) -> None:
    assert _result(kraken, "/0/public/OHLC", pair="SOLUSD", interval=5, since=5) == {"SOLUSD": [], "last": 5}


def test_polling_ohlc_with_last_as_since_yields_every_bar_exactly_once(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    clock = Clock(START_MS + 100 * BAR_MS)  # bars 0..100 have opened; bar 100 is provisional
    btc = bars.filter(pl.col("symbol") == "BTC").sort("ts")
    committed: list[list] = []
    with KrakenEmulator(bars, "5m", universe=universe, now_ms=clock) as emulator:
        since = 0
        while True:
            result = _result(emulator, "/0/public/OHLC", pair="XBTUSD", interval=5, since=since)
            rows = result["XXBTZUSD"]
            committed.extend(r for r in rows[:-1] if r[0] > since)
            provisional = rows[-1]
            since = result["last"]
            if clock.now >= START_MS + 999 * BAR_MS:
                break
            clock.now = min(clock.now + 337 * BAR_MS, START_MS + 999 * BAR_MS)
    served = [r[0] for r in committed] + [provisional[0]]
    assert served == (btc["ts"] // 1000).to_list()
    assert [float(r[4]) for r in committed] == btc["close"][:-1].to_list()


def test_append_bars_is_visible_to_a_later_request(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    early = bars.filter(pl.col("ts") < START_MS + 500 * BAR_MS)
    later = bars.filter(pl.col("ts") >= START_MS + 500 * BAR_MS)
    with KrakenEmulator(early, "5m", universe=universe) as emulator:
        first = _result(emulator, "/0/public/OHLC", pair="XDGUSD", interval=5)
        emulator.append_bars(later)
        second = _result(emulator, "/0/public/OHLC", pair="XDGUSD", interval=5, since=first["last"])
        assert first["XDGUSD"][-1][0] == (START_MS + 499 * BAR_MS) // 1000
        assert [r[0] for r in second["XDGUSD"]][:2] == [first["XDGUSD"][-1][0], (START_MS + 500 * BAR_MS) // 1000]
        assert second["XDGUSD"][-1][0] == (START_MS + 999 * BAR_MS) // 1000
        revised = later.filter(pl.col("ts") == later["ts"].max()).with_columns(close=pl.col("close") * 1.001, high=pl.col("high") * 1.01)
        emulator.append_bars(revised)  # the provisional bar moves: same ts, new values
        third = _result(emulator, "/0/public/OHLC", pair="XDGUSD", interval=5, since=second["last"])
        doge = revised.filter(pl.col("symbol") == "DOGE")
        assert float(third["XDGUSD"][-1][4]) == doge["close"][0]


# ----------------------------------------------------------------------------- data faults
def test_hidden_late_and_revised_bars(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    hidden, late, revised = START_MS + 990 * BAR_MS, START_MS + 995 * BAR_MS, START_MS + 997 * BAR_MS
    faults = FaultSpec(hidden_bars=(hidden,), late_bars={late: 3}, revised_bars={revised: 12345.5})
    with KrakenEmulator(bars, "5m", faults=faults, universe=universe) as emulator:
        def times_and_close() -> dict[int, str]:
            rows = _result(emulator, "/0/public/OHLC", pair="XBTUSD", interval=5, since=hidden // 1000 - 600)["XXBTZUSD"]
            return {r[0]: r[4] for r in rows}

        first = times_and_close()  # request 1
        assert hidden // 1000 not in first and late // 1000 not in first
        second = times_and_close()  # request 2: the revision is served, the late bar still absent
        assert second[revised // 1000] == "12345.5" != first[revised // 1000]
        assert late // 1000 not in second
        third = times_and_close()  # request 3: the late bar has arrived
        assert late // 1000 in third and hidden // 1000 not in third


def test_a_late_bar_is_not_revised_before_it_was_served(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    bar = START_MS + 995 * BAR_MS
    faults = FaultSpec(late_bars={bar: 3}, revised_bars={bar: 777.0})
    with KrakenEmulator(bars, "5m", faults=faults, universe=universe) as emulator:
        for _ in range(2):
            _result(emulator, "/0/public/OHLC", pair="XBTUSD", interval=5)
        rows = {r[0]: r[4] for r in _result(emulator, "/0/public/OHLC", pair="XBTUSD", interval=5)["XXBTZUSD"]}
        assert rows[bar // 1000] != "777.0"
        rows = {r[0]: r[4] for r in _result(emulator, "/0/public/OHLC", pair="XBTUSD", interval=5)["XXBTZUSD"]}
        assert rows[bar // 1000] == "777.0"


# ----------------------------------------------------------------------------- trades
def test_trades_paged_with_last_reproduce_every_trade_exactly_once(kraken: KrakenEmulator) -> None:
    trades = make_trades("BTC", 2500)
    since: str | int = 0
    seen: list[int] = []
    pages = 0
    while True:
        result = _result(kraken, "/0/public/Trades", pair="XBTUSD", since=since, count=1000)
        rows = result["XXBTZUSD"]
        assert isinstance(result["last"], str) and len(result["last"]) == 19 or not rows
        if not rows:
            assert result["last"] == since
            break
        assert len(rows) <= 1000
        seen.extend(r[6] for r in rows)
        since = result["last"]
        pages += 1
    assert pages == 3
    assert seen == trades["trade_id"].to_list()
    rows = _result(kraken, "/0/public/Trades", pair="XBTUSD", count=3)["XXBTZUSD"]
    assert [r[6] for r in rows] == trades["trade_id"][-3:].to_list()  # no since: the most recent trades
    first = trades.row(0, named=True)
    row = _result(kraken, "/0/public/Trades", pair="XXBTZUSD", since=0, count=1)["XXBTZUSD"][0]
    assert row[:2] == [decimal_text(first["price"]), decimal_text(first["volume"])]
    assert row[2] == first["ts_ms"] / 1000 and row[3:6] == [first["side"], first["ordertype"], ""]


def test_trades_since_in_seconds_and_nanoseconds_agree(kraken: KrakenEmulator) -> None:
    trades = make_trades("BTC", 2500)
    cut_ms = int(trades["ts_ms"][600])
    by_seconds = _result(kraken, "/0/public/Trades", pair="XBTUSD", since=cut_ms // 1000, count=5)["XXBTZUSD"]
    by_nanos = _result(kraken, "/0/public/Trades", pair="XBTUSD", since=(cut_ms // 1000) * 10**9, count=5)["XXBTZUSD"]
    assert by_seconds == by_nanos
    assert all(r[2] > cut_ms // 1000 for r in by_seconds)


def test_trade_pages_never_split_a_shared_timestamp(universe: UniverseSpec, bars: pl.DataFrame) -> None:
    steps = pl.Series([1, 2, 3, 3, 3, 4, 5, 6, 7, 8])
    trades = make_trades("BTC", 10).with_columns(ts_ns=START_MS * 1_000_000 + steps * 1_000_000)
    with KrakenEmulator(bars, "5m", trades=trades, universe=universe) as emulator:
        page = _result(emulator, "/0/public/Trades", pair="XBTUSD", since=0, count=3)
        assert [r[6] for r in page["XXBTZUSD"]] == [1000, 1001]  # the third would split ts 3
        rest = _result(emulator, "/0/public/Trades", pair="XBTUSD", since=page["last"], count=3)
        assert [r[6] for r in rest["XXBTZUSD"]] == [1002, 1003, 1004]
        same = _result(emulator, "/0/public/Trades", pair="XBTUSD", since=page["last"], count=2)
        assert [r[6] for r in same["XXBTZUSD"]] == [1002, 1003]  # a page of one timestamp is served as is


@pytest.mark.parametrize(
    ("params", "field"),
    [({"count": "0"}, "count"), ({"count": "x"}, "count"), ({"count": "Infinity"}, "count"),
     ({"since": "soon"}, "since"), ({"since": "NaN"}, "since")],
)  # fmt: skip
def test_trades_bad_arguments(kraken: KrakenEmulator, params: dict, field: str) -> None:
    assert _get(kraken, "/0/public/Trades", pair="XBTUSD", **params)["error"] == [f"EGeneral:Invalid arguments:{field}"]


def test_trades_count_is_capped_at_1000_and_pairs_without_trades_are_empty(kraken: KrakenEmulator) -> None:
    assert len(_result(kraken, "/0/public/Trades", pair="XBTUSD", count=5000)["XXBTZUSD"]) == 1000
    assert _result(kraken, "/0/public/Trades", pair="ETHUSD") == {"XETHZUSD": [], "last": "0"}
    assert _result(kraken, "/0/public/Trades", pair="ETHUSD", since=7) == {"XETHZUSD": [], "last": "7000000000"}


def test_trades_after_now_are_not_served_yet(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    trades = make_trades("BTC", 100)
    clock = Clock(int(trades["ts_ms"][49]))
    with KrakenEmulator(bars, "5m", trades=trades, universe=universe, now_ms=clock) as emulator:
        rows = _result(emulator, "/0/public/Trades", pair="XBTUSD", since=0)["XXBTZUSD"]
        assert rows[-1][6] == trades["trade_id"][49] or trades["ts_ms"][50] == trades["ts_ms"][49]
        assert all(r[2] * 1000 <= clock.now + 1 for r in rows)


# ----------------------------------------------------------------------------- transport faults
def test_rate_limit_answers_kraken_error_in_a_200_envelope(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    clock = Clock(START_MS)
    with KrakenEmulator(bars, "5m", faults=FaultSpec(rate_limit_per_second=1.0), universe=universe, now_ms=clock) as emulator:
        assert _get(emulator, "/0/public/Time")["error"] == []
        assert _get(emulator, "/0/public/Time") == {"error": ["EAPI:Rate limit exceeded"], "result": {}}
        clock.now += 1000
        assert _get(emulator, "/0/public/Time")["error"] == []
        assert [status for _, _, status in emulator.request_log] == [200, 200, 200]


def test_every_nth_transport_fault(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    # The client waits 2 s: long enough for an answer on a heavily loaded machine (0.75 s was not, at load 14),
    # far shorter than a stalled one (20 s; leaving the block stops the emulator, which releases the stalls).
    faults = FaultSpec(fail_429_every=10, fail_5xx_every=2, timeout_every=3, timeout_seconds=20, truncate_every=5, malformed_every=7)
    with KrakenEmulator(bars, "5m", faults=faults, universe=universe) as emulator:
        url = emulator.base_url + "/0/public/OHLC?pair=XBTUSD&interval=5"
        outcomes = []
        for _ in range(14):
            try:
                response = httpx.get(url, timeout=2.0)
                outcomes.append((response.status_code, response.headers["content-type"].split(";")[0], response.content))
            except httpx.ReadTimeout:
                outcomes.append(("timeout", "", b""))
        statuses = [o[0] for o in outcomes]
        assert statuses == [200, 500, "timeout", 502, 200, 503, 200, 500, "timeout", 200, 200, 503, 200, 500]
        assert outcomes[1][1] == "text/html" and b"cloudflare" in outcomes[1][2]
        assert json.loads(outcomes[9][2]) == {"error": ["EAPI:Rate limit exceeded"], "result": {}}
        full = outcomes[0][2]
        assert outcomes[4][2] == full[: len(full) // 2]  # truncated: half of the same body
        with pytest.raises(json.JSONDecodeError):
            json.loads(outcomes[4][2])
        assert outcomes[6][1] == "text/html" and not outcomes[6][2].startswith(b"{")
        assert [s for _, _, s in emulator.request_log][:3] == [200, 500, 200]


def test_stop_releases_a_request_sleeping_in_a_timeout(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    emulator = KrakenEmulator(bars, "5m", faults=FaultSpec(timeout_every=1, timeout_seconds=30), universe=universe)
    url = emulator.start() + "/0/public/Time"
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=0.2)
    emulator.stop()
    emulator.stop()  # stopping twice is harmless
    with pytest.raises(RuntimeError, match="not started"):
        emulator.base_url


def test_default_universe_and_restart_keep_one_server(bars: pl.DataFrame) -> None:
    emulator = KrakenEmulator(bars.filter(pl.col("symbol") == "BTC"))
    try:
        url = emulator.start()
        assert emulator.start() == url
        assert url.startswith("http://127.0.0.1:")
        assert len(_result(emulator, "/0/public/AssetPairs")) == 30
        assert _result(emulator, "/0/public/Time")["unixtime"] > 1_700_000_000  # the wall clock
    finally:
        emulator.stop()


def test_prices_print_as_positional_decimals() -> None:
    assert decimal_text(1e-05) == "0.00001"
    assert decimal_text(30306.1) == "30306.1"
    assert decimal_text(60000.0) == "60000.0"
    assert decimal_text(1.5e16) == "15000000000000000.0"


def test_bad_data_is_served_as_it_is(universe: UniverseSpec) -> None:
    bad = pl.DataFrame({"ts": [START_MS, START_MS + BAR_MS], "symbol": ["SOL", "SOL"], "open": [-1.0, 2.0],
                        "high": [3.0, 3.0], "low": [-2.0, 1.0], "close": [-1.5, 2.5], "volume": [-4.0, 1.0]})  # fmt: skip
    with KrakenEmulator(bad, "5m", universe=universe) as emulator:
        assert _result(emulator, "/0/public/AssetPairs", pair="SOLUSD")["SOLUSD"]["pair_decimals"] == 5
        rows = _result(emulator, "/0/public/OHLC", pair="SOLUSD", interval=5)["SOLUSD"]
        assert rows[0][1:5] == ["-1.0", "3.0", "-2.0", "-1.5"] and rows[0][6] == "-4.0"


def test_column_formatting_matches_the_single_value_form() -> None:
    plain = np.array([30306.1, 0.5, 0.0, 60000.0])
    tiny = np.array([1e-05, 2.5, 2e16])
    assert decimal_texts(plain) == ["30306.1", "0.5", "0.0", "60000.0"]
    assert decimal_texts(tiny) == ["0.00001", "2.5", "20000000000000000.0"]


def test_duplicated_and_disordered_rows_in_an_ohlc_page(bars: pl.DataFrame, universe: UniverseSpec) -> None:
    dup, swap = START_MS + 996 * BAR_MS, START_MS + 997 * BAR_MS
    faults = FaultSpec(duplicated_bars=(dup,), disordered_bars=(swap,))
    with KrakenEmulator(bars, "5m", faults=faults, universe=universe) as emulator:
        rows = _result(emulator, "/0/public/OHLC", pair="XBTUSD", interval=5, since=(START_MS + 994 * BAR_MS) // 1000)
        times = [(r[0] * 1000 - START_MS) // BAR_MS for r in rows["XXBTZUSD"]]
        assert times == [995, 996, 996, 998, 997, 999]
