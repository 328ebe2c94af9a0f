"""Tests for backend.models.lineage: JSON-safe figures, span returns, code version."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from backend.models.bundle import FoldWindow
from backend.models.lineage import clean, code_version, labelled_predictions, metrics_of, span_return_pct, strategy_figures

TS = np.array([10, 20, 30, 40, 50], dtype=np.int64)
EQUITY = np.array([100.0, 100.0, 110.0, 99.0, 121.0])


def test_clean_makes_figures_json_safe() -> None:
    assert clean({"a": [np.float64(1.5), math.nan, math.inf], "b": (np.int64(3), "x"), "c": None}) == {"a": [1.5, None, None], "b": [3, "x"], "c": None}


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (30, 60, 21.0),  # from the equity before the span's first bar (100) to the last bar (121)
        (0, 30, 0.0),  # starting at the first bar: that bar is the base
        (40, 50, -10.0),
        (60, 90, 0.0),  # no bar in the span
        (31, 35, 0.0),  # no bar in the span inside the series
    ],
)
def test_span_return_is_the_equity_change_over_the_bars_of_the_span(start: int, end: int, expected: float) -> None:
    assert span_return_pct(TS, EQUITY, start, end) == pytest.approx(expected)


def test_strategy_figures_cover_the_whole_out_of_sample_span_and_each_fold() -> None:
    folds = (FoldWindow(0, 0, 5, 30, 45), FoldWindow(1, 0, 20, 45, 60))

    figures = strategy_figures(folds, TS, EQUITY, "1.25")

    assert figures == {
        "oos_start_ms": 30,
        "oos_end_ms": 60,
        "return_pct": pytest.approx(21.0),
        "fees_paid": "1.25",
        "per_fold_return_pct": [pytest.approx(-1.0), pytest.approx(100.0 * (121.0 / 99.0 - 1.0))],
    }


def test_labelled_predictions_keep_rows_with_a_label_and_a_prediction() -> None:
    predictions = pl.DataFrame({"ts": [1, 1, 2], "symbol": ["A", "B", "A"], "fold": [0, 0, 0], "p_up": [0.6, float("nan"), 0.4], "expected_return": [0.1, 0.2, -0.1]})
    dataset = pl.DataFrame({"ts": [1, 1, 2, 3], "symbol": ["A", "B", "A", "A"], "label_up": [1.0, 0.0, None, 1.0], "label_return": [0.01, -0.01, None, 0.02]})

    rows = labelled_predictions(predictions, dataset)

    assert rows.select("ts", "symbol").rows() == [(1, "A")]
    assert metrics_of(rows)["n"] == 1.0
    assert metrics_of(rows)["auc"] is None  # one class: undefined, recorded as null


def test_code_version_names_the_package_and_the_commit_or_unknown(tmp_path: Path) -> None:
    here = code_version()
    outside = code_version(tmp_path)

    assert here["package"] == "0.1.0"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", here["git_commit"])
    assert outside == {"package": "0.1.0", "git_commit": "unknown"}
