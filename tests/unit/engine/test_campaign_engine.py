"""campaign_v1 through the engine: campaigns, partial exits, re-entry, recovery decisions, hold rows, the resume rule.

Every engine runs the real conf/ composition (``strategy=campaign_v1``, aggressive profile) over a
hand-built matrix. Signals per bar are letters: ``E`` clears entry and re-entry, ``W`` is a weakening
edge (scale-out bar, not the exit bar), ``X`` clears the exit bar, ``.`` is neutral. Recovery
probabilities per bar: ``h`` high (hold), ``r`` middling (reduce), ``x`` low (exit), ``-`` or ``.`` missing.
"""

from __future__ import annotations

import functools
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import stubs

from backend.clock import SimulatedClock
from backend.config.schema import RiskProfileSpec, RunSpec, StrategySpec
from backend.engine.core import HOUR_MS, Engine, Stamp
from backend.engine.economics import EdgeBasis
from backend.runs.runner import round_trip_cost
from backend.engine.events import BarBatch, MarketMatrix
from backend.engine.pipeline import compile_pipeline, guard_names
from backend.errors import StrategyGraphError
from backend.strategy.graph import compile_graph

D = Decimal
T0 = 1_704_067_200_000
STEP = 300_000
SYMBOLS = ("BTC", "DOGE", "ETH", "SOL")
SIGNAL = {"E": (0.6, 0.03), "W": (0.45, -0.03), "X": (0.3, -0.03), "N": (0.5, -0.03), ".": (0.5, 0.0)}
RECOVERY = {"h": 0.8, "r": 0.35, "x": 0.1, "-": np.nan, ".": np.nan}
CASH = 100_000.0


@functools.lru_cache(maxsize=None)
def _spec(*overrides: str) -> RunSpec:
    return stubs.small_spec("strategy=campaign_v1", *overrides)


def _edge(spec: RunSpec) -> EdgeBasis:
    return EdgeBasis(spec.training.label.horizon_bars * spec.data.bar_ms, round_trip_cost(spec))


def _engine(spec: RunSpec, strategy: StrategySpec | None = None) -> Engine:
    pipeline = compile_pipeline(spec)
    graph = pipeline.graph if strategy is None else compile_graph(strategy, guard_names(spec))
    return Engine(
        spec.symbols, spec.universe.clusters, {a.symbol: a.ordermin for a in spec.universe.assets}, graph, spec.risk,
        spec.execution, Stamp(pipeline.spec_hash, pipeline.profile_version, "m1"), SimulatedClock(T0), _edge(spec),
    )  # fmt: skip


def _matrix(
    n: int, signals: dict[str, str] | None = None, close: dict[str, list[float]] | None = None,
    recovery: dict[str, str] | None = None, with_recovery: bool = True,
) -> MarketMatrix:  # fmt: skip
    """``n`` bars at 100 (open = previous close, so fills happen at the last decision price)."""
    shape = (n, len(SYMBOLS))
    closes = np.full(shape, 100.0)
    p_up, er, p_rec = np.full(shape, 0.5), np.zeros(shape), np.full(shape, np.nan)
    for j, s in enumerate(SYMBOLS):
        if close and s in close:
            closes[:, j] = close[s]
        for t, letter in enumerate((signals or {}).get(s, "")):
            p_up[t, j], er[t, j] = SIGNAL[letter]
        for t, letter in enumerate((recovery or {}).get(s, "")):
            p_rec[t, j] = RECOVERY[letter]
    opens = np.vstack([closes[:1], closes[:-1]])
    pred = {"p_up": p_up, "expected_return": er, **({"p_recovery": p_rec} if with_recovery else {})}
    return MarketMatrix(T0 + STEP * np.arange(n, dtype=np.int64), SYMBOLS, opens, closes, np.ones(shape, dtype=bool), pred, {})


def _run(engine: Engine, matrix: MarketMatrix, live: bool = False) -> list[float]:
    out = []
    for batch in matrix.batches():
        if live:  # the live path: no matrix to precompute state-independent guards on
            batch = BarBatch(batch.index, batch.ts_ms, batch.open, batch.close, batch.has_bar, batch.pred, batch.feat)
        out.append(engine.on_batch(batch))
    return out


