"""Market-cap snapshot files and the Kraken answers a universe build reads: validation and refusals."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from backend.data.normalize import BadPayload
from backend.data.universe import KrakenUsdPair, SnapshotCoin, load_snapshot, ticker_usd_volume, usd_pairs
from backend.errors import ConfigError


def write(tmp_path: Path, payload: object) -> Path:
    path = tmp_path / "snapshot.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
    return path


def test_a_valid_snapshot_loads_with_its_date_digest_and_upper_cased_symbols(tmp_path: Path) -> None:
    path = write(tmp_path, {"as_of": "2026-11-20", "source": "CoinGecko top 250",
                            "coins": [{"symbol": "btc", "market_cap_usd": 1.9e12, "cluster": "store_of_value"},
                                      {"symbol": "USDC.E", "market_cap_usd": 0}]})  # fmt: skip

    snapshot = load_snapshot(path)

    assert snapshot.as_of == date(2026, 11, 20)
    assert snapshot.source == "CoinGecko top 250"
    assert snapshot.coins == (SnapshotCoin("BTC", 1.9e12, "store_of_value"), SnapshotCoin("USDC.E", 0.0, None))
    import hashlib

    assert snapshot.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"coins": [{"symbol": "BTC", "market_cap_usd": 1}]}, "'as_of' is required and missing"),
        ({"as_of": "2026-13-01", "coins": [{"symbol": "BTC", "market_cap_usd": 1}]}, "'as_of'"),
        ({"as_of": "2026-11-20", "coins": [{"symbol": "BTC", "market_cap_usd": 1}, {"symbol": "ETH", "market_cap_usd": -5}]},
         "'coins.1.market_cap_usd' must be >= 0.0, was -5"),
        ({"as_of": "2026-11-20", "coins": [{"symbol": "BTC", "market_cap_usd": 2e15}]}, "'coins.0.market_cap_usd' must be <= 1000000000000000.0, was 2000000000000000.0"),
        ('{"as_of": "2026-11-20", "coins": [{"symbol": "BTC", "market_cap_usd": NaN}]}', "'coins.0.market_cap_usd'"),
        ({"as_of": "2026-11-20", "coins": [{"symbol": "BTC", "market_cap_usd": 2}, {"symbol": "btc", "market_cap_usd": 1}]},
         "coins.1.symbol 'btc' duplicates coins.0.symbol"),
        ({"as_of": "2026-11-20", "coins": [{"symbol": "BT C", "market_cap_usd": 1}]}, "'coins.0.symbol'"),
        ({"as_of": "2026-11-20", "coins": [{"symbol": "BTC", "market_cap_usd": 1, "cluster": "a b"}]}, "'coins.0.cluster'"),
        ({"as_of": "2026-11-20", "coins": [{"symbol": "BTC", "market_cap_usd": 1, "rank": 1}]},
         "'coins.0.rank' is not a known key"),
        ({"as_of": "2026-11-20", "coins": []}, "'coins' list should have at least 1 item"),
        ({"as_of": "2026-11-20", "source": "two\nlines", "coins": [{"symbol": "BTC", "market_cap_usd": 1}]}, "'source'"),
    ],
)
def test_a_bad_snapshot_is_refused_naming_the_row_field_and_bound(tmp_path: Path, payload: object, message: str) -> None:
    with pytest.raises(ConfigError, match="invalid market-cap snapshot") as caught:
        load_snapshot(write(tmp_path, payload))
    assert message in str(caught.value)


@pytest.mark.parametrize("content", [None, "not json {", b"\xff\xfe"])
def test_an_unreadable_snapshot_is_refused_naming_the_file(tmp_path: Path, content: str | bytes | None) -> None:
    path = tmp_path / "snapshot.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError, match=f"cannot read market-cap snapshot {path}"):
        load_snapshot(path)


def pair_entry(wsname: str | None, **changes: object) -> dict[str, object]:
    entry: dict[str, object] = {"altname": "XBTUSD", "aclass_base": "currency", "status": "online", "ordermin": "0.00005"}
    if wsname is not None:
        entry["wsname"] = wsname
    entry.update(changes)
    return entry


def test_usd_pairs_are_keyed_by_kraken_base_and_other_quotes_and_dark_pools_are_skipped() -> None:
    result = usd_pairs({
        "XXBTZUSD": pair_entry("XBT/USD"),
        "XXBTZEUR": pair_entry("XBT/EUR", altname="XBTEUR"),
        "XBTUSD.d": pair_entry(None, altname="XBTUSD.d"),
        "ZZZ": ["not", "a", "dict"],
        "XXBTUSD2": pair_entry("XBT/USD", altname="XBTUSD2"),  # a second XBT/USD: the first key wins
        "AAPLXUSD": pair_entry("AAPLX/USD", altname="AAPLXUSD", aclass_base="tokenized_asset", status="cancel_only",
                               ordermin="16"),
    })  # fmt: skip

    assert result == {
        "XBT": KrakenUsdPair("XXBTUSD2", "XBTUSD2", "XBT/USD", "online", "currency", Decimal("0.00005")),
        "AAPLX": KrakenUsdPair("AAPLXUSD", "AAPLXUSD", "AAPLX/USD", "cancel_only", "tokenized_asset", Decimal("16")),
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (pair_entry("XBT/USD", ordermin="lots"), "AssetPairs XXBTZUSD: ordermin 'lots' is not a number"),
        ({"wsname": "XBT/USD", "altname": "XBTUSD", "aclass_base": "currency", "ordermin": "1"},
         "AssetPairs XXBTZUSD: field 'status' is missing"),
    ],
)
def test_a_malformed_usd_pair_is_refused_naming_the_pair_and_field(entry: dict, message: str) -> None:
    with pytest.raises(BadPayload, match=message):
        usd_pairs({"XXBTZUSD": entry})


def test_the_ticker_usd_volume_is_the_24h_volume_times_its_vwap() -> None:
    assert ticker_usd_volume({"v": ["1", "250.5"], "p": ["1", "2.0"]}) == 501.0
    for bad in ({"v": ["1"], "p": ["1", "2"]}, {"p": ["1", "2"]}, {"v": ["1", "x"], "p": ["1", "2"]}, None):
        with pytest.raises(BadPayload, match="Ticker entry needs decimal v\\[1\\] and p\\[1\\]"):
            ticker_usd_volume(bad)
