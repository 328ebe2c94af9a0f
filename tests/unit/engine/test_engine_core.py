"""Tests for backend.engine.core: fills, marks, drawdown halt/resume, guard evaluation and the decision record.

Every engine here runs the real compiled pipeline from conf/ (via ``stubs.small_spec``) over a
small hand-built MarketMatrix: four symbols, a few five-minute bars, chosen prices and chosen
model outputs. Signals per bar are written as letters: ``E`` meets the entry guard of
flat_holding_v1 under the aggressive profile, ``X`` meets its exit guard, ``.`` meets neither.
"""

from __future__ import annotations

import functools
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import stubs

from backend.audit.decisions import decision_log_sha256
from backend.clock import SimulatedClock
from backend.config.canonical import canonical_json
from backend.config.schema import RunSpec, StrategySpec
from backend.engine.core import Engine, Stamp
from backend.engine.economics import EdgeBasis
from backend.runs.runner import round_trip_cost
from backend.engine.events import MarketMatrix
from backend.engine.pipeline import compile_pipeline, guard_names
from backend.strategy.graph import CompiledGraph, compile_graph

D = Decimal
T0 = 1_704_067_200_000
STEP = 300_000
SYMBOLS = ("BTC", "DOGE", "ETH", "SOL")  # spec.symbols: sorted
CLUSTER = {"BTC": "store_of_value", "DOGE": "meme", "ETH": "l1_major", "SOL": "l1_major"}
# E clears entry; X clears exit; N is a neutral p_up with a predicted loss that pays for an early exit (ADR-028).
SIGNAL = {"E": (0.6, 0.03), "X": (0.3, -0.03), "N": (0.5, -0.03), ".": (0.5, 0.0)}
FEE = D("0.004")  # conf/execution/simulated_kraken.yaml: 40 bps taker
SLIP = 0.0005  # 5 bps
CASH = 100_000.0
SIZING = {"rule": "fraction_of_pv", "parameter": "position_size_pct"}
GATE_ORDER = ["kill_switch", "profile_valid", "drawdown", "capital", "concurrency", "total_exposure", "cluster_exposure", "minimums"]


@functools.lru_cache(maxsize=None)
def _spec(*overrides: str) -> RunSpec:
    return stubs.small_spec("strategy=flat_holding_v1", *overrides)


def _edge(spec: RunSpec) -> EdgeBasis:
    return EdgeBasis(spec.training.label.horizon_bars * spec.data.bar_ms, round_trip_cost(spec))


def _engine(spec: RunSpec, graph: CompiledGraph | None = None, ordermin: dict[str, float] | None = None, model: str = "m1") -> Engine:
    pipeline = compile_pipeline(spec)
    assert spec.symbols == SYMBOLS and {s: spec.universe.clusters[s] for s in SYMBOLS} == CLUSTER
    real_ordermin = {a.symbol: a.ordermin for a in spec.universe.assets}
    return Engine(
        spec.symbols,
        spec.universe.clusters,
        {**real_ordermin, **(ordermin or {})},
        graph or pipeline.graph,
        spec.risk,
        spec.execution,
        Stamp(pipeline.spec_hash, pipeline.profile_version, model),
        SimulatedClock(T0),
        _edge(spec),
    )


