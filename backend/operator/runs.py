"""Runs and sessions of a home, read for operators: listing, decision queries, holdings.

The control plane's read side over the files the CLI writes: backtest run folders
(``$ACTS_HOME/runs/<id>/``, see ``backend/runs/backtest.py``) and paper sessions
(``$ACTS_HOME/paper/<name>/journal.sqlite``, see ``backend/runtime/paper.py``). Nothing here writes.

Decision queries scan the run's ``decisions.parquet`` lazily with polars: filters and the page's
slice are pushed into the scan, so a page of a 3-million-row log reads only what it shows. The
filter options (symbols, kinds, reason codes) are computed once per file version and cached.
A paper session's decisions come from its journal's ``paper_decisions`` table, which the runtime
commits with every event, so they are current while the session runs.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from backend.audit.decisions import COLUMNS, DECISION_SCHEMA
from backend.errors import ControlError
from backend.home import Home

PAPER_JOURNAL = "journal.sqlite"
# The runtime's modes, each with its sessions' folder under the home (``acts run --mode``).
SESSION_MODES = ("paper", "shadow", "live")
PAGE_SIZE_MAX = 500
# The columns a decisions page shows, in order; the rest stay in the file.
PAGE_COLUMNS = (
    "seq", "ts", "symbol", "action", "reason", "p_up", "expected_return", "p_recovery", "edge", "cost", "margin",
    "cost_reason", "admitted", "gate_reason", "state_from", "state_to", "transition", "qty", "ref_price", "equity", "profile_version", "model_version",
    "profile_params", "gates", "inputs",
)  # fmt: skip
FACETS = ("symbol", "action", "reason")
# What each marker on a price chart means: the decision's action, for admitted decisions that sent an order.
MARKER_KINDS = {"enter": "entry", "scale_out": "partial exit", "reenter": "re-entry", "exit": "exit"}


class RunKind(str, enum.Enum):
    """Where a run's records come from."""

    BACKTEST = "backtest"
    PAPER = "paper"


@dataclass(frozen=True)
class RunRef:
    """A run or session of the home: ``key`` (``runs/<id>`` or ``paper/<name>``) names it in the console."""

    key: str
    kind: RunKind
    path: Path
    name: str
    mode: str
    summary: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """A one-line description for pickers."""
        return f"{self.key} ({self.kind.value}, {self.name})"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def list_runs(home: Home) -> list[RunRef]:
    """Every runtime session (paper, shadow, live; by name), then every finished backtest run, newest first.

    A session is a state folder of ``acts run`` (``$ACTS_HOME/<mode>/<name>/journal.sqlite``); run ids are timestamps.
    """
    found: list[RunRef] = []
    for mode in SESSION_MODES:
        sessions = home.root / mode
        if sessions.is_dir():
            for folder in sorted(sessions.iterdir()):
                if (folder / PAPER_JOURNAL).is_file():
                    found.append(RunRef(f"{mode}/{folder.name}", RunKind.PAPER, folder, folder.name, mode))
    if home.runs.is_dir():
        for folder in sorted(home.runs.iterdir(), reverse=True):
            if (folder / "summary.json").is_file():
                summary = _read_json(folder / "summary.json")
                found.append(
                    RunRef(f"runs/{folder.name}", RunKind.BACKTEST, folder, str(summary.get("run", folder.name)),
                           str(summary.get("mode", "backtest")), summary)
                )  # fmt: skip
    return found


def find_run(home: Home, key: str) -> RunRef:
    """Return the run named ``key``; refuse an unknown key, naming it and what exists."""
    runs = list_runs(home)
    for run in runs:
        if run.key == key:
            return run
    known = ", ".join(r.key for r in runs) or "none"
    raise ControlError(f"'run' must be one of the home's runs ({known}), was {key!r}")


# ---------------------------------------------------------------- paper sessions
def _connect_read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    conn.row_factory = sqlite3.Row
    return conn


