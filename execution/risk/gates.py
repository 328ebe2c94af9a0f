"""The risk gate chain, in a fixed and documented order, applied to every order intent.

Order: kill switch, profile validity, drawdown, capital (cash only, no leverage), concurrency,
total exposure, cluster exposure, exchange minimums. The chain stops at the first denial; every
gate it evaluated is returned as a ``GateOutcome`` with an enum reason and the figures compared.
Intents that only reduce risk (exits) pass every gate except profile validity: the kill switch
and the drawdown gate stop new risk, never the way out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from backend.config.schema import ExposureLimitSpec, RiskProfileSpec


class Gate(str, enum.Enum):
    """The gates, in the order they run."""

    KILL_SWITCH = "kill_switch"
    PROFILE_VALID = "profile_valid"
    DRAWDOWN = "drawdown"
    CAPITAL = "capital"
    CONCURRENCY = "concurrency"
    TOTAL_EXPOSURE = "total_exposure"
    CLUSTER_EXPOSURE = "cluster_exposure"
    MINIMUMS = "minimums"


class GateReason(str, enum.Enum):
    """Why a gate passed or denied."""

    PASSED = "PASSED"
    PASSED_REDUCES_RISK = "PASSED_REDUCES_RISK"
    KILL_SWITCH_ACTIVE = "KILL_SWITCH_ACTIVE"
    PROFILE_INVALID = "PROFILE_INVALID"
    DRAWDOWN_LIMIT = "DRAWDOWN_LIMIT"
    INSUFFICIENT_CASH = "INSUFFICIENT_CASH"
    MAX_CONCURRENT_POSITIONS = "MAX_CONCURRENT_POSITIONS"
    MAX_TOTAL_EXPOSURE = "MAX_TOTAL_EXPOSURE"
    MAX_CLUSTER_EXPOSURE = "MAX_CLUSTER_EXPOSURE"
    BELOW_EXCHANGE_MINIMUM = "BELOW_EXCHANGE_MINIMUM"


@dataclass(frozen=True)
class OrderIntent:
    """What the strategy asks for, before admission. ``notional`` is in USD at the reference price."""

    symbol: str
    cluster: str
    side: str
    qty: float
    ref_price: float
    notional: float
    reduces_risk: bool


@dataclass(frozen=True)
class PortfolioView:
    """The figures the gates compare, computed at admission from current marks and open orders."""

    equity: float
    cash_available: float
    open_positions: int
    total_exposure: float
    cluster_exposure: Mapping[str, float]
    drawdown_halted: bool
    drawdown: float
    profile_valid: bool


@dataclass(frozen=True)
class GateOutcome:
    """One gate's verdict with the value and bound it compared."""

    gate: Gate
    passed: bool
    reason: GateReason
    value: float
    bound: float

    def as_record(self) -> dict[str, object]:
        """Return the outcome as a JSON-ready record for the decision log."""
        return {"gate": self.gate.value, "passed": self.passed, "reason": self.reason.value, "value": self.value, "bound": self.bound}


def exposure_bound(limit: ExposureLimitSpec, equity: float) -> float:
    """Return the limit in USD: ``value x equity`` in ``pct_of_pv`` mode, ``value`` in ``absolute`` mode."""
    return limit.value * equity if limit.mode == "pct_of_pv" else limit.value


def admit(
    intent: OrderIntent, view: PortfolioView, profile: RiskProfileSpec, fee_rate: float, min_order_usd: float, ordermin: float
) -> tuple[bool, tuple[GateOutcome, ...]]:
    """Run the chain for ``intent``; return whether it is admitted and the outcomes evaluated."""
    outcomes: list[GateOutcome] = []

    def check(gate: Gate, ok: bool, denied: GateReason, value: float, bound: float) -> bool:
        reason = GateReason.PASSED if ok else denied
        if ok and intent.reduces_risk and gate not in (Gate.PROFILE_VALID,):
            reason = GateReason.PASSED_REDUCES_RISK
        outcomes.append(GateOutcome(gate, ok, reason, float(value), float(bound)))
        return ok

    reduce = intent.reduces_risk
    cost = intent.notional * (1.0 + fee_rate)
    cluster_now = view.cluster_exposure.get(intent.cluster, 0.0)
    chain = (
        lambda: check(Gate.KILL_SWITCH, reduce or not profile.kill_switch, GateReason.KILL_SWITCH_ACTIVE, float(profile.kill_switch), 0.0),
        lambda: check(Gate.PROFILE_VALID, view.profile_valid, GateReason.PROFILE_INVALID, float(view.profile_valid), 1.0),
        # Once halted, new risk waits until drawdown is back within the resume bound: that is the bound shown.
        lambda: check(
            Gate.DRAWDOWN,
            reduce or not view.drawdown_halted,
            GateReason.DRAWDOWN_LIMIT,
            view.drawdown,
            profile.drawdown_resume_pct if view.drawdown_halted else profile.max_drawdown_pct,
        ),
        lambda: check(Gate.CAPITAL, reduce or cost <= view.cash_available, GateReason.INSUFFICIENT_CASH, cost, view.cash_available),
        lambda: check(
            Gate.CONCURRENCY,
            reduce or view.open_positions + 1 <= profile.max_concurrent_positions,
            GateReason.MAX_CONCURRENT_POSITIONS,
            view.open_positions + 1,
            profile.max_concurrent_positions,
        ),
        lambda: check(
            Gate.TOTAL_EXPOSURE,
            reduce or view.total_exposure + intent.notional <= exposure_bound(profile.max_total_exposure, view.equity),
            GateReason.MAX_TOTAL_EXPOSURE,
            view.total_exposure + intent.notional,
            exposure_bound(profile.max_total_exposure, view.equity),
        ),
        lambda: check(
            Gate.CLUSTER_EXPOSURE,
            reduce or cluster_now + intent.notional <= exposure_bound(profile.max_cluster_exposure, view.equity),
            GateReason.MAX_CLUSTER_EXPOSURE,
            cluster_now + intent.notional,
            exposure_bound(profile.max_cluster_exposure, view.equity),
        ),
        lambda: check(
            Gate.MINIMUMS,
            reduce or (intent.notional >= min_order_usd and intent.qty >= ordermin),
            GateReason.BELOW_EXCHANGE_MINIMUM,
            intent.qty,
            max(ordermin, min_order_usd / intent.ref_price),
        ),
    )
    for gate in chain:
        if not gate():
            return False, tuple(outcomes)
    return True, tuple(outcomes)
