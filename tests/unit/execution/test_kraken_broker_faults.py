"""The Kraken broker under transient faults on the kill switch and the start reconcile (real emulator)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backend.sandbox.faults import FaultSpec, PrivateFault
from execution.brokers.simulated import MarketOrder
from scripts.drills import broker_faults, kills


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return kills.drill_bars(60, 11).filter(pl.col("symbol") == "BTC")


@pytest.fixture(scope="module")
def markets(bars: pl.DataFrame) -> tuple[Any, Any]:
    return broker_faults.load_markets(bars)


def _spec(endpoint: str, calls: tuple[int, ...], **kind: Any) -> FaultSpec:
    return FaultSpec(timeout_seconds=0.4, private_faults=(PrivateFault(endpoint=endpoint, calls=calls, **kind),))


@pytest.mark.parametrize("kind", [{"error": "EAPI:Rate limit exceeded"}, {"status": 502}, {"error": "EAPI:Invalid nonce"}])
def test_the_kill_switch_retries_cancel_all_after_a_transient_fault(kind: dict[str, Any], bars: pl.DataFrame,
                                                                    markets: tuple[Any, Any], tmp_path: Path) -> None:  # fmt: skip
    case = broker_faults.broker_case("CancelAll (kill switch)", "CancelAll", "kill", "transient",
                                     _spec("CancelAll", (1,), **kind), bars, markets, tmp_path)  # fmt: skip

    assert case.handled, case.detail
    assert "Kraken order canceled, journal CANCELLED" == case.detail


def test_the_kill_switch_cancels_order_by_order_when_cancel_all_retries_are_spent(bars: pl.DataFrame,
                                                                                   markets: tuple[Any, Any], tmp_path: Path) -> None:  # fmt: skip
    desk = broker_faults.Desk(bars, _spec("CancelAll", (1, 2, 3, 4), status=502), markets, tmp_path)
    try:
        ok, *_ = broker_faults._kill(desk, False)
        kinds = [(e["kind"], e["error_class"], e["detail"].get("attempt")) for e in desk.broker.events()]
    finally:
        desk.stop()

    assert [k for k in kinds if k[0] in ("CANCEL_ALL_FAILED", "CANCEL_ALL_GAVE_UP")] == [
        ("CANCEL_ALL_FAILED", "unavailable", 1), ("CANCEL_ALL_FAILED", "unavailable", 2),
        ("CANCEL_ALL_FAILED", "unavailable", 3), ("CANCEL_ALL_FAILED", "unavailable", 4),
        ("CANCEL_ALL_GAVE_UP", "unavailable", None),
    ]  # fmt: skip
    assert ok  # the resting order was cancelled by CancelOrder, the journal says CANCELLED


def test_the_kill_switch_journals_a_loud_failure_when_no_cancel_goes_through(bars: pl.DataFrame,
                                                                              markets: tuple[Any, Any], tmp_path: Path) -> None:  # fmt: skip
    spec = FaultSpec(private_faults=(PrivateFault(endpoint="CancelAll", calls=(1, 2, 3, 4), status=502),
                                     PrivateFault(endpoint="CancelOrder", calls=(1, 2, 3, 4), error="EGeneral:Invalid arguments")))  # fmt: skip
    desk = broker_faults.Desk(bars, spec, markets, tmp_path)
    try:
        ok, orders, _, detail = broker_faults._kill(desk, False)
        kinds = [(e["kind"], e["error_class"]) for e in desk.broker.events()]
    finally:
        desk.stop()

    assert not ok and detail == "Kraken order open, journal ACKNOWLEDGED"
    assert kinds[-3:] == [("CANCEL_ORDER_FAILED", "invalid_arguments"), ("CANCEL_ORDER_GAVE_UP", "invalid_arguments"),
                          ("KILL_SWITCH_INCOMPLETE", None)]  # fmt: skip


def test_the_kill_switch_cancels_order_by_order_when_cancel_all_is_refused(bars: pl.DataFrame,
                                                                            markets: tuple[Any, Any], tmp_path: Path) -> None:  # fmt: skip
    case = broker_faults.broker_case("CancelAll (kill switch)", "CancelAll", "kill", "refused",
                                     _spec("CancelAll", (1,), error="EGeneral:Invalid arguments"), bars, markets, tmp_path)  # fmt: skip

    assert case.handled, case.detail


@pytest.mark.parametrize("fault", ["truncated body", "malformed body"])
@pytest.mark.parametrize(("call", "endpoint", "scene"), [
    ("AddOrder (submit)", "AddOrder", "session"), ("OpenOrders (fill read)", "OpenOrders", "session"),
    ("ClosedOrders (fill read)", "ClosedOrders", "session"), ("CancelAll (kill switch)", "CancelAll", "kill"),
    ("OpenOrders (start reconcile)", "OpenOrders", "start"), ("CancelOrder (start reconcile)", "CancelOrder", "start"),
])  # fmt: skip
def test_a_truncated_or_malformed_answer_is_a_malformed_answer_never_success(call: str, endpoint: str, scene: str, fault: str,
                                                                              bars: pl.DataFrame, markets: tuple[Any, Any],
                                                                              tmp_path: Path) -> None:  # fmt: skip
    number = broker_faults.first_request(bars, scene, endpoint, markets, tmp_path / "clean")
    case = broker_faults.broker_case(call, endpoint, scene, fault, broker_faults.body_fault(fault, number), bars, markets,
                                     tmp_path / "faulted")  # fmt: skip

    assert case.handled, case.detail
    assert "malformed_answer" in case.evidence


@pytest.mark.parametrize("endpoint", ["OpenOrders", "CancelOrder"])
def test_the_start_reconcile_retries_a_transient_fault_and_cancels_the_stranger(endpoint: str, bars: pl.DataFrame,
                                                                                markets: tuple[Any, Any], tmp_path: Path) -> None:  # fmt: skip
    case = broker_faults.broker_case(f"{endpoint} (start reconcile)", endpoint, "start", "5xx",
                                     _spec(endpoint, (1,), status=502), bars, markets, tmp_path)  # fmt: skip

    assert case.handled, case.detail
    assert case.evidence == ("unavailable",)


@pytest.mark.parametrize(("endpoint", "kind", "error_class"), [
    ("OpenOrders", {"error": "EGeneral:Invalid arguments"}, "invalid_arguments"),
    ("CancelOrder", {"status": 502}, "unavailable"),
])  # fmt: skip
def test_the_start_reconcile_fails_closed_with_a_journalled_problem(endpoint: str, kind: dict[str, Any], error_class: str,
                                                                    bars: pl.DataFrame, markets: tuple[Any, Any],
                                                                    tmp_path: Path) -> None:  # fmt: skip
    desk = broker_faults.Desk(bars, _spec(endpoint, (1, 2, 3, 4), **kind), markets, tmp_path)
    try:
        stranger = str(uuid.UUID(int=7))
        desk.client.create_order("BTC/USD", "limit", "buy", 0.001, 1000.0, {"clientOrderId": stranger})
        problem = desk.broker.restored_problem()
        failed = [e["error_class"] for e in desk.broker.events() if e["kind"] == "START_RECONCILE_FAILED"]
        state = [o.status for o in desk.orders(stranger)]
    finally:
        desk.stop()

    assert problem is not None and problem.startswith("start reconcile could not") and error_class in problem
    assert failed == [error_class]
    assert state == ["open"]  # nothing was cancelled blind; the runtime refuses to start (PaperRuntimeError)


def test_the_start_reconcile_fails_closed_when_a_failed_cancel_cannot_be_confirmed(bars: pl.DataFrame,
                                                                                    markets: tuple[Any, Any], tmp_path: Path) -> None:  # fmt: skip
    spec = FaultSpec(private_faults=(PrivateFault(endpoint="CancelOrder", calls=(1, 2, 3, 4), status=502),
                                     PrivateFault(endpoint="OpenOrders", calls=(2, 3, 4, 5), status=502)))  # fmt: skip
    desk = broker_faults.Desk(bars, spec, markets, tmp_path)
    try:
        desk.client.create_order("BTC/USD", "limit", "buy", 0.001, 1000.0, {"clientOrderId": str(uuid.UUID(int=7))})
        problem = desk.broker.restored_problem()
    finally:
        desk.stop()

    assert problem is not None and "could not cancel unknown order" in problem


def test_the_kill_switch_leaves_a_filled_order_alone_when_it_cancels_order_by_order(bars: pl.DataFrame,
                                                                                     markets: tuple[Any, Any], tmp_path: Path) -> None:  # fmt: skip
    desk = broker_faults.Desk(bars, _spec("CancelAll", (1, 2, 3, 4), status=502), markets, tmp_path)
    try:
        desk.broker.submit(MarketOrder("filled", "BTC", "buy", Decimal("0.001")))  # a market order fills at once
        cancelled = desk.broker.kill(broker_faults.NOW_MS)
        kinds = [e["kind"] for e in desk.broker.events()]
    finally:
        desk.stop()

    assert cancelled == [] and "CANCEL_ORDER_FAILED" not in kinds and "KILL_SWITCH_INCOMPLETE" not in kinds