def paper_checkpoint(run: RunRef) -> dict[str, Any] | None:
    """The session's last committed checkpoint (``next_index``, ``ts``, ``state``), or None before the first event."""
    conn = _connect_read_only(run.path / PAPER_JOURNAL)
    try:
        row = conn.execute("SELECT next_index, ts, state FROM paper_checkpoint WHERE id = 1").fetchone()
        identity = conn.execute("SELECT identity FROM paper_meta WHERE id = 1").fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    return {"next_index": row["next_index"], "ts": row["ts"], "state": json.loads(row["state"]),
            "identity": json.loads(identity["identity"])}  # fmt: skip


def session_feed(run: RunRef) -> str:
    """What a session plays: ``kraken`` (Kraken's live feed) or ``recorded`` (a recorded run's bars)."""
    conn = _connect_read_only(run.path / PAPER_JOURNAL)
    try:
        row = conn.execute("SELECT identity FROM paper_meta WHERE id = 1").fetchone()
    finally:
        conn.close()
    identity = json.loads(row["identity"]) if row is not None else {}
    return str(identity.get("source", "recorded"))


def _paper_decisions(run: RunRef) -> pl.DataFrame:
    conn = _connect_read_only(run.path / PAPER_JOURNAL)
    try:
        rows = [json.loads(r["row"]) for r in conn.execute("SELECT row FROM paper_decisions ORDER BY seq")]
    finally:
        conn.close()
    if not rows:
        return pl.DataFrame(schema=DECISION_SCHEMA)
    return pl.DataFrame([{k: row.get(k) for k in COLUMNS} for row in rows], schema=DECISION_SCHEMA)


def _paper_fills(run: RunRef) -> pl.DataFrame:
    conn = _connect_read_only(run.path / PAPER_JOURNAL)
    try:
        rows = [dict(r) for r in conn.execute(
            "SELECT order_id, ts, symbol, side, qty, price, fee, campaign_id FROM paper_fills ORDER BY seq"
        )]  # fmt: skip
    finally:
        conn.close()
    schema = {"order_id": pl.String, "ts": pl.Int64, "symbol": pl.String, "side": pl.String, "qty": pl.String,
              "price": pl.String, "fee": pl.String, "campaign_id": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def recorded_run_of(home: Home, run: RunRef) -> RunRef | None:
    """The backtest run a paper session plays (same spec hash), if it is in this home."""
    checkpoint = paper_checkpoint(run)
    if checkpoint is None:
        return None
    for other in list_runs(home):
        if other.kind is RunKind.BACKTEST and other.summary.get("spec_hash") == checkpoint["identity"]["spec_hash"]:
            return other
    return None


# ---------------------------------------------------------------- decisions
@dataclass(frozen=True)
class DecisionQuery:
    """Which decisions to show: filters (empty = all) and the page (0-based) of ``page_size`` rows."""

    symbols: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    admitted_only: bool = False
    page: int = 0
    page_size: int = 50

    def checked(self) -> DecisionQuery:
        """Return the query, or refuse a page or page size out of bounds, naming the field, bound and value."""
        if not 1 <= self.page_size <= PAGE_SIZE_MAX:
            raise ControlError(f"'page_size' must be 1 to {PAGE_SIZE_MAX}, was {self.page_size}")
        if self.page < 0:
            raise ControlError(f"'page' must be >= 0, was {self.page}")
        return self


@dataclass(frozen=True)
class DecisionPage:
    """One page of a filtered decision log: the rows, the filtered total and the page count."""

    rows: pl.DataFrame
    total: int
    page: int
    pages: int


def _scan(run: RunRef) -> pl.LazyFrame:
    if run.kind is RunKind.PAPER:
        return _paper_decisions(run).lazy()
    path = run.path / "decisions.parquet"
    if not path.is_file():
        raise ControlError(f"run {run.key} has no decision log ({path} is missing)")
    return pl.scan_parquet(path)


def _version(run: RunRef) -> tuple[str, int, int]:
    path = run.path / (PAPER_JOURNAL if run.kind is RunKind.PAPER else "decisions.parquet")
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=16)
def _facets_cached(run: RunRef, version: tuple[str, int, int]) -> dict[str, tuple[str, ...]]:
    frame = _scan(run).select(
        *(pl.col(name).drop_nulls().unique().sort().implode() for name in FACETS)
    ).collect()
    return {name: tuple(frame[name][0].to_list()) for name in FACETS}


