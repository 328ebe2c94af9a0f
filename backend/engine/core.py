"""The engine: one event loop for every mode. It knows nothing of where events come from.

On each batch: fill pending orders at this bar's open, mark the portfolio, then evaluate the
strategy graph for every symbol that has a bar, pass each resulting intent through the risk
gates, and record every decision. Everything is deterministic: symbols are in a fixed order,
transitions in priority order, ids are hashes of the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

import numpy as np

from backend.audit.decisions import DecisionLog, clean_float
from backend.config.canonical import canonical_json, sha256_hex
from backend.config.schema import ExecutionSpec, RiskProfileSpec
from backend.engine.clock import SimulatedClock
from backend.engine.events import BarBatch
from backend.strategy.graph import CompiledGraph, CompiledTransition
from backend.strategy.guards import env_key
from backend.strategy.reasons import Action
from execution.accounting.portfolio import QTY, Fill, Portfolio
from execution.brokers.simulated import MarketOrder, SimulatedBroker
from execution.risk.gates import OrderIntent, PortfolioView, admit

POSITION_NAMES = ("pos.unrealized_return", "pos.exposure_pct")
PORTFOLIO_NAMES = ("portfolio.drawdown", "portfolio.exposure_pct", "portfolio.open_positions")
PREDICTION_NAMES = ("pred.p_up", "pred.expected_return")


@dataclass(frozen=True)
class Stamp:
    """What every decision is stamped with: the spec, the profile version and the model version."""

    spec_hash: str
    profile_version: str
    model_version: str


@dataclass
class EngineState:
    """Mutable run state, kept in one place so a later runtime can persist and restore it."""

    state: np.ndarray
    marks: np.ndarray
    peak_equity: float
    drawdown_halted: bool = False
    orders: int = 0
    fills: list[Fill] = field(default_factory=list)


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
    ) -> None:
        self.symbols = symbols
        self.graph = graph
        self.profile = profile
        self.execution = execution
        self.stamp = stamp
        self.clock = clock
        self.portfolio = Portfolio(symbols, execution.initial_cash)
        self.broker = SimulatedBroker(execution.taker_fee_bps, execution.slippage_bps)
        self.fee_rate = execution.taker_fee_bps / 10_000.0
        self.cluster_of = [clusters[s] for s in symbols]
        cluster_names = sorted(set(self.cluster_of))
        self.cluster_code = np.array([cluster_names.index(c) for c in self.cluster_of])
        self.cluster_names = cluster_names
        self.ordermin = [ordermin[s] for s in symbols]
        self.log = DecisionLog()
        self.state = EngineState(
            state=np.full(len(symbols), graph.initial, dtype=np.int8),
            marks=np.zeros(len(symbols)),
            peak_equity=execution.initial_cash,
        )
        self.profile_params = profile.parameters()
        self.profile_params_json = canonical_json(self.profile_params)
        self.profile_env = {env_key(f"profile.{k}"): v for k, v in self.profile_params.items()}
        names = set(graph.names)
        self.uses_position = any(n in names for n in POSITION_NAMES)
        self.uses_portfolio = any(n in names for n in PORTFOLIO_NAMES)

    # ------------------------------------------------------------------ per event
    def on_batch(self, batch: BarBatch) -> float:
        """Process one timestamp's bars; return the equity marked at this batch's closes."""
        self.clock.advance_to(batch.ts_ms)
        st = self.state
        if self.broker.pending:
            st.fills.extend(self.broker.on_bar(batch.ts_ms, batch.open, batch.has_bar, self.portfolio))
        np.copyto(st.marks, batch.close, where=batch.has_bar)
        equity = self._equity()
        if equity > st.peak_equity:
            st.peak_equity = equity
        drawdown = 1.0 - equity / st.peak_equity
        if drawdown > self.profile.max_drawdown_pct:
            st.drawdown_halted = True
        elif st.drawdown_halted and drawdown <= self.profile.drawdown_resume_pct:
            st.drawdown_halted = False
        env = self._env(batch, equity, drawdown)
        taken = ~batch.has_bar
        for source, transitions in enumerate(self.graph.outgoing):
            members = st.state == source
            if not members.any():
                continue
            for transition in transitions:
                fired = transition.guard.evaluate(env) & members & ~taken
                if not fired.any():
                    continue
                taken = taken | fired
                for i in np.flatnonzero(fired):
                    self._decide(transition, int(i), batch, equity, drawdown, env)
        return equity

    def _equity(self) -> float:
        return float(self.portfolio.cash) + float(self.portfolio.qty_f @ self.state.marks)

    def _env(self, batch: BarBatch, equity: float, drawdown: float) -> dict[str, object]:
        env: dict[str, object] = dict(self.profile_env)
        for name, values in batch.pred.items():
            env[env_key(f"pred.{name}")] = values
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
    def _view(self, equity: float, drawdown: float) -> PortfolioView:
        marks = self.state.marks
        pending = self.broker.pending_notional(marks, self.portfolio.index)
        exposure = self.portfolio.qty_f * marks + pending
        by_cluster = np.bincount(self.cluster_code, weights=exposure, minlength=len(self.cluster_names))
        pending_cost = float(pending.sum()) * (1.0 + self.fee_rate)
        return PortfolioView(
            equity=equity,
            cash_available=float(self.portfolio.cash) - pending_cost,
            open_positions=int(np.count_nonzero(exposure > 0)),
            total_exposure=float(exposure.sum()),
            cluster_exposure={name: float(by_cluster[k]) for k, name in enumerate(self.cluster_names)},
            drawdown_halted=self.state.drawdown_halted,
            drawdown=drawdown,
            profile_valid=True,
        )

    def _decide(
        self, transition: CompiledTransition, i: int, batch: BarBatch, equity: float, drawdown: float, env: dict[str, object]
    ) -> None:
        symbol = self.symbols[i]
        price = float(batch.close[i])
        if transition.action is Action.ENTER:
            notional = self.profile.position_size_pct * equity
            qty = Decimal(repr(notional / price)).quantize(QTY, rounding=ROUND_DOWN)
            side, reduces = "buy", False
        elif transition.action is Action.EXIT:
            qty = self.portfolio.qty[i]
            side, reduces = "sell", True
        else:
            qty, side, reduces = Decimal(0), "none", True
        order_id = None
        admitted, outcomes = True, ()
        # An exit with nothing held (the entry's fill shrank to zero) moves the state without an order.
        if side != "none" and qty > 0:
            intent = OrderIntent(symbol, self.cluster_of[i], side, float(qty), price, float(qty) * price, reduces)
            admitted, outcomes = admit(
                intent, self._view(equity, drawdown), self.profile, self.fee_rate, self.execution.min_order_usd, self.ordermin[i]
            )
            if admitted:
                order_id = sha256_hex(f"{self.stamp.spec_hash}:{batch.ts_ms}:{symbol}:{transition.name}:{len(self.log)}")[:24]
                self.broker.submit(MarketOrder(order_id, symbol, side, qty))
                self.state.orders += 1
        target = transition.target if admitted else transition.source
        self.state.state[i] = target
        inputs = {name: _value(env[env_key(name)], i) for name in transition.guard.names}
        self.log.append(
            {
                "ts": batch.ts_ms,
                "symbol": symbol,
                "transition": transition.name,
                "action": transition.action.value,
                "state_from": self.graph.states[transition.source],
                "state_to": self.graph.states[target],
                "reason": transition.reason.value,
                "admitted": admitted,
                "gate_reason": outcomes[-1].reason.value if outcomes else "NO_ORDER",
                "gates": canonical_json([o.as_record() for o in outcomes]),
                "p_up": clean_float(batch.pred["p_up"][i]),
                "expected_return": clean_float(batch.pred["expected_return"][i]),
                "inputs": canonical_json(inputs),
                "qty": float(qty),
                "ref_price": price,
                "equity": equity,
                "order_id": order_id,
                "profile_version": self.stamp.profile_version,
                "profile_params": self.profile_params_json,
                "model_version": self.stamp.model_version,
                "spec_hash": self.stamp.spec_hash,
            }
        )


def _value(value: object, i: int) -> float | None:
    if isinstance(value, np.ndarray):
        return clean_float(value[i])
    return clean_float(value)  # type: ignore[arg-type]