def _rows(engine: Engine, symbol: str = "ETH", holds: bool = False) -> list[dict[str, Any]]:
    rows = [r for r in engine.log.frame().to_dicts() if r["symbol"] == symbol]
    return rows if holds else [r for r in rows if r["action"] != "hold"]


def _trail(rows: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    return [((r["ts"] - T0) // STEP, r["action"], r["reason"], r["state_to"]) for r in rows]


def _held(engine: Engine, symbol: str = "ETH") -> Decimal:
    return engine.portfolio.qty[SYMBOLS.index(symbol)]


# ------------------------------------------------------------------ a whole campaign
def test_a_campaign_enters_scales_out_reenters_and_exits_under_one_campaign_id() -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(8, {"ETH": "E.W.E.X."}))
    assert _trail(_rows(engine, holds=True)) == [
        (0, "enter", "ENTRY_PREDICTED_EDGE", "HOLDING"),
        (1, "hold", "HOLD_EDGE_PERSISTS", "HOLDING"),
        (2, "scale_out", "SCALE_OUT_EDGE_WEAKENED", "PARTIAL"),
        (3, "hold", "HOLD_PARTIAL_AWAITING_EDGE", "PARTIAL"),
        (4, "reenter", "REENTRY_EDGE_STRENGTHENED", "HOLDING"),
        (5, "hold", "HOLD_EDGE_PERSISTS", "HOLDING"),
        (6, "exit", "EXIT_EDGE_TURNED", "FLAT"),
        (7, "hold", "HOLD_FLAT_NO_EDGE", "FLAT"),
    ]
    rows = _rows(engine, holds=True)
    campaign = rows[0]["campaign_id"]
    assert isinstance(campaign, str) and len(campaign) == 16
    assert [r["campaign_id"] for r in rows] == [campaign] * 7 + [None]
    enter, scale, reenter, exit_ = _rows(engine)
    assert enter["qty"] == 120.0  # 12 % of PV at 100
    assert scale["qty"] == pytest.approx(120 * 0.33) and scale["gate_reason"] == "PASSED_REDUCES_RISK"
    # Re-entry tops the position up to 12 % of PV at this bar's equity (fees made it a little smaller).
    assert reenter["qty"] == pytest.approx(0.12 * reenter["equity"] / 100.0 - (120 - 39.6), abs=1e-6)
    assert reenter["gate_reason"] == "PASSED" and json.loads(reenter["gates"])[4]["value"] == 1.0  # no new position
    assert exit_["qty"] == pytest.approx(float(D(120) - D("39.6") + D(repr(reenter["qty"]))))
    fills = engine.portfolio.ledger
    assert [(f.side, f.campaign_id) for f in fills] == [("buy", campaign), ("sell", campaign), ("buy", campaign), ("sell", campaign)]
    assert _held(engine) == 0 and engine.state.campaign == [None] * 4
    assert engine.portfolio.reconciles()


def test_each_campaign_gets_its_own_deterministic_id() -> None:
    first, second = _engine(_spec()), _engine(_spec())
    matrix = _matrix(6, {"ETH": "E.X.E.", "SOL": "..E..."})
    _run(first, matrix)
    _run(second, matrix)
    eth = [r["campaign_id"] for r in _rows(first) if r["action"] == "enter"]
    sol = [r["campaign_id"] for r in _rows(first, "SOL") if r["action"] == "enter"]
    assert len(set(eth + sol)) == 3
    assert first.log.frame().equals(second.log.frame())


def test_profit_target_realises_part_of_a_winner_whose_edge_is_not_strong() -> None:
    engine = _engine(_spec())
    # Fill at 100 (plus fees, slippage): +8 % needs the close above about 108.5.
    _run(engine, _matrix(4, {"ETH": "E.N."}, close={"ETH": [100.0, 100.0, 110.0, 110.0]}))
    trail = _trail(_rows(engine))
    assert trail == [(0, "enter", "ENTRY_PREDICTED_EDGE", "HOLDING"), (2, "scale_out", "SCALE_OUT_PROFIT_TARGET", "PARTIAL")]
    assert json.loads(_rows(engine)[1]["inputs"])["pos.unrealized_return"] > 0.08


def test_a_profit_target_whose_sale_does_not_pay_its_round_trip_holds_with_the_cost_reason() -> None:
    engine = _engine(_spec())
    # Same winner, but the model expects no move: selling part and buying it back would cost two legs for nothing.
    _run(engine, _matrix(4, {"ETH": "E..."}, close={"ETH": [100.0, 100.0, 110.0, 110.0]}))
    rows = _rows(engine, holds=True)
    assert _trail(rows) == [
        (0, "enter", "ENTRY_PREDICTED_EDGE", "HOLDING"),
        (1, "hold", "HOLD_EDGE_PERSISTS", "HOLDING"),
        (2, "hold", "HOLD_EDGE_BELOW_COST", "HOLDING"),
    ]
    held = rows[2]
    assert held["transition"] == "realise_profit_target" and held["cost_reason"] == "INSIDE_MIN_HOLDING"
    leg = 0.004 + 0.0005  # taker fee and half-spread (no volume recorded: no size term)
    assert held["edge"] == pytest.approx(-(0.0 + 2 * leg)) and held["cost"] == pytest.approx(3 * leg)
    assert held["margin"] == 0.001 and json.loads(held["inputs"])["pos.unrealized_return"] > 0.08
    assert _held(engine) == 120


def test_a_strong_edge_keeps_a_winner_whole() -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(4, {"ETH": "EEEE"}, close={"ETH": [100.0, 100.0, 110.0, 120.0]}))
    assert [r["action"] for r in _rows(engine)] == ["enter"]


def test_reentry_at_or_above_the_target_moves_the_state_without_an_order() -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(5, {"ETH": "E.W.E"}, close={"ETH": [100.0, 100.0, 100.0, 100.0, 250.0]}))
    reenter = _rows(engine)[-1]
    assert (reenter["action"], reenter["state_to"], reenter["gate_reason"], reenter["order_id"]) == ("reenter", "HOLDING", "NO_ORDER", None)
    assert reenter["qty"] == 0.0


