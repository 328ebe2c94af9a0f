"""Acceptance on constructed data: the default graph (campaign_v1) under the default profile shows every
behaviour governance section 5 asks for, each with its reason codes, and the log names campaigns and profiles.

The market is built here, from a fixed seed: eight symbols of five-minute random-walk prices with
volatile stretches and rare crashes, and model outputs that lean toward each symbol's next-hours
return except the crashes (a useful model that cannot see shocks), plus a recovery probability. Nothing is scripted per behaviour: the graph, the profile
and the gates produce what the log shows. Runs everywhere (no model training, no shared data).
"""

from __future__ import annotations

import functools
import json

import numpy as np
import polars as pl
import pytest

from backend.clock import SimulatedClock
from backend.config.compose import compose_spec
from backend.config.schema import RunSpec
from backend.engine.core import Engine, Stamp
from backend.engine.economics import EdgeBasis
from backend.runs.runner import round_trip_cost
from backend.engine.events import MarketMatrix
from backend.engine.pipeline import compile_pipeline
from backend.strategy.reasons import RECOVERY_REASONS

SYMBOLS = ("ADA", "AVAX", "BTC", "DOGE", "ETH", "LINK", "SOL", "XRP")
BARS = 4_000
T0 = 1_704_067_200_000


@functools.lru_cache(maxsize=1)
def _spec() -> RunSpec:
    # The default composition (campaign_v1, balanced), narrowed to eight symbols.
    return compose_spec([f"data.symbols=[{','.join(SYMBOLS)}]"])


