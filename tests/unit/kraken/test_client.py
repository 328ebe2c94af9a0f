"""The ccxt client edge: Kraken's error strings become classes, nonces never repeat, secrets never print."""

from __future__ import annotations

import ccxt
import pytest

from backend.kraken.client import (
    REAL_BASE_URL,
    Credentials,
    KrakenCallError,
    KrakenErrorClass,
    MalformedAnswer,
    NonceSource,
    call,
    check_private_answer,
    classify,
    kraken_error_of,
    make_client,
)

C = KrakenErrorClass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ccxt.AuthenticationError('kraken {"error":["EAPI:Invalid key"]}'), C.AUTH),
        (ccxt.ExchangeError('kraken {"error":["EAPI:Invalid signature"]}'), C.AUTH),
        (ccxt.InvalidNonce('kraken {"error":["EAPI:Invalid nonce"]}'), C.NONCE),
        (ccxt.DDoSProtection('kraken {"error":["EAPI:Rate limit exceeded"]}'), C.RATE_LIMIT),
        (ccxt.ExchangeError('kraken {"error":["EService:Throttled: 1700000000"]}'), C.RATE_LIMIT),
        (ccxt.PermissionDenied('kraken {"error":["EGeneral:Permission denied"]}'), C.PERMISSION),
        (ccxt.BadRequest('kraken {"error":["EGeneral:Invalid arguments:volume"]}'), C.INVALID_ARGUMENTS),
        (ccxt.ExchangeError('kraken {"error":["EGeneral:Unknown method"]}'), C.UNKNOWN_METHOD),
        (ccxt.InsufficientFunds('kraken {"error":["EOrder:Insufficient funds"]}'), C.INSUFFICIENT_FUNDS),
        (ccxt.InvalidOrder('kraken {"error":["EOrder:Order minimum not met"]}'), C.INVALID_ORDER),
        (ccxt.BadSymbol('kraken {"error":["EQuery:Unknown asset pair"]}'), C.INVALID_ARGUMENTS),
        (ccxt.ExchangeNotAvailable('kraken {"error":["EService:Unavailable"]}'), C.UNAVAILABLE),
        (ccxt.ExchangeNotAvailable("kraken POST http://x 502 Bad Gateway <html>"), C.UNAVAILABLE),
        (ccxt.NetworkError("connection refused"), C.UNAVAILABLE),
        (ccxt.RequestTimeout("kraken POST http://x timed out"), C.TIMEOUT),
        (ccxt.ExchangeError('kraken {"error":["ETrade:Locked"]}'), C.OTHER),
    ],
)
def test_every_kraken_error_has_a_class(error: Exception, expected: KrakenErrorClass) -> None:
    assert classify(error) is expected


def test_kraken_error_is_read_from_ccxts_message() -> None:
    assert kraken_error_of('kraken {"error":["EOrder:Insufficient funds"],"result":{}}') == "EOrder:Insufficient funds"
    assert kraken_error_of("plain text") == "plain text"


def test_call_translates_failures_and_passes_results() -> None:
    assert call("Balance", lambda: 3) == 3

    def fail() -> None:
        raise ccxt.InsufficientFunds('kraken {"error":["EOrder:Insufficient funds"]}')

    with pytest.raises(KrakenCallError, match=r"Kraken AddOrder failed \(insufficient_funds\)") as caught:
        call("AddOrder", fail)
    assert caught.value.error_class is C.INSUFFICIENT_FUNDS and caught.value.kraken_error == "EOrder:Insufficient funds"


def test_nonces_increase_across_clock_steps_and_are_persisted_first() -> None:
    readings = iter([1000, 1000, 900, 2000])
    saved: list[int] = []
    source = NonceSource(lambda: next(readings), floor=1500, persist=saved.append)
    assert [source.next() for _ in range(4)] == [1501, 1502, 1503, 2000]
    assert saved == [1501, 1502, 1503, 2000]
    assert NonceSource(lambda: 5).next() == 5


def test_client_points_both_roots_at_the_base_url_and_hides_the_secret() -> None:
    secret = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1wcmludA=="
    credentials = Credentials("PUBLICKEY123", secret)
    client = make_client("http://127.0.0.1:9", credentials, NonceSource(lambda: 7), timeout_ms=500, rate_limit=False)
    assert client.urls["api"]["public"] == client.urls["api"]["private"] == "http://127.0.0.1:9"
    assert client.incrementing_nonce() == 7 and client.timeout == 500 and not client.enableRateLimit
    assert secret not in repr(credentials) and "PUBLIC" in repr(credentials)
    public = make_client(REAL_BASE_URL, None, NonceSource(lambda: 1))
    assert public.apiKey in ("", None) and public.enableRateLimit


@pytest.mark.parametrize(("url", "body", "says"), [
    ("http://h/0/private/AddOrder", '{"error": [], "result": {"descr": {}', "does not parse"),
    ("http://h/0/private/AddOrder", "[]", "no 'error' list"),
    ("http://h/0/private/AddOrder", '{"result": {}}', "no 'error' list"),
    ("http://h/0/private/AddOrder", '{"error": [], "result": {"descr": {}}}', "lacks 'txid'"),
    ("http://h/0/private/OpenOrders", '{"error": [], "result": {}}', "lacks 'open'"),
    ("http://h/0/private/ClosedOrders?x=1", '{"error": [], "result": {"count": 0}}', "lacks 'closed'"),
    ("http://h/0/private/OpenOrders", '{"error": [], "result": []}', "'result' is not an object"),
])  # fmt: skip
def test_a_private_answer_without_the_fields_of_its_call_is_malformed(url: str, body: str, says: str) -> None:
    with pytest.raises(MalformedAnswer, match=says) as caught:
        check_private_answer(200, url, body)
    assert classify(caught.value) is KrakenErrorClass.MALFORMED


@pytest.mark.parametrize(("code", "url", "body"), [
    (200, "http://h/0/public/Time", "{"),  # public answers keep ccxt's own handling (the provider drill)
    (502, "http://h/0/private/AddOrder", "<html>"),  # a 5xx is ccxt's to classify
    (200, "http://h/0/private/AddOrder", '{"error": ["EOrder:Insufficient funds"]}'),  # Kraken's error: ccxt maps it
    (200, "http://h/0/private/AddOrder", '{"error": [], "result": {"txid": ["T"]}}'),
    (200, "http://h/0/private/WithdrawMethods", '{"error": [], "result": []}'),  # not a call the broker depends on
])  # fmt: skip
def test_a_well_formed_or_non_private_answer_passes_the_check(code: int, url: str, body: str) -> None:
    check_private_answer(code, url, body)
