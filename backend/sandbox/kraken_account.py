"""The private half of the Kraken emulator: API keys, signatures, nonces, balances, orders and fills.

Wire formats follow ``EXCHANGE_API_FACTS.md`` sections 3 to 6: ``API-Sign = base64(HMAC-SHA512(
b64decode(secret), path + SHA256(nonce + body)))`` over the raw body; a nonce must exceed the key's last
accepted nonce (less its nonce window); errors are Kraken's own strings in an HTTP 200 envelope.

Keys are created by tests with chosen permissions (:meth:`KrakenAccount.create_key`). Market orders
fill at once, in full, at the open of the bar in progress (the provisional bar: the next bar's open for
a decision made at the last close), with the taker fee of the entry tier charged in the quote currency;
limit orders rest until cancelled. ``cl_ord_id`` is unique among *open* orders only, as on Kraken, so a
client that re-sends a filled order's id gets a second order: idempotency is the client's job.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from backend.config.schema import AssetSpec
from backend.sandbox.faults import PrivateFault

# GetApiKeyInfo permission codes (section 6.1), in Kraken's table order.
PERMISSIONS = (
    "query-funds", "add-funds", "withdraw-funds", "earn-funds", "query-open-trades", "query-closed-trades",
    "modify-trades", "close-trades", "query-ledger", "export-data", "create-ws-token", "add-withdraw-address",
    "update-withdraw-address",
)  # fmt: skip
# The endpoint -> permission table (any one of a tuple's sets suffices).
_NEEDS: dict[str, tuple[frozenset[str], ...]] = {
    "Balance": (frozenset({"query-funds"}),),
    "BalanceEx": (frozenset({"query-funds"}),),
    "TradeBalance": (frozenset({"query-funds"}),),
    "TradeVolume": (frozenset({"query-funds"}),),
    "OpenOrders": (frozenset({"query-open-trades"}),),
    "QueryOrders": (frozenset({"query-open-trades"}), frozenset({"query-closed-trades"})),
    "ClosedOrders": (frozenset({"query-closed-trades"}),),
    "TradesHistory": (frozenset({"query-closed-trades"}),),
    "AddOrder": (frozenset({"modify-trades"}),),
    "CancelOrder": (frozenset({"modify-trades"}), frozenset({"close-trades"})),
    "CancelAll": (frozenset({"modify-trades"}), frozenset({"close-trades"})),
    "WithdrawMethods": (frozenset({"query-funds", "withdraw-funds"}),),
    "Withdraw": (frozenset({"query-funds", "withdraw-funds"}),),
    "GetApiKeyInfo": (frozenset(),),
}
TAKER_FEE = Decimal("0.004")  # the entry tier of TAKER_FEES (0.40 %)
COSTMIN = Decimal("0.5")
_PAGE = 50
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# A long UUID, a 32-hex short UUID, or free text of at most 18 printable ASCII characters (section 4.7).
_CL_ORD_ID = re.compile(r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}|[!-~]{1,18})$")


def sign(secret: str, path: str, nonce: str, body: bytes) -> str:
    """Return Kraken's API-Sign of ``body`` sent to ``path`` with ``nonce`` (section 3)."""
    digest = hashlib.sha256(nonce.encode() + body).digest()
    mac = hmac.new(base64.b64decode(secret), path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


@dataclass
class ApiKey:
    """One API key of the emulated account and its restrictions."""

    name: str
    key: str
    secret: str
    permissions: frozenset[str]
    nonce_window: int = 0
    last_nonce: int = 0
    created_s: int = 0
    last_used_s: int | None = None


@dataclass
class Order:
    """An order as the account holds it (strings are Kraken's decimal texts)."""

    txid: str
    pair: str
    altname: str
    symbol: str
    base_key: str
    side: str
    ordertype: str
    volume: Decimal
    price: Decimal
    cl_ord_id: str | None
    userref: int | None
    opentm: float
    status: str = "open"
    vol_exec: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    closetm: float | None = None
    reason: str | None = None
    trades: list[str] = field(default_factory=list)

    def as_wire(self, with_trades: bool) -> dict[str, object]:
        """Return the order object of OpenOrders/ClosedOrders/QueryOrders."""
        text = f"{self.side} {self.volume:.8f} {self.altname} @ {self.ordertype}"
        if self.ordertype == "limit":
            text += f" {self.price}"
        row: dict[str, object] = {
            "refid": None, "userref": self.userref, "cl_ord_id": self.cl_ord_id, "status": self.status,
            "opentm": self.opentm, "starttm": 0, "expiretm": 0,
            "descr": {"pair": self.altname, "type": self.side, "ordertype": self.ordertype,
                      "price": str(self.price) if self.ordertype == "limit" else "0", "price2": "0",
                      "leverage": "none", "order": text, "close": ""},
            "vol": f"{self.volume:.8f}", "vol_exec": f"{self.vol_exec:.8f}", "cost": f"{self.cost:.5f}",
            "fee": f"{self.fee:.5f}", "price": f"{self.avg_price}", "stopprice": "0.00000", "limitprice": "0.00000",
            "misc": "", "oflags": "fciq" if self.side == "buy" else "fcib",
        }  # fmt: skip
        if self.closetm is not None:
            row["closetm"] = self.closetm
            row["reason"] = self.reason
        if with_trades and self.trades:
            row["trades"] = list(self.trades)
        return row


class PrivateError(Exception):
    """A private call refused with a Kraken error string."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Market:
    """What the account needs to know of a pair at the moment of a call."""

    asset: AssetSpec
    base_key: str
    price: float  # the open of the bar in progress (fills), or the last close


class KrakenAccount:
    """Keys, balances, orders and fills of one emulated Kraken account (thread-safety: the caller's lock).

    Parameters
    ----------
    balances : dict[str, str]
        Starting balances by asset key (``ZUSD``, ``XXBT``...), as decimal texts.
    seed : int
        Seed of key, secret and txid generation (deterministic).
    """

    def __init__(self, balances: dict[str, str] | None = None, seed: int = 13) -> None:
        self.balances: dict[str, Decimal] = {k: Decimal(v) for k, v in (balances or {"ZUSD": "10000"}).items()}
        self.keys: dict[str, ApiKey] = {}
        self.orders: dict[str, Order] = {}
        self.fills: dict[str, dict[str, object]] = {}
        self.key_info_available = True
        self._seed = seed
        self._counter = 0
        self._calls: dict[str, int] = {}
        self._trade_id = 0

    # ------------------------------------------------------------------ ids
    def _token(self, what: str, size: int) -> bytes:
        self._counter += 1
        return hashlib.sha512(f"{self._seed}:{what}:{self._counter}".encode()).digest()[:size]

    def _txid(self, prefix: str) -> str:
        raw = self._token("txid", 17)
        text = "".join(_ALNUM[b % 32] for b in raw[:16])
        return f"{prefix}{text[:5]}-{text[5:10]}-{text[10:16]}"

    def create_key(self, permissions: Iterable[str], name: str = "acts-test", nonce_window: int = 0, now_s: int = 0) -> ApiKey:
        """Create an API key holding ``permissions`` (GetApiKeyInfo codes); return it with its secret.

        Raises
        ------
        ValueError
            When a permission is not one of :data:`PERMISSIONS`.
        """
        chosen = frozenset(permissions)
        unknown = sorted(chosen - set(PERMISSIONS))
        if unknown:
            raise ValueError(f"unknown Kraken permission {unknown[0]!r}; known: {', '.join(PERMISSIONS)}")
        key = base64.b64encode(self._token("key", 42)).decode()
        secret = base64.b64encode(self._token("secret", 64)).decode()
        record = ApiKey(name, key, secret, chosen, nonce_window, created_s=now_s)
        self.keys[key] = record
        return record

    # ------------------------------------------------------------------ authentication
    def authenticate(self, path: str, headers: dict[str, str], body: bytes, params: dict[str, str], now_s: int) -> ApiKey:
        """Check key, signature and nonce; return the key. The nonce is consumed only when all pass.

        Raises
        ------
        PrivateError
            ``EAPI:Invalid key``, ``EAPI:Invalid signature``, ``EAPI:Invalid nonce`` or
            ``EGeneral:Invalid arguments:nonce``.
        """
        record = self.keys.get(headers.get("api-key", ""))
        if record is None:
            raise PrivateError("EAPI:Invalid key")
        nonce_text = params.get("nonce", "")
        if not nonce_text.isdigit():
            raise PrivateError("EGeneral:Invalid arguments:nonce")
        expected = sign(record.secret, path, nonce_text, body)
        if not hmac.compare_digest(expected, headers.get("api-sign", "")):
            raise PrivateError("EAPI:Invalid signature")
        nonce = int(nonce_text)
        if nonce <= record.last_nonce - record.nonce_window:
            raise PrivateError("EAPI:Invalid nonce")
        record.last_nonce = max(record.last_nonce, nonce)
        record.last_used_s = now_s
        return record

    @staticmethod
    def authorize(record: ApiKey, method: str) -> None:
        """Refuse ``method`` unless the key holds one of its permission sets."""
        needs = _NEEDS[method]
        if not any(need <= record.permissions for need in needs):
            raise PrivateError("EGeneral:Permission denied")

    def scripted_fault(self, method: str, faults: tuple[PrivateFault, ...]) -> PrivateFault | None:
        """Count a call of ``method`` and return the scripted fault of this call number, if any."""
        self._calls[method] = number = self._calls.get(method, 0) + 1
        for fault in faults:
            if fault.endpoint == method and number in fault.calls:
                return fault
        return None

    # ------------------------------------------------------------------ reads
    def key_info(self, record: ApiKey) -> dict[str, object]:
        """Return GetApiKeyInfo's result for ``record`` (section 6.2)."""
        return {
            "apiKeyName": record.name, "apiKey": record.key, "nonce": str(record.last_nonce),
            "nonceWindow": record.nonce_window, "permissions": [p for p in PERMISSIONS if p in record.permissions],
            "iban": "AA00 ACTS EMUL ATOR", "validUntil": "0", "queryFrom": "0", "queryTo": "0",
            "createdTime": str(record.created_s), "modifiedTime": str(record.created_s), "ipAllowlist": [],
            "lastUsed": None if record.last_used_s is None else str(record.last_used_s),
        }  # fmt: skip

    def balance(self) -> dict[str, str]:
        """Return Balance's result: every asset's total."""
        return {k: f"{v:.10f}" if k != "ZUSD" else f"{v:.4f}" for k, v in sorted(self.balances.items())}

    def balance_ex(self) -> dict[str, dict[str, str]]:
        """Return BalanceEx's result: totals and what open orders hold."""
        return {
            k: {"balance": total, "hold_trade": f"{self._held(k):.10f}"}
            for k, total in self.balance().items()
        }

    def _select(self, params: dict[str, str], status_open: bool) -> list[Order]:
        cl_ord_id = params.get("cl_ord_id") or None
        rows = [o for o in self.orders.values() if (o.status == "open") == status_open]
        if cl_ord_id is not None:
            rows = [o for o in rows if o.cl_ord_id == cl_ord_id]
        return rows

    def open_orders(self, params: dict[str, str]) -> dict[str, object]:
        """Return OpenOrders' result (optionally one ``cl_ord_id``)."""
        trades = params.get("trades", "") in ("true", "True", "1")
        return {"open": {o.txid: o.as_wire(trades) for o in self._select(params, True)}}

    def closed_orders(self, params: dict[str, str]) -> dict[str, object]:
        """Return ClosedOrders' result: newest first, 50 a page from ``ofs``."""
        trades = params.get("trades", "") in ("true", "True", "1")
        rows = sorted(self._select(params, False), key=lambda o: (o.closetm or 0.0, o.txid), reverse=True)
        ofs = _int(params, "ofs")
        return {"closed": {o.txid: o.as_wire(trades) for o in rows[ofs : ofs + _PAGE]}, "count": len(rows)}

    def query_orders(self, params: dict[str, str]) -> dict[str, object]:
        """Return QueryOrders' result for the comma-separated ``txid`` list."""
        text = params.get("txid", "")
        if not text:
            raise PrivateError("EGeneral:Invalid arguments:txid")
        out: dict[str, object] = {}
        for txid in text.split(","):
            order = self.orders.get(txid.strip())
            if order is None:
                raise PrivateError("EOrder:Invalid order")
            out[order.txid] = order.as_wire(True)
        return out

    def trades_history(self, params: dict[str, str]) -> dict[str, object]:
        """Return TradesHistory's result: newest first, 50 a page from ``ofs``; ``start`` exclusive (seconds)."""
        start = _decimal(params, "start")
        rows = sorted(self.fills.items(), key=lambda kv: (kv[1]["time"], kv[0]), reverse=True)
        if start is not None:
            rows = [r for r in rows if Decimal(str(r[1]["time"])) > start]
        ofs = _int(params, "ofs")
        return {"trades": dict(rows[ofs : ofs + _PAGE]), "count": len(rows)}

    # ------------------------------------------------------------------ writes
    def add_order(self, params: dict[str, str], market: Callable[[str], Market | None], now_s: float) -> dict[str, object]:
        """Validate and place an order in Kraken's order of checks; fill a market order at once.

        Raises
        ------
        PrivateError
            ``EGeneral:Invalid arguments:<field>``, ``EQuery:Unknown asset pair``,
            ``EOrder:Order minimum not met``, ``EOrder:Cost minimum not met``,
            ``EOrder:Insufficient funds``, ``EOrder:Duplicate order`` (an open order has that ``cl_ord_id``).
        """
        for name in ("pair", "type", "ordertype", "volume"):
            if not params.get(name):
                raise PrivateError(f"EGeneral:Invalid arguments:{name}")
        found = market(params["pair"])
        if found is None:
            raise PrivateError("EQuery:Unknown asset pair")
        side, ordertype = params["type"], params["ordertype"]
        if side not in ("buy", "sell"):
            raise PrivateError("EGeneral:Invalid arguments:type")
        if ordertype not in ("market", "limit"):
            raise PrivateError("EGeneral:Invalid arguments:ordertype")
        if params.get("leverage", "none") not in ("none", "", "1"):
            raise PrivateError("EGeneral:Invalid arguments:leverage")
        volume = _positive(params, "volume")
        price = _positive(params, "price") if ordertype == "limit" else Decimal(repr(found.price))
        if volume < Decimal(repr(found.asset.ordermin)):
            raise PrivateError("EOrder:Order minimum not met")
        if volume * price < COSTMIN:
            raise PrivateError("EOrder:Cost minimum not met")
        cl_ord_id = params.get("cl_ord_id") or None
        userref = int(params["userref"]) if params.get("userref", "").lstrip("-").isdigit() else None
        if cl_ord_id is not None and (userref is not None or not _CL_ORD_ID.match(cl_ord_id)):
            raise PrivateError("EGeneral:Invalid arguments:cl_ord_id")
        if cl_ord_id is not None and any(o.cl_ord_id == cl_ord_id and o.status == "open" for o in self.orders.values()):
            raise PrivateError("EOrder:Duplicate order")
        need_quote = volume * price * (1 + TAKER_FEE)
        if side == "buy" and self.balances.get("ZUSD", Decimal(0)) - self._held("ZUSD") < need_quote:
            raise PrivateError("EOrder:Insufficient funds")
        if side == "sell" and self.balances.get(found.base_key, Decimal(0)) - self._held(found.base_key) < volume:
            raise PrivateError("EOrder:Insufficient funds")
        descr = {"order": f"{side} {volume:.8f} {found.asset.kraken.altname} @ {ordertype}"}
        if params.get("validate", "") in ("true", "True", "1"):
            return {"descr": descr}
        order = Order(self._txid("O"), found.asset.kraken.pair_key, found.asset.kraken.altname, found.asset.symbol,
                      found.base_key, side, ordertype, volume, price, cl_ord_id, userref, now_s)  # fmt: skip
        self.orders[order.txid] = order
        if ordertype == "market":
            self._fill(order, found, now_s)
        return {"descr": descr, "txid": [order.txid]}

    def _held(self, asset: str) -> Decimal:
        total = Decimal(0)
        for order in self.orders.values():
            if order.status != "open":
                continue
            if asset == "ZUSD" and order.side == "buy":
                total += order.volume * order.price * (1 + TAKER_FEE)
            elif order.side == "sell" and order.base_key == asset:
                total += order.volume
        return total

    def _fill(self, order: Order, found: Market, now_s: float) -> None:
        cost = (order.volume * order.price).quantize(Decimal("0.00001"), rounding=ROUND_HALF_EVEN)
        fee = (cost * TAKER_FEE).quantize(Decimal("0.00001"), rounding=ROUND_HALF_EVEN)
        sign_ = 1 if order.side == "buy" else -1
        self.balances[found.base_key] = self.balances.get(found.base_key, Decimal(0)) + sign_ * order.volume
        self.balances["ZUSD"] = self.balances.get("ZUSD", Decimal(0)) - sign_ * cost - fee
        trade_txid = self._txid("T")
        self._trade_id += 1
        self.fills[trade_txid] = {
            "ordertxid": order.txid, "postxid": self._txid("T"), "pair": order.pair, "time": now_s, "type": order.side,
            "ordertype": order.ordertype, "price": f"{order.price}", "cost": f"{cost}", "fee": f"{fee}",
            "vol": f"{order.volume:.8f}", "margin": "0.00000", "leverage": "0", "misc": "", "trade_id": self._trade_id,
            "maker": False,
        }  # fmt: skip
        order.status, order.vol_exec, order.cost, order.fee = "closed", order.volume, cost, fee
        order.avg_price, order.closetm, order.trades = order.price, now_s, [trade_txid]

    def cancel_order(self, params: dict[str, str], now_s: float) -> dict[str, object]:
        """Cancel by ``txid`` or ``cl_ord_id``; ``EOrder:Unknown order`` when no open order matches."""
        txid, cl_ord_id = params.get("txid", ""), params.get("cl_ord_id", "")
        matches = [o for o in self.orders.values() if o.status == "open" and (o.txid == txid or (cl_ord_id and o.cl_ord_id == cl_ord_id))]
        if not matches:
            raise PrivateError("EOrder:Unknown order")
        for order in matches:
            order.status, order.closetm, order.reason = "canceled", now_s, "User requested"
        return {"count": len(matches)}

    def cancel_all(self, now_s: float) -> dict[str, object]:
        """Cancel every open order."""
        matches = [o for o in self.orders.values() if o.status == "open"]
        for order in matches:
            order.status, order.closetm, order.reason = "canceled", now_s, "User requested"
        return {"count": len(matches)}


def parse_json_body(body: bytes) -> dict[str, str]:
    """Return a JSON body's top-level fields as texts (a private call may be sent as JSON)."""
    try:
        value = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PrivateError("EGeneral:Invalid arguments") from None
    if not isinstance(value, dict):
        raise PrivateError("EGeneral:Invalid arguments")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _decimal(params: dict[str, str], name: str) -> Decimal | None:
    text = params.get(name, "")
    if text == "":
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise PrivateError(f"EGeneral:Invalid arguments:{name}") from None
    if not value.is_finite():
        raise PrivateError(f"EGeneral:Invalid arguments:{name}")
    return value


def _positive(params: dict[str, str], name: str) -> Decimal:
    value = _decimal(params, name)
    if value is None or value <= 0:
        raise PrivateError(f"EGeneral:Invalid arguments:{name}")
    return value


def _int(params: dict[str, str], name: str) -> int:
    value = _decimal(params, name)
    return 0 if value is None else max(0, int(value))


WITHDRAW_METHODS = [
    {"asset": "XXBT", "method": "Bitcoin", "network": "Bitcoin", "minimum": "0.0004"},
    {"asset": "XXBT", "method": "Bitcoin Lightning", "network": "Lightning", "minimum": "0.00001"},
]


def call(account: KrakenAccount, method: str, record: ApiKey, params: dict[str, str],
         market: Callable[[str], Market | None], now_s: float) -> object:  # fmt: skip
    """Carry out private ``method`` for ``record`` and return its result.

    Raises
    ------
    PrivateError
        ``EGeneral:Unknown method`` for an endpoint the emulator does not speak (or GetApiKeyInfo
        switched off), ``EGeneral:Permission denied``, or the endpoint's own refusal.
    """
    if method not in _NEEDS or (method == "GetApiKeyInfo" and not account.key_info_available):
        raise PrivateError("EGeneral:Unknown method")
    account.authorize(record, method)
    handlers: dict[str, Callable[[], object]] = {
        "GetApiKeyInfo": lambda: account.key_info(record),
        "Balance": account.balance,
        "BalanceEx": account.balance_ex,
        "TradeBalance": lambda: {"eb": account.balance().get("ZUSD", "0"), "tb": account.balance().get("ZUSD", "0")},
        "TradeVolume": lambda: {"currency": "ZUSD", "volume": "0.0000"},
        "OpenOrders": lambda: account.open_orders(params),
        "ClosedOrders": lambda: account.closed_orders(params),
        "QueryOrders": lambda: account.query_orders(params),
        "TradesHistory": lambda: account.trades_history(params),
        "AddOrder": lambda: account.add_order(params, market, now_s),
        "CancelOrder": lambda: account.cancel_order(params, now_s),
        "CancelAll": lambda: account.cancel_all(now_s),
        "WithdrawMethods": lambda: list(WITHDRAW_METHODS),
        "Withdraw": _refuse_withdraw,
    }
    return handlers[method]()


def _refuse_withdraw() -> object:
    # The emulator never moves funds out: a withdraw-capable key still names no known withdrawal key.
    raise PrivateError("EFunding:Unknown withdraw key")
