"""Config-diff replay audit: what another profile or config would have done with a recorded run.

Two ways to get a pair of runs over the same inputs:

- :func:`audit_replay` replays a run folder under overrides (``--set key=value``, a whole profile
  from a file or from the profile store). :func:`backend.runs.replay.replay` verifies the folder
  (spec, inputs, model and decision log against their hashes) and checks the overrides; the
  replay is then executed once more through the same ``execute`` to keep its ledger and equity.
- :func:`audit_runs` compares two finished run folders whose recorded inputs hash the same.

The report (:class:`AuditDiff`) holds (a) the config diff, (b) the first diverging decision (seq
and time, by :func:`backend.runs.replay.first_divergence`), (c) every decision that changed,
matched by ``(ts, symbol, transition)`` (with an occurrence number should a key repeat): removed,
added, or changed in its decided fields (action, states, reason code, admission, gate reason),
and (d) the effect on trades, fees, exposure and PnL, original against replay with the delta.
Exposure is computed from the fills and the recorded closes: at each timestamp the held
quantities (after that bar's fills, as the engine books them) times the latest close.

Output is deterministic: rows sorted by key, numbers rounded to fixed places, no wall time.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from backend.audit.decisions import clean_float, decision_log_sha256, read_decisions
from backend.clock import Clock, WallClock
from backend.config.canonical import canonical_json
from backend.config.compose import validate_raw
from backend.config.diff import ConfigChange, diff_configs
from backend.engine.pipeline import compile_pipeline
from backend.errors import AuditError
from backend.models.bundle import load_bundle
from backend.runs.replay import apply_overrides, first_divergence, replay
from backend.runs.runner import Outcome, execute
from execution.accounting.portfolio import Fill

PROFILE_STORE_MODULE = "backend.profiles.store"
# The fields that make a decision what it is; a row differing only in size (qty, equity) is "resized".
DECIDED = ("action", "state_from", "state_to", "reason", "admitted", "gate_reason")
SHOWN = ("seq", *DECIDED, "p_up", "expected_return", "qty")
# Identities hashed from the spec (like replay.STAMP_COLUMNS): they differ on every row under any change.
EXTRA_STAMPS = ("campaign_id",)
_CENT = Decimal("0.00000001")
SERIES_POINTS = 600  # most points per series kept for the page's charts and the JSON


# ---------------------------------------------------------------- what a run left
@dataclass(frozen=True)
class RunRecord:
    """What the audit needs of one run: its spec tree, decisions, fills, equity and money totals."""

    label: str
    spec: dict[str, Any]
    decisions: pl.DataFrame
    fills: tuple[Fill, ...]
    ts_ms: np.ndarray
    equity: np.ndarray
    fees_paid: Decimal
    realized_pnl: Decimal
    inputs_sha256: str


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_run_record(run_dir: Path) -> RunRecord:
    """Read a finished run folder; refuse an incomplete folder or a decision log that was altered."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise AuditError(f"{run_dir} is not a complete run folder (summary.json is missing)")
    summary = _read_json(summary_path)
    decisions = read_decisions(run_dir / "decisions.parquet")
    if decision_log_sha256(decisions) != summary["decision_log_sha256"]:
        raise AuditError(f"{run_dir}/decisions.parquet does not match the run's decision_log_sha256; the log was altered")
    fills = tuple(
        Fill(row["order_id"], row["ts"], row["symbol"], row["side"], Decimal(row["qty"]), Decimal(row["price"]), Decimal(row["fee"]))
        for row in pl.read_parquet(run_dir / "fills.parquet").iter_rows(named=True)
    )
    equity = pl.read_parquet(run_dir / "equity.parquet")
    return RunRecord(
        label=str(run_dir),
        spec=_read_json(run_dir / "spec.json"),
        decisions=decisions,
        fills=fills,
        ts_ms=equity["ts"].to_numpy(),
        equity=equity["equity"].to_numpy(),
        fees_paid=Decimal(summary["fees_paid"]),
        realized_pnl=Decimal(summary["realized_pnl"]),
        inputs_sha256=_read_json(run_dir / "inputs.json")["inputs_sha256"],
    )


