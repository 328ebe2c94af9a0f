"""The Kraken emulator's private API: signatures, nonces, permissions, orders and fills, scripted faults."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import ccxt
import polars as pl
import pytest
from pydantic import ValidationError

from backend.config.schema import UniverseSpec
from backend.kraken.client import Credentials, NonceSource, make_client
from backend.sandbox.faults import FaultSpec, PrivateFault
from backend.sandbox.kraken import KrakenEmulator
from backend.sandbox.kraken_account import PERMISSIONS, KrakenAccount, sign

TRADING = ("query-funds", "query-open-trades", "query-closed-trades", "modify-trades", "close-trades")


class Counter:
    """A millisecond clock that moves one ms per read (nonces)."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture()
def emulator(bars: pl.DataFrame, universe: UniverseSpec) -> Iterator[KrakenEmulator]:
    with KrakenEmulator(bars, "5m", universe=universe) as emu:
        yield emu


def client(emu: KrakenEmulator, permissions: tuple[str, ...] = TRADING, timeout_ms: int = 10_000) -> ccxt.kraken:
    key = emu.account.create_key(permissions)
    return make_client(emu.base_url, Credentials(key.key, key.secret), NonceSource(Counter()), timeout_ms, rate_limit=False)


def post(emu: KrakenEmulator, method: str, fields: dict[str, str], key: str, secret: str, *,
         sign_as: str | None = None, json_body: bool = False) -> dict:  # fmt: skip
    path = f"/0/private/{method}"
    body = (json.dumps(fields) if json_body else urllib.parse.urlencode(fields)).encode()
    signature = sign(secret, path, fields.get("nonce", ""), body) if sign_as is None else sign_as
    headers = {"API-Key": key, "API-Sign": signature,
               "Content-Type": "application/json" if json_body else "application/x-www-form-urlencoded"}  # fmt: skip
    request = urllib.request.Request(emu.base_url + path, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_signature_matches_krakens_published_vector() -> None:
    secret = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
    body = b"nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    assert sign(secret, "/0/private/AddOrder", "1616492376594", body) == (
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
    )
    json_body = b'{"nonce":1700000000001}'
    assert sign(secret, "/0/private/GetApiKeyInfo", "", json_body) != sign(secret, "/0/private/GetApiKeyInfo", "1", json_body)


def test_ccxt_reads_balance_key_info_and_permission_denied(emulator: KrakenEmulator) -> None:
    reader = client(emulator, ("query-funds",))
    assert reader.fetch_balance()["total"] == {"USD": 10000.0}
    info = reader.privatePostGetApiKeyInfo()["result"]
    assert info["permissions"] == ["query-funds"] and info["nonceWindow"] == 0
    with pytest.raises(ccxt.PermissionDenied):
        reader.create_order("BTC/USD", "market", "buy", 0.001)
    with pytest.raises(ccxt.PermissionDenied):
        reader.privatePostWithdrawMethods()
    assert client(emulator, ("query-funds", "withdraw-funds")).privatePostWithdrawMethods()["result"][0]["asset"] == "XXBT"
    emulator.account.key_info_available = False
    with pytest.raises(ccxt.ExchangeError, match="EGeneral:Unknown method"):
        reader.privatePostGetApiKeyInfo()


def test_market_order_fills_at_the_open_of_the_bar_in_progress(emulator: KrakenEmulator, bars: pl.DataFrame) -> None:
    trader = client(emulator)
    order = trader.create_order("BTC/USD", "market", "buy", 0.01, params={"clientOrderId": "acts-1"})
    last_open = bars.filter(pl.col("symbol") == "BTC").sort("ts")["open"][-1]
    fetched = trader.fetch_order(order["id"])
    assert fetched["status"] == "closed" and fetched["filled"] == 0.01 and fetched["clientOrderId"] == "acts-1"
    (fill,) = trader.fetch_my_trades()
    assert fill["price"] == pytest.approx(last_open) and fill["order"] == order["id"]
    cost = Decimal(repr(last_open)) * Decimal("0.01")
    usd = emulator.account.balances["ZUSD"]
    assert abs(usd - (Decimal(10000) - cost - cost * Decimal("0.004"))) < Decimal("0.0001")
    sold = trader.create_order("BTC/USD", "market", "sell", 0.01)
    assert trader.fetch_order(sold["id"])["side"] == "sell"
    assert emulator.account.balances["XXBT"] == 0
    assert [o["clientOrderId"] for o in trader.fetch_closed_orders(params={"clientOrderId": "acts-1"})] == ["acts-1"]
    assert len(trader.fetch_closed_orders()) == 2
    assert trader.fetch_my_trades(since=10**15) == []