# ------------------------------------------------------------------ severe adverse state
SEVERE_CLOSE = {"ETH": [100.0, 100.0, 85.0, 85.0, 85.0, 85.0]}


@pytest.mark.parametrize(
    ("recovery", "decision", "state", "left"),
    [
        ("...x..", ("recovery_exit", "exit", "RECOVERY_EXIT"), "FLAT", D(0)),
        ("...r..", ("recovery_reduce", "scale_out", "RECOVERY_REDUCE"), "RECOVERY_REDUCED", D(120) - D("39.6")),
        ("...h..", ("recovery_hold", "none", "RECOVERY_HOLD"), "RECOVERY_HOLD", D(120)),
    ],
    ids=["exit", "reduce", "hold"],
)
def test_a_severe_loss_opens_a_recovery_assessment_that_the_recovery_probability_decides(
    recovery: str, decision: tuple[str, str, str], state: str, left: Decimal
) -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(6, {"ETH": "E....."}, close=SEVERE_CLOSE, recovery={"ETH": recovery}))
    assess, recovery_row = _rows(engine)[1:3]
    assert (assess["transition"], assess["action"], assess["reason"], assess["state_to"]) == (
        "severe_loss_from_holding", "none", "SEVERE_LOSS_ASSESS_RECOVERY", "SEVERE"
    )
    assert json.loads(assess["inputs"])["pos.unrealized_return"] <= -0.12
    assert (recovery_row["transition"], recovery_row["action"], recovery_row["reason"], recovery_row["state_to"]) == (*decision, state)
    assert json.loads(recovery_row["inputs"])["pred.p_recovery"] == RECOVERY[recovery[3]]
    assert recovery_row["campaign_id"] == assess["campaign_id"] is not None
    assert _held(engine) == left


