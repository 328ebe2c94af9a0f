"""The control plane's operator API: what the console (and any other client) calls, never the databases.

Every write goes through the store that owns it, with the store's validation: kill and resume through
:class:`~backend.control.store.ControlStore` (logged exactly like ``acts control``), profile edits and
activations through :class:`~backend.profiles.store.ProfileStore` (bounds from ``RiskProfileSpec``,
optimistic concurrency, author and reason required, nothing written on refusal). Reads assemble the
status (runtime health, active profile, every risk gate's figure against its bound, the kill switch),
the profile views, the model registry and config-diff audits. A client holds no business rule: the
field descriptions it may show next to a widget (:func:`profile_fields`) are advisory, derived from the
schema, and the server re-validates everything it receives.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from backend.runs.audit_diff import AuditDiff, audit_replay, store_profile_override
from backend.config.compose import compose_spec
from backend.config.diff import ConfigChange
from backend.config.schema import RiskProfileSpec
from backend.operator.runs import RunKind, RunRef, holdings, list_runs, paper_checkpoint, recorded_run_of, session_feed
from backend.control.store import DB_FILENAME, ControlAction, ControlStatus, ControlStore
from backend.clock import Clock
from backend.errors import ActsError, ControlError
from backend.home import Home
from backend.models.promotion import evaluate_gates
from backend.models.registry import ModelRegistry, ModelStatus
from backend.profiles.core import Activation, ProfileCommit
from backend.profiles.errors import ProfileValueError, StaleProfileError
from backend.profiles.store import ProfileStore
from execution.risk.gates import exposure_bound

FIRST_STEPS = (
    "This ACTS home has no runs yet. To see something here, run first:\n"
    "  acts demo            (or `make run`: a small backtest and its replay, a few minutes)\n"
    "  acts backtest        (the default backtest; `acts backtest run=bench` for the benchmark run)\n"
    "  acts run --mode paper --source recorded --run-dir RUN   (a paper session on a recorded run)\n"
    "Profiles and the kill switch work already; the other pages fill in once a run exists."
)


class Health(str, enum.Enum):
    """How the runtime looks from its stores."""

    NO_RUNTIME = "no runtime"
    NOT_STARTED = "not started"
    RUNNING = "running"
    STALE = "stale"


def database(home: Home) -> Path:
    """The home's operational database (control state, profile versions)."""
    home.root.mkdir(parents=True, exist_ok=True)
    return home.root / DB_FILENAME


def is_empty(home: Home) -> bool:
    """Whether the home holds no run and no session yet (the console then explains what to run first)."""
    return not list_runs(home)


# ---------------------------------------------------------------- kill switch
def kill_switch(home: Home) -> ControlStatus:
    """The kill switch and its last logged action."""
    with ControlStore(database(home)) as store:
        return store.status()


def engage_kill_switch(home: Home, author: str, reason: str, clock: Clock) -> ControlStatus:
    """Turn the kill switch on, logged with author and reason exactly like ``acts control kill``."""
    with ControlStore(database(home)) as store:
        return store.kill(author, reason, clock)


def resume_trading(home: Home, author: str, reason: str, clock: Clock) -> ControlStatus:
    """Turn the kill switch off, logged with author and reason exactly like ``acts control resume``."""
    with ControlStore(database(home)) as store:
        return store.resume(author, reason, clock)


def control_actions(home: Home) -> list[ControlAction]:
    """Every logged kill and resume, newest first."""
    with ControlStore(database(home)) as store:
        return list(reversed(store.actions()))


# ---------------------------------------------------------------- status
@dataclass(frozen=True)
class GateFigure:
    """One risk gate as it stands: the current figure, the bound it is compared with, and whether it is within."""

    gate: str
    figure: float
    bound: float
    unit: str
    within: bool
    note: str = ""


@dataclass(frozen=True)
class RuntimeStatus:
    """What the status page shows."""

    health: Health
    source: str
    mode: str
    last_event_ms: int | None
    lag_ms: int | None
    active_profile: str
    profile: RiskProfileSpec
    gates: tuple[GateFigure, ...]
    kill_switch: ControlStatus
    note: str


def _active_profile(home: Home, clock: Clock) -> tuple[str, RiskProfileSpec]:
    with ProfileStore(database(home), clock) as store:
        return store.active()


