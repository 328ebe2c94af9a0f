"""The engine: one event loop for every mode. It knows nothing of where events come from.

On each batch: fill pending orders at this bar's open, mark the portfolio, update the drawdown
halt, then evaluate the strategy graph for every symbol that has a bar, pass each resulting
intent through the risk gates, and record every decision; finally record a hold row for every
symbol whose hold reason changed. Everything is deterministic: symbols are in a fixed order,
transitions in priority order, ids are hashes of the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal

import numpy as np

from backend.audit.decisions import DecisionLog, clean_float
from backend.clock import SimulatedClock
from backend.config.canonical import canonical_json, sha256_hex
from backend.config.schema import ExecutionSpec, RiskProfileSpec
from backend.engine.economics import CostReason, EdgeBasis, Pricing, leg_cost, price
from backend.engine.events import BarBatch, MarketMatrix
from backend.errors import StrategyGraphError
from backend.strategy.graph import CompiledGraph, CompiledTransition
from backend.strategy.guards import env_key
from backend.strategy.reasons import BUYS, RECOVERY_REASONS, Action, StrategyReason
from execution.accounting.portfolio import QTY, Fill, Portfolio
from execution.brokers.simulated import MarketOrder, SimulatedBroker, SlippageModel
from execution.risk.gates import OrderIntent, PortfolioView, admit

POSITION_NAMES = ("pos.unrealized_return", "pos.exposure_pct")
PORTFOLIO_NAMES = ("portfolio.drawdown", "portfolio.exposure_pct", "portfolio.open_positions")
PREDICTION_NAMES = ("pred.p_up", "pred.expected_return")
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Stamp:
    """What every decision is stamped with: the spec, the profile version and the model version."""

    spec_hash: str
    profile_version: str
    model_version: str


@dataclass
class EngineState:
    """Mutable run state, kept in one place so a later runtime can persist and restore it.

    ``campaign`` holds each symbol's open campaign id (None outside a campaign); ``last_hold`` the
    index of the hold reason last logged for each symbol; ``flat_since_ms`` when the portfolio last
    became flat (no holding, no open order); ``reanchors`` the times the drawdown peak was re-anchored;
    ``high_water_mark`` the highest equity ever marked (never re-anchored: the capital floor hangs from it);
    ``last_buy_ms`` / ``last_sell_ms`` each symbol's last admitted buy / sell order time (-inf: never),
    which the minimum expected holding and the churn rule measure from (ADR-028).
    """

    state: np.ndarray
    marks: np.ndarray
    peak_equity: float
    campaign: list[str | None]
    last_hold: np.ndarray
    drawdown_halted: bool = False
    flat_since_ms: int | None = None
    profile_valid: bool = True
    orders: int = 0
    fills: list[Fill] = field(default_factory=list)
    reanchors: list[int] = field(default_factory=list)
    high_water_mark: float = 0.0
    last_buy_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    last_sell_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))


class Engine:
    """Evaluate the graph, admit intents through the gates, trade through the broker."""

    def __init__(
        self,
        symbols: tuple[str, ...],
        clusters: dict[str, str],
        ordermin: dict[str, float],
        graph: CompiledGraph,
        profile: RiskProfileSpec,
        execution: ExecutionSpec,
        stamp: Stamp,
        clock: SimulatedClock,
        edge: EdgeBasis,
    ) -> None:
        self.symbols = symbols
        self.edge = edge
        self.graph = graph
        self.execution = execution
        self.stamp = stamp
        self.clock = clock
        self.portfolio = Portfolio(symbols, execution.initial_cash)
        self.slippage = SlippageModel(**execution.slippage.model_dump())
        self.broker = SimulatedBroker(execution.taker_fee_bps, self.slippage)
        self.fee_rate = execution.taker_fee_bps / 10_000.0
        self.cluster_of = [clusters[s] for s in symbols]
        cluster_names = sorted(set(self.cluster_of))
        self.cluster_code = np.array([cluster_names.index(c) for c in self.cluster_of])
        self.cluster_names = cluster_names
        self.ordermin = [ordermin[s] for s in symbols]
        self.log = DecisionLog()
        first_of = {reason: graph.hold_reasons.index(reason) for reason in graph.hold_reasons}
        self.hold_code = np.array([first_of[reason] for reason in graph.hold_reasons])
        # The hold a symbol is in when a transition fired but its edge did not clear its cost: a code no state has.
        self.cost_hold_code = len(graph.hold_reasons)
        self.state = EngineState(
            state=np.full(len(symbols), graph.initial, dtype=np.int8),
            marks=np.zeros(len(symbols)),
            peak_equity=execution.initial_cash,
            high_water_mark=execution.initial_cash,
            campaign=[None] * len(symbols),
            last_hold=np.full(len(symbols), self.hold_code[graph.initial]),
            last_buy_ms=np.full(len(symbols), -np.inf),
            last_sell_ms=np.full(len(symbols), -np.inf),
        )
        names = set(graph.names)
        self.uses_position = any(n in names for n in POSITION_NAMES)
        self.uses_portfolio = any(n in names for n in PORTFOLIO_NAMES)
        self.pred_names = tuple(sorted({n.split(".", 1)[1] for n in names if n.startswith("pred.")} | {"p_up", "expected_return"}))
        self.transitions = graph.transitions
        self._static_source: MarketMatrix | None = None
        self._static: dict[int, np.ndarray] = {}
        self._exposure_now: np.ndarray | None = None
        self.activate_profile(profile, stamp.profile_version)

    # ------------------------------------------------------------------ profile
    def activate_profile(self, profile: RiskProfileSpec, version: str) -> None:
        """Use ``profile`` (validated by its schema) from the next event on; decisions record ``version``.

        Raises
        ------
        StrategyGraphError
            When a sizing or fraction parameter the graph reads is outside what its action allows
            (a scale-out fraction must be > 0 and < 1; a fraction of PV > 0 and <= 1); nothing changes.
        """
        params = profile.parameters()
        for t in self.transitions:
            if t.parameter is None:
                continue
            value = params[t.parameter]
            upper_ok = value < 1.0 if t.action is Action.SCALE_OUT else value <= 1.0
            if not (value > 0.0 and upper_ok):
                bound = "> 0 and < 1" if t.action is Action.SCALE_OUT else "> 0 and <= 1"
                raise StrategyGraphError(
                    f"graph {self.graph.name}, transition {t.name!r}: profile parameter {t.parameter!r} must be {bound} "
                    f"for action {t.action.value}, was {value}"
                )
        self.profile = profile
        self.profile_params = params
        self.profile_params_json = canonical_json(params)
        self.profile_env = {env_key(f"profile.{k}"): v for k, v in params.items()}
        self.stamp = replace(self.stamp, profile_version=version)
        self._static_source = None

    def set_profile_valid(self, valid: bool) -> None:
        """Tell the profile-validity gate whether the active profile is valid (e.g. not stale)."""
        self.state.profile_valid = valid

    # ------------------------------------------------------------------ per event
    def on_batch(self, batch: BarBatch) -> float:
        """Process one timestamp's bars; return the equity marked at this batch's closes."""
        self.clock.advance_to(batch.ts_ms)
        st = self.state
        if self.broker.pending:
            st.fills.extend(self.broker.on_bar(batch.ts_ms, batch.open, batch.has_bar, self.portfolio, batch.volume))
        np.copyto(st.marks, batch.close, where=batch.has_bar)
        equity = self._equity()
        drawdown = self._update_drawdown(batch, equity)
        self._exposure_now = None
        static = self._static_rows(batch)
        env: dict[str, object] | None = None
        taken = ~batch.has_bar
        blocked: dict[int, tuple[CompiledTransition, Pricing, dict[str, float | None]]] = {}
        populated = np.bincount(st.state, minlength=len(self.graph.states))
        for source, transitions in enumerate(self.graph.outgoing):
            if not populated[source]:
                continue
            members = st.state == source
            for transition in transitions:
                row = static.get(id(transition))
                if row is None:
                    env = env if env is not None else self._env(batch, equity, drawdown)
                    passed = transition.guard.evaluate(env)
                else:
                    passed = row[batch.index]
                fired = passed & members & ~taken
                if not fired.any():
                    continue
                env = env if env is not None else self._env(batch, equity, drawdown)
                for i in np.flatnonzero(fired):
                    # A transition whose edge does not clear its cost does not fire: lower priorities are tried.
                    taken[i] = self._decide(transition, int(i), batch, equity, drawdown, env, blocked)
        holds = self.hold_code[st.state]
        for i in blocked:
            holds[i] = self.cost_hold_code
        changed = ~taken & (holds != st.last_hold)
        if changed.any():
            for i in np.flatnonzero(changed):
                self._log_hold(int(i), batch, equity, blocked.get(int(i)))
            st.last_hold[changed] = holds[changed]
        return equity

    def _equity(self) -> float:
        return float(self.portfolio.cash) + float(self.portfolio.qty_f @ self.state.marks)

    def _update_drawdown(self, batch: BarBatch, equity: float) -> float:
        """Mark the peak, halt beyond the bound, resume by the profile's rule; return the drawdown.

        Resume rule: a halt lifts when the drawdown is back within ``drawdown_resume_pct`` (a
        recovery while still holding), or when the portfolio has been flat (no holding, no open
        order) for ``drawdown_reanchor_hours`` and the predicted edge has recovered (some symbol's
        prediction clears the profile's entry bars at this event): the peak is then re-anchored so
        that the drawdown reads ``drawdown_resume_pct`` (peak = equity / (1 - drawdown_resume_pct)),
        as though the portfolio had recovered to the resume bound; the next halt comes after a
        further loss of ``max_drawdown_pct - drawdown_resume_pct``.

        Capital floor: no re-anchor may put the next halt below ``high_water_mark x (1 -
        max_total_drawdown_pct)``. The re-anchored peak is raised so the next halt sits at the floor,
        and once equity is at or below the floor the halt lifts only by recovery, so repeated
        re-anchors can never compound into a loss beyond the profile's total bound.
        """
        st, profile = self.state, self.profile
        if equity > st.peak_equity:
            st.peak_equity = equity
        if equity > st.high_water_mark:
            st.high_water_mark = equity
        flat = not self.portfolio.qty_f.any() and not self.broker.pending
        if not flat:
            st.flat_since_ms = None
        elif st.flat_since_ms is None:
            st.flat_since_ms = batch.ts_ms
        drawdown = 1.0 - equity / st.peak_equity
        if st.drawdown_halted:
            if drawdown <= profile.drawdown_resume_pct:
                st.drawdown_halted = False
            elif (
                equity > (floor := st.high_water_mark * (1.0 - profile.max_total_drawdown_pct))
                and st.flat_since_ms is not None
                and batch.ts_ms - st.flat_since_ms >= profile.drawdown_reanchor_hours * HOUR_MS
                and self._edge_recovered(batch)
            ):
                # Re-anchor as though the portfolio had recovered to the resume bound: new risk resumes
                # with only (max_drawdown_pct - drawdown_resume_pct) of room before the next halt, and
                # never with room below the capital floor.
                st.peak_equity = max(equity / (1.0 - profile.drawdown_resume_pct), floor / (1.0 - profile.max_drawdown_pct))
                st.drawdown_halted = False
                st.reanchors.append(batch.ts_ms)
                drawdown = 1.0 - equity / st.peak_equity
        elif drawdown > profile.max_drawdown_pct:
            st.drawdown_halted = True
        return drawdown

    def _edge_recovered(self, batch: BarBatch) -> bool:
        with np.errstate(invalid="ignore"):
            clears = (batch.pred["p_up"] >= self.profile.entry_min_p_up) & (
                batch.pred["expected_return"] >= self.profile.entry_min_expected_return
            )
        return bool(clears.any())

    def _static_rows(self, batch: BarBatch) -> dict[int, np.ndarray]:
        """Return the state-independent guards evaluated over the batch's whole matrix (computed once)."""
        matrix = batch.matrix
        if matrix is None:
            return {}
        if self._static_source is not matrix:
            shape = matrix.has_bar.shape
            env: dict[str, object] = dict(self.profile_env)
            for name in self.pred_names:
                env[env_key(f"pred.{name}")] = matrix.pred.get(name, np.full(shape, np.nan))
            for name, values in matrix.feat.items():
                env[env_key(f"feat.{name}")] = values
            self._static = {
                id(t): t.guard.evaluate(env) for t in self.transitions if not t.guard.is_state_dependent
            }
            self._static_source = matrix
        return self._static

    def _env(self, batch: BarBatch, equity: float, drawdown: float) -> dict[str, object]:
        env: dict[str, object] = dict(self.profile_env)
        for name in self.pred_names:
            values = batch.pred.get(name)
            # A model output the bundle does not produce yet (e.g. p_recovery) is missing: NaN.
            env[env_key(f"pred.{name}")] = values if values is not None else np.full(len(self.symbols), np.nan)
        for name, values in batch.feat.items():
            env[env_key(f"feat.{name}")] = values
        if self.uses_position:
            value = self.portfolio.qty_f * self.state.marks
            with np.errstate(invalid="ignore", divide="ignore"):
                env["pos__unrealized_return"] = self.state.marks / self.portfolio.entry_price_f - 1.0
            env["pos__exposure_pct"] = value / equity
        if self.uses_portfolio:
            env["portfolio__drawdown"] = drawdown
            env["portfolio__exposure_pct"] = float(self.portfolio.qty_f @ self.state.marks) / equity
            env["portfolio__open_positions"] = float(np.count_nonzero(self.portfolio.qty_f))
        return env

    # ------------------------------------------------------------------ one decision
    def _exposure(self) -> np.ndarray:
        # Per symbol, at current marks: holdings plus open buy orders. Cached until an order is submitted.
        if self._exposure_now is None:
            marks = self.state.marks
            self._exposure_now = self.portfolio.qty_f * marks + self.broker.pending_notional(marks, self.portfolio.index)
        return self._exposure_now

    def _view(self, equity: float, drawdown: float, exposure: np.ndarray) -> PortfolioView:
        by_cluster = np.bincount(self.cluster_code, weights=exposure, minlength=len(self.cluster_names))
        pending_cost = float((exposure - self.portfolio.qty_f * self.state.marks).sum()) * (1.0 + self.fee_rate)
        return PortfolioView(
            equity=equity,
            cash_available=float(self.portfolio.cash) - pending_cost,
            open_positions=int(np.count_nonzero(exposure > 0)),
            total_exposure=float(exposure.sum()),
            cluster_exposure={name: float(by_cluster[k]) for k, name in enumerate(self.cluster_names)},
            drawdown_halted=self.state.drawdown_halted,
            drawdown=drawdown,
            profile_valid=self.state.profile_valid,
        )

    def _size(self, transition: CompiledTransition, i: int, price: float, equity: float, exposure: np.ndarray) -> Decimal:
        """Return the order quantity of ``transition`` for symbol ``i`` (0 when there is nothing to trade)."""
        action = transition.action
        if action in BUYS:
            # fraction_of_pv: bring the position (holding and open buys, at the mark) up to the target.
            target = self.profile_params[transition.parameter] * equity  # type: ignore[index]
            notional = max(target - float(exposure[i]), 0.0)
            return Decimal(repr(notional / price)).quantize(QTY, rounding=ROUND_DOWN)
        if action is Action.SCALE_OUT:
            fraction = Decimal(repr(self.profile_params[transition.parameter]))  # type: ignore[index]
            return (self.portfolio.qty[i] * fraction).quantize(QTY, rounding=ROUND_DOWN)
        if action is Action.EXIT:
            return self.portfolio.qty[i]
        return Decimal(0)

    def _price(self, transition: CompiledTransition, i: int, batch: BarBatch, qty: Decimal, ref_price: float) -> Pricing | None:
        """Price an order-carrying decision against its cost (module ``economics``); None when it is not priced."""
        action = transition.action
        ts = batch.ts_ms
        held_since_buy = ts - self.state.last_buy_ms[i] < self.edge.horizon_ms
        if action in BUYS:
            churn = ts - self.state.last_sell_ms[i] < self.edge.horizon_ms
            legs, margin, short = 2 + int(churn), self.profile.entry_edge_margin, CostReason.CHURN_BELOW_COST if churn else CostReason.EDGE_BELOW_COST
        elif transition.reason in RECOVERY_REASONS or (action is Action.EXIT and not held_since_buy):
            return None
        elif action is Action.SCALE_OUT:
            legs, margin = 2 + int(held_since_buy), self.profile.exit_edge_margin
            short = CostReason.INSIDE_MIN_HOLDING if held_since_buy else CostReason.EDGE_BELOW_COST
        else:  # an exit inside the minimum expected holding
            legs, margin, short = 2, self.profile.exit_edge_margin, CostReason.INSIDE_MIN_HOLDING
        notional = float(qty) * ref_price
        bar_usd = None if batch.volume is None else ref_price * float(batch.volume[i])
        leg = leg_cost(self.fee_rate, self.slippage, notional, bar_usd)
        # The out-of-fold calibrated expected return when the batch carries one (every run's matrix does).
        expected = batch.pred.get("edge", batch.pred["expected_return"])
        gross = float(expected[i]) + self.edge.label_cost
        return price(gross, action in BUYS, legs, leg, margin, short)

    def _decide(
        self,
        transition: CompiledTransition,
        i: int,
        batch: BarBatch,
        equity: float,
        drawdown: float,
        env: dict[str, object],
        blocked: dict[int, tuple[CompiledTransition, Pricing, dict[str, float | None]]],
    ) -> bool:
        """Decide ``transition`` for symbol ``i``; return False (nothing logged) when its edge does not clear its cost."""
        st = self.state
        symbol = self.symbols[i]
        ref_price = float(batch.close[i])
        action = transition.action
        exposure = self._exposure()
        qty = self._size(transition, i, ref_price, equity, exposure)
        buys = action in BUYS
        places_order = action is Action.ENTER or (action is not Action.NONE and qty > 0)
        pricing = self._price(transition, i, batch, qty, ref_price) if places_order else None
        inputs = {name: _value(env[env_key(name)], i) for name in transition.guard.names}
        if pricing is not None and not pricing.clears:
            blocked.setdefault(i, (transition, pricing, inputs))
            return False
        campaign = st.campaign[i]
        if action is Action.ENTER:
            # A campaign is identified by its symbol and first entry, not by the run's configuration,
            # so a replay under another profile matches campaigns that start at the same bar.
            campaign = sha256_hex(f"campaign:{symbol}:{batch.ts_ms}")[:16]
        order_id = None
        admitted, outcomes = True, ()
        # An entry always meets the gates (a zero size is refused at the minimums). Selling with nothing
        # held, or re-entering a position already at its target, moves the state without an order.
        if places_order:
            intent = OrderIntent(
                symbol, self.cluster_of[i], "buy" if buys else "sell", float(qty), ref_price, float(qty) * ref_price,
                reduces_risk=not buys, opens_position=bool(exposure[i] <= 0),
            )
            admitted, outcomes = admit(
                intent, self._view(equity, drawdown, exposure), self.profile, self.fee_rate,
                self.execution.min_order_usd, self.ordermin[i],
            )
            if admitted:
                order_id = sha256_hex(f"{self.stamp.spec_hash}:{batch.ts_ms}:{symbol}:{transition.name}:{len(self.log)}")[:24]
                self.broker.submit(MarketOrder(order_id, symbol, intent.side, qty, campaign))
                self._exposure_now = None
                st.orders += 1
                (st.last_buy_ms if buys else st.last_sell_ms)[i] = batch.ts_ms
        if not admitted:
            campaign = st.campaign[i]
        elif action is Action.ENTER:
            st.campaign[i] = campaign
        elif action is Action.EXIT:
            st.campaign[i] = None
        target = transition.target if admitted else transition.source
        st.state[i] = target
        self._append(
            batch, i, equity,
            transition=transition.name, action=action.value, state_from=self.graph.states[transition.source],
            state_to=self.graph.states[target], reason=transition.reason.value, admitted=admitted,
            gate_reason=outcomes[-1].reason.value if outcomes else "NO_ORDER",
            gates=canonical_json([o.as_record() for o in outcomes]), inputs=canonical_json(inputs), qty=float(qty),
            order_id=order_id, campaign_id=campaign, **_pricing_fields(pricing),
        )  # fmt: skip
        return True

    def _log_hold(
        self, i: int, batch: BarBatch, equity: float, blocked: tuple[CompiledTransition, Pricing, dict[str, float | None]] | None
    ) -> None:
        """Log a hold row; a hold because a fired transition's edge did not clear its cost names that transition."""
        name = self.graph.states[self.state.state[i]]
        if blocked is None:
            transition, reason, inputs, pricing = "", self.graph.hold_reasons[self.state.state[i]], "{}", None
        else:
            transition, reason, inputs, pricing = blocked[0].name, StrategyReason.HOLD_EDGE_BELOW_COST, canonical_json(blocked[2]), blocked[1]
        self._append(
            batch, i, equity,
            transition=transition, action=Action.HOLD.value, state_from=name, state_to=name,
            reason=reason.value, admitted=True, gate_reason="NO_ORDER",
            gates="[]", inputs=inputs, qty=0.0, order_id=None, campaign_id=self.state.campaign[i],
            **_pricing_fields(pricing),
        )  # fmt: skip

    def _append(self, batch: BarBatch, i: int, equity: float, **fields: object) -> None:
        self.log.append(
            {
                "ts": batch.ts_ms,
                "symbol": self.symbols[i],
                **fields,
                "p_up": clean_float(batch.pred["p_up"][i]),
                "expected_return": clean_float(batch.pred["expected_return"][i]),
                "ref_price": float(batch.close[i]),
                "equity": equity,
                "profile_version": self.stamp.profile_version,
                "profile_params": self.profile_params_json,
                "model_version": self.stamp.model_version,
                "spec_hash": self.stamp.spec_hash,
            }
        )


def _pricing_fields(pricing: Pricing | None) -> dict[str, object]:
    if pricing is None:
        return {"edge": None, "cost": None, "margin": None, "cost_reason": CostReason.NOT_PRICED.value}
    return {
        "edge": clean_float(pricing.edge), "cost": pricing.cost, "margin": pricing.margin, "cost_reason": pricing.reason.value,
    }  # fmt: skip


def _value(value: object, i: int) -> float | None:
    if isinstance(value, np.ndarray):
        return clean_float(value[i])
    return clean_float(value)  # type: ignore[arg-type]