def record_from_outcome(label: str, spec: dict[str, Any], outcome: Outcome, inputs_sha256: str) -> RunRecord:
    """The same record for a run held in memory (a replay): ledger, equity and totals of its portfolio."""
    portfolio = outcome.engine.portfolio
    return RunRecord(
        label=label,
        spec=spec,
        decisions=outcome.decisions,
        fills=tuple(portfolio.ledger),
        ts_ms=np.asarray(outcome.matrix.ts_ms),
        equity=np.asarray(outcome.equity),
        fees_paid=portfolio.fees_paid,
        realized_pnl=portfolio.realized_pnl,
        inputs_sha256=inputs_sha256,
    )


# ---------------------------------------------------------------- effects
def mark_matrix(bars: pl.DataFrame, ts_ms: np.ndarray, symbols: Sequence[str]) -> np.ndarray:
    """Return the latest close of each symbol at each of ``ts_ms`` (time x symbol; NaN before its first bar)."""
    wide = bars.pivot(on="symbol", index="ts", values="close")
    timeline = pl.DataFrame({"ts": np.asarray(ts_ms, dtype=np.int64)})
    aligned = timeline.join(wide, on="ts", how="left").sort("ts")
    return aligned.select([pl.col(s).cast(pl.Float64).forward_fill() for s in symbols]).to_numpy()


def gross_exposure(ts_ms: np.ndarray, symbols: Sequence[str], marks: np.ndarray, fills: Sequence[Fill]) -> np.ndarray:
    """Return the marked value of every holding at each timestamp, fills at a bar counted at its close."""
    index = {s: i for i, s in enumerate(symbols)}
    held = np.zeros(marks.shape)
    levels: dict[int, tuple[list[int], list[float]]] = {}
    position = [Decimal(0)] * len(symbols)
    for fill in fills:
        i = index[fill.symbol]
        position[i] += fill.qty if fill.side == "buy" else -fill.qty
        steps, values = levels.setdefault(i, ([], []))
        steps.append(int(np.searchsorted(ts_ms, fill.ts_ms, side="left")))
        values.append(float(position[i]))
    rows = np.arange(len(ts_ms))
    for i, (steps, values) in levels.items():
        at = np.searchsorted(np.asarray(steps), rows, side="right") - 1
        held[:, i] = np.asarray([0.0, *values])[at + 1]  # before the first fill: 0.0
    return (held * np.nan_to_num(marks)).sum(axis=1)


def run_effects(record: RunRecord, exposure: np.ndarray) -> dict[str, Any]:
    """Return the run's trades, fees, exposure and PnL figures (unrounded); ``exposure`` from :func:`gross_exposure`."""
    decisions = record.decisions
    equity = record.equity
    initial = float(record.spec["execution"]["initial_cash"])
    peak = np.maximum.accumulate(equity)
    return {
        "decisions": decisions.height,
        "decisions_admitted": int(decisions["admitted"].sum()),
        "orders": int(decisions.filter(pl.col("order_id").is_not_null()).height),
        "trades": len(record.fills),
        "buys": sum(f.side == "buy" for f in record.fills),
        "sells": sum(f.side != "buy" for f in record.fills),
        "turnover_usd": sum((f.notional for f in record.fills), Decimal(0)).quantize(_CENT),
        "fees_usd": record.fees_paid.quantize(_CENT),
        "realized_pnl_usd": record.realized_pnl.quantize(_CENT),
        "final_equity_usd": float(equity[-1]),
        "return_pct": 100.0 * (float(equity[-1]) / initial - 1.0),
        "max_drawdown_pct": 100.0 * float(np.max(1.0 - equity / peak)),
        "avg_gross_exposure_usd": float(exposure.mean()),
        "max_gross_exposure_usd": float(exposure.max()),
        "avg_exposure_pct": 100.0 * float((exposure / equity).mean()),
        "max_exposure_pct": 100.0 * float((exposure / equity).max()),
    }