def _matrix(
    n: int,
    signals: dict[str, str] | None = None,
    close: dict[str, list[float]] | None = None,
    open_: dict[str, list[float]] | None = None,
    gaps: tuple[tuple[int, str], ...] = (),
    feat: dict[str, dict[str, list[float]]] | None = None,
) -> MarketMatrix:
    """``n`` bars; prices default to 100 (open = close), signals to neutral; ``gaps`` are (bar, symbol) without a bar."""
    shape = (n, len(SYMBOLS))
    closes = np.full(shape, 100.0)
    opens = np.full(shape, 100.0)
    p_up = np.full(shape, 0.5)
    er = np.zeros(shape)
    for j, s in enumerate(SYMBOLS):
        if close and s in close:
            closes[:, j] = close[s]
            opens[:, j] = close[s]
        if open_ and s in open_:
            opens[:, j] = open_[s]
        for t, letter in enumerate((signals or {}).get(s, "")):
            p_up[t, j], er[t, j] = SIGNAL[letter]
    has_bar = np.ones(shape, dtype=bool)
    for t, s in gaps:
        j = SYMBOLS.index(s)
        has_bar[t, j] = False
        opens[t, j] = closes[t, j] = p_up[t, j] = er[t, j] = np.nan
    features = {name: np.array([per_symbol[s] for s in SYMBOLS], dtype=float).T for name, per_symbol in (feat or {}).items()}
    return MarketMatrix(
        T0 + STEP * np.arange(n, dtype=np.int64), SYMBOLS, opens, closes, has_bar, {"p_up": p_up, "expected_return": er}, features
    )


def _run(engine: Engine, matrix: MarketMatrix) -> list[float]:
    return [engine.on_batch(batch) for batch in matrix.batches()]


