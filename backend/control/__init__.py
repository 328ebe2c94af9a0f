"""The control plane: the kill switch, its action log and what it does to open orders."""

from backend.control.kill_switch import KILL_SWITCH_REASON, apply_kill_switch, effective_profile
from backend.control.store import ControlAction, ControlStatus, ControlStore, is_killed, kill, resume, status

__all__ = [
    "KILL_SWITCH_REASON",
    "ControlAction",
    "ControlStatus",
    "ControlStore",
    "apply_kill_switch",
    "effective_profile",
    "is_killed",
    "kill",
    "resume",
    "status",
]
