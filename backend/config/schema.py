"""Pydantic schemas for every config group, and the RunSpec they compose into.

Every schema is frozen and forbids unknown keys; every numeric bound is declared here and
nowhere else, so the CLI, the console and the runtime all validate through the same rules.
"""

from __future__ import annotations

import enum
import re
from datetime import date, datetime, timezone
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator



class Spec(BaseModel):
    """Base of every config schema: frozen, unknown keys refused, NaN and infinities refused."""

    # NaN passes no bound check but fails every comparison, so it is refused before the bounds are read.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False, allow_inf_nan=False)


Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Symbol = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Bps = Annotated[float, Field(ge=0.0, le=500.0)]
Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
# Bar length in milliseconds of each timeframe (the lake, the providers and the sandbox read it from here).
TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


class Mode(str, enum.Enum):
    """The five run modes. Only the event source, the clock and the broker differ between them."""

    BACKTEST = "backtest"
    REPLAY = "replay"
    PAPER = "paper"
    SHADOW = "shadow"
    LIVE = "live"


# ---------------------------------------------------------------- universe
class KrakenPairSpec(Spec):
    pair_key: Annotated[str, Field(min_length=3, max_length=16)]
    altname: Annotated[str, Field(min_length=3, max_length=16)]
    wsname: Annotated[str, Field(min_length=3, max_length=20)]


class AssetSpec(Spec):
    symbol: Symbol
    cluster: Name
    kraken: KrakenPairSpec
    coinapi_symbol_id: Annotated[str, Field(min_length=3, max_length=40)]
    ordermin: Annotated[float, Field(gt=0.0, le=1e9)]


class UniverseSpec(Spec):
    """A versioned trading universe: assets, their Kraken and CoinAPI names and clusters."""

    version: Name
    quote: Literal["USD"]
    ranking_source: Annotated[str, Field(min_length=1, max_length=200)]
    ranking_date: date
    assets: Annotated[tuple[AssetSpec, ...], Field(min_length=1, max_length=100)]

    @model_validator(mode="after")
    def _unique_symbols(self) -> UniverseSpec:
        seen: set[str] = set()
        for asset in self.assets:
            if asset.symbol in seen:
                raise ValueError(f"symbol {asset.symbol!r} is listed twice")
            seen.add(asset.symbol)
        return self

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(a.symbol for a in self.assets))

    @property
    def clusters(self) -> dict[str, str]:
        return {a.symbol: a.cluster for a in sorted(self.assets, key=lambda a: a.symbol)}


