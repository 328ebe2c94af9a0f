"""Strategy reason codes and actions: every transition and every hold names one of these."""

from __future__ import annotations

import enum


class StrategyReason(str, enum.Enum):
    """Why the strategy moved (or stayed). Declared graphs may only use these codes."""

    # hold reasons: why a symbol stays in its state
    HOLD_FLAT_NO_EDGE = "HOLD_FLAT_NO_EDGE"
    HOLD_EDGE_PERSISTS = "HOLD_EDGE_PERSISTS"
    HOLD_PARTIAL_AWAITING_EDGE = "HOLD_PARTIAL_AWAITING_EDGE"
    HOLD_SEVERE_AWAITING_RECOVERY = "HOLD_SEVERE_AWAITING_RECOVERY"
    HOLD_THROUGH_SEVERE_LOSS = "HOLD_THROUGH_SEVERE_LOSS"
    HOLD_REDUCED_AWAITING_RECOVERY = "HOLD_REDUCED_AWAITING_RECOVERY"
    # the engine's own: a transition fired but its expected edge did not pay its cost (ADR-027), so the symbol holds
    HOLD_EDGE_BELOW_COST = "HOLD_EDGE_BELOW_COST"
    # entries and re-entries
    ENTRY_PREDICTED_EDGE = "ENTRY_PREDICTED_EDGE"
    REENTRY_EDGE_STRENGTHENED = "REENTRY_EDGE_STRENGTHENED"
    # tactical profit realisation
    SCALE_OUT_EDGE_WEAKENED = "SCALE_OUT_EDGE_WEAKENED"
    SCALE_OUT_PROFIT_TARGET = "SCALE_OUT_PROFIT_TARGET"
    # prediction-led exit
    EXIT_EDGE_TURNED = "EXIT_EDGE_TURNED"
    # severe adverse state: the recovery decisions
    SEVERE_LOSS_ASSESS_RECOVERY = "SEVERE_LOSS_ASSESS_RECOVERY"
    RECOVERY_HOLD = "RECOVERY_HOLD"
    RECOVERY_REDUCE = "RECOVERY_REDUCE"
    RECOVERY_EXIT = "RECOVERY_EXIT"
    RECOVERY_LOSS_RECOVERED = "RECOVERY_LOSS_RECOVERED"


# The decisions governance section 10 calls "severe-loss recovery decisions".
RECOVERY_REASONS = frozenset(
    {
        StrategyReason.SEVERE_LOSS_ASSESS_RECOVERY,
        StrategyReason.RECOVERY_HOLD,
        StrategyReason.RECOVERY_REDUCE,
        StrategyReason.RECOVERY_EXIT,
        StrategyReason.RECOVERY_LOSS_RECOVERED,
    }
)


class Action(str, enum.Enum):
    """What a transition asks the execution side to do.

    ``HOLD`` is the engine's own: the action of a hold row, written when a symbol's hold reason
    changes. A graph cannot declare it (the schema refuses it).
    """

    ENTER = "enter"
    SCALE_OUT = "scale_out"
    EXIT = "exit"
    REENTER = "reenter"
    NONE = "none"
    HOLD = "hold"


class SizingRule(str, enum.Enum):
    """How an ``enter`` or ``reenter`` sizes its target position from a profile parameter."""

    FRACTION_OF_PV = "fraction_of_pv"


# Actions that buy (new risk) and actions that sell (reduce risk).
BUYS = frozenset({Action.ENTER, Action.REENTER})
SELLS = frozenset({Action.SCALE_OUT, Action.EXIT})
