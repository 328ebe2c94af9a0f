"""The strategy graph compiler: a good graph compiles in priority order; every flaw is refused by name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from backend.config.schema import StateSpec, StrategySpec, TransitionSpec
from backend.engine.pipeline import guard_names
from backend.errors import ConfigError, StrategyGraphError
from backend.strategy.graph import CompiledGraph, compile_graph
from backend.strategy.guards import env_key
from backend.strategy.reasons import BUYS, RECOVERY_REASONS, SELLS, Action, SizingRule, StrategyReason
from tests.stubs import small_spec

KNOWN = frozenset(
    {"pred.p_up", "pred.expected_return", "pred.p_recovery", "pos.unrealized_return", "profile.entry_min_p_up", "profile.exit_max_p_up",
     "profile.position_size_pct", "profile.scale_out_fraction", "profile.severe_loss_pct"}
)
SIZING = {"rule": "fraction_of_pv", "parameter": "position_size_pct"}
KNOWN_REASONS = ", ".join(r.value for r in StrategyReason)
ENTER = "pred.p_up >= profile.entry_min_p_up"
EXIT = "pred.p_up <= profile.exit_max_p_up"


def state(name: str, hold: str = "HOLD_FLAT_NO_EDGE") -> dict[str, str]:
    return {"name": name, "hold_reason": hold}


def move(name: str, source: str, target: str, **fields: Any) -> dict[str, Any]:
    defaults = {
        "guard": ENTER if target == "HOLDING" else EXIT,
        "action": "enter" if target == "HOLDING" else "exit",
        "reason": "ENTRY_PREDICTED_EDGE" if target == "HOLDING" else "EXIT_EDGE_TURNED",
        "priority": 0,
    }
    if fields.get("action", defaults["action"]) in ("enter", "reenter") and "sizing" not in fields:
        defaults["sizing"] = SIZING
    return {"name": name, "source": source, "target": target, **defaults, **fields}


def graph(states: list[dict[str, str]] | None = None, transitions: list[dict[str, Any]] | None = None, initial: str = "FLAT") -> StrategySpec:
    return StrategySpec(
        name="g",
        initial_state=initial,
        states=tuple(StateSpec(**s) for s in (states or [state("FLAT"), state("HOLDING", "HOLD_EDGE_PERSISTS")])),
        transitions=tuple(
            TransitionSpec(**t) for t in (transitions or [move("enter", "FLAT", "HOLDING"), move("exit", "HOLDING", "FLAT")])
        ),
    )


def refusal(spec: StrategySpec, known: frozenset[str] = KNOWN) -> str:
    with pytest.raises(StrategyGraphError) as caught:
        compile_graph(spec, known)
    return str(caught.value)


def test_good_graph_compiles_states_reasons_and_actions_to_indices_and_enums() -> None:
    compiled = compile_graph(graph(), KNOWN)
    assert isinstance(compiled, CompiledGraph)
    assert (compiled.name, compiled.states, compiled.initial) == ("g", ("FLAT", "HOLDING"), 0)
    assert compiled.hold_reasons == (StrategyReason.HOLD_FLAT_NO_EDGE, StrategyReason.HOLD_EDGE_PERSISTS)
    (enter,), (leave,) = compiled.outgoing
    assert (enter.name, enter.source, enter.target, enter.action, enter.reason) == (
        "enter", 0, 1, Action.ENTER, StrategyReason.ENTRY_PREDICTED_EDGE
    )
    assert (leave.name, leave.source, leave.target, leave.action, leave.reason) == (
        "exit", 1, 0, Action.EXIT, StrategyReason.EXIT_EDGE_TURNED
    )
    assert enter.guard.evaluate({env_key("pred.p_up"): np.array([0.5, 0.7]), env_key("profile.entry_min_p_up"): 0.6}).tolist() == [False, True]
    assert compiled.names == ("pred.p_up", "profile.entry_min_p_up", "profile.exit_max_p_up")
    assert (enter.sizing, enter.parameter, leave.sizing, leave.parameter) == (SizingRule.FRACTION_OF_PV, "position_size_pct", None, None)
    assert compiled.in_campaign == (False, True)


def test_transitions_leaving_a_state_are_ordered_by_priority_not_declaration() -> None:
    spec = graph(
        transitions=[
            move("late_enter", "FLAT", "HOLDING", priority=9),
            move("stay_flat", "FLAT", "FLAT", guard=EXIT, action="none", reason="HOLD_FLAT_NO_EDGE", priority=5),
            move("early_enter", "FLAT", "HOLDING", guard="pred.expected_return > pos.unrealized_return", priority=1),
            move("exit", "HOLDING", "FLAT"),
        ]
    )
    compiled = compile_graph(spec, KNOWN)
    assert [(t.name, t.priority) for t in compiled.outgoing[0]] == [("early_enter", 1), ("stay_flat", 5), ("late_enter", 9)]
    assert compiled.outgoing[0][1].action is Action.NONE
    assert compiled.names == ("pos.unrealized_return", "pred.expected_return", "pred.p_up", "profile.entry_min_p_up", "profile.exit_max_p_up")


def test_initial_state_need_not_be_declared_first() -> None:
    compiled = compile_graph(graph(states=[state("HOLDING", "HOLD_EDGE_PERSISTS"), state("FLAT")]), KNOWN)
    assert (compiled.states, compiled.initial) == (("HOLDING", "FLAT"), 1)
    assert [t.target for t in compiled.outgoing[1]] == [0]


def test_the_spines_two_state_strategy_compiles_against_the_runs_guard_names() -> None:
    spec = small_spec("strategy=flat_holding_v1")
    compiled = compile_graph(spec.strategy, guard_names(spec))
    assert compiled.states == ("FLAT", "HOLDING")
    assert [[t.name for t in group] for group in compiled.outgoing] == [["enter_on_edge"], ["exit_on_edge_turn"]]
    assert not any(t.guard.is_state_dependent for group in compiled.outgoing for t in group)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            graph(states=[state("FLAT"), state("HOLDING"), state("FLAT")]),
            "graph g: state names must be unique, got ['FLAT', 'HOLDING', 'FLAT']",
        ),
        (graph(initial="START"), "graph g: initial state 'START' is not declared"),
        (
            graph(states=[state("FLAT", "HOLD_FOREVER"), state("HOLDING")]),
            f"graph g, state FLAT: unknown reason code 'HOLD_FOREVER' (known: {KNOWN_REASONS})",
        ),
        (
            graph(transitions=[move("enter", "FLAT", "HOLDING"), move("exit", "HODLING", "FLAT")]),
            "graph g, transition 'exit' (HODLING -> FLAT): unknown state 'HODLING'",
        ),
        (
            graph(transitions=[move("enter", "FLAT", "HOLDNG"), move("exit", "HOLDING", "FLAT")]),
            "graph g, transition 'enter' (FLAT -> HOLDNG): unknown state 'HOLDNG'",
        ),
        (
            graph(transitions=[move("enter", "FLAT", "HOLDING", reason="BECAUSE"), move("exit", "HOLDING", "FLAT")]),
            f"graph g, transition 'enter' (FLAT -> HOLDING): unknown reason code 'BECAUSE' (known: {KNOWN_REASONS})",
        ),
        (
            graph(transitions=[move("enter", "FLAT", "HOLDING", guard="pred.p_up >= 0.55"), move("exit", "HOLDING", "FLAT")]),
            "graph g, transition 'enter' (FLAT -> HOLDING): guard 'pred.p_up >= 0.55': bare value 0.55 in a guard: "
            "thresholds must be profile parameters (profile.<name>)",
        ),
        (
            graph(transitions=[move("enter", "FLAT", "HOLDING"), move("exit", "HOLDING", "FLAT", guard="feat.rsi_14 < pred.p_up")]),
            "graph g, transition 'exit' (HOLDING -> FLAT): guard 'feat.rsi_14 < pred.p_up': unknown name 'feat.rsi_14'",
        ),
        (
            graph(
                transitions=[
                    move("enter", "FLAT", "HOLDING", priority=3),
                    move("enter_again", "FLAT", "HOLDING", guard="pred.expected_return > pos.unrealized_return", priority=3),
                    move("exit", "HOLDING", "FLAT"),
                ]
            ),
            "graph g, transition 'enter_again' (FLAT -> HOLDING): transitions 'enter' and 'enter_again' leave state FLAT "
            "with the same priority 3; give each a distinct priority",
        ),
        (
            graph(
                states=[state("FLAT"), state("HOLDING"), state("ORPHAN")],
                transitions=[move("enter", "FLAT", "HOLDING"), move("exit", "HOLDING", "FLAT"), move("back", "ORPHAN", "FLAT")],
            ),
            "graph g, state ORPHAN: unreachable from the initial state FLAT",
        ),
        (
            graph(transitions=[move("enter", "FLAT", "HOLDING")]),
            "graph g, state HOLDING: no transition leaves it (a state with no way out)",
        ),
    ],
)
def test_flawed_graph_is_refused_naming_the_state_and_transition(spec: StrategySpec, message: str) -> None:
    assert refusal(spec) == message


def test_unreachable_is_checked_before_states_with_no_way_out() -> None:
    # ORPHAN is both unreachable and a dead end; reachability is reported first.
    spec = graph(
        states=[state("FLAT"), state("HOLDING"), state("ORPHAN")],
        transitions=[move("enter", "FLAT", "HOLDING"), move("exit", "HOLDING", "FLAT")],
    )
    assert refusal(spec) == "graph g, state ORPHAN: unreachable from the initial state FLAT"


def test_a_graph_refusal_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        compile_graph(graph(initial="START"), KNOWN)


def test_reason_codes_and_actions_are_the_declared_vocabulary() -> None:
    assert [r.value for r in StrategyReason] == [
        "HOLD_FLAT_NO_EDGE", "HOLD_EDGE_PERSISTS", "HOLD_PARTIAL_AWAITING_EDGE", "HOLD_SEVERE_AWAITING_RECOVERY",
        "HOLD_THROUGH_SEVERE_LOSS", "HOLD_REDUCED_AWAITING_RECOVERY", "HOLD_EDGE_BELOW_COST", "ENTRY_PREDICTED_EDGE", "REENTRY_EDGE_STRENGTHENED",
        "SCALE_OUT_EDGE_WEAKENED", "SCALE_OUT_PROFIT_TARGET", "EXIT_EDGE_TURNED", "SEVERE_LOSS_ASSESS_RECOVERY",
        "RECOVERY_HOLD", "RECOVERY_REDUCE", "RECOVERY_EXIT", "RECOVERY_LOSS_RECOVERED",
    ]  # fmt: skip
    assert {r.value for r in RECOVERY_REASONS} == {
        "SEVERE_LOSS_ASSESS_RECOVERY", "RECOVERY_HOLD", "RECOVERY_REDUCE", "RECOVERY_EXIT", "RECOVERY_LOSS_RECOVERED"
    }  # fmt: skip
    assert [a.value for a in Action] == ["enter", "scale_out", "exit", "reenter", "none", "hold"]
    assert [r.value for r in SizingRule] == ["fraction_of_pv"]
    assert BUYS == {Action.ENTER, Action.REENTER} and SELLS == {Action.SCALE_OUT, Action.EXIT}


def test_a_graph_cannot_declare_the_engines_hold_action() -> None:
    with pytest.raises(ValueError, match="action"):
        TransitionSpec(**move("hold", "FLAT", "FLAT", action="hold"))
