"""The one loop of a backtest or replay: the engine driven over a market matrix, one batch per timestamp.

``run_spine`` hands the engine only the timestamps where something can happen and marks the quiet ones in
bulk (:mod:`backend.engine.quiet`, ADR-053); ``run_spine_reference`` is the plain loop, every timestamp
through :meth:`Engine.on_batch`. Both give the same decision log, equity, exposure and states, bit for bit
(tests/unit/engine/test_fast_spine.py holds them equal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.clock import SimulatedClock
from backend.engine.core import Engine, Stamp
from backend.engine.economics import EdgeBasis
from backend.engine.events import MarketMatrix
from backend.engine.pipeline import Pipeline
from backend.engine.quiet import QuietScan

# Rows scanned at once: the window doubles while timestamps stay quiet, and shrinks after a busy one.
MIN_WINDOW, MAX_WINDOW = 32, 4096


@dataclass(frozen=True)
class Spine:
    """The engine after the loop; the equity, gross exposure and every symbol's state after each timestamp.

    ``batches_run`` counts the timestamps that went through ``Engine.on_batch`` (the others were quiet).
    """

    engine: Engine
    equity: np.ndarray
    exposure: np.ndarray
    states: np.ndarray
    batches_run: int


def new_engine(pipeline: Pipeline, matrix: MarketMatrix, edge: EdgeBasis, model_version: str) -> Engine:
    """Return a fresh engine for ``pipeline`` over ``matrix``, its clock at the first timestamp."""
    spec = pipeline.spec
    stamp = Stamp(pipeline.spec_hash, pipeline.profile_version, model_version)
    ordermin = {a.symbol: a.ordermin for a in spec.universe.assets}
    return Engine(
        spec.symbols,
        spec.universe.clusters,
        ordermin,
        pipeline.graph,
        spec.risk,
        spec.execution,
        stamp,
        SimulatedClock(int(matrix.ts_ms[0])),
        edge,
    )


def run_spine(pipeline: Pipeline, matrix: MarketMatrix, edge: EdgeBasis, model_version: str) -> Spine:
    """Run ``pipeline``'s engine over ``matrix``; decisions carry ``model_version``.

    Equal, bit for bit, to :func:`run_spine_reference`: quiet timestamps are marked in bulk, every
    other one goes through ``on_batch``.
    """
    engine = new_engine(pipeline, matrix, edge, model_version)
    count = len(matrix.ts_ms)
    equity, exposure = np.empty(count), np.empty(count)
    states = np.empty(matrix.has_bar.shape, dtype=np.int8)
    scan = QuietScan(engine, matrix)
    portfolio, marks = engine.portfolio, engine.state.marks
    t, window, run = 0, MIN_WINDOW, 0
    while t < count:
        if not engine.broker.pending:
            end = min(count, t + window)
            quiet = scan.quiet_rows(t, end, equity, exposure, states)
            window = min(MAX_WINDOW, 2 * window) if t + quiet == end else max(MIN_WINDOW, 2 * quiet)
            t += quiet
            if t == end:
                continue
        equity[t] = engine.on_batch(matrix.batch(t))
        exposure[t] = float(portfolio.qty_f @ marks)
        states[t] = engine.state.state
        t += 1
        run += 1
    return Spine(engine, equity, exposure, states, run)


def run_spine_reference(pipeline: Pipeline, matrix: MarketMatrix, edge: EdgeBasis, model_version: str) -> Spine:
    """Run the engine over every batch of ``matrix``: the plain loop :func:`run_spine` must equal."""
    engine = new_engine(pipeline, matrix, edge, model_version)
    equity = np.empty(len(matrix.ts_ms))
    exposure = np.empty(len(matrix.ts_ms))
    states = np.empty(matrix.has_bar.shape, dtype=np.int8)
    portfolio, marks = engine.portfolio, engine.state.marks
    for batch in matrix.batches():
        equity[batch.index] = engine.on_batch(batch)
        exposure[batch.index] = float(portfolio.qty_f @ marks)
        states[batch.index] = engine.state.state
    return Spine(engine, equity, exposure, states, len(matrix.ts_ms))