# ---------------------------------------------------------------- data
class _DataBase(Spec):
    timeframe: Timeframe
    start: date
    days: Annotated[int, Field(ge=2, le=5000)]
    symbols: Annotated[tuple[Symbol, ...] | None, Field(min_length=1, max_length=100)] = None

    @property
    def start_ms(self) -> int:
        moment = datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc)
        return int(moment.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * 86_400_000

    @property
    def bar_ms(self) -> int:
        return TIMEFRAME_MS[self.timeframe]


class SimulatedDataSpec(_DataBase):
    """Bars from the seeded market simulator, written to the lake before the run reads them."""

    kind: Literal["simulated"]
    # A planted, learnable signal (ADR-030): each symbol drifts by +-signal_bps a bar, the sign redrawn every
    # day; 0 (the default) simulates a market without a tradable edge.
    signal_bps: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0


class SharedDataSpec(_DataBase):
    """Real recorded candles from ``../shared/data``, imported into the lake on first use."""

    kind: Literal["shared"]
    source: Literal["binance"] = "binance"


class LakeDataSpec(_DataBase):
    """Bars already in the lake under the named source."""

    kind: Literal["lake"]
    source: Name


DataSpec = Annotated[
    Union[SimulatedDataSpec, SharedDataSpec, LakeDataSpec], Field(discriminator="kind")
]


# ---------------------------------------------------------------- features
class FeatureSpec(Spec):
    """One named feature: a registry builder and its parameters."""

    name: Name
    builder: Name
    window: Annotated[int, Field(ge=1, le=10_000)] | None = None
    symbol: Symbol | None = None


class FeatureSetSpec(Spec):
    name: Name
    features: Annotated[tuple[FeatureSpec, ...], Field(min_length=1, max_length=500)]

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureSetSpec:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names must be unique, repeated: {duplicates}")
        return self


# ---------------------------------------------------------------- model
class LgbmParamsSpec(Spec):
    num_leaves: Annotated[int, Field(ge=2, le=1024)] = 31
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    n_estimators: Annotated[int, Field(ge=1, le=5000)] = 100
    min_data_in_leaf: Annotated[int, Field(ge=1, le=100_000)] = 50
    feature_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    bagging_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    bagging_freq: Annotated[int, Field(ge=0, le=100)] = 1
    lambda_l2: Annotated[float, Field(ge=0.0, le=1000.0)] = 1.0
    max_bin: Annotated[int, Field(ge=7, le=1023)] = 63


class StackingSpec(Spec):
    """The walk-forward stacker over the global and specialist outputs (ADR-023, ADR-024).

    A fold's stacker is fitted on earlier folds' out-of-fold rows; with fewer than ``min_rows`` of
    them, or when the fitted rule does not beat the fixed blend on the later half of them (ADR-065),
    the fold uses the fixed blend of ``specialist_weight``. ``l2`` is the ridge penalty on the
    two weights (it keeps the fit defined when the global and specialist scores coincide).
    """

    min_rows: Annotated[int, Field(ge=10, le=100_000_000)] = 1000
    l2: Annotated[float, Field(gt=0.0, le=1e9)] = 1.0


class ModelSpec(Spec):
    """LightGBM per-symbol specialists and a global cross-asset model, combined by a walk-forward stacker.

    ``specialist_weight`` is the declared fallback: the fixed blend a fold uses while it has too
    little out-of-fold history for its stacker (always the first fold).
    """

    name: Name
    kind: Literal["lgbm_blend"]
    specialist: LgbmParamsSpec
    global_model: LgbmParamsSpec
    specialist_weight: Fraction
    stacking: StackingSpec = StackingSpec()
    # "cached": train as "train" does, unless the home's training cache holds a model trained on the same
    # bars under the same training settings (ADR-054); then that one, byte-identical to a retrained one.
    source: Literal["train", "cached", "promoted", "bundle"] = "train"


# ---------------------------------------------------------------- training
class WalkForwardSpec(Spec):
    scheme: Literal["expanding", "rolling"]
    n_folds: Annotated[int, Field(ge=1, le=120)]
    min_train_bars: Annotated[int, Field(ge=10, le=10_000_000)]
    train_bars: Annotated[int, Field(ge=10, le=10_000_000)] | None = None
    purge_bars: Annotated[int, Field(ge=0, le=100_000)]
    embargo_bars: Annotated[int, Field(ge=0, le=100_000)]

    @model_validator(mode="after")
    def _rolling_needs_window(self) -> WalkForwardSpec:
        if self.scheme == "rolling" and self.train_bars is None:
            raise ValueError("'train_bars' is required when scheme is 'rolling'")
        return self


class LabelSpec(Spec):
    horizon_bars: Annotated[int, Field(ge=1, le=10_000)]


class RecoverySpec(Spec):
    """The recovery target: trained on rows in a severe adverse state (``adverse_depth >= min_depth``)."""

    lookback_bars: Annotated[int, Field(ge=1, le=100_000)] = 288
    recover_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    min_depth: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    min_rows: Annotated[int, Field(ge=10, le=10_000_000)] = 200


# A Ray cluster's GCS address, ``host:port`` as ``ray start --head`` prints it (Ray Client ``ray://`` is not installed).
_RAY_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):(?P<port>[0-9]{1,5})$")


def check_ray_address(address: str | None) -> str | None:
    """Return ``address`` when it is ``host:port`` with a port in 1..65535; else raise ValueError naming it."""
    if address is None:
        return None
    match = _RAY_ADDRESS.match(address)
    if match is None:
        raise ValueError(f"must be host:port of a running Ray cluster's head (as `ray start --head` prints it), was {address!r}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be >= 1 and <= 65535, was {port} in {address!r}")
    return address