def test_without_a_recovery_probability_a_severe_loss_is_held_never_sold_on_loss_alone() -> None:
    engine = _engine(_spec())
    falling = {"ETH": [100.0, 100.0, 85.0, 70.0, 50.0, 30.0, 30.0]}
    _run(engine, _matrix(7, {"ETH": "E......"}, close=falling, with_recovery=False))
    assert _trail(_rows(engine, holds=True)) == [
        (0, "enter", "ENTRY_PREDICTED_EDGE", "HOLDING"),
        (1, "hold", "HOLD_EDGE_PERSISTS", "HOLDING"),
        (2, "none", "SEVERE_LOSS_ASSESS_RECOVERY", "SEVERE"),
        (3, "hold", "HOLD_SEVERE_AWAITING_RECOVERY", "SEVERE"),
    ]
    assert _held(engine) == D(120) and engine.broker.pending == []


def test_without_a_recovery_probability_the_prediction_still_leads_the_exit() -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(6, {"ETH": "E....X"}, close=SEVERE_CLOSE, recovery={"ETH": "------"}))
    assert _trail(_rows(engine))[-1] == (5, "exit", "EXIT_EDGE_TURNED", "FLAT")


@pytest.mark.parametrize(
    ("recovery", "expected"),
    [
        ("...h..", [("recovery_hold", "RECOVERY_HOLD"), ("recovered_from_hold", "HOLDING")]),
        ("...r..", [("recovery_reduce", "RECOVERY_REDUCED"), ("recovered_from_reduced", "PARTIAL")]),
        ("......", [("recovered_from_severe", "PARTIAL")]),
    ],
    ids=["held", "reduced", "undecided"],
)
def test_a_healed_loss_leaves_the_recovery_states(recovery: str, expected: list[tuple[str, str]]) -> None:
    engine = _engine(_spec())
    closes = {"ETH": [100.0, 100.0, 85.0, 85.0, 99.0, 99.0]}
    _run(engine, _matrix(6, {"ETH": "E....."}, close=closes, recovery={"ETH": recovery}))
    moves = [(r["transition"], r["state_to"]) for r in _rows(engine)[2:]]
    assert moves == expected
    assert _rows(engine)[-1]["reason"] == "RECOVERY_LOSS_RECOVERED"


@pytest.mark.parametrize(
    ("recovery", "expected"),
    [
        ("...hx.", [("recovery_hold", "RECOVERY_HOLD"), ("recovery_hold_exit", "FLAT")]),
        ("...hr.", [("recovery_hold", "RECOVERY_HOLD"), ("recovery_hold_reduce", "RECOVERY_REDUCED")]),
        ("...rx.", [("recovery_reduce", "RECOVERY_REDUCED"), ("recovery_reduced_exit", "FLAT")]),
    ],
    ids=["hold-then-exit", "hold-then-reduce", "reduce-then-exit"],
)
def test_a_recovery_decision_is_revised_as_the_recovery_probability_falls(recovery: str, expected: list[tuple[str, str]]) -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(6, {"ETH": "E....."}, close=SEVERE_CLOSE, recovery={"ETH": recovery}))
    assert [(r["transition"], r["state_to"]) for r in _rows(engine)[2:]] == expected


@pytest.mark.parametrize("recovery", ["...h..", "...r.."], ids=["held", "reduced"])
def test_the_prediction_can_end_a_campaign_held_through_a_severe_loss(recovery: str) -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(6, {"ETH": "E....X"}, close=SEVERE_CLOSE, recovery={"ETH": recovery}))
    assert _trail(_rows(engine))[-1] == (5, "exit", "EXIT_EDGE_TURNED", "FLAT")
    assert engine.state.campaign[SYMBOLS.index("ETH")] is None