def _portfolio(home: Home, run: RunRef) -> tuple[dict[str, float], float, float, dict[str, str]]:
    """Position values by symbol, equity, peak equity and the symbols' clusters."""
    held = holdings(home, run)
    values = dict(zip(held.positions["symbol"].to_list(), held.positions["value"].fill_nan(0.0).to_list(), strict=True))
    spec_dir = run.path if run.kind is RunKind.BACKTEST else getattr(recorded_run_of(home, run), "path", None)
    clusters: dict[str, str] = {}
    if spec_dir is not None:
        universe = json.loads((spec_dir / "spec.json").read_text(encoding="utf-8"))["universe"]
        clusters = {a["symbol"]: a["cluster"] for a in universe["assets"]}
    if run.kind is RunKind.BACKTEST:
        curve = held.equity_curve["equity"]
        return values, held.equity, float(curve.max()), clusters
    checkpoint = paper_checkpoint(run)
    peak = float(checkpoint["state"]["peak_equity"]) if checkpoint is not None else held.equity
    return values, held.equity, max(peak, held.equity), clusters


def gate_figures(
    profile: RiskProfileSpec, values: Mapping[str, float], equity: float, peak: float, clusters: Mapping[str, str], killed: bool
) -> tuple[GateFigure, ...]:
    """Each risk gate's figure against the active profile's bound, in the chain's order (pure)."""
    mode = profile.max_total_exposure.mode
    total = sum(values.values())
    total_bound = exposure_bound(profile.max_total_exposure, equity)
    drawdown = 0.0 if peak <= 0 else max(0.0, 1.0 - equity / peak)
    open_positions = sum(1 for v in values.values() if v > 0)
    figures = [
        GateFigure("kill switch", float(killed or profile.kill_switch), 0.0, "on/off", not (killed or profile.kill_switch),
                   "new risk refused while on; exits still pass"),
        GateFigure("drawdown", drawdown, profile.max_drawdown_pct, "fraction of peak equity", drawdown <= profile.max_drawdown_pct),
        GateFigure("open positions", float(open_positions), float(profile.max_concurrent_positions), "positions",
                   open_positions <= profile.max_concurrent_positions),
        GateFigure("total exposure", total, total_bound, f"USD ({mode} {profile.max_total_exposure.value:g})", total <= total_bound),
    ]  # fmt: skip
    cluster_bound = exposure_bound(profile.max_cluster_exposure, equity)
    by_cluster: dict[str, float] = {}
    for symbol, value in values.items():
        by_cluster[clusters.get(symbol, "unknown")] = by_cluster.get(clusters.get(symbol, "unknown"), 0.0) + value
    cmode = profile.max_cluster_exposure.mode
    for cluster in sorted(by_cluster):
        figures.append(
            GateFigure(f"cluster exposure: {cluster}", by_cluster[cluster], cluster_bound,
                       f"USD ({cmode} {profile.max_cluster_exposure.value:g})", by_cluster[cluster] <= cluster_bound)
        )  # fmt: skip
    return tuple(figures)