class RaySpec(Spec):
    """Where tasks run: serially in-process, on a local Ray of ``num_cpus``, or on the Ray cluster at ``address``.

    ``address`` set connects to a cluster someone started (``ray start --head``) instead of starting a
    local Ray; ``num_cpus`` then plays no part (the cluster's own CPUs bound the calls in flight).
    """

    enabled: bool = False
    address: Annotated[str, Field(min_length=1, max_length=260)] | None = None
    num_cpus: Annotated[int, Field(ge=1, le=1024)] = 2
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    # Tasks sent to a worker in one Ray call: amortises Ray's per-call cost over short tasks.
    tasks_per_call: Annotated[int, Field(ge=1, le=256)] = 8

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        return check_ray_address(value)

    @model_validator(mode="after")
    def _address_needs_ray(self) -> RaySpec:
        if self.address is not None and not self.enabled:
            raise ValueError(f"'address' ({self.address!r}) is set but 'enabled' is false: set enabled=true to use the cluster")
        return self


class SweepSpec(Spec):
    """``acts sweep`` (conf/sweep.yaml, ``sweep.<key>=...``): where the variants run and where the comparison goes.

    ``ray.enabled=false`` runs the variants one after another in this process; ``ray.address`` sends
    them to an existing cluster, as ``training.ray.address`` does for training tasks.
    """

    ray: RaySpec = RaySpec(enabled=True)
    out: Annotated[str, Field(min_length=1, max_length=400)]
    max_variants: Annotated[int, Field(ge=1, le=1024)] = 256


class FailureInjectionSpec(Spec):
    """Test hook: training the named symbol (or ``global``) in the named fold raises, on every attempt."""

    scope: Name
    fold: Annotated[int, Field(ge=0, le=120)]


class PromotionSpec(Spec):
    """Promotion gates: a candidate is promoted only when every bound holds."""

    min_auc: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    max_calibration_error: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    min_ic: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0
    min_fold_auc: Annotated[float, Field(ge=0.0, le=1.0)] = 0.45
    min_auc_improvement: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0
    max_strategy_shortfall_pct: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0


class DriftTriggerSpec(Spec):
    """Drift monitors: population stability per feature, rolling log loss and calibration."""

    window_bars: Annotated[int, Field(ge=10, le=10_000_000)] = 2016
    max_psi: Annotated[float, Field(ge=0.0, le=100.0)] = 0.25
    max_log_loss_increase: Annotated[float, Field(ge=0.0, le=100.0)] = 0.05
    max_calibration_error: Annotated[float, Field(ge=0.0, le=1.0)] = 0.15


class ScheduleSpec(Spec):
    """``acts train --schedule``: retrain every ``cadence_hours`` and whenever a drift trigger fires."""

    cadence_hours: Annotated[float, Field(gt=0.0, le=10_000.0)] = 24.0
    poll_seconds: Annotated[float, Field(gt=0.0, le=86_400.0)] = 300.0
    # fixed: every iteration reads the spec's data window; trailing: the window of data.days
    # moves to end on the clock's current day (only for data.kind=lake, a lake that keeps growing).
    window: Literal["fixed", "trailing"] = "fixed"
    drift: DriftTriggerSpec = DriftTriggerSpec()


class TrainingSpec(Spec):
    walk_forward: WalkForwardSpec
    label: LabelSpec
    num_threads: Annotated[int, Field(ge=1, le=64)]
    max_train_rows: Annotated[int, Field(ge=100, le=100_000_000)]
    recovery: RecoverySpec = RecoverySpec()
    ray: RaySpec = RaySpec()
    promotion: PromotionSpec = PromotionSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    inject_failure: FailureInjectionSpec | None = None

    @model_validator(mode="after")
    def _purge_covers_label(self) -> TrainingSpec:
        if self.walk_forward.purge_bars < self.label.horizon_bars:
            raise ValueError(
                f"'walk_forward.purge_bars' must be >= label.horizon_bars "
                f"({self.label.horizon_bars}), was {self.walk_forward.purge_bars}"
            )
        return self


# ---------------------------------------------------------------- risk profile
class ExposureLimitSpec(Spec):
    """An exposure bound in one of two unit modes: a fraction of portfolio value, or USD."""

    mode: Literal["pct_of_pv", "absolute"]
    value: Annotated[float, Field(gt=0.0, le=1e12)]

    @model_validator(mode="after")
    def _pct_is_fraction(self) -> ExposureLimitSpec:
        if self.mode == "pct_of_pv" and self.value > 1.0:
            raise ValueError(f"'value' must be <= 1.0 in pct_of_pv mode (no leverage), was {self.value}")
        return self