def test_a_partial_position_in_severe_loss_is_assessed_too_and_may_exit_on_the_edge() -> None:
    engine = _engine(_spec())
    closes = {"ETH": [100.0, 100.0, 100.0, 100.0, 80.0, 80.0]}
    _run(engine, _matrix(6, {"ETH": "E.W..X"}, close=closes))
    assert [(r["transition"], r["state_to"]) for r in _rows(engine)] == [
        ("enter_on_edge", "HOLDING"), ("realise_on_weakening_edge", "PARTIAL"),
        ("severe_loss_from_partial", "SEVERE"), ("exit_severe_on_edge_turn", "FLAT"),
    ]  # fmt: skip


def test_a_partial_position_exits_when_the_edge_turns() -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(5, {"ETH": "E.W.X"}))
    assert _trail(_rows(engine))[-1] == (4, "exit", "EXIT_EDGE_TURNED", "FLAT")
    assert engine.broker.pending[-1].qty == D(120) - D("39.6") and engine.broker.pending[-1].side == "sell"


# ------------------------------------------------------------------ gates on the new actions
def test_scale_outs_pass_under_the_kill_switch_while_reentries_are_new_risk_and_denied() -> None:
    spec = _spec()
    engine = _engine(spec)
    batches = list(_matrix(6, {"ETH": "E.W.EE"}).batches())
    for batch in batches[:2]:
        engine.on_batch(batch)
    killed = RiskProfileSpec.model_validate({**spec.risk.model_dump(), "kill_switch": True})
    engine.activate_profile(killed, "aggressive@killed")
    for batch in batches[2:]:
        engine.on_batch(batch)
    enter, scale, reenter, again = _rows(engine)
    assert enter["profile_version"] != scale["profile_version"] == "aggressive@killed"
    assert (scale["admitted"], scale["gate_reason"]) == (True, "PASSED_REDUCES_RISK")
    for row in (reenter, again):
        assert (row["admitted"], row["gate_reason"], row["state_to"], row["order_id"]) == (False, "KILL_SWITCH_ACTIVE", "PARTIAL", None)
        assert row["campaign_id"] == enter["campaign_id"]
    assert _held(engine) == D(120) - D("39.6") and engine.broker.pending == []
    assert engine.state.campaign[SYMBOLS.index("ETH")] == enter["campaign_id"]


def test_a_reentry_does_not_count_as_a_new_position_but_an_entry_elsewhere_does() -> None:
    engine = _engine(_spec("risk.max_concurrent_positions=1"))
    _run(engine, _matrix(5, {"ETH": "E.W.E", "SOL": "....E"}))
    (sol,) = _rows(engine, "SOL")
    reenter = _rows(engine)[-1]
    assert (reenter["action"], reenter["admitted"]) == ("reenter", True)
    assert (sol["admitted"], sol["gate_reason"]) == (False, "MAX_CONCURRENT_POSITIONS")


def test_a_denied_entry_opens_no_campaign() -> None:
    engine = _engine(_spec("risk.kill_switch=true"))
    _run(engine, _matrix(2, {"ETH": "E."}))
    (row,) = _rows(engine)
    assert (row["admitted"], row["campaign_id"]) == (False, None)
    assert engine.state.campaign == [None] * 4


def test_an_entry_too_small_to_trade_is_refused_at_the_minimums() -> None:
    engine = _engine(_spec("risk.position_size_pct=0.00000000000001"))
    _run(engine, _matrix(1, {"ETH": "E"}))
    (row,) = _rows(engine)
    assert (row["qty"], row["admitted"], row["gate_reason"]) == (0.0, False, "BELOW_EXCHANGE_MINIMUM")


def test_the_profile_minimum_order_applies_when_above_the_exchanges() -> None:
    engine = _engine(_spec("risk.min_order_usd=20000"))
    _run(engine, _matrix(1, {"ETH": "E"}))
    (row,) = _rows(engine)
    assert row["gate_reason"] == "BELOW_EXCHANGE_MINIMUM"
    assert json.loads(row["gates"])[-1]["bound"] == 200.0  # 20,000 USD at 100


def test_an_invalid_profile_denies_entries() -> None:
    engine = _engine(_spec())
    engine.set_profile_valid(False)
    _run(engine, _matrix(1, {"ETH": "E"}))
    assert _rows(engine)[0]["gate_reason"] == "PROFILE_INVALID"


