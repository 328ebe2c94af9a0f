"""Honest model quality (issue 4 part 9, issue 11 item 3): out-of-sample AUC, IC and log loss on the real history.

Trains the spine's walk-forward model (``run=real``: Binance 1h candles from ``../shared/data``; the
global and specialist boosters combined by the walk-forward stacker, ADR-023/024) for each feature set
named, predicts every fold's out-of-sample span, and scores on exactly the same rows the model, the
old fixed-weight blend of the very same boosters, and four naive baselines:

- always-up: the constant score 1 (AUC 0.5 by construction; its hit rate is the share of up moves);
- last-return sign: the sign of the last bar's return;
- momentum sign: the sign of the return over the last ``horizon`` bars;
- reversal sign: minus the momentum sign (on this history 24-hour returns tended to reverse).

Log loss of ``p_up`` is set against two constant forecasts: the scored rows' up share (known only in
hindsight) and the prior rate (each fold's up share among the labelled rows before its training
cut-off, the rate a forecaster could have known). The last 20 % of the bars' timestamps form the
held-out segment: no parameter was chosen on it, and its figures are reported on their own.

AUC is of ``p_up`` (or the baseline score) against ``label_up`` (the forward return over the label
horizon, net of the round-trip cost, is positive); IC is the Spearman correlation of
``expected_return`` (or the baseline score) with ``label_return``. Writes ``docs/model_quality.md``
with ``--write``. Skips politely when the shared data folder is absent.

    .venv/bin/python bench/model_quality.py --write
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.config.compose import compose_spec  # noqa: E402
from backend.data.shared_loader import default_shared_dir  # noqa: E402
from backend.engine.pipeline import compile_pipeline  # noqa: E402
from backend.features.labels import forward_return_labels  # noqa: E402
from backend.home import Home  # noqa: E402
from backend.models.metrics import auc, fold_metrics, hit_rate, information_coefficient, log_loss  # noqa: E402
from backend.models.stacking import StackMethod, StackReason, Stacker  # noqa: E402
from backend.models.train import predict_bundle  # noqa: E402
from backend.runs.runner import load_bars, market_matrix, train_bundle, training_dataset  # noqa: E402

SCORERS = ("model", "fixed_blend", "always_up", "last_return_sign", "momentum_sign", "reversal_sign")
NAIVE = ("always_up", "last_return_sign", "momentum_sign", "reversal_sign")
HOLDOUT_SHARE = 0.2


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _lagged_return(bars: pl.DataFrame, bars_back: int, bar_ms: int, name: str) -> pl.DataFrame:
    # Measured in time like the labels: the close exactly bars_back bars earlier, or null.
    past = bars.select((pl.col("ts") + bars_back * bar_ms).alias("ts"), "symbol", pl.col("close").alias("past_close"))
    joined = bars.select("ts", "symbol", "close").join(past, on=["ts", "symbol"], how="left")
    return joined.select("ts", "symbol", (pl.col("close").log() - pl.col("past_close").log()).alias(name))


def fixed_blend_of(bundle):
    """The same boosters combined by the old fixed-weight blend in every fold (for comparison only)."""
    w = bundle.specialist_weight
    fixed = tuple(
        Stacker(
            s.fold, s.target, StackMethod.FIXED_BLEND, StackReason.NO_EARLIER_FOLD,
            (f"{s.target}.global", f"{s.target}.specialist"), (0.0, 1.0 - w, w), 0, s.label_cutoff_ms, (),
        )  # fmt: skip
        for s in bundle.stackers
    )
    return dataclasses.replace(bundle, stackers=fixed)


def evaluation_frame(spec, bars: pl.DataFrame, matrix, folds) -> pl.DataFrame:
    """Long frame of every out-of-sample row with a prediction, its labels and the baseline scores."""
    n_t, n_s = matrix.has_bar.shape
    frame = pl.DataFrame(
        {
            "ts": np.repeat(matrix.ts_ms, n_s),
            "symbol": np.tile(np.array(matrix.symbols), n_t),
            "p_up": matrix.pred["p_up"].ravel(),
            "expected_return": matrix.pred["expected_return"].ravel(),
        }
    ).filter(pl.col("p_up").is_not_nan() & pl.col("expected_return").is_not_nan())
    horizon = spec.training.label.horizon_bars
    cost = 2.0 * (spec.execution.taker_fee_bps + spec.execution.slippage.half_spread_bps) / 10_000.0
    labels = forward_return_labels(bars, horizon, cost, spec.data.bar_ms)
    frame = frame.join(labels, on=["ts", "symbol"], how="inner")
    frame = frame.join(_lagged_return(bars, 1, spec.data.bar_ms, "ret_1"), on=["ts", "symbol"], how="left")
    frame = frame.join(_lagged_return(bars, horizon, spec.data.bar_ms, "ret_h"), on=["ts", "symbol"], how="left")
    fold = pl.lit(None, dtype=pl.Int64)
    for window in folds:
        fold = pl.when(pl.col("ts").is_between(window.test_start_ms, window.test_end_ms, closed="left")).then(window.index).otherwise(fold)
    frame = frame.with_columns(
        fold.alias("fold"),
        pl.lit(1.0).alias("always_up"),
        pl.col("ret_1").sign().alias("last_return_sign"),
        pl.col("ret_h").sign().alias("momentum_sign"),
        (-pl.col("ret_h").sign()).alias("reversal_sign"),
    )
    # The same rows for every scorer: labels realised and every baseline defined.
    return frame.drop_nulls(["label_up", "label_return", "ret_1", "ret_h", "fold"]).sort("ts", "symbol")


def _columns(scorer: str) -> tuple[str, str]:
    if scorer == "model":
        return "p_up", "expected_return"
    if scorer == "fixed_blend":
        return "fixed_p_up", "fixed_expected_return"
    return scorer, scorer


def _check_of(stacker: dict) -> str:
    if not stacker["check"]:
        return ""
    metric = "log loss" if stacker["target"] == "p_up" else "IC"
    fitted, blend = stacker["check"]
    return f"; later-half check {metric} {fitted:.4f} fitted vs {blend:.4f} fixed blend"


def _entropy(rate: float) -> float:
    return -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))


def score(frame: pl.DataFrame) -> dict[str, dict[str, float]]:
    up = frame["label_up"].to_numpy()
    ret = frame["label_return"].to_numpy()
    out = {}
    for scorer in SCORERS:
        auc_column, ic_column = _columns(scorer)
        auc_score, ic_score = frame[auc_column].to_numpy(), frame[ic_column].to_numpy()
        out[scorer] = {"auc": auc(up, auc_score), "ic": information_coefficient(ret, ic_score), "hit_rate": hit_rate(ret, ic_score)}
    for scorer in ("model", "fixed_blend"):
        out[scorer]["log_loss"] = log_loss(up, frame[_columns(scorer)[0]].to_numpy()) if len(up) else math.nan
    share = float(up.mean()) if len(up) else math.nan
    out["n"] = {
        "rows": float(frame.height),
        "up_share": share,
        "hindsight_log_loss": _entropy(share) if len(up) else math.nan,
        "prior_log_loss": log_loss(up, frame["prior_rate"].to_numpy()) if len(up) else math.nan,
    }
    return out


def prior_rates(dataset: pl.DataFrame, folds) -> dict[int, float]:
    """Each fold's up share among the labelled rows before its training cut-off (a rate known in time)."""
    out = {}
    for window in folds:
        known = dataset.filter((pl.col("ts") < window.train_end_ms) & pl.col("label_up").is_not_null())["label_up"]
        out[window.index] = float(known.mean())
    return out


