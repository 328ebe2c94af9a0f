"""Quiet timestamps: where no symbol can change state or log a row, found for many timestamps at once.

A timestamp is *quiet* under the engine's current state when, for every symbol with a bar, no outgoing
transition of its state can take effect and its hold reason is the one it last logged; when no order is
pending; and when the drawdown halt cannot start, lift or re-anchor. On a quiet timestamp the engine
only marks: the last closes, the equity, the peaks and the flat clock. :class:`QuietScan` finds the
first non-quiet timestamp of a window of rows with numpy and applies the quiet rows before it in bulk;
every other timestamp goes through :meth:`Engine.on_batch`, the one place decisions are made (ADR-053).

The scan is conservative: it may call a timestamp busy that turns out quiet (``on_batch`` then does
nothing more than mark), never the reverse. The one transition it proves ineffective without running
it is an entry whose calibrated edge cannot clear even the cheapest round trip (two legs at the fee
plus the half-spread, which bound every leg from below: impact is never negative), so the engine's
pricing refuses it whatever the order's size; that symbol then only keeps (or starts) its cost hold.
"""

from __future__ import annotations

import numpy as np

from backend.engine.core import Engine
from backend.engine.events import MarketMatrix
from backend.strategy.guards import env_key
from backend.strategy.reasons import Action

HOUR_MS = 3_600_000
# Per-cell outcome of a symbol's state's outgoing transitions at one timestamp, precomputed where guards
# are state-independent: none passes, only entries that cannot clear their cost pass, one may take effect.
NO_PASS, BLOCKED_ONLY, LIVE = 0, 1, 2


def forward_marks(matrix: MarketMatrix, initial: np.ndarray) -> np.ndarray:
    """Return each timestamp's marks after its bars: the last close seen per symbol (``initial`` before any)."""
    rows = np.arange(len(matrix.ts_ms))[:, None]
    last = np.maximum.accumulate(np.where(matrix.has_bar, rows, -1), axis=0)
    seen = matrix.close[np.maximum(last, 0), np.arange(len(matrix.symbols))]
    return np.where(last >= 0, seen, initial)