def _market(seed: int = 5) -> MarketMatrix:
    rng = np.random.default_rng(seed)
    shape = (BARS, len(SYMBOLS))
    # Volatility regimes: calm stretches and violent ones, per symbol.
    vol = np.where(rng.random(shape).cumsum(axis=0) % 400 < 120, 0.012, 0.004)
    drift = np.repeat(rng.normal(0.0, 0.0015, (BARS // 200, len(SYMBOLS))), 200, axis=0)
    log_ret = drift + vol * rng.standard_normal(shape)
    # Crashes the model does not see coming: they move prices but not the predictions.
    jumps = np.where(rng.random(shape) < 0.0015, rng.uniform(-0.16, -0.10, shape), 0.0)
    close = 100.0 * np.exp(np.cumsum(log_ret + jumps, axis=0))
    opens = np.vstack([close[:1], close[:-1]])
    horizon = 24
    seen = np.cumsum(log_ret, axis=0)
    future = np.full(shape, 0.0)
    future[:-horizon] = seen[horizon:] - seen[:-horizon]
    signal = future / (vol * np.sqrt(horizon)) + rng.normal(0.0, 0.8, shape)
    p_up = 1.0 / (1.0 + np.exp(-0.6 * signal))
    expected_return = 0.4 * future + rng.normal(0.0, 0.004, shape)
    p_recovery = np.clip(0.5 + 2.0 * future / (vol * np.sqrt(horizon)) * 0.2 + rng.normal(0.0, 0.15, shape), 0.0, 1.0)
    return MarketMatrix(
        T0 + 300_000 * np.arange(BARS, dtype=np.int64), SYMBOLS, opens, close, np.ones(shape, dtype=bool),
        {"p_up": p_up, "expected_return": expected_return, "p_recovery": p_recovery}, {},
    )  # fmt: skip


@pytest.fixture(scope="module")
def run() -> tuple[Engine, pl.DataFrame]:
    spec = _spec()
    assert spec.strategy.name == "campaign_v1" and spec.risk.name == "balanced"  # the defaults
    pipeline = compile_pipeline(spec)
    engine = Engine(
        spec.symbols, spec.universe.clusters, {a.symbol: a.ordermin for a in spec.universe.assets}, pipeline.graph,
        spec.risk, spec.execution, Stamp(pipeline.spec_hash, pipeline.profile_version, "constructed"), SimulatedClock(T0),
        EdgeBasis(spec.training.label.horizon_bars * spec.data.bar_ms, round_trip_cost(spec)),
    )  # fmt: skip
    for batch in _market().batches():
        engine.on_batch(batch)
    return engine, engine.log.frame()


def _count(log: pl.DataFrame, action: str, reason: str) -> int:
    return log.filter((pl.col("action") == action) & (pl.col("reason") == reason) & pl.col("admitted")).height


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("enter", "ENTRY_PREDICTED_EDGE"),
        ("hold", "HOLD_EDGE_PERSISTS"),
        ("hold", "HOLD_PARTIAL_AWAITING_EDGE"),
        ("scale_out", "SCALE_OUT_EDGE_WEAKENED"),
        ("scale_out", "SCALE_OUT_PROFIT_TARGET"),
        ("reenter", "REENTRY_EDGE_STRENGTHENED"),
        ("exit", "EXIT_EDGE_TURNED"),
        ("none", "SEVERE_LOSS_ASSESS_RECOVERY"),
        ("none", "RECOVERY_HOLD"),
        ("scale_out", "RECOVERY_REDUCE"),
        ("exit", "RECOVERY_EXIT"),
    ],
)
def test_the_default_graph_shows_each_behaviour_with_its_reason_code(action: str, reason: str, run: tuple[Engine, pl.DataFrame]) -> None:
    _, log = run
    assert _count(log, action, reason) > 0


def test_reentries_happen_within_the_campaign_their_entry_opened(run: tuple[Engine, pl.DataFrame]) -> None:
    _, log = run
    admitted = log.filter(pl.col("admitted") & pl.col("order_id").is_not_null())
    opened = dict(admitted.filter(pl.col("action") == "enter").select("campaign_id", "ts").iter_rows())
    reentries = admitted.filter(pl.col("action") == "reenter")
    assert reentries.height > 0
    for row in reentries.iter_rows(named=True):
        assert opened[row["campaign_id"]] < row["ts"]
    # A campaign spans first entry to last exit: exactly one entry and at most one closing exit each.
    per_campaign = admitted.group_by("campaign_id").agg(
        (pl.col("action") == "enter").sum().alias("entries"), (pl.col("action") == "exit").sum().alias("exits")
    )
    assert per_campaign["entries"].to_list() == [1] * per_campaign.height
    assert per_campaign["exits"].max() == 1


def test_recovery_decisions_are_driven_by_the_recovery_probability(run: tuple[Engine, pl.DataFrame]) -> None:
    engine, log = run
    recovery = log.filter(pl.col("reason").is_in([r.value for r in RECOVERY_REASONS]))
    decided = recovery.filter(pl.col("reason").is_in(["RECOVERY_HOLD", "RECOVERY_REDUCE", "RECOVERY_EXIT"]))
    assert decided.height > 0
    bounds = engine.profile
    for row in decided.iter_rows(named=True):
        p = json.loads(row["inputs"])["pred.p_recovery"]
        if row["reason"] == "RECOVERY_EXIT":
            assert p <= bounds.recovery_exit_max_p
        elif row["reason"] == "RECOVERY_REDUCE":
            assert bounds.recovery_exit_max_p < p <= bounds.recovery_reduce_max_p
        else:
            assert p > bounds.recovery_reduce_max_p


def test_no_exit_reads_only_loss_and_every_decision_names_profile_and_campaign(run: tuple[Engine, pl.DataFrame]) -> None:
    engine, log = run
    exits = log.filter(pl.col("action") == "exit")
    for inputs in exits["inputs"]:
        assert any(name.startswith("pred.") for name in json.loads(inputs))
    assert set(log["profile_version"]) == {engine.stamp.profile_version}
    in_campaign = log.filter(pl.col("action").is_in(["scale_out", "reenter", "exit"]))
    assert in_campaign["campaign_id"].null_count() == 0
    fills = engine.portfolio.ledger
    assert fills and all(f.campaign_id is not None for f in fills)
    assert engine.portfolio.reconciles()
