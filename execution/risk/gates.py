"""The risk gate chain, in a fixed and documented order, applied to every order intent.

Order: kill switch, profile validity, drawdown, capital (cash only, no leverage), concurrency,
total exposure, cluster exposure, exchange minimums. The chain stops at the first denial; every
gate it evaluated is returned as a ``GateOutcome`` with an enum reason and the figures compared.
Intents that only reduce risk (exits and scale-outs) pass every gate except profile validity: the
kill switch and the drawdown gate stop new risk, never the way out. Entries and re-entries are new
risk; a re-entry adds to a position that is already open, so it does not count as a new position
at the concurrency gate.
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
    opens_position: bool = True


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
    reduce = intent.reduces_risk
    cost = intent.notional * (1.0 + fee_rate)
    positions_after = view.open_positions + (1 if intent.opens_position else 0)
    # The exchange's floor (execution.min_order_usd) or the profile's, whichever is higher.
    min_usd = max(min_order_usd, profile.min_order_usd)
    total_after = view.total_exposure + intent.notional
    total_bound = exposure_bound(profile.max_total_exposure, view.equity)
    cluster_after = view.cluster_exposure.get(intent.cluster, 0.0) + intent.notional
    cluster_bound = exposure_bound(profile.max_cluster_exposure, view.equity)
    # (gate, passes, reason if denied, value, bound), in the documented order. The figures are plain
    # arithmetic, so they are all computed; the chain still stops at the first denial.
    chain = (
        (Gate.KILL_SWITCH, reduce or not profile.kill_switch, GateReason.KILL_SWITCH_ACTIVE, float(profile.kill_switch), 0.0),
        (Gate.PROFILE_VALID, view.profile_valid, GateReason.PROFILE_INVALID, float(view.profile_valid), 1.0),
        # Once halted, new risk waits until drawdown is back within the resume bound: that is the bound shown.
        (Gate.DRAWDOWN, reduce or not view.drawdown_halted, GateReason.DRAWDOWN_LIMIT, view.drawdown,
         profile.drawdown_resume_pct if view.drawdown_halted else profile.max_drawdown_pct),
        (Gate.CAPITAL, reduce or cost <= view.cash_available, GateReason.INSUFFICIENT_CASH, cost, view.cash_available),
        (Gate.CONCURRENCY, reduce or positions_after <= profile.max_concurrent_positions, GateReason.MAX_CONCURRENT_POSITIONS,
         positions_after, profile.max_concurrent_positions),
        (Gate.TOTAL_EXPOSURE, reduce or total_after <= total_bound, GateReason.MAX_TOTAL_EXPOSURE, total_after, total_bound),
        (Gate.CLUSTER_EXPOSURE, reduce or cluster_after <= cluster_bound, GateReason.MAX_CLUSTER_EXPOSURE, cluster_after, cluster_bound),
        (Gate.MINIMUMS, reduce or (intent.notional >= min_usd and intent.qty >= ordermin), GateReason.BELOW_EXCHANGE_MINIMUM,
         intent.qty, max(ordermin, min_usd / intent.ref_price)),
    )  # fmt: skip
    outcomes: list[GateOutcome] = []
    for gate, ok, denied, value, bound in chain:
        if not ok:
            outcomes.append(GateOutcome(gate, False, denied, float(value), float(bound)))
            return False, tuple(outcomes)
        # Risk-reducing intents pass with their own reason, except at profile validity, which they meet like any intent.
        passed = GateReason.PASSED_REDUCES_RISK if reduce and gate is not Gate.PROFILE_VALID else GateReason.PASSED
        outcomes.append(GateOutcome(gate, True, passed, float(value), float(bound)))
    return True, tuple(outcomes)