def test_order_checks_answer_krakens_errors(emulator: KrakenEmulator) -> None:
    trader = client(emulator)
    cases = [
        (lambda: trader.create_order("BTC/USD", "market", "buy", 10.0), ccxt.InsufficientFunds),
        (lambda: trader.create_order("BTC/USD", "market", "sell", 0.001), ccxt.InsufficientFunds),
        (lambda: trader.create_order("BTC/USD", "market", "buy", 0.00001), ccxt.InvalidOrder),
        (lambda: trader.create_order("DOGE/USD", "limit", "buy", 50, 0.001), ccxt.ExchangeError),  # cost minimum
        (lambda: trader.create_order("BTC/USD", "stop-loss", "buy", 0.001, 10.0), ccxt.ExchangeError),
    ]
    for action, error in cases:
        with pytest.raises(error):
            action()
    with pytest.raises(ccxt.InvalidOrder, match="Unknown order"):
        trader.cancel_order("OAAAAA-BBBBB-CCCCCC")


def test_limit_orders_rest_hold_funds_and_cancel(emulator: KrakenEmulator) -> None:
    trader = client(emulator)
    resting = trader.create_order("BTC/USD", "limit", "buy", 0.01, 50_000.0, params={"clientOrderId": "acts-r"})
    with pytest.raises(ccxt.ExchangeError, match="Duplicate order"):
        trader.create_order("BTC/USD", "limit", "buy", 0.01, 50_000.0, params={"clientOrderId": "acts-r"})
    (open_order,) = trader.fetch_open_orders(params={"clientOrderId": "acts-r"})
    assert open_order["id"] == resting["id"] and open_order["price"] == 50_000.0
    assert trader.fetch_balance()["used"]["USD"] == pytest.approx(500.0 * 1.004)
    trader.cancel_order(resting["id"])
    assert trader.fetch_open_orders() == []
    trader.create_order("ETH/USD", "limit", "buy", 0.01, 1000.0)
    assert emulator.account.cancel_all(0.0) == {"count": 1}
    emulator.account.balances["XXBT"] = Decimal("1")
    trader.create_order("BTC/USD", "limit", "sell", 0.5, 99_000.0)
    with pytest.raises(ccxt.InsufficientFunds):
        trader.create_order("BTC/USD", "limit", "sell", 0.6, 99_000.0)
    assert trader.fetch_balance()["used"]["BTC"] == 0.5


def test_raw_private_calls_cover_krakens_refusals(emulator: KrakenEmulator) -> None:
    key = emulator.account.create_key(TRADING, nonce_window=5)
    k, s = key.key, key.secret
    assert post(emulator, "Balance", {"nonce": "100"}, "nokey", s) == {"error": ["EAPI:Invalid key"], "result": {}}
    assert post(emulator, "Balance", {"nonce": "100"}, k, s, sign_as="AAAA")["error"] == ["EAPI:Invalid signature"]
    assert post(emulator, "Balance", {"nonce": "x"}, k, s)["error"] == ["EGeneral:Invalid arguments:nonce"]
    assert post(emulator, "Balance", {"nonce": "100"}, k, s)["result"]["ZUSD"] == "10000.0000"
    assert post(emulator, "Balance", {"nonce": "96"}, k, s)["error"] == []  # inside the nonce window of 5
    assert post(emulator, "Balance", {"nonce": "95"}, k, s)["error"] == ["EAPI:Invalid nonce"]
    assert post(emulator, "TradeBalance", {"nonce": "101"}, k, s, json_body=True)["result"]["eb"] == "10000.0000"
    assert post(emulator, "TradeVolume", {"nonce": "102"}, k, s)["result"]["currency"] == "ZUSD"
    assert post(emulator, "Nope", {"nonce": "103"}, k, s)["error"] == ["EGeneral:Unknown method"]
    assert post(emulator, "QueryOrders", {"nonce": "104"}, k, s)["error"] == ["EGeneral:Invalid arguments:txid"]
    assert post(emulator, "QueryOrders", {"nonce": "105", "txid": "OX"}, k, s)["error"] == ["EOrder:Invalid order"]
    add = {"pair": "XBTUSD", "type": "buy", "ordertype": "market", "volume": "0.001"}
    refusals = [
        ({"pair": ""}, "EGeneral:Invalid arguments:pair"),
        ({"pair": "NOPEUSD"}, "EQuery:Unknown asset pair"),
        ({"pair": "SOLUSD"}, "EService:Unavailable"),  # no bars of SOL are served
        ({"type": "hold"}, "EGeneral:Invalid arguments:type"),
        ({"leverage": "2"}, "EGeneral:Invalid arguments:leverage"),
        ({"volume": "abc"}, "EGeneral:Invalid arguments:volume"),
        ({"volume": "Infinity"}, "EGeneral:Invalid arguments:volume"),
        ({"volume": "-1"}, "EGeneral:Invalid arguments:volume"),
        ({"ordertype": "limit"}, "EGeneral:Invalid arguments:price"),
        ({"cl_ord_id": "a", "userref": "7"}, "EGeneral:Invalid arguments:cl_ord_id"),
        ({"cl_ord_id": "far-too-long-for-free-text"}, "EGeneral:Invalid arguments:cl_ord_id"),
    ]
    for n, (change, error) in enumerate(refusals):
        assert post(emulator, "AddOrder", {"nonce": str(200 + n), **add, **change}, k, s)["error"] == [error], change
    checked = post(emulator, "AddOrder", {"nonce": "300", **add, "validate": "true", "userref": "7"}, k, s)["result"]
    assert "txid" not in checked and emulator.account.orders == {}
    assert post(emulator, "CancelAll", {"nonce": "301"}, k, s)["result"] == {"count": 0}
    assert post(emulator, "ClosedOrders", {"nonce": "302", "ofs": "x"}, k, s)["error"] == ["EGeneral:Invalid arguments:ofs"]
    withdraw = emulator.account.create_key(("query-funds", "withdraw-funds"))
    assert post(emulator, "Withdraw", {"nonce": "1"}, withdraw.key, withdraw.secret)["error"] == ["EFunding:Unknown withdraw key"]
    assert post(emulator, "Balance", {"nonce": "2"}, withdraw.key, withdraw.secret, json_body=True)["error"] == []
    with urllib.request.urlopen(emulator.base_url + "/0/private/Balance", timeout=5) as response:
        assert json.loads(response.read())["error"] == ["EGeneral:Invalid arguments:method"]
    bad_json = urllib.request.Request(emulator.base_url + "/0/private/Balance", data=b"[1]", method="POST",
                                      headers={"Content-Type": "application/json", "API-Key": k})  # fmt: skip
    with urllib.request.urlopen(bad_json, timeout=5) as response:
        assert json.loads(response.read())["error"] == ["EGeneral:Invalid arguments"]
    bad_json = urllib.request.Request(emulator.base_url + "/0/private/Balance", data=b"{", method="POST",
                                      headers={"Content-Type": "application/json", "API-Key": k})  # fmt: skip
    with urllib.request.urlopen(bad_json, timeout=5) as response:
        assert json.loads(response.read())["error"] == ["EGeneral:Invalid arguments"]