# ------------------------------------------------------------------ profile activation
def test_an_activated_profile_applies_from_the_next_event_with_its_version() -> None:
    spec = _spec()
    engine = _engine(spec)
    batches = list(_matrix(3, {"ETH": "EEE", "SOL": "EEE"}).batches())
    engine.on_batch(batches[0])
    picky = RiskProfileSpec.model_validate({**spec.risk.model_dump(), "entry_min_p_up": 0.65, "reentry_min_p_up": 0.66})
    engine.activate_profile(picky, "aggressive@picky")
    engine.on_batch(batches[1])
    # ETH and SOL entered on bar 0 under the old bars; nothing else clears the new entry bar of 0.65.
    assert [r["profile_version"] for r in engine.log.frame().to_dicts() if r["action"] == "enter"] == [
        engine.log.frame()["profile_version"][0]
    ] * 2
    assert json.loads(engine.log.frame().to_dicts()[-1]["profile_params"])["entry_min_p_up"] == 0.65


def test_a_profile_whose_parameter_breaks_an_action_bound_is_refused_and_changes_nothing() -> None:
    spec = _spec()
    raw = spec.strategy.model_dump()
    for t in raw["transitions"]:
        if t["action"] == "scale_out":
            t["fraction"] = {"parameter": "position_size_pct"}
    engine = _engine(spec, StrategySpec.model_validate(raw))
    before = engine.stamp.profile_version
    whole = RiskProfileSpec.model_validate({**spec.risk.model_dump(), "position_size_pct": 1.0})
    with pytest.raises(StrategyGraphError, match=r"'realise_profit_target': profile parameter 'position_size_pct' must be > 0 and < 1 for action scale_out, was 1.0"):
        engine.activate_profile(whole, "x@1")
    assert engine.stamp.profile_version == before and engine.profile is spec.risk


