"""The API-key policy: exactly the permissions a mode needs, nothing that can move funds (pure).

Input is what GetApiKeyInfo reports (section 6.2 of the API facts) or, when that endpoint does not
answer, what the safe probes established (Balance, then WithdrawMethods; section 6.3). A key is
refused when it holds any permission beyond the mode's minimum (withdrawal and deposit management
first among them), when it lacks one the mode needs, when it has expired, or when a probe was
inconclusive; each problem names the permission and the fix on Kraken's key page.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KEY_PAGE = "Kraken > Settings > API (https://pro.kraken.com/app/settings/api)"

# The key form's labels, by GetApiKeyInfo code (section 6.1).
LABELS = {
    "query-funds": "Funds permissions - Query",
    "add-funds": "Funds permissions - Deposit",
    "withdraw-funds": "Funds permissions - Withdraw",
    "earn-funds": "Funds permissions - Earn",
    "query-open-trades": "Orders and trades - Query open orders & trades",
    "query-closed-trades": "Orders and trades - Query closed orders & trades",
    "modify-trades": "Orders and trades - Create & modify orders",
    "close-trades": "Orders and trades - Cancel & close orders",
    "query-ledger": "Data - Query ledger entries",
    "export-data": "Data - Export data",
    "create-ws-token": "WebSocket interface - On",
    "add-withdraw-address": "Add withdrawal addresses",
    "update-withdraw-address": "Update withdrawal addresses",
}
MOVES_FUNDS = frozenset({"withdraw-funds", "add-withdraw-address", "update-withdraw-address", "earn-funds", "add-funds"})


class KeyMode(enum.Enum):
    """What the key will be used for; each mode has its minimum permission set."""

    SHADOW = "shadow"  # read balances, orders and trades
    LIVE = "live"  # and create and cancel orders


REQUIRED: Mapping[KeyMode, frozenset[str]] = {
    KeyMode.SHADOW: frozenset({"query-funds", "query-open-trades", "query-closed-trades"}),
    KeyMode.LIVE: frozenset({"query-funds", "query-open-trades", "query-closed-trades", "modify-trades", "close-trades"}),
}


class ProblemKind(enum.Enum):
    """Why a key is refused."""

    MOVES_FUNDS = "moves_funds"
    MORE_THAN_MINIMUM = "more_than_minimum"
    UNKNOWN_PERMISSION = "unknown_permission"
    MISSING = "missing"
    EXPIRED = "expired"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Problem:
    """One reason to refuse a key: the permission (or field) it concerns and what to do."""

    kind: ProblemKind
    subject: str
    fix: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.fix}"


@dataclass(frozen=True)
class KeyReport:
    """What a key may do: its permissions (as far as known), the problems that refuse it, and warnings."""

    mode: KeyMode
    permissions: tuple[str, ...]
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]
    source: str  # "GetApiKeyInfo" or "probes"

    @property
    def accepted(self) -> bool:
        """Whether the key may be stored and used for its mode."""
        return not self.problems


def _label(code: str) -> str:
    return f"{code} ({LABELS[code]})" if code in LABELS else code


def _untick(code: str, why: str) -> Problem:
    kind = ProblemKind.MOVES_FUNDS if code in MOVES_FUNDS else ProblemKind.MORE_THAN_MINIMUM
    if code not in LABELS:
        kind = ProblemKind.UNKNOWN_PERMISSION
    return Problem(kind, _label(code), f"{why}; untick it on {KEY_PAGE} (edit the key, or create a new key without it)")


def check_key_info(info: Mapping[str, object], mode: KeyMode, now_s: int) -> KeyReport:
    """Judge a GetApiKeyInfo result for ``mode`` at ``now_s`` (unix seconds)."""
    held = sorted(str(p) for p in info.get("permissions", []) or [])  # type: ignore[union-attr]
    required = REQUIRED[mode]
    problems: list[Problem] = []
    for code in held:
        if code in required:
            continue
        if code in MOVES_FUNDS:
            problems.append(_untick(code, "the key can move funds out of (or into) the account, which ACTS never needs"))
        elif code in LABELS:
            problems.append(_untick(code, f"more than the {mode.value} mode needs"))
        else:
            problems.append(_untick(code, "an unknown permission is refused (fail closed)"))
    for code in sorted(required - set(held)):
        problems.append(Problem(ProblemKind.MISSING, _label(code), f"the {mode.value} mode needs it; tick it on {KEY_PAGE}"))
    valid_until = int(str(info.get("validUntil", "0") or "0"))
    if valid_until and valid_until <= now_s:
        problems.append(Problem(ProblemKind.EXPIRED, "validUntil", f"the key expired at {valid_until}; create a new key on {KEY_PAGE}"))
    warnings = []
    if int(str(info.get("nonceWindow", 0) or 0)) != 0:
        warnings.append("nonceWindow is not 0: a non-zero nonce window can let a repeated request through; set it to 0")
    if str(info.get("queryFrom", "0")) != "0" or str(info.get("queryTo", "0")) != "0":
        warnings.append("the key's query window clips order and trade history: reconciliation may not see old orders")
    if not info.get("ipAllowlist"):
        warnings.append("the key has no IP allowlist: consider restricting it to this machine's address")
    return KeyReport(mode, tuple(held), tuple(problems), tuple(warnings), "GetApiKeyInfo")


def check_probes(balance_ok: bool, withdraw_probe: str, mode: KeyMode) -> KeyReport:
    """Judge a key from the fallback probes when GetApiKeyInfo does not answer.

    ``withdraw_probe`` is ``"allowed"`` (WithdrawMethods answered: the key can withdraw), ``"denied"``
    (``EGeneral:Permission denied``) or anything else (inconclusive). The probes cannot see the other
    permissions, so the report says so in a warning.
    """
    problems: list[Problem] = []
    if not balance_ok:
        problems.append(Problem(ProblemKind.MISSING, _label("query-funds"), f"Balance was refused; tick it on {KEY_PAGE}"))
    if withdraw_probe == "allowed":
        problems.append(_untick("withdraw-funds", "WithdrawMethods answered, so the key can withdraw"))
    elif withdraw_probe != "denied":
        problems.append(Problem(ProblemKind.INCONCLUSIVE, "WithdrawMethods",
                                f"the withdrawal probe was inconclusive ({withdraw_probe}); nothing was stored, retry later"))  # fmt: skip
    warnings = ("GetApiKeyInfo is unavailable: only query-funds and withdraw-funds could be checked",)
    return KeyReport(mode, ("query-funds",) if balance_ok else (), tuple(problems), warnings, "probes")


def describe(report: KeyReport) -> Iterable[str]:
    """Yield the report's lines for an operator: verdict, each problem with its fix, each warning."""
    verdict = "accepted" if report.accepted else "REFUSED"
    yield f"key {verdict} for {report.mode.value} mode (checked with {report.source})"
    yield f"  permissions: {', '.join(report.permissions) or 'none'}"
    for problem in report.problems:
        yield f"  refused: {problem}"
    for warning in report.warnings:
        yield f"  warning: {warning}"
