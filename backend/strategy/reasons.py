"""Strategy reason codes: every transition and every hold names one of these."""

from __future__ import annotations

import enum


class StrategyReason(str, enum.Enum):
    """Why the strategy moved (or stayed). Declared graphs may only use these codes."""

    HOLD_FLAT_NO_EDGE = "HOLD_FLAT_NO_EDGE"
    HOLD_EDGE_PERSISTS = "HOLD_EDGE_PERSISTS"
    ENTRY_PREDICTED_EDGE = "ENTRY_PREDICTED_EDGE"
    EXIT_EDGE_TURNED = "EXIT_EDGE_TURNED"


class Action(str, enum.Enum):
    """What a transition asks the execution side to do."""

    ENTER = "enter"
    EXIT = "exit"
    NONE = "none"