def test_closed_orders_and_trades_page_by_fifty(emulator: KrakenEmulator) -> None:
    trader = client(emulator)
    emulator.account.balances["ZUSD"] = Decimal(10**9)
    for _ in range(55):
        trader.create_order("DOGE/USD", "market", "buy", 50)
    first = trader.privatePostClosedOrders()["result"]
    assert first["count"] == 55 and len(first["closed"]) == 50
    assert len(trader.privatePostClosedOrders({"ofs": 50})["result"]["closed"]) == 5
    assert len(trader.privatePostTradesHistory({"ofs": 50})["result"]["trades"]) == 5


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"error": "EAPI:Rate limit exceeded"}, ccxt.DDoSProtection),
        ({"error": "EOrder:Insufficient funds"}, ccxt.InsufficientFunds),
        ({"error": "EGeneral:Invalid arguments"}, ccxt.BadRequest),
        ({"error": "EAPI:Invalid nonce"}, ccxt.InvalidNonce),
        ({"status": 502}, ccxt.ExchangeNotAvailable),
        ({"status": 500, "after_accept": True}, ccxt.ExchangeNotAvailable),
        ({"timeout": True, "after_accept": True}, ccxt.RequestTimeout),
        ({"timeout": True}, ccxt.RequestTimeout),
    ],
)
def test_scripted_faults_hit_the_chosen_call(bars: pl.DataFrame, universe: UniverseSpec, fault: dict, error: type) -> None:
    spec = FaultSpec(private_faults=(PrivateFault(endpoint="AddOrder", calls=(2,), **fault),), timeout_seconds=1.0)
    with KrakenEmulator(bars, "5m", spec, universe=universe) as emu:
        trader = client(emu, timeout_ms=400)
        trader.create_order("BTC/USD", "market", "buy", 0.001)
        with pytest.raises(error):
            trader.create_order("BTC/USD", "market", "buy", 0.001, params={"clientOrderId": "acts-2"})
        placed = [o.cl_ord_id for o in emu.account.orders.values()]
        assert placed == ([None, "acts-2"] if fault.get("after_accept") else [None])
        trader.create_order("BTC/USD", "market", "buy", 0.001)
        assert len(emu.account.orders) == len(placed) + 1


def test_private_fault_and_key_definitions_are_validated() -> None:
    with pytest.raises(ValidationError, match="exactly one of error, status, timeout"):
        PrivateFault(endpoint="AddOrder", calls=(1,))
    with pytest.raises(ValidationError, match="exactly one"):
        PrivateFault(endpoint="AddOrder", calls=(1,), status=500, timeout=True)
    with pytest.raises(ValueError, match="unknown Kraken permission 'trade-everything'"):
        KrakenAccount().create_key(["trade-everything"])
    assert len(PERMISSIONS) == 13