def evaluate(feature_set: str, home: Home, num_threads: int, overrides: list[str]) -> dict[str, object]:
    spec = compose_spec(["run=real", f"features={feature_set}", f"training.num_threads={num_threads}", *overrides])
    pipeline = compile_pipeline(spec)
    started = time.perf_counter()
    bars, snapshot = load_bars(spec, home, print)
    dataset = training_dataset(spec, bars)
    bundle = train_bundle(pipeline, bars, snapshot, lambda m: print(f"  {m}", flush=True), home, dataset)
    trained = time.perf_counter()
    matrix = market_matrix(pipeline, bars, bundle, num_threads)
    fixed = predict_bundle(fixed_blend_of(bundle), dataset, spec.universe.clusters, num_threads).select(
        "ts", "symbol", pl.col("p_up").alias("fixed_p_up"), pl.col("expected_return").alias("fixed_expected_return")
    )
    frame = evaluation_frame(spec, bars, matrix, bundle.folds).join(fixed, on=["ts", "symbol"], how="inner")
    priors = prior_rates(dataset, bundle.folds)
    times = np.unique(bars["ts"].to_numpy())
    holdout_ms = int(times[int(len(times) * (1.0 - HOLDOUT_SHARE))])
    frame = frame.with_columns(
        pl.col("fold").replace_strict(priors, return_dtype=pl.Float64).alias("prior_rate"),
        pl.when(pl.col("ts") >= holdout_ms).then(pl.lit("held_out")).otherwise(pl.lit("development")).alias("segment"),
    )
    first_stacked = min((s.fold for s in bundle.stackers if s.target == "p_up" and s.reason is StackReason.FITTED), default=None)
    per_symbol = {s: score(frame.filter(pl.col("symbol") == s)) for s in spec.symbols}
    per_fold = {}
    for window in bundle.folds:
        rows = frame.filter(pl.col("fold") == window.index)
        rule = {t: bundle.stacker(window.index, t) for t in ("p_up", "expected_return")}
        per_fold[window.index] = {
            "span": f"{_utc(window.test_start_ms)[:10]} .. {_utc(window.test_end_ms - 1)[:10]}",
            "rule": " / ".join(r.method.value if r.reason is StackReason.FITTED else f"fixed blend ({r.reason.value})" for r in rule.values()),
            "prior_rate": priors[window.index],
            "prior_log_loss": log_loss(rows["label_up"].to_numpy(), rows["prior_rate"].to_numpy()),
            "hindsight_log_loss": _entropy(float(rows["label_up"].mean())),
            **fold_metrics(rows["label_up"], rows["label_return"], rows["p_up"], rows["expected_return"]),
        }
    stacked = frame.filter(pl.col("fold") >= first_stacked) if first_stacked is not None else frame.clear()
    return {
        "feature_set": feature_set,
        "n_features": len(pipeline.feature_names),
        "spec": spec,
        "bars": bars,
        "frame": frame,
        "holdout_ms": holdout_ms,
        "overall": score(frame),
        "segments": {
            "all folds": score(frame),
            "stacked folds only": score(stacked),
            "development segment": score(frame.filter(pl.col("segment") == "development")),
            "held-out segment (last 20 %)": score(frame.filter(pl.col("segment") == "held_out")),
        },
        "overall_metrics": fold_metrics(frame["label_up"], frame["label_return"], frame["p_up"], frame["expected_return"]),
        "per_symbol": per_symbol,
        "per_fold": per_fold,
        "stackers": [s.to_json() for s in bundle.stackers],
        "train_seconds": trained - started,
    }


