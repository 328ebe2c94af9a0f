"""The one loop of a backtest or replay: the engine driven over a market matrix, one batch per timestamp."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.clock import SimulatedClock
from backend.engine.core import Engine, Stamp
from backend.engine.economics import EdgeBasis
from backend.engine.events import MarketMatrix
from backend.engine.pipeline import Pipeline


@dataclass(frozen=True)
class Spine:
    """The engine after the loop; the equity, gross exposure and every symbol's state after each timestamp."""

    engine: Engine
    equity: np.ndarray
    exposure: np.ndarray
    states: np.ndarray


def run_spine(pipeline: Pipeline, matrix: MarketMatrix, edge: EdgeBasis, model_version: str) -> Spine:
    """Run ``pipeline``'s engine over every batch of ``matrix``; decisions carry ``model_version``."""
    spec = pipeline.spec
    stamp = Stamp(pipeline.spec_hash, pipeline.profile_version, model_version)
    ordermin = {a.symbol: a.ordermin for a in spec.universe.assets}
    engine = Engine(
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
    equity = np.empty(len(matrix.ts_ms))
    exposure = np.empty(len(matrix.ts_ms))
    states = np.empty(matrix.has_bar.shape, dtype=np.int8)
    portfolio, marks = engine.portfolio, engine.state.marks
    for batch in matrix.batches():
        equity[batch.index] = engine.on_batch(batch)
        exposure[batch.index] = float(portfolio.qty_f @ marks)
        states[batch.index] = engine.state.state
    return Spine(engine, equity, exposure, states)
