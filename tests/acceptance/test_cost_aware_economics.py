"""The economics of the default strategy through the whole spine: features, walk-forward LightGBM, engine, costs.

Two generated data sets, both deterministic (seeded), four symbols of 5-minute bars in the SMALL spec:

* **planted signal**: each symbol drifts by +-8 bps a bar in stretches of a day (the sign redrawn per stretch),
  under 15 bps of noise a bar, with two market-wide 10 % crashes nobody could foresee. Over the label horizon
  (48 bars) the drift is worth 3.8 %, more than four times the 0.9 % round trip (taker fee and half-spread, in
  and out): a known edge larger than costs, visible to the model only through past returns.
* **random walk**: the same noise without drift or crashes: no edge at all.

The strategy must profit on the first, lose less than 0.5 % on the second, and the three shipped risk presets
must keep their ordering of risk (mean exposure and maximum drawdown) on the same planted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stubs import small_spec

from backend.clock import WallClock
from backend.engine.pipeline import compile_pipeline
from backend.runs.runner import Outcome, execute, train_bundle
from backend.home import Home
from backend.models.bundle import ModelBundle
from execution.accounting.performance import max_drawdown

SYMBOLS = ("BTC", "DOGE", "ETH", "SOL")
BARS = 2880  # ten days of 5-minute bars: the SMALL spec's window
CASH = 100_000.0
PRESETS = ("conservative", "balanced", "aggressive")


def generated_bars(seed: int, drift_bps: float, crashes: tuple[int, ...]) -> pl.DataFrame:
    """Bars whose log returns are a per-symbol drift of +-``drift_bps`` (redrawn every 288 bars) plus noise."""
    rng = np.random.default_rng(seed)
    k = len(SYMBOLS)
    signs = rng.choice([-1.0, 1.0], size=(BARS // 288 + 1, k))
    log_ret = np.repeat(signs, 288, axis=0)[:BARS] * drift_bps / 10_000.0 + 0.0015 * rng.standard_normal((BARS, k))
    for at in crashes:
        log_ret[at] += np.log(0.9)
    close = 100.0 * np.exp(np.cumsum(log_ret, axis=0))
    open_ = np.vstack([np.full((1, k), 100.0), close[:-1]])
    ts = 1_735_689_600_000 + 300_000 * np.arange(BARS, dtype=np.int64)
    return pl.DataFrame(
        {
            "ts": np.repeat(ts, k), "symbol": list(SYMBOLS) * BARS, "open": open_.ravel(),
            "high": (np.maximum(open_, close) * 1.0005).ravel(), "low": (np.minimum(open_, close) * 0.9995).ravel(),
            "close": close.ravel(), "volume": np.full(BARS * k, 1e6),
        }
    )  # fmt: skip


def _runs(bars: pl.DataFrame, root: Path) -> dict[str, Outcome]:
    """Train once (the model does not depend on the risk profile) and run every preset on the same bars."""
    bundle: ModelBundle | None = None
    out = {}
    for preset in PRESETS:
        pipeline = compile_pipeline(small_spec(f"risk={preset}", "training.num_threads=1"))
        bundle = bundle or train_bundle(pipeline, bars, {}, lambda _: None, Home(root))
        out[preset] = execute(pipeline, bars, bundle, WallClock())
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return _runs(generated_bars(3, 8.0, (2200, 2600)), tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return _runs(generated_bars(3, 0.0, ()), tmp_path_factory.mktemp("walk"))


def _return(outcome: Outcome) -> float:
    return float(outcome.equity[-1]) / CASH - 1.0


@pytest.mark.parametrize("preset", PRESETS)
def test_a_planted_edge_larger_than_costs_is_traded_at_a_profit_after_fees(preset: str, planted: dict[str, Outcome]) -> None:
    outcome = planted[preset]
    assert outcome.engine.state.orders >= 10 and outcome.engine.portfolio.fees_paid > 0
    assert _return(outcome) > 0.01
    assert outcome.engine.portfolio.reconciles()


def test_every_admitted_entry_expected_more_than_its_cost_and_margin(planted: dict[str, Outcome]) -> None:
    log = planted["balanced"].decisions
    buys = log.filter(pl.col("action").is_in(["enter", "reenter"]) & pl.col("order_id").is_not_null())
    assert buys.height > 0
    assert (buys["cost_reason"] == "EDGE_CLEARS_COST").all()
    assert (buys["edge"] > buys["cost"] + buys["margin"]).all()
    # The cost is two legs of fee and slippage (three after a sell of the symbol within the horizon).
    leg = 0.004 + 0.0005
    assert ((buys["cost"] >= 2 * leg - 1e-12) & (buys["cost"] <= 3 * leg + 0.0005)).all()
    held = log.filter(pl.col("reason") == "HOLD_EDGE_BELOW_COST")
    assert held.height > 0 and (held["edge"] <= held["cost"] + held["margin"]).all()
    assert all(json.loads(row) for row in held["inputs"])  # the blocked guard's inputs are recorded


@pytest.mark.parametrize("preset", PRESETS)
def test_a_pure_random_walk_loses_less_than_half_a_percent(preset: str, walk: dict[str, Outcome]) -> None:
    assert _return(walk[preset]) > -0.005


def test_the_presets_keep_their_risk_ordering_on_the_same_run(planted: dict[str, Outcome]) -> None:
    exposure = [float(np.mean(planted[p].exposure / planted[p].equity)) for p in PRESETS]
    drawdown = [max_drawdown(planted[p].equity, CASH) for p in PRESETS]
    assert exposure[0] < exposure[1] < exposure[2]
    assert drawdown[0] < drawdown[1] < drawdown[2]
