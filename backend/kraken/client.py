"""The ccxt Kraken client, pointed at a base URL (the real API or the local emulator), and error classes.

Every Kraken call of the product goes through :func:`make_client`: ccxt signs, encodes and parses;
ACTS only chooses the base URL, the credentials, the timeout and the nonce source. Kraken's error
strings and transport failures are mapped to :class:`KrakenErrorClass` at this edge, so callers
decide on retry, back-off or reconciliation by class, never by message text.
"""

from __future__ import annotations

import enum
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

import ccxt

from backend.errors import ActsError

REAL_BASE_URL = "https://api.kraken.com"


class KrakenErrorClass(enum.Enum):
    """What a failed Kraken call asks of the caller."""

    AUTH = "auth"  # bad key or signature: never retry
    NONCE = "nonce"  # retry once with a fresh nonce
    PERMISSION = "permission"  # the key lacks the endpoint's permission
    RATE_LIMIT = "rate_limit"  # back off
    INSUFFICIENT_FUNDS = "insufficient_funds"  # permanent for this order
    INVALID_ARGUMENTS = "invalid_arguments"  # permanent: a bug or a bad order
    INVALID_ORDER = "invalid_order"  # minimums, unknown order...
    UNKNOWN_METHOD = "unknown_method"  # feature unavailable on this server
    UNAVAILABLE = "unavailable"  # 5xx, EService: retry later; a write must be reconciled first
    TIMEOUT = "timeout"  # no answer: a write must be reconciled first
    MALFORMED = "malformed_answer"  # a 2xx body that does not parse or lacks the call's fields: like a timeout
    OTHER = "other"


class KrakenCallError(ActsError):
    """A Kraken call failed; ``error_class`` says what to do, ``kraken_error`` is Kraken's string if any."""

    def __init__(self, endpoint: str, error_class: KrakenErrorClass, kraken_error: str) -> None:
        super().__init__(f"Kraken {endpoint} failed ({error_class.value}): {kraken_error}")
        self.endpoint = endpoint
        self.error_class = error_class
        self.kraken_error = kraken_error


@dataclass(frozen=True)
class Credentials:
    """An API key and its secret; ``repr`` never shows the secret."""

    api_key: str
    secret: str

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key[:6]}..., secret=<hidden>)"


# Kraken's error prefixes, most specific first (section 5 of the API facts).
_BY_PREFIX = (
    ("EAPI:Invalid key", KrakenErrorClass.AUTH),
    ("EAPI:Invalid signature", KrakenErrorClass.AUTH),
    ("EAPI:Invalid nonce", KrakenErrorClass.NONCE),
    ("EAPI:Rate limit exceeded", KrakenErrorClass.RATE_LIMIT),
    ("EOrder:Rate limit exceeded", KrakenErrorClass.RATE_LIMIT),
    ("EService:Throttled", KrakenErrorClass.RATE_LIMIT),
    ("EGeneral:Temporary lockout", KrakenErrorClass.RATE_LIMIT),
    ("EGeneral:Too many requests", KrakenErrorClass.RATE_LIMIT),
    ("EGeneral:Permission denied", KrakenErrorClass.PERMISSION),
    ("EGeneral:Invalid arguments", KrakenErrorClass.INVALID_ARGUMENTS),
    ("EGeneral:Unknown method", KrakenErrorClass.UNKNOWN_METHOD),
    ("EGeneral:Internal error", KrakenErrorClass.UNAVAILABLE),
    ("EOrder:Insufficient funds", KrakenErrorClass.INSUFFICIENT_FUNDS),
    ("EOrder:", KrakenErrorClass.INVALID_ORDER),
    ("EQuery:", KrakenErrorClass.INVALID_ARGUMENTS),
    ("EService:", KrakenErrorClass.UNAVAILABLE),
    ("EDatabase:", KrakenErrorClass.UNAVAILABLE),
)


def kraken_error_of(message: str) -> str:
    """Return the Kraken error string inside a ccxt message (``kraken {"error":["EX:Y"]}``), or the message."""
    start = message.find('["')
    if start >= 0:
        end = message.find('"', start + 2)
        return message[start + 2 : end]
    return message


