"""The campaign language: sizing and fractions, campaign phases, the loss- and time-only exit refusal, campaign_v1."""

from __future__ import annotations

from typing import Any

import pytest
import stubs

from backend.config.schema import StateSpec, StrategySpec, TransitionSpec
from backend.engine.pipeline import guard_names
from backend.errors import StrategyGraphError
from backend.strategy.graph import LOSS_OR_TIME_NAMES, compile_graph
from backend.strategy.reasons import Action, SizingRule, StrategyReason

KNOWN = frozenset(
    {
        "pred.p_up", "pred.p_recovery", "pos.unrealized_return", "pos.exposure_pct", "profile.entry_min_p_up",
        "profile.exit_max_p_up", "profile.position_size_pct", "profile.scale_out_fraction", "profile.severe_loss_pct",
    }
)  # fmt: skip
SIZING = {"rule": "fraction_of_pv", "parameter": "position_size_pct"}
FRACTION = {"parameter": "scale_out_fraction"}
UP = "pred.p_up >= profile.entry_min_p_up"
DOWN = "pred.p_up <= profile.exit_max_p_up"


def t(name: str, source: str, target: str, action: str, guard: str = UP, priority: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "source": source, "target": target, "guard": guard, "action": action,
            "reason": "ENTRY_PREDICTED_EDGE", "priority": priority, **extra}  # fmt: skip


def spec(*transitions: dict[str, Any], states: tuple[str, ...] = ("FLAT", "HOLDING", "PARTIAL")) -> StrategySpec:
    return StrategySpec(
        name="c",
        initial_state="FLAT",
        states=tuple(StateSpec(name=s, hold_reason="HOLD_FLAT_NO_EDGE") for s in states),
        transitions=tuple(TransitionSpec(**x) for x in transitions),
    )


CAMPAIGN = (
    t("enter", "FLAT", "HOLDING", "enter", sizing=SIZING),
    t("trim", "HOLDING", "PARTIAL", "scale_out", DOWN, fraction=FRACTION),
    t("rebuild", "PARTIAL", "HOLDING", "reenter", sizing=SIZING),
    t("leave", "PARTIAL", "FLAT", "exit", DOWN, priority=1),
    t("leave_full", "HOLDING", "FLAT", "exit", "pred.p_up <= profile.exit_max_p_up and pos.unrealized_return <= profile.severe_loss_pct", priority=1),
)


def refusal(s: StrategySpec) -> str:
    with pytest.raises(StrategyGraphError) as caught:
        compile_graph(s, KNOWN)
    return str(caught.value)


def test_a_campaign_graph_compiles_actions_sizing_fractions_and_phases() -> None:
    compiled = compile_graph(spec(*CAMPAIGN), KNOWN)
    by_name = {x.name: x for x in compiled.transitions}
    assert [x.name for x in compiled.transitions] == ["enter", "trim", "leave_full", "rebuild", "leave"]
    assert (by_name["enter"].action, by_name["enter"].sizing, by_name["enter"].parameter) == (
        Action.ENTER, SizingRule.FRACTION_OF_PV, "position_size_pct"
    )
    assert (by_name["trim"].action, by_name["trim"].sizing, by_name["trim"].parameter) == (Action.SCALE_OUT, None, "scale_out_fraction")
    assert (by_name["rebuild"].action, by_name["rebuild"].parameter) == (Action.REENTER, "position_size_pct")
    assert (by_name["leave"].action, by_name["leave"].parameter) == (Action.EXIT, None)
    assert compiled.in_campaign == (False, True, True)


def _replace(name: str, **changes: Any) -> tuple[dict[str, Any], ...]:
    return tuple({**x, **changes} if x["name"] == name else x for x in CAMPAIGN)


def _without(key: str, name: str) -> tuple[dict[str, Any], ...]:
    return tuple({k: v for k, v in x.items() if k != key} if x["name"] == name else x for x in CAMPAIGN)