def mean_over_symbols(result: dict[str, object], scorer: str, key: str) -> float:
    values = [v[scorer][key] for v in result["per_symbol"].values() if not math.isnan(v[scorer][key])]  # type: ignore[union-attr]
    return float(np.mean(values)) if values else math.nan


def _loss_line(segment: dict[str, dict[str, float]]) -> str:
    n = segment["n"]
    return (
        f"{_fmt(segment['model']['log_loss'])} | {_fmt(segment['fixed_blend']['log_loss'])} | {_fmt(n['prior_log_loss'])} | "
        f"{_fmt(n['hindsight_log_loss'])}"
    )


def render(results: list[dict[str, object]], measured_at: str, load: str) -> str:
    first = results[0]
    spec, bars, frame = first["spec"], first["bars"], first["frame"]
    horizon = spec.training.label.horizon_bars
    cost = 2.0 * (spec.execution.taker_fee_bps + spec.execution.slippage.half_spread_bps) / 10_000.0
    walk = spec.training.walk_forward
    lines = [
        "# Model quality on the real history",
        "",
        f"Measured {measured_at} with `bench/model_quality.py` (issue 11, item 3; loaded machine: x86_64, 2 cores, "
        f"Python 3.11.7, shared by up to 8 agents, load average at the start {load}). Regenerate with "
        "`.venv/bin/python bench/model_quality.py --write`; every figure below comes from that run.",
        "",
        "## Setup",
        f"- Data: Binance spot {spec.data.timeframe} candles from `../shared/data` (`run=real`), every Universe V1 symbol "
        f"whose stitched history passes the loader's reconciliation (OHLC sanity, and identical values wherever two "
        f"recorded folders overlap) and runs to the end of the recording with at least a year of bars: "
        f"{len(spec.symbols)} symbols ({', '.join(spec.symbols)}), bars {_utc(int(bars['ts'].min()))} to "
        f"{_utc(int(bars['ts'].max()))} UTC ({bars.height:,} bars). The boosters see the whole history "
        f"(`training.max_train_rows` {spec.training.max_train_rows:,}).",
        f"- Validation: expanding walk-forward, {walk.n_folds} folds, the first {walk.min_train_bars} bars train only, "
        f"purge {walk.purge_bars} + embargo {walk.embargo_bars} bars. Out-of-sample rows scored: {frame.height:,} "
        f"({_utc(int(frame['ts'].min()))[:10]} to {_utc(int(frame['ts'].max()))[:10]}).",
        f"- Label: forward log return over {horizon} bars ({horizon} h), net of a round-trip cost of "
        f"{cost:.2%} (Kraken taker fee and slippage, in and out); `label_up` = that net return > 0. "
        f"Share of up labels in the scored rows: {first['overall']['n']['up_share']:.3f}.",
        "- Model: per-symbol LightGBM specialists and a global cross-asset model, combined per fold by the walk-forward "
        "stacker (ADR-023): `p_up` = sigmoid(c0 + c1 logit(global) + c2 logit(specialist)), a logistic regression fitted "
        "only on earlier folds' out-of-fold rows whose labels were realised before the fold's training cut-off, so it is "
        "stacking and Platt calibration in one fit (ADR-024); `expected_return` = the same combination by ridge "
        f"regression on the realised net return. The first fold has no out-of-fold history and uses the declared "
        f"fallback, the fixed blend (specialist weight {spec.model.specialist_weight}). A fitted rule is kept only when, "
        "fitted on the earlier half (in time) of its out-of-fold rows, it beats the fixed blend on their later half "
        "(log loss for `p_up`, IC for `expected_return`; ADR-065); otherwise the fold keeps the fixed blend "
        "(`no_out_of_fold_gain`). `fixed_blend` below is that old blend applied to the very same boosters in every fold.",
        "- Baselines, scored on the very same rows: always-up (constant score: AUC 0.5, IC undefined), "
        f"last-return sign (sign of the last {spec.data.timeframe} return), momentum sign (sign of the return "
        f"over the last {horizon} bars) and reversal sign (its opposite).",
        "- Log loss of `p_up` against two constant forecasts: the prior rate (each fold's up share among the labelled "
        "rows before its training cut-off: a rate known at the time) and the hindsight rate (the scored rows' own up "
        "share, known only afterwards; the stricter bar).",
        f"- Segments: the last {HOLDOUT_SHARE:.0%} of the bars' timestamps (from {_utc(int(first['holdout_ms']))[:10]}) are "
        "the held-out segment; every figure is also given for it alone.",
        "",
        "## Which parameters were chosen on which segment",
        "",
        "- Booster parameters (`conf/model/lgbm_blend.yaml`), feature sets, the label horizon (24 h) and the walk-forward "
        "layout were set at the spine (issue 4, 2026-11-27) a priori and have not been tuned on any segment since.",
        "- Stacker settings (`model.stacking`: `min_rows` 1000, `l2` 1.0) and the choice of the logistic/ridge stacker were "
        "fixed before this run from first principles (a ridge small against hundreds of thousands of rows, a row floor "
        "far below one fold's rows); nothing was tuned on any segment. The held-out segment has been read once, for this report.",
        "- Data: every symbol and bar that passes reconciliation; no selection by result.",
        "",
    ]
    for result in results:
        lines += [
            f"## Feature set `{result['feature_set']}` ({result['n_features']} features)",
            "",
            f"Loading the lake and walk-forward training (boosters and stackers) took {result['train_seconds']:.0f} s "
            "(serial, 2 threads, loaded machine).",
            "",
        ]
        for name, segment in result["segments"].items():
            rows = int(segment["n"]["rows"])
            lines += [f"### {name} ({rows:,} rows, up share {_fmt(segment['n']['up_share'], 3)})", ""]
            if rows == 0:
                lines += ["No rows.", ""]
                continue
            lines += ["| scorer | AUC | IC | hit rate |", "|---|---|---|---|"]
            for scorer in SCORERS:
                lines.append(f"| {scorer} | {_fmt(segment[scorer]['auc'])} | {_fmt(segment[scorer]['ic'])} | {_fmt(segment[scorer]['hit_rate'])} |")
            best_auc = max(segment[b]["auc"] for b in NAIVE)
            best_ic = max(segment[b]["ic"] for b in NAIVE if not math.isnan(segment[b]["ic"]))
            lines += [
                "",
                "| log loss: model | fixed blend | prior rate | hindsight rate |",
                "|---|---|---|---|",
                f"| {_loss_line(segment)} |",
                "",
                f"Model AUC {_fmt(segment['model']['auc'])} vs best naive {_fmt(best_auc)}; IC {_fmt(segment['model']['ic'])} vs best "
                f"naive {_fmt(best_ic)}; log loss {_fmt(segment['model']['log_loss'])} vs prior rate "
                f"{_fmt(segment['n']['prior_log_loss'])} and hindsight rate {_fmt(segment['n']['hindsight_log_loss'])}.",
                "",
            ]
        lines += [
            "### Per fold (model, `backend.models.metrics.fold_metrics`)",
            "",
            "| fold | test span | rule for p_up / expected_return | rows | AUC | IC | log loss | prior-rate log loss | hindsight log loss | calibration error |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for index, row in result["per_fold"].items():
            lines.append(
                f"| {index} | {row['span']} | {row['rule']} | {int(row['n']):,} | {_fmt(row['auc'])} | {_fmt(row['ic'])} | "
                f"{_fmt(row['log_loss'])} | {_fmt(row['prior_log_loss'])} | {_fmt(row['hindsight_log_loss'])} | {_fmt(row['calibration_error'])} |"
            )
        lines += ["", "Stackers recorded in the bundle (probability inputs enter as logits):", ""]
        for stacker in result["stackers"]:
            if stacker["target"] in ("p_up", "expected_return"):
                coef = ", ".join(f"{c:.4g}" for c in stacker["coef"])
                lines.append(
                    f"- fold {stacker['fold']} `{stacker['target']}`: {stacker['method']} ({stacker['reason']}), "
                    f"intercept and weights of {stacker['inputs']}: ({coef}), "
                    f"{stacker['rows']:,} out-of-fold rows from folds {stacker['source_folds']}{_check_of(stacker)}"
                )
        lines += [
            "",
            "### Per symbol (all folds)",
            "",
            "| symbol | rows | up share | model AUC | best naive AUC | model IC | best naive IC |",
            "|---|---|---|---|---|---|---|",
        ]
        beats_auc = beats_ic = 0
        for symbol, row in result["per_symbol"].items():
            if row["n"]["rows"] == 0:
                continue
            naive_auc = max(row[b]["auc"] for b in NAIVE)
            naive_ic = max((row[b]["ic"] for b in NAIVE if not math.isnan(row[b]["ic"])), default=math.nan)
            beats_auc += row["model"]["auc"] > naive_auc
            beats_ic += row["model"]["ic"] > naive_ic
            lines.append(
                f"| {symbol} | {int(row['n']['rows']):,} | {_fmt(row['n']['up_share'], 3)} | {_fmt(row['model']['auc'])} | "
                f"{_fmt(naive_auc)} | {_fmt(row['model']['ic'])} | {_fmt(naive_ic)} |"
            )
        lines += [
            "",
            f"The model's AUC beats the best naive baseline on {beats_auc} of {len(result['per_symbol'])} symbols; "
            f"its IC on {beats_ic} of {len(result['per_symbol'])}.",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature-sets", nargs="+", default=["core_v1"])
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write docs/model_quality.md")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "model_quality.md")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (a smoke run; not for the report)")
    args = parser.parse_args()
    if default_shared_dir() is None:
        print("model_quality: skipped, the recorded data folder ../shared/data is absent (or set ACTS_SHARED_DATA)")
        return 0
    measured_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="acts-quality-") as tmp:
        home = Home(Path(tmp))
        results = [evaluate(name, home, args.num_threads, args.override) for name in args.feature_sets]
    text = render(results, measured_at, load)
    print(text)
    if args.write:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