# ------------------------------------------------------------------ hold rows and the live path
def test_hold_rows_are_written_only_when_the_hold_reason_changes() -> None:
    engine = _engine(_spec())
    _run(engine, _matrix(6, {"ETH": "E....."}))
    holds = [r for r in _rows(engine, holds=True) if r["action"] == "hold"]
    assert [(r["ts"] - T0) // STEP for r in holds] == [1]
    assert [r for r in engine.log.frame().to_dicts() if r["symbol"] != "ETH"] == []  # flat symbols start logged as flat


def test_the_live_path_decides_exactly_as_the_precomputed_backtest_path() -> None:
    matrix = _matrix(8, {"ETH": "E.W.E.X.", "SOL": "E....X..", "BTC": ".E..W.E."}, close={"ETH": [100.0] * 8, "SOL": [100.0] * 2 + [80.0] * 6},
                     recovery={"SOL": "...h...."})  # fmt: skip
    backtest, live = _engine(_spec()), _engine(_spec())
    assert _run(backtest, matrix) == _run(live, matrix, live=True)
    assert backtest.log.frame().equals(live.log.frame())
    assert backtest._static and not live._static


# ------------------------------------------------------------------ drawdown: halt and the resume rule
DD = ("risk.position_size_pct=0.5", "risk.max_drawdown_pct=0.2", "risk.drawdown_resume_pct=0.1", "risk.drawdown_reanchor_hours=1")


def _halt_then_flat(n: int, doge: str, *extra: str) -> tuple[Engine, list[bool], list[float]]:
    """BTC is half the portfolio, halves (drawdown 25 %: halt), exits on the edge at bar 2 and is flat from bar 3."""
    engine = _engine(_spec(*DD, *extra))
    matrix = _matrix(n, {"BTC": "E.X" + "." * (n - 3), "DOGE": doge}, close={"BTC": [100.0, 100.0] + [50.0] * (n - 2)})
    halted, equity = [], []
    for batch in matrix.batches():
        equity.append(engine.on_batch(batch))
        halted.append(engine.state.drawdown_halted)
    return engine, halted, equity


def test_flat_after_a_halt_the_peak_is_reanchored_once_the_wait_has_passed_and_the_edge_is_back() -> None:
    # Flat from bar 3; one hour is 12 bars, so from bar 15 an entry edge lifts the halt.
    doge = "...E" + "." * 11 + "E" + "."
    engine, halted, equity = _halt_then_flat(17, doge)
    assert halted[:2] == [False, False] and all(halted[2:15]) and halted[15:] == [False, False]
    assert engine.state.reanchors == [T0 + 15 * STEP]
    # Re-anchored as though recovered to the 10 % resume bound: the next halt is 10 % further down.
    assert engine.state.peak_equity == pytest.approx(equity[15] / 0.9) and equity[15] < 0.8 * CASH
    first, second = _rows(engine, "DOGE")
    assert (first["admitted"], first["gate_reason"]) == (False, "DRAWDOWN_LIMIT")
    assert (second["admitted"], second["gate_reason"]) == (True, "PASSED")
    assert json.loads(second["gates"])[2]["value"] == pytest.approx(0.1)  # the drawdown from the re-anchored peak


def test_a_reanchor_never_leaves_room_below_the_capital_floor() -> None:
    # Floor = 70 % of the high-water mark. Re-anchoring to the 10 % resume bound would put the next halt
    # near 66.5 % of it, below the floor, so the peak is raised until the next halt sits at the floor.
    doge = "...E" + "." * 11 + "E" + "."
    engine, halted, equity = _halt_then_flat(17, doge, "risk.max_total_drawdown_pct=0.3")
    floor = 0.7 * engine.state.high_water_mark
    assert engine.state.reanchors == [T0 + 15 * STEP] and halted[15:] == [False, False]
    assert engine.state.peak_equity == pytest.approx(floor / 0.8)
    assert equity[15] / 0.9 * 0.8 < floor < equity[15]


def test_at_the_capital_floor_a_halt_lifts_only_by_recovery() -> None:
    # Floor = 75 % of the high-water mark; after the halving and fees equity sits just below it.
    doge = "...E" + "." * 11 + "E" + "."
    engine, halted, equity = _halt_then_flat(17, doge, "risk.max_total_drawdown_pct=0.25")
    assert equity[15] <= 0.75 * engine.state.high_water_mark
    assert all(halted[2:]) and engine.state.reanchors == []


def test_flat_after_a_halt_without_an_edge_stays_halted() -> None:
    engine, halted, _ = _halt_then_flat(20, "")
    assert all(halted[2:]) and engine.state.reanchors == []


def test_the_wait_counts_from_when_the_portfolio_became_flat() -> None:
    engine, _, _ = _halt_then_flat(15, "." * 14 + "E")  # bar 14 is 11 bars after flat: too early
    assert engine.state.reanchors == [] and engine.state.drawdown_halted
    assert engine.state.flat_since_ms == T0 + 3 * STEP
    assert 14 * STEP - 3 * STEP < HOUR_MS


def test_a_recovery_within_the_resume_bound_lifts_the_halt_while_holding() -> None:
    engine = _engine(_spec(*DD))
    _run(engine, _matrix(4, {"BTC": "E..."}, close={"BTC": [100.0, 100.0, 50.0, 99.0]}))
    assert not engine.state.drawdown_halted and engine.state.reanchors == []
    assert engine.state.flat_since_ms is None


def test_campaign_v1_reads_position_values_but_no_portfolio_values() -> None:
    engine = _engine(_spec())
    assert engine.uses_position and not engine.uses_portfolio
    assert engine.pred_names == ("expected_return", "p_recovery", "p_up")


def test_campaign_ids_do_not_depend_on_the_profile_so_replays_under_a_change_match() -> None:
    matrix = _matrix(3, {"ETH": "E.X"})
    base, changed = _engine(_spec()), _engine(_spec("risk.take_profit_pct=0.5"))
    _run(base, matrix)
    _run(changed, matrix)
    assert [r["campaign_id"] for r in _rows(base)] == [r["campaign_id"] for r in _rows(changed)]
    assert _rows(base)[0]["order_id"] != _rows(changed)[0]["order_id"]  # order ids still carry the spec