class QuietScan:
    """Precomputed outcomes of the state-independent guards, and the scan of a window of timestamps."""

    def __init__(self, engine: Engine, matrix: MarketMatrix) -> None:
        self.engine = engine
        self.matrix = matrix
        self.marks = forward_marks(matrix, engine.state.marks)
        self.columns = np.arange(len(matrix.symbols))
        graph, profile = engine.graph, engine.profile
        static = engine._static_rows(matrix.batch(0))
        expected = matrix.pred.get("edge", matrix.pred["expected_return"])
        # The cheapest entry: two legs, each at least the fee plus the half-spread (the slippage floor).
        floor = 2 * (engine.fee_rate + engine.slippage.half_spread_bps / 10_000.0) + profile.entry_edge_margin
        with np.errstate(invalid="ignore"):
            cannot_clear = ~(expected + engine.edge.label_cost > floor)
        shape = matrix.has_bar.shape
        codes = np.zeros((shape[0], len(graph.states), shape[1]), dtype=np.int8)
        self.dynamic: list[tuple[int, tuple]] = []
        for source, transitions in enumerate(graph.outgoing):
            live = np.zeros(shape, dtype=bool)
            blocked = np.zeros(shape, dtype=bool)
            for transition in transitions:
                row = static.get(id(transition))
                if row is None:
                    continue
                if transition.action is Action.ENTER:
                    blocked |= row & cannot_clear
                    live |= row & ~cannot_clear
                else:
                    live |= row
            codes[:, source] = np.where(live, LIVE, np.where(blocked, BLOCKED_ONLY, NO_PASS))
            dependent = tuple(t for t in transitions if id(t) not in static)
            if dependent:
                self.dynamic.append((source, dependent))
        self.codes = codes
        with np.errstate(invalid="ignore"):
            self.edge_recovered = (
                (matrix.pred["p_up"] >= profile.entry_min_p_up) & (matrix.pred["expected_return"] >= profile.entry_min_expected_return)
            ).any(axis=1)

    def quiet_rows(self, t0: int, t1: int, equity_out: np.ndarray, exposure_out: np.ndarray, states_out: np.ndarray) -> int:
        """Apply the quiet timestamps from ``t0`` on (before ``t1``) to the engine; return how many there were.

        The caller runs the engine's ``on_batch`` on the timestamp after them (when it is before ``t1``).
        Nothing may be pending at the broker.
        """
        engine, matrix = self.engine, self.matrix
        st, portfolio, profile = engine.state, engine.portfolio, engine.profile
        marks = self.marks[t0:t1]
        qty = portfolio.qty_f
        flat = not qty.any()
        # The same dot product the engine takes per batch, row by row, so the sums are bit-identical.
        dots = np.zeros(t1 - t0) if flat else np.array([float(qty @ row) for row in marks])
        equity = float(portfolio.cash) + dots
        peaks = np.fmax.accumulate(np.concatenate(([st.peak_equity], equity)))[1:]
        drawdown = 1.0 - equity / peaks
        ts = matrix.ts_ms[t0:t1]
        flat_since = (st.flat_since_ms if st.flat_since_ms is not None else int(ts[0])) if flat else None
        if not st.drawdown_halted:
            busy = drawdown > profile.max_drawdown_pct
        else:
            busy = drawdown <= profile.drawdown_resume_pct
            if flat_since is not None:
                waited = ts - flat_since >= profile.drawdown_reanchor_hours * HOUR_MS
                busy |= waited & self.edge_recovered[t0:t1]
        state = st.state
        codes = self.codes[t0:t1][:, state, self.columns]
        for source, transitions in self.dynamic:
            members = state == source
            if not members.any():
                continue
            env = self._env(t0, t1, marks, equity, drawdown, dots)
            for transition in transitions:
                passed = transition.guard.evaluate(env) & members
                codes = np.where(passed, LIVE, codes)
        holds = np.where(codes == BLOCKED_ONLY, engine.cost_hold_code, engine.hold_code[state])
        cells = matrix.has_bar[t0:t1] & ((codes == LIVE) | (holds != st.last_hold))
        busy |= cells.any(axis=1)
        n = int(np.argmax(busy)) if busy.any() else t1 - t0
        if n == 0:
            return 0
        equity_out[t0 : t0 + n] = equity[:n]
        exposure_out[t0 : t0 + n] = dots[:n]
        states_out[t0 : t0 + n] = state
        np.copyto(st.marks, marks[n - 1])
        st.peak_equity = float(peaks[n - 1])
        st.high_water_mark = float(np.fmax.reduce(equity[:n], initial=st.high_water_mark))
        st.flat_since_ms = flat_since
        engine.clock.advance_to(int(ts[n - 1]))
        return n

    def _env(self, t0: int, t1: int, marks: np.ndarray, equity: np.ndarray, drawdown: np.ndarray, dots: np.ndarray) -> dict[str, object]:
        # Engine._env over a window: the same elementwise formulas, one row per timestamp.
        engine, matrix = self.engine, self.matrix
        env: dict[str, object] = dict(engine.profile_env)
        for name in engine.pred_names:
            values = matrix.pred.get(name)
            env[env_key(f"pred.{name}")] = values[t0:t1] if values is not None else np.full(marks.shape, np.nan)
        for name, values in matrix.feat.items():
            env[env_key(f"feat.{name}")] = values[t0:t1]
        column = equity[:, None]
        if engine.uses_position:
            value = engine.portfolio.qty_f * marks
            with np.errstate(invalid="ignore", divide="ignore"):
                env["pos__unrealized_return"] = marks / engine.portfolio.entry_price_f - 1.0
            env["pos__exposure_pct"] = value / column
        if engine.uses_portfolio:
            env["portfolio__drawdown"] = drawdown[:, None]
            env["portfolio__exposure_pct"] = dots[:, None] / column
            env["portfolio__open_positions"] = float(np.count_nonzero(engine.portfolio.qty_f))
        return env
