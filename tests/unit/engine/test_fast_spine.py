"""The fast spine equals the plain loop, bit for bit: decisions, equity, exposure, states and the engine after.

Each case runs ``run_spine`` (quiet timestamps marked in bulk, ADR-053) and ``run_spine_reference`` (every
timestamp through ``Engine.on_batch``) over the same generated matrix: four symbols of 5-minute bars,
random-walk prices with a crash, gaps (one symbol has no bar for its first hours), predictions drifting
between entry, weakening and exit regimes, recovery probabilities with missing stretches, and a calibrated
edge that clears its cost in some stretches and not in others (NaN before the first calibrated fold).
"""

from __future__ import annotations

import functools

import numpy as np
import polars as pl
import pytest
import stubs

from backend.audit.decisions import decision_log_sha256
from backend.config.schema import RunSpec, StrategySpec
from backend.engine.economics import EdgeBasis
from backend.engine.events import MarketMatrix
from backend.engine.loop import Spine, run_spine, run_spine_reference
from backend.engine.pipeline import Pipeline, compile_pipeline, guard_names
from backend.engine.quiet import forward_marks
from backend.runs.runner import round_trip_cost
from backend.strategy.graph import compile_graph

T0 = 1_704_067_200_000
STEP = 300_000
SYMBOLS = ("BTC", "DOGE", "ETH", "SOL")