@pytest.mark.parametrize(
    ("transitions", "message"),
    [
        (_without("sizing", "enter"),
         "graph c, transition 'enter' (FLAT -> HOLDING): action enter needs 'sizing', e.g. sizing: "
         "{rule: fraction_of_pv, parameter: position_size_pct}"),
        (_without("sizing", "rebuild"),
         "graph c, transition 'rebuild' (PARTIAL -> HOLDING): action reenter needs 'sizing', e.g. sizing: "
         "{rule: fraction_of_pv, parameter: position_size_pct}"),
        (_without("fraction", "trim"),
         "graph c, transition 'trim' (HOLDING -> PARTIAL): action scale_out needs 'fraction', e.g. fraction: "
         "{parameter: scale_out_fraction}"),
        (_replace("leave", sizing=SIZING), "graph c, transition 'leave' (PARTIAL -> FLAT): action exit takes no 'sizing'"),
        (_replace("enter", fraction=FRACTION), "graph c, transition 'enter' (FLAT -> HOLDING): action enter takes no 'fraction'"),
        (_replace("enter", sizing={"rule": "fraction_of_pv", "parameter": "lot_size"}),
         "graph c, transition 'enter' (FLAT -> HOLDING): sizing parameter 'lot_size' is not a profile parameter"),
        (_replace("trim", fraction={"parameter": "half"}),
         "graph c, transition 'trim' (HOLDING -> PARTIAL): fraction parameter 'half' is not a profile parameter"),
        (_replace("rebuild", action="enter"),
         "graph c, transition 'rebuild' (PARTIAL -> HOLDING): enter from state PARTIAL, which is already inside a campaign (use reenter)"),
        ((*CAMPAIGN, t("early_trim", "FLAT", "PARTIAL", "scale_out", DOWN, priority=1, fraction=FRACTION)),
         "graph c, transition 'early_trim' (FLAT -> PARTIAL): scale_out from state FLAT, which holds no campaign"),
        ((*CAMPAIGN, t("early_rebuild", "FLAT", "HOLDING", "reenter", priority=1, sizing=SIZING)),
         "graph c, transition 'early_rebuild' (FLAT -> HOLDING): reenter from state FLAT, which holds no campaign"),
        ((*CAMPAIGN, t("nothing_to_sell", "FLAT", "FLAT", "exit", DOWN, priority=1)),
         "graph c, transition 'nothing_to_sell' (FLAT -> FLAT): exit from state FLAT, which holds no campaign"),
        ((*CAMPAIGN, t("sneak", "FLAT", "PARTIAL", "none", DOWN, priority=1)),
         "graph c, state PARTIAL: reached both inside and outside a campaign (transition 'trim' from HOLDING)"),
        (_replace("leave", guard="pos.unrealized_return <= -profile.severe_loss_pct"),
         "graph c, transition 'leave' (PARTIAL -> FLAT): an exit on pos.unrealized_return alone is a loss- or time-only "
         "liquidation (governance 5); let a prediction (pred.*) decide, e.g. through a severe-loss state and pred.p_recovery"),
    ],
    ids=["enter-needs-sizing", "reenter-needs-sizing", "scale-out-needs-fraction", "exit-takes-no-sizing", "enter-takes-no-fraction",
         "unknown-sizing-parameter", "unknown-fraction-parameter", "enter-inside-campaign", "scale-out-outside", "reenter-outside",
         "exit-outside", "state-in-both-phases", "loss-only-exit"],
)
def test_a_campaign_flaw_is_refused_naming_the_state_and_transition(
    transitions: tuple[dict[str, Any], ...], message: str
) -> None:
    assert refusal(spec(*transitions)) == message


def test_a_loss_guard_may_lead_elsewhere_than_an_exit_and_an_exit_may_read_loss_with_a_prediction() -> None:
    # Moving to an assessment state on loss alone is allowed (the recovery probability decides there);
    # the exit itself reads pred.p_recovery.
    compiled = compile_graph(
        spec(
            t("enter", "FLAT", "HOLDING", "enter", sizing=SIZING),
            t("assess", "HOLDING", "SEVERE", "none", "pos.unrealized_return <= -profile.severe_loss_pct"),
            t("recover_exit", "SEVERE", "FLAT", "exit", "pred.p_recovery <= profile.exit_max_p_up and pos.unrealized_return <= -profile.severe_loss_pct"),
            states=("FLAT", "HOLDING", "SEVERE"),
        ),
        KNOWN,
    )
    assert compiled.in_campaign == (False, True, True)
    assert LOSS_OR_TIME_NAMES == {"pos.unrealized_return", "pos.bars_held"}


def test_campaign_v1_compiles_with_every_behaviour_and_its_reason_codes() -> None:
    run = stubs.small_spec("strategy=campaign_v1")
    compiled = compile_graph(run.strategy, guard_names(run))
    assert compiled.states == ("FLAT", "HOLDING", "PARTIAL", "SEVERE", "RECOVERY_HOLD", "RECOVERY_REDUCED")
    assert compiled.in_campaign == (False, True, True, True, True, True)
    actions = {(x.action, x.reason) for x in compiled.transitions}
    assert actions >= {
        (Action.ENTER, StrategyReason.ENTRY_PREDICTED_EDGE),
        (Action.SCALE_OUT, StrategyReason.SCALE_OUT_PROFIT_TARGET),
        (Action.SCALE_OUT, StrategyReason.SCALE_OUT_EDGE_WEAKENED),
        (Action.REENTER, StrategyReason.REENTRY_EDGE_STRENGTHENED),
        (Action.EXIT, StrategyReason.EXIT_EDGE_TURNED),
        (Action.NONE, StrategyReason.SEVERE_LOSS_ASSESS_RECOVERY),
        (Action.EXIT, StrategyReason.RECOVERY_EXIT),
        (Action.SCALE_OUT, StrategyReason.RECOVERY_REDUCE),
        (Action.NONE, StrategyReason.RECOVERY_HOLD),
        (Action.NONE, StrategyReason.RECOVERY_LOSS_RECOVERED),
    }
    # Adaptive holding: no guard reads time; every exit reads a prediction.
    assert not any("bars_held" in n for n in compiled.names)
    assert all(any(n.startswith("pred.") for n in x.guard.names) for x in compiled.transitions if x.action is Action.EXIT)
    assert "pred.p_recovery" in compiled.names