def _rows(engine: Engine, **match: Any) -> list[dict[str, Any]]:
    """Decision rows matching ``match``; hold rows only when asked for (``action="hold"``)."""
    rows = engine.log.frame().to_dicts()
    if "action" not in match:
        rows = [r for r in rows if r["action"] != "hold"]
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def _gates(row: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(row["gates"])


def _buy_price(open_price: float) -> Decimal:
    return D(repr(open_price * (1 + SLIP))).quantize(D("0.00000001"))


# ------------------------------------------------------------------ entry, fill, exit
def test_entry_is_decided_on_the_signal_bar_and_fills_at_the_next_bar_open() -> None:
    engine = _engine(_spec())
    matrix = _matrix(3, {"ETH": "E.."}, close={"ETH": [100.0, 104.0, 104.0]}, open_={"ETH": [100.0, 101.0, 104.0]})
    batches = list(matrix.batches())

    equity0 = engine.on_batch(batches[0])
    (entry,) = engine.log.frame().to_dicts()
    assert (entry["symbol"], entry["action"], entry["state_from"], entry["state_to"]) == ("ETH", "enter", "FLAT", "HOLDING")
    assert (entry["admitted"], entry["gate_reason"], entry["reason"]) == (True, "PASSED", "ENTRY_PREDICTED_EDGE")
    assert entry["qty"] == 120.0  # 12 % of 100,000 at 100
    assert entry["ref_price"] == 100.0 and entry["equity"] == equity0 == CASH
    assert engine.portfolio.ledger == [] and engine.portfolio.cash == D(CASH)
    assert [o.order_id for o in engine.broker.pending] == [entry["order_id"]]
    assert engine.state.orders == 1
    assert engine.graph.states[engine.state.state[SYMBOLS.index("ETH")]] == "HOLDING"

    equity1 = engine.on_batch(batches[1])
    (fill,) = engine.portfolio.ledger
    assert (fill.order_id, fill.ts_ms, fill.side, fill.qty) == (entry["order_id"], T0 + STEP, "buy", D(120))
    assert fill.price == _buy_price(101.0) == D("101.0505")
    assert fill.fee == (fill.notional * FEE).quantize(D("0.00000001"))
    assert engine.state.fills == [fill]
    assert engine.broker.pending == []
    assert equity1 == pytest.approx(float(D(CASH) - fill.notional - fill.fee) + 120 * 104.0)
    assert len(_rows(engine)) == 1  # holding with a neutral signal: no transition, no decision
    (hold,) = _rows(engine, action="hold")  # but the new hold reason is logged once, on the first bar held
    assert (hold["ts"], hold["symbol"], hold["reason"], hold["state_to"]) == (T0 + STEP, "ETH", "HOLD_EDGE_PERSISTS", "HOLDING")
    assert (hold["campaign_id"], hold["order_id"], hold["qty"], hold["gate_reason"]) == (entry["campaign_id"], None, 0.0, "NO_ORDER")


def test_exit_is_decided_when_the_exit_guard_holds_and_sells_the_whole_position() -> None:
    engine = _engine(_spec())
    matrix = _matrix(4, {"ETH": "E.X."}, close={"ETH": [100.0, 100.0, 110.0, 110.0]}, open_={"ETH": [100.0, 100.0, 110.0, 120.0]})
    _run(engine, matrix)
    entry, exit_ = _rows(engine)
    assert (exit_["ts"], exit_["action"], exit_["state_from"], exit_["state_to"]) == (T0 + 2 * STEP, "exit", "HOLDING", "FLAT")
    assert (exit_["reason"], exit_["admitted"], exit_["gate_reason"]) == ("EXIT_EDGE_TURNED", True, "PASSED_REDUCES_RISK")
    assert exit_["qty"] == 120.0 and exit_["order_id"] not in (None, entry["order_id"])
    buy, sell = engine.portfolio.ledger
    assert (sell.order_id, sell.ts_ms, sell.side, sell.qty) == (exit_["order_id"], T0 + 3 * STEP, "sell", D(120))
    assert sell.price == D("119.94")  # next bar open 120 less 5 bps
    assert engine.portfolio.qty[SYMBOLS.index("ETH")] == 0
    assert engine.portfolio.realized_pnl == sell.notional - sell.fee - buy.notional - buy.fee
    assert engine.portfolio.reconciles()


def test_equity_is_cash_plus_positions_marked_at_this_batch_closes() -> None:
    engine = _engine(_spec())
    equity = _run(engine, _matrix(3, {"SOL": "E.."}, close={"SOL": [100.0, 90.0, 125.0]}, open_={"SOL": [100.0, 100.0, 90.0]}))
    (fill,) = engine.portfolio.ledger
    cash = float(D(CASH) - fill.notional - fill.fee)
    assert equity == [CASH, pytest.approx(cash + 120 * 90.0), pytest.approx(cash + 120 * 125.0)]
    assert engine.state.marks.tolist() == [100.0, 100.0, 100.0, 125.0]
    assert engine.state.peak_equity == pytest.approx(cash + 120 * 125.0)


def test_symbols_without_a_bar_are_not_evaluated_and_keep_their_last_mark() -> None:
    engine = _engine(_spec())
    matrix = _matrix(
        3, {"SOL": "EEE", "DOGE": "EEE"}, close={"SOL": [100.0, 200.0, 50.0], "DOGE": [80.0, 80.0, 80.0]},
        gaps=((0, "SOL"), (1, "DOGE"), (2, "DOGE")),
    )
    batches = list(matrix.batches())
    engine.on_batch(batches[0])
    assert [r["symbol"] for r in _rows(engine)] == ["DOGE"]
    assert engine.state.marks[SYMBOLS.index("SOL")] == 0.0  # never seen
    engine.on_batch(batches[1])
    assert [(r["ts"], r["symbol"]) for r in _rows(engine)] == [(T0, "DOGE"), (T0 + STEP, "SOL")]
    assert [o.symbol for o in engine.broker.pending] == ["DOGE", "SOL"]  # DOGE's order waits for DOGE's next bar
    engine.on_batch(batches[2])
    assert [(f.symbol, f.ts_ms) for f in engine.portfolio.ledger] == [("SOL", T0 + 2 * STEP)]
    assert [o.symbol for o in engine.broker.pending] == ["DOGE"]
    assert engine.state.marks[SYMBOLS.index("DOGE")] == 80.0  # the last close, not the gap's NaN
    assert len(_rows(engine)) == 2  # no DOGE decision while it has no bar; held SOL on an entry signal stays put


def test_one_transition_per_symbol_per_event_in_priority_order() -> None:
    spec = _spec()
    strategy = StrategySpec.model_validate(
        {
            "name": "eager",
            "initial_state": "FLAT",
            "states": [{"name": "FLAT", "hold_reason": "HOLD_FLAT_NO_EDGE"}, {"name": "HOLDING", "hold_reason": "HOLD_EDGE_PERSISTS"}],
            "transitions": [
                # From FLAT both hold on an E bar; priority 0 wins. From HOLDING the exit holds on any bar (N: its predicted loss pays the early exit).
                {"name": "watch", "source": "FLAT", "target": "FLAT", "guard": "pred.p_up >= profile.exit_max_p_up",
                 "action": "none", "reason": "HOLD_FLAT_NO_EDGE", "priority": 5},
                {"name": "enter", "source": "FLAT", "target": "HOLDING", "guard": "pred.p_up >= profile.entry_min_p_up",
                 "action": "enter", "sizing": SIZING, "reason": "ENTRY_PREDICTED_EDGE", "priority": 0},
                {"name": "flip", "source": "HOLDING", "target": "FLAT", "guard": "pred.p_up >= profile.exit_max_p_up",
                 "action": "exit", "reason": "EXIT_EDGE_TURNED", "priority": 0},
            ],
        }
    )
    graph = compile_graph(strategy, guard_names(spec))
    engine = _engine(spec, graph)
    _run(engine, _matrix(2, {"ETH": "EN"}))
    rows = _rows(engine, symbol="ETH")
    # Bar 0: FLAT -> HOLDING only (not back to FLAT, not "watch"). Bar 1: HOLDING -> FLAT.
    assert [(r["ts"], r["transition"]) for r in rows] == [(T0, "enter"), (T0 + STEP, "flip")]
    # The neutral symbols match only "watch" (p_up 0.5 >= 0.42): one none-decision each per bar.
    assert [r["transition"] for r in _rows(engine, symbol="BTC")] == ["watch", "watch"]


def _graph(spec: RunSpec, entry_guard: str) -> CompiledGraph:
    strategy = spec.strategy.model_dump()
    strategy["transitions"][0]["guard"] = entry_guard
    return compile_graph(StrategySpec.model_validate(strategy), guard_names(spec))


def test_features_populate_the_guard_env_per_symbol() -> None:
    spec = _spec()
    engine = _engine(spec, _graph(spec, "pred.p_up >= profile.entry_min_p_up and feat.ret_12 >= profile.entry_min_expected_return"))
    ret_12 = {"BTC": [0.01], "DOGE": [-0.01], "ETH": [0.001], "SOL": [float("nan")]}  # NaN compares as False
    _run(engine, _matrix(1, {s: "E" for s in SYMBOLS}, feat={"ret_12": ret_12, "rsi_14": {s: [50.0] for s in SYMBOLS}}))
    rows = _rows(engine)
    assert [r["symbol"] for r in rows] == ["BTC", "ETH"]
    assert [json.loads(r["inputs"])["feat.ret_12"] for r in rows] == [0.01, 0.001]
    assert "feat.rsi_14" not in json.loads(rows[0]["inputs"])  # only the names the guard reads are recorded


# ------------------------------------------------------------------ the decision record
def test_decisions_carry_model_outputs_guard_inputs_profile_and_stamps() -> None:
    spec = _spec()
    pipeline = compile_pipeline(spec)
    engine = _engine(spec, model="bundle-7")
    matrix = _matrix(1, {"ETH": "E"})
    matrix.pred["p_up"][0, SYMBOLS.index("ETH")] = 0.6125
    matrix.pred["expected_return"][0, SYMBOLS.index("ETH")] = 0.0075
    _run(engine, matrix)
    (row,) = _rows(engine)
    assert (row["p_up"], row["expected_return"]) == (0.6125, 0.0075)
    assert json.loads(row["inputs"]) == {
        "pred.expected_return": 0.0075,
        "pred.p_up": 0.6125,
        "profile.entry_min_expected_return": 0.001,
        "profile.entry_min_p_up": 0.52,
    }
    assert row["profile_version"] == pipeline.profile_version and row["profile_version"].startswith("aggressive@")
    assert json.loads(row["profile_params"]) == spec.risk.parameters()
    assert row["profile_params"] == canonical_json(spec.risk.parameters())
    assert row["spec_hash"] == pipeline.spec_hash
    assert row["model_version"] == "bundle-7"
    assert [g["gate"] for g in _gates(row)] == GATE_ORDER
    assert all(g["passed"] and g["reason"] == "PASSED" for g in _gates(row))


def test_same_inputs_give_identical_decision_logs_ids_and_hash() -> None:
    matrix = _matrix(5, {"BTC": "E..X.", "ETH": ".E.X.", "SOL": "EX.E."}, close={"BTC": [100, 101, 99, 103, 104]})
    first, second = _engine(_spec()), _engine(_spec())
    assert _run(first, matrix) == _run(second, matrix)
    one, two = first.log.frame(), second.log.frame()
    assert one.equals(two)
    assert decision_log_sha256(one) == decision_log_sha256(two)
    ids = [i for i in one["order_id"].to_list() if i is not None]
    assert len(ids) == len(set(ids)) == 7  # BTC 2, ETH 2, SOL 3
    assert [f.order_id for f in first.portfolio.ledger] == [f.order_id for f in second.portfolio.ledger]


def test_order_ids_depend_on_the_spec_hash() -> None:
    matrix = _matrix(1, {"ETH": "E"})
    base, other = _engine(_spec()), _engine(_spec("risk.position_size_pct=0.1"))
    _run(base, matrix)
    _run(other, matrix)
    assert _rows(base)[0]["order_id"] != _rows(other)[0]["order_id"]
    assert decision_log_sha256(base.log.frame()) != decision_log_sha256(other.log.frame())


def test_engine_refuses_a_batch_older_than_its_clock_and_changes_nothing() -> None:
    engine = _engine(_spec())
    batches = list(_matrix(2, {"ETH": "EE"}).batches())
    engine.on_batch(batches[1])
    assert engine.clock.now_ms() == T0 + STEP
    with pytest.raises(ValueError, match="cannot go back"):
        engine.on_batch(batches[0])
    assert len(engine.log) == 1 and engine.clock.now_ms() == T0 + STEP


# ------------------------------------------------------------------ gates through the engine
def test_a_denied_intent_changes_nothing_but_is_logged_with_the_gate_reason() -> None:
    engine = _engine(_spec("risk.kill_switch=true"))
    _run(engine, _matrix(2, {"ETH": "EE"}))
    rows = _rows(engine)
    assert [r["ts"] for r in rows] == [T0, T0 + STEP]  # still flat, so evaluated (and denied) again
    for row in rows:
        assert (row["admitted"], row["gate_reason"], row["state_from"], row["state_to"]) == (False, "KILL_SWITCH_ACTIVE", "FLAT", "FLAT")
        assert row["order_id"] is None and row["qty"] == 120.0
        assert _gates(row) == [{"gate": "kill_switch", "passed": False, "reason": "KILL_SWITCH_ACTIVE", "value": 1.0, "bound": 0.0}]
    assert engine.broker.pending == [] and engine.portfolio.ledger == []
    assert engine.portfolio.cash == D(CASH) and engine.state.orders == 0
    assert (engine.state.state == engine.graph.initial).all()


GATE_CASES = [
    # overrides, signals on bar 0, ordermin changes, expected gate_reason per symbol (in symbol order)
    pytest.param(("risk.position_size_pct=0.6", "risk.max_cluster_exposure.value=1.0"), {"BTC": "E", "DOGE": "E"}, {},
                 {"BTC": "PASSED", "DOGE": "INSUFFICIENT_CASH"}, id="cash-available-counts-pending-buys"),
    pytest.param(("risk.max_concurrent_positions=1",), {"BTC": "E", "ETH": "E"}, {},
                 {"BTC": "PASSED", "ETH": "MAX_CONCURRENT_POSITIONS"}, id="concurrency-counts-open-orders"),
    pytest.param(("risk.max_total_exposure.mode=absolute", "risk.max_total_exposure.value=20000"), {"BTC": "E", "DOGE": "E"}, {},
                 {"BTC": "PASSED", "DOGE": "MAX_TOTAL_EXPOSURE"}, id="total-absolute-counts-open-orders"),
    pytest.param(("risk.max_total_exposure.value=0.2",), {"BTC": "E", "DOGE": "E"}, {},
                 {"BTC": "PASSED", "DOGE": "MAX_TOTAL_EXPOSURE"}, id="total-pct-counts-open-orders"),
    pytest.param(("risk.max_cluster_exposure.mode=absolute", "risk.max_cluster_exposure.value=20000"),
                 {"BTC": "E", "ETH": "E", "SOL": "E"}, {},
                 {"BTC": "PASSED", "ETH": "PASSED", "SOL": "MAX_CLUSTER_EXPOSURE"}, id="cluster-absolute"),
    pytest.param(("risk.max_cluster_exposure.value=0.2",), {"BTC": "E", "ETH": "E", "SOL": "E"}, {},
                 {"BTC": "PASSED", "ETH": "PASSED", "SOL": "MAX_CLUSTER_EXPOSURE"}, id="cluster-pct"),
    pytest.param((), {"BTC": "E", "ETH": "E"}, {"ETH": 1e6},
                 {"BTC": "PASSED", "ETH": "BELOW_EXCHANGE_MINIMUM"}, id="ordermin"),
    pytest.param(("execution.min_order_usd=20000",), {"BTC": "E"}, {},
                 {"BTC": "BELOW_EXCHANGE_MINIMUM"}, id="min-order-usd"),
]


@pytest.mark.parametrize(("overrides", "signals", "ordermin", "expected"), GATE_CASES)
def test_each_gate_denies_through_the_engine(
    overrides: tuple[str, ...], signals: dict[str, str], ordermin: dict[str, float], expected: dict[str, str]
) -> None:
    engine = _engine(_spec(*overrides), ordermin=ordermin)
    _run(engine, _matrix(1, signals))
    rows = _rows(engine)
    assert {r["symbol"]: r["gate_reason"] for r in rows} == expected
    admitted = [s for s, reason in expected.items() if reason == "PASSED"]
    assert [o.symbol for o in engine.broker.pending] == admitted
    for row in rows:
        assert row["admitted"] is (row["gate_reason"] == "PASSED")
        assert row["state_to"] == ("HOLDING" if row["admitted"] else "FLAT")


def test_capital_gate_sees_cash_less_pending_buys_with_fees() -> None:
    engine = _engine(_spec("risk.position_size_pct=0.6", "risk.max_cluster_exposure.value=1.0"))
    _run(engine, _matrix(1, {"BTC": "E", "DOGE": "E"}))
    first, second = _rows(engine)
    capital = _gates(second)[GATE_ORDER.index("capital")]
    pending = first["qty"] * 100.0
    assert capital["bound"] == pytest.approx(CASH - pending * 1.004)
    assert capital["value"] == pytest.approx(second["qty"] * 100.0 * 1.004)


@pytest.mark.parametrize(("eth_close", "admitted"), [(100.0, True), (150.0, False)])
def test_total_exposure_counts_held_positions_at_current_marks(eth_close: float, admitted: bool) -> None:
    engine = _engine(_spec("risk.max_total_exposure.mode=absolute", "risk.max_total_exposure.value=25000"))
    matrix = _matrix(3, {"ETH": "E..", "BTC": "..E"}, close={"ETH": [100.0, 100.0, eth_close]})
    _run(engine, matrix)
    (btc,) = _rows(engine, symbol="BTC")
    total = _gates(btc)[GATE_ORDER.index("total_exposure")]
    assert btc["admitted"] is admitted
    assert total["value"] == pytest.approx(120 * eth_close + btc["qty"] * 100.0)
    assert total["bound"] == 25_000.0


def test_drawdown_beyond_the_limit_halts_new_risk_and_recovery_resumes_it() -> None:
    spec = _spec("risk.position_size_pct=0.5", "risk.max_drawdown_pct=0.2", "risk.drawdown_resume_pct=0.1")
    engine = _engine(spec)
    matrix = _matrix(5, {"BTC": "E....", "DOGE": "..EEE"}, close={"BTC": [100.0, 100.0, 50.0, 70.0, 95.0]})
    halted = []
    for batch in matrix.batches():
        engine.on_batch(batch)
        halted.append(engine.state.drawdown_halted)
    # Bar 2: -25 % halts. Bar 3: -15 % is above the 10 % resume level, still halted. Bar 4: -2.7 % resumes.
    assert halted == [False, False, True, True, False]
    doge = _rows(engine, symbol="DOGE")
    assert [(r["admitted"], r["gate_reason"]) for r in doge] == [(False, "DRAWDOWN_LIMIT"), (False, "DRAWDOWN_LIMIT"), (True, "PASSED")]
    drawdown = _gates(doge[0])[GATE_ORDER.index("drawdown")]
    # While halted, the bound shown is the resume level the drawdown must come back within.
    assert drawdown["bound"] == 0.1 and drawdown["value"] == pytest.approx(1 - doge[0]["equity"] / CASH)
    assert drawdown["value"] > 0.2
    assert engine.state.peak_equity == CASH


def test_exits_pass_while_drawdown_halts_new_risk() -> None:
    spec = _spec("risk.position_size_pct=0.5", "risk.max_drawdown_pct=0.2", "risk.drawdown_resume_pct=0.1")
    engine = _engine(spec)
    _run(engine, _matrix(4, {"BTC": "E..X"}, close={"BTC": [100.0, 100.0, 50.0, 50.0]}))
    assert engine.state.drawdown_halted
    (exit_,) = _rows(engine, action="exit")
    assert (exit_["admitted"], exit_["state_to"]) == (True, "FLAT")
    assert _gates(exit_)[GATE_ORDER.index("drawdown")]["reason"] == "PASSED_REDUCES_RISK"
    assert [o.side for o in engine.broker.pending] == ["sell"]


# ------------------------------------------------------------------ position and portfolio names
def _state_graph(spec: RunSpec) -> CompiledGraph:
    strategy = StrategySpec.model_validate(
        {
            "name": "stateful",
            "initial_state": "FLAT",
            "states": [{"name": "FLAT", "hold_reason": "HOLD_FLAT_NO_EDGE"}, {"name": "HOLDING", "hold_reason": "HOLD_EDGE_PERSISTS"}],
            "transitions": [
                {"name": "enter", "source": "FLAT", "target": "HOLDING",
                 "guard": "pred.p_up >= profile.entry_min_p_up and not portfolio.drawdown > profile.max_drawdown_pct",
                 "action": "enter", "sizing": SIZING, "reason": "ENTRY_PREDICTED_EDGE", "priority": 0},
                {"name": "cut", "source": "HOLDING", "target": "FLAT",
                 "guard": "pos.unrealized_return <= profile.exit_max_expected_return and pred.p_up >= profile.exit_max_p_up",
                 "action": "exit", "reason": "EXIT_EDGE_TURNED", "priority": 0},
                {"name": "watch", "source": "HOLDING", "target": "HOLDING",
                 "guard": "portfolio.drawdown < profile.max_drawdown_pct and pos.exposure_pct <= portfolio.exposure_pct"
                          " and portfolio.open_positions >= profile.position_size_pct",
                 "action": "none", "reason": "HOLD_EDGE_PERSISTS", "priority": 1},
            ],
        }
    )
    return compile_graph(strategy, guard_names(spec))


def test_position_and_portfolio_names_populate_the_guard_env() -> None:
    spec = _spec()
    engine = _engine(spec, _state_graph(spec))
    assert engine.uses_position and engine.uses_portfolio
    matrix = _matrix(3, {"ETH": "E.N"}, close={"ETH": [100.0, 101.0, 95.0]}, open_={"ETH": [100.0, 100.0, 101.0]})
    equity = _run(engine, matrix)
    enter, watch, cut = _rows(engine)
    (buy,) = engine.portfolio.ledger
    entry_price = float((buy.notional + buy.fee) / buy.qty)  # 100.05 x 1.004: the average entry includes the fee

    assert json.loads(enter["inputs"])["portfolio.drawdown"] == 0.0
    assert enter["admitted"] and enter["order_id"] is not None

    inputs = json.loads(watch["inputs"])
    exposure = 120 * 101.0 / equity[1]
    assert inputs["pos.exposure_pct"] == pytest.approx(exposure)
    assert inputs["portfolio.exposure_pct"] == pytest.approx(exposure)
    assert inputs["portfolio.open_positions"] == 1.0
    assert inputs["portfolio.drawdown"] == pytest.approx(1 - equity[1] / max(CASH, equity[1]))
    assert inputs["profile.max_drawdown_pct"] == 0.35

    assert json.loads(cut["inputs"])["pos.unrealized_return"] == pytest.approx(95.0 / entry_price - 1)
    assert (cut["action"], cut["admitted"], cut["state_to"]) == ("exit", True, "FLAT")


def test_a_guard_on_a_missing_position_value_never_fires_for_a_flat_symbol() -> None:
    spec = _spec()
    strategy = StrategySpec.model_validate(
        {
            "name": "loss_guard",
            "initial_state": "FLAT",
            "states": [{"name": "FLAT", "hold_reason": "HOLD_FLAT_NO_EDGE"}, {"name": "HOLDING", "hold_reason": "HOLD_EDGE_PERSISTS"}],
            "transitions": [
                {"name": "enter", "source": "FLAT", "target": "HOLDING",
                 "guard": "not pos.unrealized_return < profile.exit_max_expected_return",
                 "action": "enter", "sizing": SIZING, "reason": "ENTRY_PREDICTED_EDGE", "priority": 0},
                {"name": "cut", "source": "HOLDING", "target": "FLAT",
                 "guard": "pos.unrealized_return <= profile.exit_max_expected_return and pred.p_up >= profile.exit_max_p_up",
                 "action": "exit", "reason": "EXIT_EDGE_TURNED", "priority": 0},
            ],
        }
    )  # fmt: skip
    engine = _engine(spec, compile_graph(strategy, guard_names(spec)))
    _run(engine, _matrix(2, {"ETH": "EE"}, close={"ETH": [100.0, 101.0]}, open_={"ETH": [100.0, 100.0]}))
    # Flat: no entry price, pos.unrealized_return is NaN, so even a negated comparison does not pass.
    assert _rows(engine) == [] and engine.state.orders == 0


def test_a_none_action_records_no_order_and_keeps_the_state() -> None:
    spec = _spec()
    engine = _engine(spec, _state_graph(spec))
    _run(engine, _matrix(2, {"ETH": "E."}, close={"ETH": [100.0, 101.0]}, open_={"ETH": [100.0, 100.0]}))
    (watch,) = _rows(engine, transition="watch")
    assert (watch["action"], watch["admitted"], watch["gate_reason"], watch["gates"]) == ("none", True, "NO_ORDER", "[]")
    assert (watch["order_id"], watch["qty"], watch["state_from"], watch["state_to"]) == (None, 0.0, "HOLDING", "HOLDING")
    assert engine.state.orders == 1 and engine.broker.pending == []


def test_the_default_graph_reads_no_position_or_portfolio_names() -> None:
    engine = _engine(_spec())
    assert not engine.uses_position and not engine.uses_portfolio