def decision_facets(run: RunRef) -> dict[str, tuple[str, ...]]:
    """The values each filter can take (symbols, decision kinds, reason codes), sorted; cached per file version."""
    return _facets_cached(run, _version(run))


def _filtered(run: RunRef, query: DecisionQuery) -> pl.LazyFrame:
    lazy = _scan(run)
    for name, values in (("symbol", query.symbols), ("action", query.kinds), ("reason", query.reasons)):
        if values:
            lazy = lazy.filter(pl.col(name).is_in(list(values)))
    if query.admitted_only:
        lazy = lazy.filter(pl.col("admitted"))
    return lazy


def query_decisions(run: RunRef, query: DecisionQuery) -> DecisionPage:
    """Return one page of ``run``'s decisions under ``query``'s filters, in ``seq`` order.

    Two passes over the file: the filter columns alone give the total and the page's ``seq`` values,
    then only the row groups holding those values are read for the shown columns (the wide JSON
    columns of a 3-million-row log are never read whole). ``p_recovery`` is read from the decision's
    guard inputs (``pred.p_recovery``) when the guard used it. A page past the end is clamped to the last page.
    """
    query = query.checked()
    lazy = _filtered(run, query)
    total = int(lazy.select(pl.len()).collect().item())
    pages = max(1, -(-total // query.page_size))
    page = min(query.page, pages - 1)
    seqs = lazy.select("seq").slice(page * query.page_size, query.page_size).collect()["seq"]
    wanted = pl.col("seq").is_in(seqs.implode())
    if not seqs.is_empty():
        wanted = wanted & pl.col("seq").is_between(seqs.min(), seqs.max())
    rows = (
        _scan(run)
        .filter(wanted)
        .with_columns(pl.col("inputs").str.json_path_match("$['pred.p_recovery']").cast(pl.Float64).alias("p_recovery"))
        .select(PAGE_COLUMNS)
        .sort("seq")
        .collect()
    )
    return DecisionPage(rows, total, page, pages)


def gate_outcomes(gates_json: str) -> list[dict[str, Any]]:
    """The gate outcomes recorded with a decision (gate, passed, reason, value, bound), in chain order."""
    order = ("gate", "passed", "reason", "value", "bound")
    return [{k: outcome[k] for k in order} for outcome in json.loads(gates_json)] if gates_json else []


# ---------------------------------------------------------------- holdings
@dataclass(frozen=True)
class Holdings:
    """Positions, cash, equity and the series to chart, for one run or session."""

    positions: pl.DataFrame
    cash: float
    equity: float
    equity_curve: pl.DataFrame
    prices: pl.DataFrame | None
    markers: pl.DataFrame
    note: str


def positions_from_fills(fills: pl.DataFrame, marks: dict[str, float]) -> pl.DataFrame:
    """Open positions by symbol from a fill ledger, valued at ``marks``: quantity, average cost, value, unrealised PnL."""
    qty: dict[str, Decimal] = {}
    cost: dict[str, Decimal] = {}
    for row in fills.sort("ts").iter_rows(named=True):
        symbol, q, price = row["symbol"], Decimal(row["qty"]), Decimal(row["price"])
        held, basis = qty.get(symbol, Decimal(0)), cost.get(symbol, Decimal(0))
        if row["side"] == "buy":
            qty[symbol], cost[symbol] = held + q, basis + q * price
        else:
            remaining = held - q
            cost[symbol] = basis * remaining / held if held > 0 else Decimal(0)
            qty[symbol] = remaining
    records = []
    for symbol in sorted(qty):
        if qty[symbol] <= 0:
            continue
        q, mark = float(qty[symbol]), float(marks.get(symbol, float("nan")))
        avg = float(cost[symbol] / qty[symbol])
        records.append({"symbol": symbol, "qty": q, "avg_cost": avg, "mark": mark, "value": q * mark,
                        "unrealised": q * (mark - avg)})  # fmt: skip
    schema = {"symbol": pl.String, "qty": pl.Float64, "avg_cost": pl.Float64, "mark": pl.Float64,
              "value": pl.Float64, "unrealised": pl.Float64}  # fmt: skip
    return pl.DataFrame(records, schema=schema)


def _markers(decisions: pl.DataFrame) -> pl.DataFrame:
    return (
        decisions.filter(pl.col("admitted") & pl.col("order_id").is_not_null() & pl.col("action").is_in(list(MARKER_KINDS)))
        .select("ts", "symbol", pl.col("ref_price").alias("price"),
                pl.col("action").replace_strict(MARKER_KINDS).alias("kind"), "reason")
        .sort("ts", "symbol")
    )  # fmt: skip


def _last_closes(bars: pl.DataFrame) -> dict[str, float]:
    last = bars.sort("ts").group_by("symbol").agg(pl.col("close").last())
    return dict(zip(last["symbol"].to_list(), last["close"].to_list(), strict=True))


def holdings(home: Home, run: RunRef) -> Holdings:
    """Positions, cash, equity, the equity curve, prices and trade markers of ``run``.

    A backtest run gives its final state; a paper session its last checkpoint, with prices from the
    recorded run it plays when that run is in the home.
    """
    if run.kind is RunKind.BACKTEST:
        bars = pl.read_parquet(run.path / "inputs.parquet")
        curve = pl.read_parquet(run.path / "equity.parquet")
        fills = pl.read_parquet(run.path / "fills.parquet")
        decisions = pl.read_parquet(run.path / "decisions.parquet")
        positions = positions_from_fills(fills, _last_closes(bars))
        cash = float(run.summary["cash"])
        return Holdings(positions, cash, float(curve["equity"][-1]), curve, bars.select("ts", "symbol", "close"),
                        _markers(decisions), f"final state of backtest {run.key}")  # fmt: skip
    checkpoint = paper_checkpoint(run)
    decisions = _paper_decisions(run)
    curve = decisions.group_by("ts").agg(pl.col("equity").last()).sort("ts")
    recorded = recorded_run_of(home, run)
    bars = None if recorded is None else pl.read_parquet(recorded.path / "inputs.parquet")
    if checkpoint is None:
        empty = positions_from_fills(_paper_fills(run), {})
        return Holdings(empty, 0.0, 0.0, curve, None, _markers(decisions), f"paper session {run.name} has processed no event yet")
    state = checkpoint["state"]
    marks = {} if bars is None else dict(zip(sorted(bars["symbol"].unique().to_list()), state["marks"], strict=True))
    positions = positions_from_fills(_paper_fills(run), marks)
    cash = float(Decimal(state["cash"]))
    equity = cash + float(positions["value"].fill_nan(0.0).sum())
    prices = None if bars is None else bars.filter(pl.col("ts") <= checkpoint["ts"]).select("ts", "symbol", "close")
    note = f"paper session {run.name} at event {checkpoint['next_index']}"
    if bars is None:
        note += " (its recorded run is not in this home: no prices, positions unvalued)"
    return Holdings(positions, cash, equity, curve, prices, _markers(decisions), note)


def symbols_of(holding: Holdings) -> Sequence[str]:
    """The symbols a price chart can show, sorted."""
    if holding.prices is None:
        return ()
    return tuple(sorted(holding.prices["symbol"].unique().to_list()))
