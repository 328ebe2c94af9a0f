"""Tests for execution.risk.gates: each gate in both unit modes, the fixed order, and the stop at the first denial."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import stubs

from backend.config.schema import ExposureLimitSpec, RiskProfileSpec
from execution.risk.gates import Gate, GateOutcome, GateReason, OrderIntent, PortfolioView, admit, exposure_bound

ORDER = [
    Gate.KILL_SWITCH,
    Gate.PROFILE_VALID,
    Gate.DRAWDOWN,
    Gate.CAPITAL,
    Gate.CONCURRENCY,
    Gate.TOTAL_EXPOSURE,
    Gate.CLUSTER_EXPOSURE,
    Gate.MINIMUMS,
]
FEE = 0.25  # exact in binary, so boundaries below are exact
MIN_USD = 10.0
ORDERMIN = 0.5


@pytest.fixture(scope="module")
def base_profile() -> RiskProfileSpec:
    return stubs.small_spec().risk


def _profile(base: RiskProfileSpec, **changes: Any) -> RiskProfileSpec:
    """A validated variant of the real profile (model_validate re-runs the schema's rules)."""
    return RiskProfileSpec.model_validate({**base.model_dump(), **changes})


@pytest.fixture
def profile(base_profile: RiskProfileSpec) -> RiskProfileSpec:
    """Generous, round bounds: 4 positions, total 80 % of PV, cluster 50 % of PV."""
    return _profile(
        base_profile,
        kill_switch=False,
        max_concurrent_positions=4,
        max_total_exposure={"mode": "pct_of_pv", "value": 0.8},
        max_cluster_exposure={"mode": "pct_of_pv", "value": 0.5},
        max_drawdown_pct=0.25,
        drawdown_resume_pct=0.125,
    )


def _entry(notional: float = 1_000.0, qty: float = 10.0, cluster: str = "l1_major") -> OrderIntent:
    return OrderIntent("ETH", cluster, "buy", qty, notional / qty, notional, reduces_risk=False)


def _exit(notional: float = 1_000.0, qty: float = 10.0) -> OrderIntent:
    return OrderIntent("ETH", "l1_major", "sell", qty, notional / qty, notional, reduces_risk=True)


def _view(**changes: Any) -> PortfolioView:
    view = PortfolioView(
        equity=10_000.0,
        cash_available=10_000.0,
        open_positions=0,
        total_exposure=0.0,
        cluster_exposure={},
        drawdown_halted=False,
        drawdown=0.0,
        profile_valid=True,
    )
    return replace(view, **changes)


def _run(intent: OrderIntent, view: PortfolioView, profile: RiskProfileSpec) -> tuple[bool, tuple[GateOutcome, ...]]:
    return admit(intent, view, profile, FEE, MIN_USD, ORDERMIN)


def test_gates_enum_lists_the_documented_order() -> None:
    assert list(Gate) == ORDER


def test_an_intent_within_every_bound_passes_all_gates_in_order(profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_entry(), _view(), profile)
    assert admitted
    assert [o.gate for o in outcomes] == ORDER
    assert all(o.passed and o.reason is GateReason.PASSED for o in outcomes)


# ------------------------------------------------------------------ chain order and stop
def _deny_at(gate: Gate, base: RiskProfileSpec) -> tuple[OrderIntent, PortfolioView, RiskProfileSpec]:
    """Build a case that passes every gate before ``gate`` and fails at ``gate``.

    Later gates are set to fail too, so an evaluation past ``gate`` would show in the outcomes.
    """
    profile = _profile(base, max_concurrent_positions=4, max_total_exposure={"mode": "absolute", "value": 5_000.0},
                       max_cluster_exposure={"mode": "absolute", "value": 3_000.0})
    failing = {
        Gate.KILL_SWITCH: ({}, {"kill_switch": True}),
        Gate.PROFILE_VALID: ({"profile_valid": False}, {}),
        Gate.DRAWDOWN: ({"drawdown_halted": True, "drawdown": 0.3}, {}),
        Gate.CAPITAL: ({"cash_available": 1_249.99}, {}),
        Gate.CONCURRENCY: ({"open_positions": 4}, {}),
        Gate.TOTAL_EXPOSURE: ({"total_exposure": 4_000.01}, {}),
        Gate.CLUSTER_EXPOSURE: ({"cluster_exposure": {"l1_major": 2_000.01}}, {}),
        Gate.MINIMUMS: ({}, {}),
    }
    index = ORDER.index(gate)
    view_changes: dict[str, Any] = {}
    for later in ORDER[index:]:
        view_changes.update(failing[later][0])
    profile = _profile(profile, **failing[gate][1])
    qty = ORDERMIN / 2 if gate is Gate.MINIMUMS else 10.0
    return _entry(notional=1_000.0, qty=qty), _view(**view_changes), profile


DENIALS = [
    (Gate.KILL_SWITCH, GateReason.KILL_SWITCH_ACTIVE),
    (Gate.PROFILE_VALID, GateReason.PROFILE_INVALID),
    (Gate.DRAWDOWN, GateReason.DRAWDOWN_LIMIT),
    (Gate.CAPITAL, GateReason.INSUFFICIENT_CASH),
    (Gate.CONCURRENCY, GateReason.MAX_CONCURRENT_POSITIONS),
    (Gate.TOTAL_EXPOSURE, GateReason.MAX_TOTAL_EXPOSURE),
    (Gate.CLUSTER_EXPOSURE, GateReason.MAX_CLUSTER_EXPOSURE),
    (Gate.MINIMUMS, GateReason.BELOW_EXCHANGE_MINIMUM),
]


@pytest.mark.parametrize(("gate", "reason"), DENIALS, ids=[g.value for g, _ in DENIALS])
def test_chain_stops_at_the_first_denial_recording_only_the_gates_it_ran(
    gate: Gate, reason: GateReason, base_profile: RiskProfileSpec
) -> None:
    intent, view, profile = _deny_at(gate, base_profile)
    admitted, outcomes = _run(intent, view, profile)
    assert not admitted
    assert [o.gate for o in outcomes] == ORDER[: ORDER.index(gate) + 1]
    assert all(o.passed and o.reason is GateReason.PASSED for o in outcomes[:-1])
    assert not outcomes[-1].passed
    assert outcomes[-1].reason is reason


# ------------------------------------------------------------------ kill switch, profile, drawdown
def test_kill_switch_denies_new_risk(profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_entry(), _view(), _profile(profile, kill_switch=True))
    assert not admitted
    assert outcomes == (GateOutcome(Gate.KILL_SWITCH, False, GateReason.KILL_SWITCH_ACTIVE, 1.0, 0.0),)


def test_kill_switch_passes_exits_through_every_gate(profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_exit(), _view(), _profile(profile, kill_switch=True))
    assert admitted
    assert [o.gate for o in outcomes] == ORDER
    assert outcomes[0] == GateOutcome(Gate.KILL_SWITCH, True, GateReason.PASSED_REDUCES_RISK, 1.0, 0.0)
    assert {o.reason for o in outcomes if o.gate is not Gate.PROFILE_VALID} == {GateReason.PASSED_REDUCES_RISK}


@pytest.mark.parametrize("intent", [_entry(), _exit()], ids=["entry", "exit"])
def test_invalid_profile_denies_every_intent_including_exits(intent: OrderIntent, profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(intent, _view(profile_valid=False), profile)
    assert not admitted
    assert outcomes[-1] == GateOutcome(Gate.PROFILE_VALID, False, GateReason.PROFILE_INVALID, 0.0, 1.0)


def test_profile_validity_records_plain_passed_for_an_exit(profile: RiskProfileSpec) -> None:
    _, outcomes = _run(_exit(), _view(), profile)
    assert outcomes[1] == GateOutcome(Gate.PROFILE_VALID, True, GateReason.PASSED, 1.0, 1.0)


def test_drawdown_halt_denies_new_risk_recording_drawdown_and_limit(profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_entry(), _view(drawdown_halted=True, drawdown=0.3), profile)
    assert not admitted
    assert outcomes[-1] == GateOutcome(Gate.DRAWDOWN, False, GateReason.DRAWDOWN_LIMIT, 0.3, profile.drawdown_resume_pct)


def test_drawdown_gate_follows_the_halt_flag_not_the_current_drawdown(profile: RiskProfileSpec) -> None:
    # Above the limit but not (yet) halted: the engine owns the halt/resume rule, the gate reads its flag.
    admitted, _ = _run(_entry(), _view(drawdown_halted=False, drawdown=0.3), profile)
    assert admitted
    # Halted while recovering between the resume and the halt level: still denied.
    admitted, outcomes = _run(_entry(), _view(drawdown_halted=True, drawdown=0.2), profile)
    assert not admitted and outcomes[-1].reason is GateReason.DRAWDOWN_LIMIT


def test_drawdown_halt_passes_exits(profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_exit(), _view(drawdown_halted=True, drawdown=0.3), profile)
    assert admitted
    assert outcomes[2] == GateOutcome(Gate.DRAWDOWN, True, GateReason.PASSED_REDUCES_RISK, 0.3, profile.drawdown_resume_pct)


# ------------------------------------------------------------------ capital and concurrency
@pytest.mark.parametrize(("cash", "admitted"), [(1_250.0, True), (1_249.99, False), (0.0, False), (-5.0, False)])
def test_capital_gate_compares_notional_plus_fee_with_cash_available(
    cash: float, admitted: bool, profile: RiskProfileSpec
) -> None:
    ok, outcomes = _run(_entry(notional=1_000.0), _view(cash_available=cash), profile)
    capital = outcomes[ORDER.index(Gate.CAPITAL)]
    assert ok is admitted
    assert (capital.value, capital.bound) == (1_250.0, cash)
    assert capital.reason is (GateReason.PASSED if admitted else GateReason.INSUFFICIENT_CASH)


def test_capital_gate_passes_an_exit_with_no_cash(profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_exit(), _view(cash_available=0.0), profile)
    assert admitted and outcomes[3].reason is GateReason.PASSED_REDUCES_RISK


@pytest.mark.parametrize(("open_positions", "admitted"), [(0, True), (3, True), (4, False), (9, False)])
def test_concurrency_gate_counts_the_new_position(open_positions: int, admitted: bool, profile: RiskProfileSpec) -> None:
    ok, outcomes = _run(_entry(), _view(open_positions=open_positions), profile)
    concurrency = outcomes[ORDER.index(Gate.CONCURRENCY)]
    assert ok is admitted
    assert (concurrency.value, concurrency.bound) == (open_positions + 1, 4.0)
    if not admitted:
        assert concurrency.reason is GateReason.MAX_CONCURRENT_POSITIONS


def test_concurrency_gate_passes_an_exit_at_the_limit(profile: RiskProfileSpec) -> None:
    assert _run(_exit(), _view(open_positions=4), profile)[0]


# ------------------------------------------------------------------ exposure, both unit modes
@pytest.mark.parametrize(("mode", "value", "equity"), [("pct_of_pv", 0.5, 10_000.0), ("absolute", 5_000.0, 10_000.0), ("absolute", 5_000.0, 1e6)])
def test_exposure_bound_is_a_fraction_of_equity_or_a_usd_amount(mode: str, value: float, equity: float) -> None:
    expected = value * equity if mode == "pct_of_pv" else value
    assert exposure_bound(ExposureLimitSpec(mode=mode, value=value), equity) == expected


EXPOSURE_CASES = [
    # mode, value, equity, exposure now, admitted: the bound is 5,000 USD in every case
    ("pct_of_pv", 0.5, 10_000.0, 4_000.0, True),
    ("pct_of_pv", 0.5, 10_000.0, 4_000.5, False),
    ("absolute", 5_000.0, 10_000.0, 4_000.0, True),
    ("absolute", 5_000.0, 10_000.0, 4_000.5, False),
]


@pytest.mark.parametrize(("mode", "value", "equity", "now", "admitted"), EXPOSURE_CASES)
def test_total_exposure_gate_in_both_unit_modes(
    mode: str, value: float, equity: float, now: float, admitted: bool, profile: RiskProfileSpec
) -> None:
    limited = _profile(profile, max_total_exposure={"mode": mode, "value": value},
                       max_cluster_exposure={"mode": "absolute", "value": 1e9})
    ok, outcomes = _run(_entry(notional=1_000.0), _view(equity=equity, total_exposure=now), limited)
    total = outcomes[ORDER.index(Gate.TOTAL_EXPOSURE)]
    assert ok is admitted
    assert (total.value, total.bound) == (now + 1_000.0, 5_000.0)
    assert total.reason is (GateReason.PASSED if admitted else GateReason.MAX_TOTAL_EXPOSURE)


def test_absolute_exposure_bound_does_not_move_with_equity(profile: RiskProfileSpec) -> None:
    absolute = _profile(profile, max_total_exposure={"mode": "absolute", "value": 5_000.0})
    pct = _profile(profile, max_total_exposure={"mode": "pct_of_pv", "value": 0.5})
    view = _view(equity=20_000.0, cash_available=20_000.0, total_exposure=4_500.0)
    assert not _run(_entry(), view, absolute)[0]
    assert _run(_entry(), view, pct)[0]


@pytest.mark.parametrize(("mode", "value", "equity", "now", "admitted"), EXPOSURE_CASES)
def test_cluster_exposure_gate_in_both_unit_modes(
    mode: str, value: float, equity: float, now: float, admitted: bool, profile: RiskProfileSpec
) -> None:
    limited = _profile(profile, max_total_exposure={"mode": "absolute", "value": 1e9},
                       max_cluster_exposure={"mode": mode, "value": value})
    view = _view(equity=equity, total_exposure=now + 3_000.0, cluster_exposure={"l1_major": now, "meme": 3_000.0})
    ok, outcomes = _run(_entry(notional=1_000.0, cluster="l1_major"), view, limited)
    cluster = outcomes[ORDER.index(Gate.CLUSTER_EXPOSURE)]
    assert ok is admitted
    assert (cluster.value, cluster.bound) == (now + 1_000.0, 5_000.0)
    assert cluster.reason is (GateReason.PASSED if admitted else GateReason.MAX_CLUSTER_EXPOSURE)


def test_cluster_exposure_counts_only_the_intents_own_cluster(profile: RiskProfileSpec) -> None:
    view = _view(total_exposure=4_800.0, cluster_exposure={"meme": 4_800.0})
    admitted, outcomes = _run(_entry(notional=1_000.0, cluster="l1_major"), view, profile)
    assert admitted
    assert outcomes[ORDER.index(Gate.CLUSTER_EXPOSURE)].value == 1_000.0


@pytest.mark.parametrize("gate_view", [{"total_exposure": 1e9}, {"cluster_exposure": {"l1_major": 1e9}}], ids=["total", "cluster"])
def test_exposure_gates_pass_an_exit_over_the_limit(gate_view: dict[str, Any], profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_exit(), _view(**gate_view), profile)
    assert admitted
    assert outcomes[5].reason is outcomes[6].reason is GateReason.PASSED_REDUCES_RISK


# ------------------------------------------------------------------ exchange minimums
@pytest.mark.parametrize(
    ("notional", "qty", "admitted", "bound"),
    [
        (10.0, 0.5, True, 0.5),  # both minimums met exactly (price 20: min_usd needs 0.5, ordermin 0.5)
        (10.0, 0.25, False, 0.5),  # price 40: notional meets min_order_usd, qty under ordermin
        (8.0, 1.0, False, 1.25),  # price 8: qty meets ordermin, notional under min_order_usd (needs 1.25)
    ],
    ids=["both-met", "under-ordermin", "under-min-order-usd"],
)
def test_minimums_gate_needs_both_ordermin_and_min_order_usd(
    notional: float, qty: float, admitted: bool, bound: float, profile: RiskProfileSpec
) -> None:
    ok, outcomes = _run(_entry(notional=notional, qty=qty), _view(), profile)
    minimums = outcomes[-1]
    assert minimums.gate is Gate.MINIMUMS
    assert ok is admitted
    assert (minimums.value, minimums.bound) == (qty, bound)
    assert minimums.reason is (GateReason.PASSED if admitted else GateReason.BELOW_EXCHANGE_MINIMUM)


def test_minimums_gate_passes_a_dust_exit(profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_exit(notional=0.01, qty=0.001), _view(), profile)
    assert admitted and outcomes[-1].reason is GateReason.PASSED_REDUCES_RISK


def test_outcome_record_is_json_ready() -> None:
    outcome = GateOutcome(Gate.CAPITAL, False, GateReason.INSUFFICIENT_CASH, 1_250.0, 1_000.0)
    assert outcome.as_record() == {"gate": "capital", "passed": False, "reason": "INSUFFICIENT_CASH", "value": 1_250.0, "bound": 1_000.0}


# ------------------------------------------------------------------ campaign actions
def _reentry(notional: float = 1_000.0, qty: float = 10.0) -> OrderIntent:
    return OrderIntent("ETH", "l1_major", "buy", qty, notional / qty, notional, reduces_risk=False, opens_position=False)


def test_a_reentry_into_an_open_position_is_not_counted_as_a_new_position(profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_reentry(), _view(open_positions=4), profile)
    concurrency = outcomes[ORDER.index(Gate.CONCURRENCY)]
    assert admitted and (concurrency.value, concurrency.bound, concurrency.reason) == (4.0, 4.0, GateReason.PASSED)


@pytest.mark.parametrize(
    ("gate", "view"),
    [
        (Gate.DRAWDOWN, {"drawdown_halted": True, "drawdown": 0.3}),
        (Gate.CAPITAL, {"cash_available": 100.0}),
        (Gate.TOTAL_EXPOSURE, {"total_exposure": 7_900.0}),
        (Gate.CLUSTER_EXPOSURE, {"cluster_exposure": {"l1_major": 4_900.0}}),
    ],
    ids=["drawdown", "capital", "total", "cluster"],
)
def test_a_reentry_is_new_risk_and_meets_every_risk_gate(gate: Gate, view: dict[str, Any], profile: RiskProfileSpec) -> None:
    admitted, outcomes = _run(_reentry(), _view(**view), profile)
    assert not admitted and outcomes[-1].gate is gate


@pytest.mark.parametrize("kill", [False, True])
def test_a_scale_out_reduces_risk_and_passes_every_gate_even_halted_and_killed(kill: bool, profile: RiskProfileSpec) -> None:
    scale_out = OrderIntent("ETH", "l1_major", "sell", 3.3, 100.0, 330.0, reduces_risk=True, opens_position=False)
    view = _view(drawdown_halted=True, drawdown=0.5, cash_available=0.0, open_positions=9, total_exposure=1e9)
    admitted, outcomes = _run(scale_out, view, _profile(profile, kill_switch=kill))
    assert admitted and [o.gate for o in outcomes] == ORDER


@pytest.mark.parametrize(("profile_min", "bound"), [(5.0, 0.5), (40.0, 2.0)], ids=["exchange-floor", "profile-floor"])
def test_the_minimum_order_is_the_higher_of_the_exchange_and_profile_floors(
    profile_min: float, bound: float, profile: RiskProfileSpec
) -> None:
    # price 20: the exchange floor (10 USD) needs 0.5, a 40 USD profile floor needs 2.0
    ok, outcomes = _run(_entry(notional=30.0, qty=1.5), _view(), _profile(profile, min_order_usd=profile_min))
    assert (outcomes[-1].value, outcomes[-1].bound) == (1.5, bound)
    assert ok is (1.5 >= bound)