class RiskProfileSpec(Spec):
    """A governed risk profile: position and exposure bounds and the strategy's thresholds."""

    name: Name
    kill_switch: bool
    max_concurrent_positions: Annotated[int, Field(ge=1, le=30)]
    max_total_exposure: ExposureLimitSpec
    max_cluster_exposure: ExposureLimitSpec
    position_size_pct: Annotated[float, Field(gt=0.0, le=1.0)]
    min_order_usd: Annotated[float, Field(ge=0.0, le=1e6)]
    max_drawdown_pct: Annotated[float, Field(gt=0.0, le=1.0)]
    drawdown_resume_pct: Annotated[float, Field(ge=0.0, le=1.0)]
    drawdown_reanchor_hours: Annotated[float, Field(ge=0.0, le=8760.0)]
    max_total_drawdown_pct: Annotated[float, Field(gt=0.0, le=1.0)]
    entry_min_p_up: Annotated[float, Field(ge=0.5, le=1.0)]
    entry_min_expected_return: Annotated[float, Field(ge=-0.1, le=0.5)]
    exit_max_p_up: Annotated[float, Field(ge=0.0, le=1.0)]
    exit_max_expected_return: Annotated[float, Field(ge=-0.5, le=0.1)]
    scale_out_max_p_up: Annotated[float, Field(ge=0.0, le=1.0)]
    scale_out_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    take_profit_pct: Annotated[float, Field(gt=0.0, le=10.0)]
    reentry_min_p_up: Annotated[float, Field(ge=0.5, le=1.0)]
    reentry_min_expected_return: Annotated[float, Field(ge=-0.1, le=0.5)]
    severe_loss_pct: Annotated[float, Field(gt=0.0, lt=1.0)]
    recovery_exit_max_p: Annotated[float, Field(ge=0.0, le=1.0)]
    recovery_reduce_max_p: Annotated[float, Field(ge=0.0, le=1.0)]
    # Cost-aware admission (ADR-027): an entry or re-entry needs the model's gross expected edge over the
    # label horizon to exceed the order's full round-trip cost plus entry_edge_margin; a partial exit (and
    # an exit inside the minimum expected holding, ADR-028) needs the expected loss it avoids to exceed its
    # cost plus exit_edge_margin. Margins are fractions of the notional; >= 0, so nothing trades below cost.
    entry_edge_margin: Annotated[float, Field(ge=0.0, le=0.5)]
    exit_edge_margin: Annotated[float, Field(ge=0.0, le=0.5)]

    @model_validator(mode="after")
    def _coherent(self) -> RiskProfileSpec:
        if self.drawdown_resume_pct > self.max_drawdown_pct:
            raise ValueError(
                f"'drawdown_resume_pct' must be <= max_drawdown_pct ({self.max_drawdown_pct}), "
                f"was {self.drawdown_resume_pct}"
            )
        if self.max_total_drawdown_pct < self.max_drawdown_pct:
            raise ValueError(
                f"'max_total_drawdown_pct' must be >= max_drawdown_pct ({self.max_drawdown_pct}), "
                f"was {self.max_total_drawdown_pct}"
            )
        if self.exit_max_p_up > self.entry_min_p_up:
            raise ValueError(
                f"'exit_max_p_up' must be <= entry_min_p_up ({self.entry_min_p_up}), was {self.exit_max_p_up}"
            )
        # The scale-out bar sits between the exit bar and the re-entry bar, so a weakening edge
        # cannot both scale out and re-enter at one value.
        if not self.exit_max_p_up <= self.scale_out_max_p_up < self.reentry_min_p_up:
            raise ValueError(
                f"'scale_out_max_p_up' must be >= exit_max_p_up ({self.exit_max_p_up}) and < reentry_min_p_up "
                f"({self.reentry_min_p_up}), was {self.scale_out_max_p_up}"
            )
        if self.recovery_exit_max_p > self.recovery_reduce_max_p:
            raise ValueError(
                f"'recovery_exit_max_p' must be <= recovery_reduce_max_p ({self.recovery_reduce_max_p}), "
                f"was {self.recovery_exit_max_p}"
            )
        return self

    def parameters(self) -> dict[str, float]:
        """Return the numeric parameters the strategy graph may read as ``profile.<name>``."""
        out: dict[str, float] = {}
        for key, value in self.model_dump().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
        return out


