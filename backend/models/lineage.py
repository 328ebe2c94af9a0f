"""Lineage and evaluation of a trained bundle: code version, per-fold metrics, strategy figures.

Everything here takes values and returns JSON-ready values, except :func:`code_version`, which asks
the installed package and git.
"""

from __future__ import annotations

import math
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from backend.models.bundle import FoldWindow, ModelBundle
from backend.models.metrics import fold_metrics

_REPO = Path(__file__).resolve().parents[2]


def code_version(repo: Path = _REPO) -> dict[str, str]:
    """Return the package version and the git commit of ``repo`` (``unknown`` outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"package": metadata.version("acts"), "git_commit": commit}


def clean(value: Any) -> Any:
    """Return ``value`` with NaN and infinities replaced by None and numpy scalars made plain (JSON-safe)."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def labelled_predictions(predictions: pl.DataFrame, dataset: pl.DataFrame) -> pl.DataFrame:
    """Join predictions with their realised labels, keeping rows where both are known."""
    labels = dataset.select("ts", "symbol", "label_up", "label_return")
    return (
        predictions.join(labels, on=["ts", "symbol"], how="inner")
        .filter(pl.col("label_return").is_not_null() & pl.col("p_up").is_not_nan())
        .sort(["ts", "symbol"])
    )


def metrics_of(rows: pl.DataFrame) -> dict[str, Any]:
    """Return ``fold_metrics`` of labelled prediction rows, JSON-safe."""
    return clean(
        fold_metrics(
            rows["label_up"].to_numpy(), rows["label_return"].to_numpy(), rows["p_up"].to_numpy(), rows["expected_return"].to_numpy()
        )
    )


def evaluate_folds(bundle: ModelBundle, labelled: pl.DataFrame) -> list[dict[str, Any]]:
    """Return each fold's out-of-sample metrics (on its test span), with the fold's windows."""
    out = []
    for window in bundle.folds:
        rows = labelled.filter(pl.col("fold") == window.index)
        out.append({"fold": window.index, **metrics_of(rows)})
    return out


def span_return_pct(ts_ms: np.ndarray, equity: np.ndarray, start_ms: int, end_ms: int) -> float:
    """Return the equity change in percent from the first bar at or after ``start_ms`` to the last before ``end_ms``."""
    first = int(np.searchsorted(ts_ms, start_ms, side="left"))
    last = int(np.searchsorted(ts_ms, end_ms, side="left")) - 1
    if first >= len(ts_ms) or last < first:
        return 0.0
    # Equity before the span's first bar is what the span starts from.
    base = equity[first - 1] if first > 0 else equity[first]
    return float(100.0 * (equity[last] / base - 1.0))


def strategy_figures(folds: tuple[FoldWindow, ...], ts_ms: np.ndarray, equity: np.ndarray, fees_paid: str) -> dict[str, Any]:
    """Return the strategy result after fees over the out-of-sample span and per fold."""
    return clean(
        {
            "oos_start_ms": folds[0].test_start_ms,
            "oos_end_ms": folds[-1].test_end_ms,
            "return_pct": span_return_pct(ts_ms, equity, folds[0].test_start_ms, folds[-1].test_end_ms),
            "fees_paid": fees_paid,
            "per_fold_return_pct": [span_return_pct(ts_ms, equity, f.test_start_ms, f.test_end_ms) for f in folds],
        }
    )