def runtime_status(home: Home, clock: Clock, stale_after_ms: int = 15 * 60 * 1000) -> RuntimeStatus:
    """The runtime's health, mode, last event and lag, the active profile and every gate against its bound.

    The runtime is the newest session (paper, shadow or live, on a recorded run or the Kraken feed) when there is one (its journal's last write tells whether
    it is running), else the newest backtest run's final state. Gate bounds are the active profile's:
    the ones the gates apply from the next event on.
    """
    version, profile = _active_profile(home, clock)
    switch = kill_switch(home)
    runs = list_runs(home)
    now = clock.now_ms()
    papers = [r for r in runs if r.kind is RunKind.PAPER]
    if papers:
        # The newest session that has processed an event; a session not started yet only when none has.
        checkpoints = {r.key: paper_checkpoint(r) for r in papers}
        run = max(papers, key=lambda r: (checkpoints[r.key] is not None, (r.path / "journal.sqlite").stat().st_mtime_ns))
        checkpoint = checkpoints[run.key]
        written = (run.path / "journal.sqlite").stat().st_mtime_ns // 1_000_000
        last = None if checkpoint is None else int(checkpoint["ts"])
        if checkpoint is None:
            health = Health.NOT_STARTED
        else:
            health = Health.RUNNING if now - written <= stale_after_ms else Health.STALE
        feed = "the Kraken feed" if session_feed(run) == "kraken" else "a recorded run"
        note = f"{run.mode} session {run.name} on {feed}: journal last written {max(0, now - written) // 1000} s ago"
        mode = run.mode
    elif runs:
        run = runs[0]
        curve = pl.read_parquet(run.path / "equity.parquet")
        last = int(curve["ts"][-1])
        health, mode = Health.NO_RUNTIME, run.mode
        note = f"no runtime session; figures are the final state of the newest run {run.key}"
    else:
        zero = gate_figures(profile, {}, 0.0, 0.0, {}, switch.killed)
        return RuntimeStatus(Health.NO_RUNTIME, "none", "none", None, None, version, profile, zero, switch,
                             "no run or session in this home yet")  # fmt: skip
    values, equity, peak, clusters = _portfolio(home, run)
    gates = gate_figures(profile, values, equity, peak, clusters, switch.killed)
    return RuntimeStatus(health, run.key, mode, last, None if last is None else now - last, version, profile, gates, switch, note)


# ---------------------------------------------------------------- profiles
@dataclass(frozen=True)
class ProfileField:
    """One editable profile field and its bounds as the schema states them (advisory for widgets)."""

    key: str
    kind: str
    bounds: str
    choices: tuple[str, ...] = ()