def _matrix(seed: int, n: int, edge_shift: float, crash_at: int | None, with_recovery: bool = True) -> MarketMatrix:
    rng = np.random.default_rng(seed)
    shape = (n, len(SYMBOLS))
    log_ret = 0.004 * rng.standard_normal(shape)
    if crash_at is not None:
        log_ret[crash_at : crash_at + 6] -= 0.05
    close = 100.0 * np.exp(np.cumsum(log_ret, axis=0))
    opens = np.vstack([close[:1], close[:-1]]) * (1.0 + 0.0005 * rng.standard_normal(shape))
    has_bar = rng.random(shape) > 0.03
    has_bar[:40, 1] = False  # DOGE is listed later: its mark stays at zero until its first bar
    close[~has_bar] = np.nan
    opens[~has_bar] = np.nan
    # A persistent signal (AR(1), about 30 bars of memory), so that states last a while and then turn.
    shocks = 0.25 * rng.standard_normal(shape)
    signal = np.zeros(shape)
    for t in range(1, n):
        signal[t] = 0.97 * signal[t - 1] + shocks[t]
    p_up = 0.5 + 0.2 * np.tanh(signal)
    expected = (p_up - 0.5) * 0.3
    edge = expected + edge_shift
    edge[: n // 5] = np.nan  # the first fold has no calibration
    p_recovery = np.clip(0.5 + 0.3 * rng.standard_normal(shape), 0.0, 1.0)
    p_recovery[rng.random(shape) < 0.2] = np.nan
    pred = {"p_up": p_up, "expected_return": expected, "edge": edge, **({"p_recovery": p_recovery} if with_recovery else {})}
    volume = np.where(rng.random(shape) < 0.01, 0.0, 1e4 * rng.random(shape))
    feat = {"ret_1": log_ret}
    return MarketMatrix(T0 + STEP * np.arange(n, dtype=np.int64), SYMBOLS, opens, close, has_bar, pred, feat, volume)


@functools.lru_cache(maxsize=None)
def _spec(*overrides: str) -> RunSpec:
    return stubs.small_spec("strategy=campaign_v1", *overrides)


def _stateful(spec: RunSpec, position: bool = True) -> Pipeline:
    """A graph whose every guard reads position or portfolio state (nothing can be precomputed).

    Without ``position`` only the entry and an exit on the recovery probability alone remain.
    """
    sizing = {"rule": "fraction_of_pv", "parameter": "position_size_pct"}
    raw = (
        {
            "name": "stateful",
            "initial_state": "FLAT",
            "states": [{"name": "FLAT", "hold_reason": "HOLD_FLAT_NO_EDGE"}, {"name": "HOLDING", "hold_reason": "HOLD_EDGE_PERSISTS"}],
            "transitions": [
                {"name": "enter", "source": "FLAT", "target": "HOLDING",
                 "guard": "pred.p_up >= profile.entry_min_p_up and not portfolio.drawdown > profile.max_drawdown_pct",
                 "action": "enter", "sizing": sizing, "reason": "ENTRY_PREDICTED_EDGE", "priority": 0},
                {"name": "cut", "source": "HOLDING", "target": "FLAT",
                 "guard": "pos.unrealized_return <= profile.exit_max_expected_return or pred.p_recovery <= profile.recovery_exit_max_p",
                 "action": "exit", "reason": "EXIT_EDGE_TURNED", "priority": 0},
                {"name": "trim", "source": "HOLDING", "target": "HOLDING",
                 "guard": "pos.exposure_pct >= portfolio.exposure_pct and portfolio.open_positions > profile.scale_out_fraction",
                 "action": "scale_out", "fraction": {"parameter": "scale_out_fraction"}, "reason": "SCALE_OUT_EDGE_WEAKENED",
                 "priority": 1},
            ],
        }
    )  # fmt: skip
    if not position:
        raw["transitions"] = raw["transitions"][:2]
        raw["transitions"][1] = {**raw["transitions"][1], "guard": "pred.p_recovery <= profile.recovery_exit_max_p"}
    strategy = StrategySpec.model_validate(raw)
    base = compile_pipeline(spec)
    return Pipeline(spec, base.spec_hash, base.profile_version, compile_graph(strategy, guard_names(spec)))


# Cheap trading: the edge clears often, so campaigns enter, scale out, re-enter and exit.
CHEAP = ("execution.taker_fee_bps=10", "risk.entry_edge_margin=0.0", "risk.exit_edge_margin=0.0")
# Large positions and a tight drawdown bound: the crash halts trading; flat for an hour, it re-anchors.
HALTS = ("risk.position_size_pct=0.5", "risk.max_drawdown_pct=0.05", "risk.drawdown_resume_pct=0.02", "risk.drawdown_reanchor_hours=1")
CASES = {
    "trading": (CHEAP, 0.0, 500, True),
    "costs_block_everything": ((), -0.1, None, True),
    "drawdown_halts": ((*CHEAP, *HALTS), 0.0, 400, True),
    "no_recovery_model": (CHEAP, 0.0, 500, False),
}


def _both(pipeline: Pipeline, matrix: MarketMatrix) -> tuple[Spine, Spine]:
    spec = pipeline.spec
    edge = EdgeBasis(spec.training.label.horizon_bars * spec.data.bar_ms, round_trip_cost(spec))
    return run_spine(pipeline, matrix, edge, "m1"), run_spine_reference(pipeline, matrix, edge, "m1")


def _assert_identical(fast: Spine, plain: Spine) -> pl.DataFrame:
    log, reference = fast.engine.log.frame(), plain.engine.log.frame()
    assert log.equals(reference)
    assert decision_log_sha256(log) == decision_log_sha256(reference)
    for name in ("equity", "exposure", "states"):
        assert getattr(fast, name).tobytes() == getattr(plain, name).tobytes(), name
    a, b = fast.engine, plain.engine
    assert a.portfolio.ledger == b.portfolio.ledger and a.portfolio.cash == b.portfolio.cash
    assert a.state.marks.tobytes() == b.state.marks.tobytes()
    for name in ("peak_equity", "high_water_mark", "flat_since_ms", "drawdown_halted", "reanchors", "orders", "campaign"):
        assert getattr(a.state, name) == getattr(b.state, name), name
    assert a.state.last_hold.tolist() == b.state.last_hold.tolist()
    assert a.clock.now_ms() == b.clock.now_ms()
    assert fast.batches_run < plain.batches_run == len(fast.equity)
    return log


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_fast_spine_equals_the_plain_loop_bit_for_bit(case: str) -> None:
    overrides, edge_shift, crash_at, with_recovery = CASES[case]
    pipeline = compile_pipeline(_spec(*overrides))
    fast, plain = _both(pipeline, _matrix(11, 1000, edge_shift, crash_at, with_recovery))
    log = _assert_identical(fast, plain)
    actions = set(log["action"])
    reasons = set(log["reason"])
    if case == "costs_block_everything":
        assert actions == {"hold"} and "HOLD_EDGE_BELOW_COST" in reasons and plain.engine.state.orders == 0
    else:
        assert {"enter", "scale_out", "reenter", "exit", "hold"} <= actions
        assert "HOLD_EDGE_BELOW_COST" in reasons and len(plain.engine.portfolio.ledger) > 10
    if case == "drawdown_halts":
        assert len(plain.engine.state.reanchors) == 2
    if case == "trading":
        assert {"SEVERE", "RECOVERY_HOLD", "RECOVERY_REDUCED"} & set(log["state_to"])


def test_the_fast_spine_equals_the_plain_loop_when_every_guard_reads_state() -> None:
    pipeline = _stateful(_spec(*CHEAP))
    for with_recovery, actions in ((True, {"enter", "exit", "scale_out", "hold"}), (False, {"enter", "hold"})):
        fast, plain = _both(pipeline, _matrix(5, 1000, 0.0, 500, with_recovery))
        log = _assert_identical(fast, plain)
        assert set(log["action"]) == actions  # without p_recovery the exit guard never passes (missing input)


def test_the_fast_spine_equals_the_plain_loop_when_guards_read_the_portfolio_but_no_position() -> None:
    pipeline = _stateful(_spec(*CHEAP), position=False)
    names = pipeline.graph.names
    assert "portfolio.drawdown" in names and not [n for n in names if n.startswith("pos.")]
    fast, plain = _both(pipeline, _matrix(5, 600, 0.0, 300))
    assert {"enter", "exit"} <= set(_assert_identical(fast, plain)["action"])


def test_marks_carry_the_last_close_forward_and_start_from_the_engines() -> None:
    matrix = _matrix(3, 50, 0.0, None)
    marks = forward_marks(matrix, np.array([1.0, 2.0, 3.0, 4.0]))
    assert marks[0, 1] == 2.0 and marks[39, 1] == 2.0  # DOGE before its first bar
    for t in range(1, 50):
        expected = np.where(matrix.has_bar[t], matrix.close[t], marks[t - 1])
        assert marks[t].tolist() == expected.tolist()
