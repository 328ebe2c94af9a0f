"""The honest protocol: backend.runs.evaluation and `acts evaluate` on a real (small) run folder."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stubs import small_overrides, small_spec

from backend.config.compose import compose_spec
from backend.runs.backtest import run_backtest
from backend.clock import WallClock
from backend.runs.evaluation import (
    FIGURES, SEGMENTS, Segment, baseline_figures, evaluate, load_run, markdown, momentum_scores, rows_of, segments, verdict,
    write_evaluation,
)  # fmt: skip
from backend.engine.events import MarketMatrix
from backend.engine.pipeline import compile_pipeline
from backend.errors import ConfigError, DataError, ReplayError
from backend.home import Home
from scripts.cli import main

PROFILE_FIGURES = {*FIGURES, "avg_exposure_pct", "decisions", "ledger_reconciles"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    pipeline = compile_pipeline(small_spec("training.num_threads=1"))
    run_backtest(pipeline, Home(root / "home"), root / "run", WallClock(), lambda _: None)
    return root / "run"


def test_a_run_is_judged_per_segment_against_its_baselines_with_each_profile(run_dir: Path) -> None:
    run = load_run(run_dir)
    profiles = [compose_spec([f"risk={name}"]).risk for name in ("conservative", "balanced")]
    report = evaluate(run, profiles, 0.2)
    assert report["profiles"] == ["conservative", "balanced"] and tuple(report["segments"]) == SEGMENTS
    seg = report["segments"]
    n = len(run.matrix.ts_ms)
    assert seg["holdout"]["timestamps"] == n - int(n * 0.8)
    assert seg["tuning"]["timestamps"] + seg["holdout"]["timestamps"] == seg["out_of_sample"]["timestamps"]
    assert seg["tuning"]["last_ts"] < seg["holdout"]["first_ts"]
    # The out-of-sample span starts at the first walk-forward prediction.
    first = int(np.argmax(np.isfinite(run.matrix.pred["p_up"]).any(axis=1)))
    assert seg["out_of_sample"]["first_ts"] == int(run.matrix.ts_ms[first]) and first > 0
    for name in SEGMENTS:
        for scorer in ("model", "momentum"):
            assert set(seg[name][scorer]) == {"conservative", "balanced"}
            for figures in seg[name][scorer].values():
                assert set(figures) == PROFILE_FIGURES | {"cagr_pct"} and figures["ledger_reconciles"]
        assert set(seg[name]["baselines"]) == {"cash", "buy_and_hold_equal_weight", "buy_and_hold_BTC"}
        assert seg[name]["baselines"]["cash"]["return_pct"] == 0.0 and seg[name]["baselines"]["cash"]["sharpe"] is None
    assert report["verdict"]["profile"] == "conservative"
    assert report["label_round_trip_cost"] == pytest.approx(0.009)
    # Deterministic: the same folder gives the same report.
    assert evaluate(load_run(run_dir), profiles, 0.2) == report


def test_the_run_profile_is_judged_when_none_is_given_and_the_report_is_written(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    report = evaluate(load_run(copy), [], 0.25)
    assert report["profiles"] == ["aggressive"]  # the SMALL spec's own profile
    write_evaluation(copy, report)
    assert json.loads((copy / "evaluation.json").read_text(encoding="utf-8")) == report
    text = (copy / "evaluation.md").read_text(encoding="utf-8")
    assert text == markdown(report) and "### holdout" in text and "| model, aggressive |" in text and "n/a" in text


def test_acts_evaluate_judges_a_finished_run_folder(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    out, err = io.StringIO(), io.StringIO()
    assert main(["evaluate", "--run-dir", str(copy), "--profiles", "balanced", "--json"], out, err) == 0
    report = json.loads(out.getvalue())
    assert report["profiles"] == ["balanced"] and (copy / "evaluation.md").is_file()
    assert "evaluating" in err.getvalue()


def test_acts_evaluate_without_a_run_folder_runs_the_backtest_first(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "fresh"
    assert main(["evaluate", *small_overrides("training.num_threads=1"), f"hydra.run.dir={target}"], out, err) == 0
    assert (target / "summary.json").is_file() and (target / "evaluation.json").is_file()
    assert out.getvalue().startswith("Evaluation of ") and "| buy_and_hold_equal_weight |" in out.getvalue()


def _matrix(p_up: np.ndarray, symbols: tuple[str, ...] = ("ETH", "SOL")) -> MarketMatrix:
    n = p_up.shape[0]
    close = np.linspace(100.0, 110.0, n)[:, None] * np.ones((1, len(symbols)))
    return MarketMatrix(
        np.arange(n, dtype=np.int64) * 300_000, symbols, close, close, np.ones(close.shape, dtype=bool),
        {"p_up": p_up, "expected_return": np.zeros_like(p_up)}, {"f": close}, None,
    )  # fmt: skip


@pytest.mark.parametrize("fraction", [0.0, 0.6])
def test_a_holdout_fraction_out_of_bounds_is_refused(fraction: float) -> None:
    with pytest.raises(ConfigError, match=f"'holdout_fraction' must be > 0 and <= 0.5, was {fraction}"):
        segments(_matrix(np.full((10, 2), 0.5)), fraction)


def test_a_run_without_predictions_or_without_tuning_rows_cannot_be_evaluated() -> None:
    with pytest.raises(DataError, match="no out-of-sample prediction"):
        segments(_matrix(np.full((10, 2), np.nan)), 0.2)
    late = np.full((10, 2), np.nan)
    late[9] = 0.5
    with pytest.raises(DataError, match="starts at or before the first out-of-sample row 9: no rows are left to tune on"):
        segments(_matrix(late), 0.2)


def test_segment_rows_and_a_baseline_without_btc() -> None:
    matrix = _matrix(np.full((10, 2), 0.5))
    rows = rows_of(matrix, Segment("s", 2, 5))
    assert rows.ts_ms.tolist() == [600_000, 900_000, 1_200_000] and rows.volume is None and rows.feat["f"].shape == (3, 2)
    pipeline = compile_pipeline(small_spec())
    assert set(baseline_figures(pipeline, rows)) == {"cash", "buy_and_hold_equal_weight"}


def test_momentum_reads_only_past_closes() -> None:
    close = np.array([[100.0], [101.0], [100.0], [102.0], [103.0]])
    matrix = MarketMatrix(np.arange(5, dtype=np.int64), ("ETH",), close, close, np.ones((5, 1), dtype=bool), {"p_up": close}, {})
    scores = momentum_scores(matrix, 2, 0.01)
    np.testing.assert_allclose(scores["expected_return"][:, 0], [np.nan, np.nan, 0.0 - 0.01, np.log(102 / 101) - 0.01, np.log(103 / 100) - 0.01])
    np.testing.assert_allclose(scores["p_up"][:, 0], [np.nan, np.nan, 0.5, 0.5, 1.0])
    assert np.isnan(scores["p_recovery"]).all()
    # Changing a later close never changes an earlier score.
    later = close.copy()
    later[4] = 50.0
    again = momentum_scores(MarketMatrix(matrix.ts_ms, ("ETH",), later, later, matrix.has_bar, {"p_up": later}, {}), 2, 0.01)
    np.testing.assert_array_equal(again["expected_return"][:4], scores["expected_return"][:4])


def test_the_verdict_applies_the_issue_bar_and_the_abstention_rule() -> None:
    def seg(ret: float, dd: float, sharpe: float | None, held_sharpe: float | None) -> dict:
        return {
            "model": {"p": {"return_pct": ret, "max_drawdown_pct": dd, "sharpe": sharpe}},
            "baselines": {"buy_and_hold_equal_weight": {"max_drawdown_pct": 30.0, "sharpe": held_sharpe}},
        }

    good = verdict(seg(1.0, 5.0, 0.8, 0.5), "p")
    assert good["edge_survives_costs"] and good["abstains"]
    idle = verdict(seg(0.0, 0.0, None, None), "p")
    assert not idle["sharpe_above_buy_and_hold"] and not idle["edge_survives_costs"] and idle["abstains"]
    bad = verdict(seg(-3.0, 40.0, -0.2, 0.5), "p")
    assert bad == {
        "profile": "p", "return_at_least_cash": False, "drawdown_below_buy_and_hold": False,
        "sharpe_above_buy_and_hold": False, "edge_survives_costs": False, "abstains": False,
    }  # fmt: skip


def test_a_folder_that_is_not_a_complete_or_intact_run_is_refused(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="is not a complete run folder"):
        load_run(tmp_path)
    spec_altered = tmp_path / "spec"
    shutil.copytree(run_dir, spec_altered)
    raw = json.loads((spec_altered / "spec.json").read_text(encoding="utf-8"))
    raw["seed"] = 99
    (spec_altered / "spec.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ReplayError, match="spec.json does not match"):
        load_run(spec_altered)
    inputs_altered = tmp_path / "inputs"
    shutil.copytree(run_dir, inputs_altered)
    bars = pl.read_parquet(inputs_altered / "inputs.parquet")
    bars.with_columns(pl.col("close") * 1.01).write_parquet(inputs_altered / "inputs.parquet")
    with pytest.raises(ReplayError, match="inputs.parquet does not match its recorded hash"):
        load_run(inputs_altered)