def _bounds_text(node: Mapping[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{sign} {node[key]:g}")
    return ", ".join(parts)


def profile_fields() -> tuple[ProfileField, ...]:
    """Every field of a risk profile but its name, with dotted keys, type and bounds from ``RiskProfileSpec``.

    Cross-field rules (such as ``drawdown_resume_pct <= max_drawdown_pct``) are not listed: the server checks them.
    """
    schema = RiskProfileSpec.model_json_schema()
    defs = schema.get("$defs", {})
    out: list[ProfileField] = []

    def walk(prefix: str, properties: Mapping[str, Any]) -> None:
        for name in sorted(properties):
            node = properties[name]
            key = f"{prefix}{name}"
            if "$ref" in node:
                walk(f"{key}.", defs[node["$ref"].split("/")[-1]]["properties"])
            elif "enum" in node:
                out.append(ProfileField(key, "choice", "one of " + ", ".join(node["enum"]), tuple(node["enum"])))
            elif node.get("type") == "boolean":
                out.append(ProfileField(key, "boolean", "true or false"))
            else:
                out.append(ProfileField(key, node["type"], _bounds_text(node)))

    walk("", {k: v for k, v in schema["properties"].items() if k != "name"})
    return tuple(out)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested profile tree as dotted keys (``max_total_exposure.mode``)."""
    out: dict[str, Any] = {}
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_value(key: str, text: Any) -> Any:
    """A form value as the CLI reads ``KEY=VALUE``: text is read as a YAML scalar; other values pass as they are."""
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ProfileValueError(f"'{key}' value is not valid YAML, was {text!r}") from error


def changes_from_form(current: Mapping[str, Any], submitted: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted keys whose submitted value differs from ``current`` (a commit records only what changed)."""
    flat = flatten(current)
    changes = {}
    for key in sorted(submitted):
        value = parse_value(key, submitted[key])
        if key not in flat or flat[key] != value or type(flat[key]) is not type(value):
            changes[key] = value
    return changes


@dataclass(frozen=True)
class ProfileView:
    """A profile's latest version, its history newest first, its activations, and which version is active."""

    latest: ProfileCommit
    history: tuple[ProfileCommit, ...]
    activations: tuple[Activation, ...]
    active_version: int | None


def profile_names(home: Home, clock: Clock) -> tuple[list[str], str]:
    """Every profile name and the active one's."""
    with ProfileStore(database(home), clock) as store:
        head = store.head_activation()
        return store.names(), "" if head is None else head.name


def profile_view(home: Home, name: str, clock: Clock) -> ProfileView:
    """The latest version of ``name`` and its history."""
    with ProfileStore(database(home), clock) as store:
        head = store.head_activation()
        active = head.version if head is not None and head.name == name else None
        history = tuple(reversed(store.log(name)))
        return ProfileView(history[0], history, tuple(store.activations(name)), active)


def profile_diff(home: Home, name: str, v1: int, v2: int, clock: Clock) -> list[ConfigChange]:
    """The changed keys from ``v1`` to ``v2`` of ``name``."""
    with ProfileStore(database(home), clock) as store:
        return store.diff(name, v1, v2)


def commit_profile_edit(
    home: Home, name: str, submitted: Mapping[str, Any], author: str, reason: str, expected_parent: int, clock: Clock
) -> ProfileCommit:
    """Commit the submitted form on ``expected_parent`` through the profile store, like ``acts profile set``.

    Raises
    ------
    StaleProfileError
        When ``expected_parent`` is no longer the latest version; nothing is written.
    ProfileValueError
        When a value breaks a bound, naming the field, the bound and the value; nothing is written.
    ProfileError
        When author or reason is missing or nothing changed.
    """
    with ProfileStore(database(home), clock) as store:
        parent = store.show(name, expected_parent)
        changes = changes_from_form(parent.tree(), submitted)
        return store.set(name, changes, author, reason, expected_parent=expected_parent)


def activate_profile(home: Home, name: str, version: int, author: str, reason: str, clock: Clock) -> Activation:
    """Make ``name`` v``version`` the active profile, like ``acts profile activate``."""
    with ProfileStore(database(home), clock) as store:
        return store.activate(name, version, author, reason)


def is_stale(error: ActsError) -> bool:
    """Whether a refusal is an optimistic-concurrency conflict (the client should show the newer version)."""
    return isinstance(error, StaleProfileError)


# ---------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelRow:
    """One registered model: identity, status, training windows, data hashes and promotion gate results."""

    version: str
    status: str
    live: bool
    created_ms: int
    trigger: str
    training_windows: tuple[tuple[int, int, int, int], ...]
    inputs_sha256: str
    lineage_sha256: str
    feature_set: str
    gates: tuple[tuple[str, bool, str], ...]
    history: tuple[dict[str, Any], ...]


def models_overview(home: Home) -> list[ModelRow]:
    """The home's model registry, newest first; the promoted model is the live one (paper, shadow and live use it).

    Gate results are recomputed against the default configuration's promotion bounds (``acts models promote``).
    """
    registry = ModelRegistry.of_home(home)
    records = registry.records()
    bounds = compose_spec([]).training.promotion
    incumbent = registry.promoted()
    rows = []
    for record in reversed(records):
        other = None if incumbent is None or incumbent["version"] == record["version"] else incumbent
        gates = tuple((g.gate.value, g.passed, g.describe()) for g in evaluate_gates(record, other, bounds))
        windows = tuple((f["train_start_ms"], f["train_end_ms"], f["test_start_ms"], f["test_end_ms"]) for f in record["folds"])
        rows.append(
            ModelRow(record["version"], record["status"], record["status"] == ModelStatus.PROMOTED.value, record["created_ms"],
                     record["trigger"], windows, record["inputs_sha256"], record["lineage_sha256"],
                     f"{record['feature_set']['name']} ({record['feature_set']['hash'][:12]})", gates, tuple(record["history"]))
        )  # fmt: skip
    return rows


def run_bundles(home: Home) -> list[tuple[str, str]]:
    """The model bundle each backtest run used: (run key, model version)."""
    return [(r.key, str(r.summary.get("model_version"))) for r in list_runs(home) if r.kind is RunKind.BACKTEST]


# ---------------------------------------------------------------- audit
def audit_run(
    home: Home, run: RunRef, profile_ref: str | None, sets: Sequence[str], clock: Clock
) -> AuditDiff:
    """Replay ``run`` under a profile version from the store and/or ``key=value`` overrides, like ``acts audit diff``."""
    if run.kind is not RunKind.BACKTEST:
        raise ControlError(f"'run' must be a backtest run folder for an audit replay, was {run.key} ({run.kind.value})")
    overrides = []
    if profile_ref:
        overrides.append(store_profile_override(profile_ref, run.path, database(home), clock))
    overrides.extend(s.strip() for s in sets if s.strip())
    return audit_replay(run.path, overrides)


def money(value: Decimal | float) -> str:
    """A USD amount for display."""
    return f"{float(value):,.2f}"