def classify(error: Exception) -> KrakenErrorClass:
    """Return the class of a ccxt exception raised by a Kraken call."""
    if isinstance(error, ccxt.RequestTimeout):
        return KrakenErrorClass.TIMEOUT
    if isinstance(error, MalformedAnswer):
        return KrakenErrorClass.MALFORMED
    text = kraken_error_of(str(error))
    for prefix, error_class in _BY_PREFIX:
        if text.startswith(prefix):
            return error_class
    if isinstance(error, (ccxt.ExchangeNotAvailable, ccxt.NetworkError)):
        return KrakenErrorClass.UNAVAILABLE
    return KrakenErrorClass.OTHER


class NonceSource:
    """Strictly increasing millisecond nonces for one key, never below ``floor`` (the last one persisted).

    ``persist`` is called with every nonce before it is used, so a restart (or a clock step backwards)
    never reuses one (Kraken would answer ``EAPI:Invalid nonce``).
    """

    def __init__(self, wall_ms: Callable[[], int], floor: int = 0, persist: Callable[[int], None] | None = None) -> None:
        self._wall_ms = wall_ms
        self._last = floor
        self._persist = persist
        self._lock = threading.Lock()

    def next(self) -> int:
        """Return the next nonce."""
        with self._lock:
            self._last = max(self._wall_ms(), self._last + 1)
            if self._persist is not None:
                self._persist(self._last)
            return self._last


# The field a private call's result must carry (Kraken's REST reference); its absence is a malformed answer.
REQUIRED_RESULT = {"AddOrder": "txid", "OpenOrders": "open", "ClosedOrders": "closed", "CancelAll": "count",
                   "CancelOrder": "count"}  # fmt: skip


class MalformedAnswer(ccxt.BadResponse):  # type: ignore[misc]
    """A private answer that does not parse as Kraken's envelope, or whose result lacks the call's field."""


def check_private_answer(code: int, url: str, body: str) -> None:
    """Raise :class:`MalformedAnswer` when a 2xx private answer is not ``{"error": [...], "result": {...}}``
    with the field its endpoint must return (ccxt would read a truncated body as an empty answer)."""
    if "/private/" not in url or not 200 <= code < 300:
        return
    endpoint = url.split("/private/")[1].split("?")[0]
    try:
        answer = json.loads(body)
    except ValueError:
        raise MalformedAnswer(f"malformed answer from {endpoint}: body of {len(body)} characters does not parse") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), list):
        raise MalformedAnswer(f"malformed answer from {endpoint}: no 'error' list")
    if answer["error"]:
        return  # Kraken's own error: ccxt maps it
    field = REQUIRED_RESULT.get(endpoint)
    if field is None:
        return  # an endpoint the broker does not depend on (probes read lists): ccxt parses it
    result = answer.get("result")
    if not isinstance(result, dict):
        raise MalformedAnswer(f"malformed answer from {endpoint}: 'result' is not an object")
    if field not in result:
        raise MalformedAnswer(f"malformed answer from {endpoint}: result lacks '{field}'")


ResponseHook = Callable[[int, str, str], None]  # (HTTP status, url, body text) of every response


class _Kraken(ccxt.kraken):  # type: ignore[misc]
    nonce_source: NonceSource
    response_hook: ResponseHook | None = None

    def incrementing_nonce(self) -> int:
        return self.nonce_source.next()

    def on_rest_response(self, code: int, reason: str, url: str, method: str, headers: object, body: str,
                         request_headers: object, request_body: object) -> str:  # fmt: skip
        # Called before ccxt parses the body: the raw store keeps it first.
        if self.response_hook is not None:
            self.response_hook(int(code), url, body)
        check_private_answer(int(code), url, body)
        return body


def make_client(
    base_url: str,
    credentials: Credentials | None,
    nonce: NonceSource,
    timeout_ms: int = 10_000,
    rate_limit: bool = True,
) -> ccxt.kraken:
    """Return ccxt's Kraken client pointed at ``base_url`` (the real API or the emulator).

    ``rate_limit`` keeps ccxt's own limiter on (one call a second for the Starter tier); tests against
    the emulator turn it off.
    """
    options: dict[str, object] = {"enableRateLimit": rate_limit, "timeout": timeout_ms}
    if credentials is not None:
        options["apiKey"] = credentials.api_key
        options["secret"] = credentials.secret
    client = _Kraken(options)
    client.nonce_source = nonce
    client.urls["api"] = {**client.urls["api"], "public": base_url, "private": base_url}
    return client


def call(endpoint: str, action: Callable[[], object]) -> object:
    """Run one ccxt call, translating its failure into :class:`KrakenCallError` with a class."""
    try:
        return action()
    except ccxt.BaseError as error:
        raise KrakenCallError(endpoint, classify(error), kraken_error_of(str(error))) from error
