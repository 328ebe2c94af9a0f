"""Builders shared by tests: small, fast compositions of the real conf/ tree."""

from __future__ import annotations

from backend.config.compose import compose_spec
from backend.config.schema import RunSpec

# Promotion gates that any trained model passes: for tests about what happens around a promotion.
LENIENT_PROMOTION = (
    "training.promotion.max_calibration_error=1.0",
    "training.promotion.min_auc=0.0",
    "training.promotion.min_fold_auc=0.0",
    "training.promotion.min_ic=-1.0",
    "training.promotion.min_auc_improvement=-1.0",
    "training.promotion.max_strategy_shortfall_pct=100",
)

# Four symbols over ten days of 5-minute bars, two folds, small boosters: a whole backtest in seconds.
SMALL = (
    "data.days=10",
    "data.signal_bps=8",  # a planted, learnable edge (ADR-030): the strategy trades, so the order paths run
    "data.symbols=[BTC,ETH,SOL,DOGE]",
    "training.walk_forward.n_folds=2",
    "training.walk_forward.min_train_bars=1440",
    "training.walk_forward.purge_bars=48",
    "training.walk_forward.embargo_bars=6",
    "training.label.horizon_bars=48",
    "training.max_train_rows=20000",
    "model.specialist.n_estimators=15",
    "model.specialist.min_data_in_leaf=20",
    "model.global_model.n_estimators=20",
    "model.global_model.min_data_in_leaf=20",
    "risk=aggressive",
)


def small_overrides(*extra: str) -> list[str]:
    """Return the SMALL overrides followed by ``extra`` (later overrides win).

    When ``extra`` selects another data group (``data=lake``, ...), the simulator's planted signal is left out:
    only simulated data has one.
    """
    other_data = any(o.startswith("data=") for o in extra)
    return [*(o for o in SMALL if not (other_data and o.startswith("data.signal_bps="))), *extra]


def small_spec(*extra: str) -> RunSpec:
    """Compose and validate the SMALL run with ``extra`` overrides."""
    return compose_spec(small_overrides(*extra))

