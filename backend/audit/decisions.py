"""The decision log: one row per strategy decision, canonical and hashable.

A row carries what governance section 10 asks: the model outputs, the state before and after,
the transition and its reason code, every risk-gate outcome, the guard's inputs, the campaign the
decision belongs to, and the profile version and parameter values in force. The log's hash is taken over canonical JSON
lines, so it depends on the decisions only, never on a file format's bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from backend.config.canonical import canonical_json, sha256_hex

DECISION_SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.Int64(),
    "ts": pl.Int64(),
    "symbol": pl.String(),
    "transition": pl.String(),
    "action": pl.String(),
    "state_from": pl.String(),
    "state_to": pl.String(),
    "reason": pl.String(),
    "admitted": pl.Boolean(),
    "gate_reason": pl.String(),
    "gates": pl.String(),
    "p_up": pl.Float64(),
    "expected_return": pl.Float64(),
    "inputs": pl.String(),
    "qty": pl.Float64(),
    "ref_price": pl.Float64(),
    "equity": pl.Float64(),
    "order_id": pl.String(),
    "campaign_id": pl.String(),
    "edge": pl.Float64(),
    "cost": pl.Float64(),
    "margin": pl.Float64(),
    "cost_reason": pl.String(),
    "profile_version": pl.String(),
    "profile_params": pl.String(),
    "model_version": pl.String(),
    "spec_hash": pl.String(),
}
COLUMNS = tuple(DECISION_SCHEMA)


def clean_float(value: float) -> float | None:
    """Return ``value`` as a float, or None for NaN (canonical JSON has no NaN)."""
    number = float(value)
    return None if math.isnan(number) else number


class DecisionLog:
    """Append-only decision rows held as columns until the run writes them."""

    def __init__(self) -> None:
        self._columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}

    def __len__(self) -> int:
        return len(self._columns["seq"])

    def append(self, row: dict[str, Any]) -> None:
        """Append one decision; ``seq`` is assigned here, in order of arrival."""
        row = dict(row, seq=len(self))
        values = [row[name] for name in COLUMNS]  # a row missing a field is refused before any column grows
        for name, value in zip(COLUMNS, values):
            self._columns[name].append(value)

    def frame(self) -> pl.DataFrame:
        """Return the log as a DataFrame in the canonical column order."""
        return pl.DataFrame(self._columns, schema=DECISION_SCHEMA)


def canonical_lines(frame: pl.DataFrame) -> Iterable[str]:
    """Yield each decision row as canonical JSON, in ``seq`` order."""
    for row in frame.sort("seq").iter_rows(named=True):
        yield canonical_json({k: (clean_float(v) if isinstance(v, float) else v) for k, v in row.items()})


def decision_log_sha256(frame: pl.DataFrame) -> str:
    """Return the SHA-256 of the log's canonical JSON lines."""
    return sha256_hex("\n".join(canonical_lines(frame)))


# Row groups small enough that a console page of a long log decodes little beyond its rows (ADR-033).
ROW_GROUP_ROWS = 50_000


def write_decisions(frame: pl.DataFrame, path: Path) -> Path:
    """Write the log as parquet (zstd) in row groups of ``ROW_GROUP_ROWS``, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    tmp.replace(path)
    return path


def read_decisions(path: Path) -> pl.DataFrame:
    """Read a decision log written by ``write_decisions``."""
    return pl.read_parquet(path).select(COLUMNS)
