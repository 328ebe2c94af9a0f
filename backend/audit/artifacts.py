"""Reading a run folder's artifacts: every missing, unreadable or corrupted file is one clear error.

``acts replay``, ``acts audit diff`` and ``acts run --run-dir`` read the files a run left
(``summary.json``, ``spec.json``, ``inputs.json``, ``inputs.parquet``, ``decisions.parquet``,
``fills.parquet``, ``equity.parquet``) only through these readers (``model/`` through
:func:`backend.runs.replay.read_bundle`, a layer up, where bundles are known). A file that is missing,
cannot be read, is truncated, is not valid JSON or parquet, or lacks a key or column it must hold
raises :class:`backend.errors.ArtifactError` naming the file and what is wrong, so the CLI exits 2
("refused input") and never 1, which ``acts replay`` keeps for "the replay did not reproduce".
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import polars as pl

from backend.config.compose import validate_raw
from backend.config.schema import RunSpec
from backend.errors import ArtifactError, ConfigError

SUMMARY_KEYS: dict[str, type | tuple[type, ...]] = {
    "spec_hash": str,
    "model_version": str,
    "decision_log_sha256": str,
    "decisions": int,
    "fees_paid": str,
    "realized_pnl": str,
}
INPUTS_KEYS: dict[str, type | tuple[type, ...]] = {"inputs_sha256": str}
_TYPE_WORDS = {str: "text", int: "an integer", dict: "an object", float: "a number"}


def _exists(path: Path) -> None:
    if not path.exists():
        raise ArtifactError(f"{path} is missing")


def read_json(path: Path, keys: Mapping[str, type | tuple[type, ...]] = {}) -> dict[str, Any]:
    """Read a JSON object from ``path`` that holds each of ``keys`` with a value of its type.

    Raises
    ------
    ArtifactError
        When the file is missing or unreadable, is not UTF-8 JSON, holds no object at the top, or a key is
        absent or of another type.
    """
    _exists(path)
    try:
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except OSError as error:
        raise ArtifactError(f"{path} cannot be read: {error.strerror}") from error
    except ValueError as error:  # bad UTF-8 or bad JSON (json.JSONDecodeError is a ValueError)
        raise ArtifactError(f"{path} is not valid JSON (truncated or corrupted?): {error}") from error
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must hold a JSON object at the top, found {type(data).__name__}")
    for key in sorted(keys):
        kind = keys[key]
        if key not in data:
            raise ArtifactError(f"{path} lacks the key {key!r}")
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            word = _TYPE_WORDS.get(kind, str(kind)) if isinstance(kind, type) else " or ".join(map(_TYPE_WORDS.get, kind))
            raise ArtifactError(f"{path}: {key!r} must be {word}, was {value!r}")
    return data


def read_parquet(path: Path, columns: Sequence[str] = ()) -> pl.DataFrame:
    """Read a parquet file that holds ``columns`` (all columns kept, in the file's order).

    Raises
    ------
    ArtifactError
        When the file is missing or unreadable, is not a whole parquet file, or lacks a column.
    """
    _exists(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"{path} cannot be read: {error.strerror}") from error
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except pl.exceptions.PolarsError as error:
        raise ArtifactError(f"{path} is not a readable parquet file (truncated or corrupted?): {error}") from error
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path} lacks the columns {missing} (has {frame.columns})")
    return frame


def read_spec(path: Path) -> tuple[dict[str, Any], RunSpec]:
    """Read and validate a run's ``spec.json``; return the raw tree and the validated spec."""
    raw = read_json(path)
    try:
        return raw, validate_raw(raw)
    except ConfigError as error:
        raise ArtifactError(f"{path} is not a valid run spec: {error}") from error


def decimal_value(path: Path, key: str, text: str) -> Decimal:
    """Return ``text`` (the value of ``key`` in ``path``) as a Decimal, or refuse it naming both."""
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ArtifactError(f"{path}: {key!r} must be a decimal number, was {text!r}") from None