def _rounded(name: str, value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4 if name.endswith("_pct") else 2)
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def compare_effects(original: dict[str, Any], replayed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return ``{metric: {original, replay, delta}}``; money in Decimal strings, floats rounded."""
    return {
        name: {
            "original": _rounded(name, original[name]),
            "replay": _rounded(name, replayed[name]),
            "delta": _rounded(name, replayed[name] - original[name]),
        }
        for name in original
    }


def thin(n: int, points: int = SERIES_POINTS) -> np.ndarray:
    """Indices of every k-th of ``n`` samples (k so that at most about ``points`` remain), always with the last."""
    step = -(-n // points)
    return np.unique(np.append(np.arange(0, n, step), n - 1))


# ---------------------------------------------------------------- decisions
def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {name: clean_float(row[name]) if isinstance(row[name], float) else row[name] for name in SHOWN}


def _keyed(frame: pl.DataFrame) -> dict[tuple[int, str, str, int], dict[str, Any]]:
    out: dict[tuple[int, str, str, int], dict[str, Any]] = {}
    seen: dict[tuple[int, str, str], int] = {}
    for row in frame.sort("seq").iter_rows(named=True):
        key = (row["ts"], row["symbol"], row["transition"] or "")
        n = seen.get(key, 0)
        seen[key] = n + 1
        out[(*key, n)] = row
    return out


def decision_changes(original: pl.DataFrame, replayed: pl.DataFrame) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Match decisions by ``(ts, symbol, transition)`` and return the changed ones and the counts.

    A key only in the original is ``removed``, only in the replay ``added``; present in both with
    different :data:`DECIDED` fields, ``changed`` (the fields named). Same decision, other qty:
    counted as ``resized``, not listed.
    """
    left, right = _keyed(original), _keyed(replayed)
    rows: list[dict[str, Any]] = []
    counts = {"removed": 0, "added": 0, "changed": 0, "resized": 0, "unchanged": 0}
    for key in sorted(set(left) | set(right)):
        a, b = left.get(key), right.get(key)
        if a is None or b is None:
            kind, fields = ("added", []) if a is None else ("removed", [])
        else:
            fields = [name for name in DECIDED if a[name] != b[name]]
            if not fields:
                counts["resized" if a["qty"] != b["qty"] else "unchanged"] += 1
                continue
            kind = "changed"
        counts[kind] += 1
        rows.append(
            {
                "ts": key[0],
                "time": _utc(key[0]),
                "symbol": key[1],
                "transition": key[2],
                "occurrence": key[3],
                "change": kind,
                "fields": fields,
                "original": None if a is None else _shown(a),
                "replay": None if b is None else _shown(b),
            }
        )
    return rows, counts


def divergence_summary(original: pl.DataFrame, replayed: pl.DataFrame) -> dict[str, Any] | None:
    """The first decision (by seq) that differs, with its time, or None when the logs agree."""
    found = first_divergence(*(frame.drop([c for c in EXTRA_STAMPS if c in frame.columns]) for frame in (original, replayed)))
    if found is None:
        return None
    sides = {name: found[name] for name in ("original", "replay")}
    ts = min(row["ts"] for row in sides.values() if row is not None)
    return {
        "seq": found["seq"],
        "ts": ts,
        "time": _utc(ts),
        **{
            name: None if row is None else {"symbol": row["symbol"], "transition": row["transition"], **_shown(row)}
            for name, row in sides.items()
        },
    }


# ---------------------------------------------------------------- the report
@dataclass(frozen=True)
class AuditDiff:
    """The audit of one change: config diff, first divergence, changed decisions, effects."""

    kind: str
    original: str
    replay: str
    changes: tuple[ConfigChange, ...]
    first_divergence: dict[str, Any] | None
    counts: dict[str, int]
    decisions: tuple[dict[str, Any], ...]
    effects: dict[str, dict[str, Any]]
    series: dict[str, list[float]]

    def as_dict(self) -> dict[str, Any]:
        """Return the audit as JSON-ready data."""
        return {
            "kind": self.kind,
            "original": self.original,
            "replay": self.replay,
            "config_changes": [{"key": c.key, "old": c.old, "new": c.new} for c in self.changes],
            "first_divergence": self.first_divergence,
            "decision_counts": self.counts,
            "decisions": list(self.decisions),
            "effects": self.effects,
            "series": self.series,
        }


def compare_records(kind: str, original: RunRecord, replayed: RunRecord, bars: pl.DataFrame) -> AuditDiff:
    """Build the audit of ``replayed`` against ``original``; ``bars`` are their shared recorded inputs."""
    symbols = sorted(bars["symbol"].unique().to_list())
    exposure = [gross_exposure(r.ts_ms, symbols, mark_matrix(bars, r.ts_ms, symbols), r.fills) for r in (original, replayed)]
    effects = [run_effects(r, e) for r, e in zip((original, replayed), exposure)]
    keep = thin(len(original.ts_ms))
    series = {
        "ts": original.ts_ms[keep].tolist(),
        "equity_original": np.round(original.equity[keep], 2).tolist(),
        "equity_replay": np.round(replayed.equity[keep], 2).tolist(),
        "exposure_original": np.round(exposure[0][keep], 2).tolist(),
        "exposure_replay": np.round(exposure[1][keep], 2).tolist(),
    }
    rows, counts = decision_changes(original.decisions, replayed.decisions)
    return AuditDiff(
        kind=kind,
        original=original.label,
        replay=replayed.label,
        changes=tuple(diff_configs(original.spec, replayed.spec)),
        first_divergence=divergence_summary(original.decisions, replayed.decisions),
        counts=counts,
        decisions=tuple(rows),
        effects=compare_effects(*effects),
        series=series,
    )


# ---------------------------------------------------------------- alternative profiles
def profile_override(profile: dict[str, Any]) -> str:
    """An override that replaces the whole ``risk`` group with ``profile``.

    The value is flow-style YAML from ``yaml.safe_dump``, which ``apply_overrides`` (``yaml.safe_load``)
    reads back exactly; canonical JSON would not survive YAML 1.1 (``1e-05`` would come back a string).
    """
    return "risk=" + yaml.safe_dump(profile, default_flow_style=True, sort_keys=True, width=1_000_000).strip()


def profile_file_override(path: Path) -> str:
    """Read a risk profile from a YAML file (the layout of ``conf/risk/*.yaml``) as a ``risk`` override."""
    if not path.is_file():
        raise AuditError(f"--profile-file {path}: no such file")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise AuditError(f"--profile-file {path}: not valid YAML ({error})") from error
    if not isinstance(tree, dict):
        raise AuditError(f"--profile-file {path}: must hold a mapping of profile fields, was {type(tree).__name__}")
    return profile_override(tree)


_PROFILE_REF = re.compile(r"^(?:(?P<name>[A-Za-z0-9_.-]+)@)?v?(?P<version>[0-9]+)(?:#(?P<digest>[0-9a-f]{1,64}))?$")


def parse_profile_ref(ref: str) -> tuple[str | None, int | None, str | None]:
    """Split ``NAME@vN#HASH`` (``v``, ``#HASH`` optional; ``NAME`` alone means its latest version; ``vN``
    alone means version N of the run's own profile) into name, version and hash prefix."""
    match = _PROFILE_REF.match(ref)
    if match is not None:
        return match["name"], int(match["version"]), match["digest"]
    if re.fullmatch(r"[A-Za-z0-9_.-]+", ref):
        return ref, None, None
    raise AuditError(f"--profile must look like NAME, NAME@vN, vN or NAME@vN#HASH, was {ref!r}")


def store_profile_override(
    ref: str, run_dir: Path, db_path: Path, clock: Clock, module_name: str = PROFILE_STORE_MODULE
) -> str:
    """Fetch a committed profile version from the profile store as a ``risk`` override.

    The store is optional: when ``module_name`` cannot be imported this says so and points to
    ``--profile-file``. The commit's content is checked against its hash (``ProfileCommit.spec``),
    and against ``#HASH`` when the reference gives one.
    """
    name, version, digest = parse_profile_ref(ref)
    if name is None:
        spec_path = run_dir / "spec.json"
        if not spec_path.is_file():
            raise AuditError(f"{run_dir} is not a complete run folder (spec.json is missing)")
        name = _read_json(spec_path)["risk"]["name"]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise AuditError(
            f"profile store not available ({module_name} cannot be imported); use --profile-file FILE.yaml or --set"
        ) from error
    with module.ProfileStore(db_path, clock) as store:
        commit = store.show(name, version)
    if digest is not None and not commit.content_hash.startswith(digest):
        raise AuditError(f"--profile {ref}: {name} v{commit.version} has content hash {commit.content_hash[:12]}, not {digest}")
    return profile_override(commit.spec().model_dump(mode="json"))


# ---------------------------------------------------------------- entry points
def audit_replay(run_dir: Path, overrides: Sequence[str], wall: WallClock | None = None) -> AuditDiff:
    """Replay ``run_dir`` under ``overrides`` and audit the difference.

    Raises
    ------
    AuditError
        When no override is given or the run folder is incomplete.
    ReplayError, ConfigError
        From the replay's checks (altered files, an override outside the replayable groups or the schema bounds).
    """
    if not overrides:
        raise AuditError("nothing to audit: give --set key=value, --profile-file, --profile, or a second run")
    wall = wall or WallClock()
    original = load_run_record(run_dir)
    replay(run_dir, overrides, wall)
    changed = apply_overrides(original.spec, overrides)
    bars = pl.read_parquet(run_dir / "inputs.parquet")
    outcome = execute(compile_pipeline(validate_raw(changed)), bars, load_bundle(run_dir / "model"), wall)
    replayed = record_from_outcome(f"replay of {run_dir}", changed, outcome, original.inputs_sha256)
    return compare_records("replay", original, replayed, bars)


def audit_runs(run_a: Path, run_b: Path) -> AuditDiff:
    """Audit two finished runs over the same recorded inputs (``inputs_sha256`` must match)."""
    original, other = load_run_record(run_a), load_run_record(run_b)
    if original.inputs_sha256 != other.inputs_sha256:
        raise AuditError(
            f"runs {run_a} and {run_b} saw different inputs (inputs_sha256 {original.inputs_sha256[:12]} vs "
            f"{other.inputs_sha256[:12]}); an audit diff compares runs over the same inputs"
        )
    return compare_records("runs", original, other, pl.read_parquet(run_a / "inputs.parquet"))


# ---------------------------------------------------------------- rendering
def _value(value: Any) -> str:
    return canonical_json(value) if not isinstance(value, str) else value


def _transition(name: str) -> str:
    return name or "(hold row)"


def _side(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    admitted = "admitted" if row["admitted"] else "denied"
    return f"{row['action']} {row['state_from']}->{row['state_to']} {row['reason']} {admitted} gate={row['gate_reason']} qty={row['qty']}"


def render_text(audit: AuditDiff) -> str:
    """The audit as plain text: config diff, first divergence, effects table, every changed decision."""
    lines = [f"audit diff ({audit.kind})", f"  original: {audit.original}", f"  replay:   {audit.replay}"]
    lines.append(f"config changes ({len(audit.changes)}):")
    lines += [f"  {c.key}: {canonical_json(c.old)} -> {canonical_json(c.new)}" for c in audit.changes] or ["  none"]
    div = audit.first_divergence
    if div is None:
        lines.append("first diverging decision: none (the decisions are the same)")
    else:
        lines.append(f"first diverging decision: seq {div['seq']} at {div['time']} (ts {div['ts']})")
        for name in ("original", "replay"):
            row = div[name]
            where = "" if row is None else f"{row['symbol']} {_transition(row['transition'])}: "
            lines.append(f"  {name:<8}  {where}{_side(row)}")
    counts = audit.counts
    lines.append("decisions: " + ", ".join(f"{counts[k]} {k}" for k in ("removed", "added", "changed", "resized", "unchanged")))
    lines.append("effect:")
    width = max(len(name) for name in audit.effects)
    lines.append(f"  {'metric':<{width}}  {'original':>16}  {'replay':>16}  {'delta':>16}")
    for name, row in audit.effects.items():
        lines.append(f"  {name:<{width}}  {_value(row['original']):>16}  {_value(row['replay']):>16}  {_value(row['delta']):>16}")
    lines.append(f"changed decisions ({len(audit.decisions)}):")
    for row in audit.decisions:
        fields = f" [{', '.join(row['fields'])}]" if row["fields"] else ""
        lines.append(f"  {row['time']} {row['symbol']} {_transition(row['transition'])} {row['change']}{fields}")
        lines.append(f"    original: {_side(row['original'])}")
        lines.append(f"    replay:   {_side(row['replay'])}")
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font:14px system-ui,sans-serif;margin:24px auto;max-width:1140px;color:#222;background:#fff}"
    "h1{font-size:22px;margin:0 0 12px}h2{font-size:16px;margin:22px 0 4px}"
    "table{border-collapse:collapse;margin-bottom:8px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}"
    "th{background:#f5f5f5;font-weight:600}td{font-family:ui-monospace,monospace}"
    "svg{max-width:100%;height:auto;display:block}svg text{font-size:11px;fill:#555}"
    "polyline{fill:none;stroke-width:1.4}.original{stroke:#999}.replay{stroke:#1f5fa8}.frame{fill:none;stroke:#bbb}"
    "td.num{text-align:right}tr.removed td{background:#fdecea}tr.added td{background:#e9f6ec}tr.changed td{background:#fff8e1}"
)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] = ()) -> str:
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for n, row in enumerate(rows):
        cls = f' class="{escape(classes[n])}"' if classes else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{escape(_value(cell))}</td>" for cell in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _chart(ts: Sequence[int], original: Sequence[float], replayed: Sequence[float], height: int = 200) -> str:
    """Two lines over time, original (grey) and replay (blue), with the value range and the time span."""
    w, ml, mr, mt, mb = 1100, 90, 10, 8, 20
    x = np.asarray(ts, dtype=np.float64)
    both = np.concatenate([np.asarray(original, dtype=np.float64), np.asarray(replayed, dtype=np.float64)])
    lo, hi = float(both.min()), float(both.max())
    span, width = (hi - lo) or 1.0, (x[-1] - x[0]) or 1.0
    px = ml + (x - x[0]) * ((w - ml - mr) / width)
    out = [f'<svg viewBox="0 0 {w} {height}" width="{w}" height="{height}">',
           f'<rect class="frame" x="{ml}" y="{mt}" width="{w - ml - mr}" height="{height - mt - mb}"/>',
           f'<text x="{ml - 6}" y="{mt + 10}" text-anchor="end">{hi:,.2f}</text>',
           f'<text x="{ml - 6}" y="{height - mb}" text-anchor="end">{lo:,.2f}</text>',
           f'<text x="{ml}" y="{height - 4}">{_utc(int(x[0]))}</text>',
           f'<text x="{w - mr}" y="{height - 4}" text-anchor="end">{_utc(int(x[-1]))}</text>']
    for cls, values in (("original", original), ("replay", replayed)):
        py = mt + (hi - np.asarray(values, dtype=np.float64)) * ((height - mt - mb) / span)
        out.append(f'<polyline class="{cls}" points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px.tolist(), py.tolist())) + '"/>')
    out.append("</svg>")
    return "".join(out)


def render_html(audit: AuditDiff) -> str:
    """The audit as one self-contained HTML page (inline CSS, no scripts, no network); deterministic."""
    div = audit.first_divergence
    title = f"ACTS audit diff: {audit.original}"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _table(("", "run"), [("original", audit.original), ("replay", audit.replay), ("kind", audit.kind)]),
        f"<h2>Config changes ({len(audit.changes)})</h2>",
        _table(("key", "original", "replay"), [(c.key, c.old, c.new) for c in audit.changes]),
        "<h2>First diverging decision</h2>",
    ]
    if div is None:
        parts.append("<p>none: the decisions are the same</p>")
    else:
        parts.append(f"<p>seq {div['seq']} at {escape(div['time'])} (ts {div['ts']})</p>")
        parts.append(_table(("side", "decision"), [(name, _side(div[name])) for name in ("original", "replay")]))
    parts.append("<h2>Effect</h2>")
    parts.append(_table(("metric", "original", "replay", "delta"), [(k, v["original"], v["replay"], v["delta"]) for k, v in audit.effects.items()]))
    series = audit.series
    for name, label in (("equity", "Equity"), ("exposure", "Gross exposure")):
        parts.append(f'<h2>{label} (USD) <span style="color:#999">original</span> / <span style="color:#1f5fa8">replay</span></h2>')
        parts.append(_chart(series["ts"], series[f"{name}_original"], series[f"{name}_replay"]))
    parts.append("<h2>Decisions</h2>")
    parts.append(_table(tuple(audit.counts), [tuple(audit.counts.values())]))
    parts.append(
        _table(
            ("time", "symbol", "transition", "change", "fields", "original", "replay"),
            [
                (r["time"], r["symbol"], _transition(r["transition"]), r["change"], ", ".join(r["fields"]), _side(r["original"]), _side(r["replay"]))
                for r in audit.decisions
            ],
            [r["change"] for r in audit.decisions],
        )
    )
    parts.append("</body></html>\n")
    return "".join(parts)
