"""Replay a recorded run from its inputs, and find where decisions first diverge.

A run folder holds everything replay needs: ``spec.json`` (the resolved config),
``inputs.parquet`` (the bar events the run saw, with their hash in ``inputs.json``) and
``model/`` (the bundle, verified against its manifest). Replay runs the same ``execute`` as the
backtest. With overrides it replays the same inputs under a changed config and reports the first
decision that differs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from backend.audit.decisions import canonical_lines, decision_log_sha256
from backend.clock import WallClock
from backend.config.canonical import content_hash
from backend.config.compose import validate_raw
from backend.config.diff import ConfigChange, diff_configs
from backend.engine.pipeline import compile_pipeline
from backend.errors import ReplayError
from backend.models.bundle import load_bundle
from backend.runs.runner import execute, frame_sha256

# Only these groups may change in a replay: the rest would change the inputs or the model.
REPLAYABLE_GROUPS = ("risk", "strategy", "execution", "name", "mode")


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of a replay: hashes, counts, config changes and the first divergence."""

    run_dir: str
    original_sha256: str
    replay_sha256: str
    original_decisions: int
    replay_decisions: int
    changes: tuple[ConfigChange, ...]
    first_divergence: dict[str, Any] | None

    @property
    def identical(self) -> bool:
        return self.original_sha256 == self.replay_sha256

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "run_dir": self.run_dir,
            "identical": self.identical,
            "original_sha256": self.original_sha256,
            "replay_sha256": self.replay_sha256,
            "original_decisions": self.original_decisions,
            "replay_decisions": self.replay_decisions,
            "changes": [{"key": c.key, "old": c.old, "new": c.new} for c in self.changes],
            "first_divergence": self.first_divergence,
        }


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key.path=value`` overrides applied (values parsed as YAML)."""
    out = json.loads(json.dumps(raw))
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ReplayError(f"override {override!r} must look like key.path=value")
        if key.split(".")[0] not in REPLAYABLE_GROUPS:
            raise ReplayError(
                f"override {key!r} would change the run's inputs or model; a replay may change only "
                f"{', '.join(REPLAYABLE_GROUPS)} (run a new backtest instead)"
            )
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ReplayError(f"override {key!r}: {part!r} is not a config section")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(text)
    return out


# What a row is stamped with rather than what was decided: the spec and profile identity (also hashed
# into order ids) and the profile values echoed in gate bounds and guard inputs. Under any override
# these differ on every row, so the search for the first divergence leaves them out.
STAMP_COLUMNS = ("gates", "inputs", "order_id", "profile_version", "profile_params", "model_version", "spec_hash")


def first_divergence(original: pl.DataFrame, replayed: pl.DataFrame) -> dict[str, Any] | None:
    """Return the first decision (by sequence) that differs between two logs, or None.

    Rows are compared without :data:`STAMP_COLUMNS` and reported whole.
    """
    decided = [c for c in original.columns if c not in STAMP_COLUMNS]
    left, right = list(canonical_lines(original.select(decided))), list(canonical_lines(replayed.select(decided)))
    for seq in range(max(len(left), len(right))):
        a = left[seq] if seq < len(left) else None
        b = right[seq] if seq < len(right) else None
        if a != b:
            return {
                "seq": seq,
                "original": _row(original, seq) if a else None,
                "replay": _row(replayed, seq) if b else None,
            }
    return None


def _row(frame: pl.DataFrame, seq: int) -> dict[str, Any]:
    return json.loads(next(iter(canonical_lines(frame.filter(pl.col("seq") == seq)))))


def replay(run_dir: Path, overrides: Sequence[str] = (), wall: WallClock | None = None) -> ReplayReport:
    """Replay ``run_dir`` (optionally under ``overrides``) and compare its decision log.

    Raises
    ------
    ReplayError
        When the folder is not a complete run, its recorded inputs or model do not match their
        hashes, or an override touches what a replay cannot change.
    """
    wall = wall or WallClock()
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise ReplayError(f"{run_dir} is not a complete run folder (summary.json is missing)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    raw = json.loads((run_dir / "spec.json").read_text(encoding="utf-8"))
    if content_hash(validate_raw(raw)) != summary["spec_hash"]:
        raise ReplayError(f"{run_dir}/spec.json does not match the run's spec_hash; the spec was altered")
    changed = apply_overrides(raw, overrides)
    pipeline = compile_pipeline(validate_raw(changed))
    bars = pl.read_parquet(run_dir / "inputs.parquet")
    recorded = json.loads((run_dir / "inputs.json").read_text(encoding="utf-8"))
    if frame_sha256(bars) != recorded["inputs_sha256"]:
        raise ReplayError(f"{run_dir}/inputs.parquet does not match its recorded hash; the inputs were altered")
    bundle = load_bundle(run_dir / "model")
    if bundle.version != summary["model_version"]:
        raise ReplayError(f"{run_dir}/model is {bundle.version}, the run used {summary['model_version']}")
    original = pl.read_parquet(run_dir / "decisions.parquet")
    if decision_log_sha256(original) != summary["decision_log_sha256"]:
        raise ReplayError(f"{run_dir}/decisions.parquet does not match the run's decision_log_sha256; the log was altered")
    outcome = execute(pipeline, bars, bundle, wall)
    divergence = None if outcome.decision_log_sha256 == summary["decision_log_sha256"] else first_divergence(original, outcome.decisions)
    return ReplayReport(
        run_dir=str(run_dir),
        original_sha256=summary["decision_log_sha256"],
        replay_sha256=outcome.decision_log_sha256,
        original_decisions=int(summary["decisions"]),
        replay_decisions=len(outcome.decisions),
        changes=tuple(diff_configs(raw, changed)),
        first_divergence=divergence,
    )