# ---------------------------------------------------------------- strategy graph
class StateSpec(Spec):
    name: Name
    hold_reason: Name


class SizingSpec(Spec):
    """How an ``enter``/``reenter`` sizes its target position: a rule and the profile parameter it reads."""

    rule: Literal["fraction_of_pv"]
    parameter: Name


class FractionSpec(Spec):
    """The share of the holding a ``scale_out`` sells: the profile parameter that holds it."""

    parameter: Name


class TransitionSpec(Spec):
    name: Name
    source: Name
    target: Name
    guard: Annotated[str, Field(min_length=1, max_length=2000)]
    action: Literal["enter", "scale_out", "exit", "reenter", "none"]
    reason: Name
    priority: Annotated[int, Field(ge=0, le=1000)]
    sizing: SizingSpec | None = None
    fraction: FractionSpec | None = None


class StrategySpec(Spec):
    """A strategy state graph: states, guarded transitions, actions and reason codes."""

    name: Name
    initial_state: Name
    states: Annotated[tuple[StateSpec, ...], Field(min_length=2, max_length=64)]
    transitions: Annotated[tuple[TransitionSpec, ...], Field(min_length=1, max_length=512)]


# ---------------------------------------------------------------- execution
class SlippageSpec(Spec):
    """Spread- and size-dependent slippage, in bps of the fill bar's open, always against the order.

    ``bps = min(max_bps, half_spread_bps + impact_bps_per_pct_of_bar_volume * 100 * order_usd / bar_usd)``
    with ``order_usd = qty * open`` and ``bar_usd = open * volume`` of the bar the order fills on;
    a bar with zero volume pays ``max_bps``.
    """

    half_spread_bps: Bps
    impact_bps_per_pct_of_bar_volume: Annotated[float, Field(ge=0.0, le=100.0)]
    max_bps: Bps

    @model_validator(mode="after")
    def _cap_covers_spread(self) -> SlippageSpec:
        if self.max_bps < self.half_spread_bps:
            raise ValueError(f"max_bps must be >= half_spread_bps ({self.half_spread_bps}), was {self.max_bps}")
        return self


class ExecutionSpec(Spec):
    """Broker and cost model. Orders decided on a bar fill at the next bar's open."""

    broker: Literal["simulated"]
    initial_cash: Annotated[float, Field(ge=10.0, le=1e10)]
    taker_fee_bps: Bps
    slippage: SlippageSpec
    min_order_usd: Annotated[float, Field(ge=0.0, le=1e6)]


# ---------------------------------------------------------------- the run
class RunSpec(Spec):
    """One fully resolved, validated run: what every mode compiles into a pipeline."""

    name: Name
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)]
    mode: Mode
    universe: UniverseSpec
    data: DataSpec
    features: FeatureSetSpec
    model: ModelSpec
    training: TrainingSpec
    risk: RiskProfileSpec
    strategy: StrategySpec
    execution: ExecutionSpec

    @model_validator(mode="after")
    def _cross_group_rules(self) -> RunSpec:
        known = set(self.universe.symbols)
        for symbol in self.symbols:
            if symbol not in known:
                raise ValueError(f"'data.symbols' entry {symbol!r} is not in universe {self.universe.version}")
        for feature in self.features.features:
            if feature.symbol is not None and feature.symbol not in self.symbols:
                raise ValueError(
                    f"feature {feature.name!r} refers to symbol {feature.symbol!r}, which this run does not load"
                )
        return self

    @model_validator(mode="after")
    def _trailing_window_needs_lake(self) -> RunSpec:
        if self.training.schedule.window == "trailing" and self.data.kind != "lake":
            raise ValueError(
                "'training.schedule.window' 'trailing' needs 'data.kind' 'lake' (a lake a backfill or ingest "
                f"keeps growing), was data.kind {self.data.kind!r}"
            )
        return self

    @property
    def symbols(self) -> tuple[str, ...]:
        """Return the run's symbols, sorted."""
        if self.data.symbols is None:
            return self.universe.symbols
        return tuple(sorted(set(self.data.symbols)))
