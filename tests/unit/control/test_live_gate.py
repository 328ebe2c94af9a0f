"""Live enablement: onboarded key, passed check, long-enough shadow session, confirmation, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.control.live import LiveEvent, LiveGate, Requirement
from backend.errors import ControlError

R = Requirement
HOUR = 3_600_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def now_ms(self) -> int:
        self.now += 1
        return self.now


def test_requirements_are_met_only_in_order(tmp_path: Path) -> None:
    clock = Clock()
    with LiveGate(tmp_path / "acts.db") as gate:
        assert gate.readiness(HOUR).missing == tuple(R) and gate.connected() is None
        with pytest.raises(ControlError, match="missing, in order: an onboarded key"):
            gate.enable("ops", True, HOUR, clock)
        gate.record(LiveEvent.SHADOW_SESSION, "ops", "key-a", {"duration_ms": 2 * HOUR}, clock)  # before onboarding: ignored
        gate.record(LiveEvent.ONBOARDED, "ops", "key-a", {"mode": "live"}, clock)
        gate.record(LiveEvent.SHADOW_SESSION, "ops", "key-a", {"duration_ms": 2 * HOUR}, clock)  # before the check: ignored
        assert gate.readiness(HOUR).met == (R.ONBOARDED_KEY,)
        gate.record(LiveEvent.CONNECTIVITY_PASSED, "ops", "key-a", {}, clock)
        gate.record(LiveEvent.CONNECTIVITY_PASSED, "ops", "key-a", {}, clock)  # repeated: counts once
        gate.record(LiveEvent.SHADOW_SESSION, "ops", "key-a", {"duration_ms": HOUR - 1}, clock)  # too short
        gate.record(LiveEvent.SHADOW_SESSION, "ops", "key-b", {"duration_ms": 2 * HOUR}, clock)  # another key
        with pytest.raises(ControlError, match="a shadow session of the configured minimum length"):
            gate.enable("ops", True, HOUR, clock)
        gate.record(LiveEvent.SHADOW_SESSION, "ops", "key-a", {"duration_ms": HOUR}, clock)
        with pytest.raises(ControlError, match="'--confirm' is required"):
            gate.enable("ops", False, HOUR, clock)
        record = gate.enable("alice", True, HOUR, clock)
        assert record.author == "alice" and record.key_fingerprint == "key-a"
        assert gate.readiness(HOUR).ready and gate.readiness(HOUR).as_dict()["missing"] == []
        gate.disable("alice", "end of trial", clock)
        assert gate.readiness(HOUR).missing == (R.OPERATOR_CONFIRMATION,)
        gate.record(LiveEvent.ONBOARDED, "ops", "key-c", {"mode": "live"}, clock)  # a new key starts over
        assert gate.readiness(HOUR).met == (R.ONBOARDED_KEY,)
        gate.record(LiveEvent.DISCONNECTED, "ops", "key-c", {}, clock)
        assert gate.connected() is None and gate.disable("bob", "tidy", clock).key_fingerprint == "none"
        assert [e.event for e in gate.events()][-2:] == [LiveEvent.DISCONNECTED, LiveEvent.DISABLED]


def test_the_log_is_append_only_and_texts_are_checked(tmp_path: Path) -> None:
    with LiveGate(tmp_path / "acts.db") as gate:
        gate.record(LiveEvent.ONBOARDED, "ops", "key-a", {}, Clock())
        with pytest.raises(Exception, match="append-only"):
            gate._conn.execute("DELETE FROM control_live_events")
        with pytest.raises(ControlError, match="'author' must not contain control characters, found U\\+000A at position 3"):
            gate.record(LiveEvent.ONBOARDED, "bad\nname", "key-a", {}, Clock())
        with pytest.raises(ControlError, match="'author' must be 1 to 64 characters"):
            gate.enable("a" * 65, True, 0, Clock())
        with pytest.raises(ControlError, match="'reason' must be 1 to 500 characters"):
            gate.disable("ops", " ", Clock())
        assert [e.author for e in gate.events()] == ["ops"]


def test_nonce_floor_only_rises(tmp_path: Path) -> None:
    with LiveGate(tmp_path / "acts.db") as gate:
        assert gate.nonce_floor("key-a") == 0
        gate.save_nonce("key-a", 50)
        gate.save_nonce("key-a", 40)
        assert gate.nonce_floor("key-a") == 50
