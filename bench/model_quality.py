"""Honest model quality (issue 4, part 9): out-of-sample AUC and IC on the real history vs naive baselines.

Trains the spine's walk-forward blend (``run=real``: Binance 1h candles from ``../shared/data``) for
each feature set named, predicts every fold's out-of-sample span, and scores the predictions and
three naive baselines on exactly the same rows:

- always-up: the constant score 1 (AUC 0.5 by construction; its hit rate is the share of up moves);
- last-return sign: the sign of the last bar's return;
- momentum sign: the sign of the return over the last ``horizon`` bars.

AUC is of ``p_up`` (or the baseline score) against ``label_up`` (the forward return over the label
horizon, net of the round-trip cost, is positive); IC is the Spearman correlation of
``expected_return`` (or the baseline score) with ``label_return``. Writes ``docs/model_quality.md``
with ``--write``. Skips politely when the shared data folder is absent.

    .venv/bin/python bench/model_quality.py --write
"""

from __future__ import annotations

import argparse
import math
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
from backend.models.metrics import auc, fold_metrics, hit_rate, information_coefficient  # noqa: E402
from backend.runs.runner import load_bars, market_matrix, train_bundle  # noqa: E402

SCORERS = ("model", "always_up", "last_return_sign", "momentum_sign")


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _lagged_return(bars: pl.DataFrame, bars_back: int, bar_ms: int, name: str) -> pl.DataFrame:
    # Measured in time like the labels: the close exactly bars_back bars earlier, or null.
    past = bars.select((pl.col("ts") + bars_back * bar_ms).alias("ts"), "symbol", pl.col("close").alias("past_close"))
    joined = bars.select("ts", "symbol", "close").join(past, on=["ts", "symbol"], how="left")
    return joined.select("ts", "symbol", (pl.col("close").log() - pl.col("past_close").log()).alias(name))


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
    )
    # The same rows for every scorer: labels realised and every baseline defined.
    return frame.drop_nulls(["label_up", "label_return", "ret_1", "ret_h", "fold"]).sort("ts", "symbol")


def score(frame: pl.DataFrame) -> dict[str, dict[str, float]]:
    up = frame["label_up"].to_numpy()
    ret = frame["label_return"].to_numpy()
    out = {}
    for scorer in SCORERS:
        auc_score = frame["p_up" if scorer == "model" else scorer].to_numpy()
        ic_score = frame["expected_return" if scorer == "model" else scorer].to_numpy()
        out[scorer] = {"auc": auc(up, auc_score), "ic": information_coefficient(ret, ic_score), "hit_rate": hit_rate(ret, ic_score)}
    out["n"] = {"rows": float(frame.height), "up_share": float(up.mean()) if len(up) else math.nan}
    return out


def evaluate(feature_set: str, home: Home, num_threads: int) -> dict[str, object]:
    spec = compose_spec(["run=real", f"features={feature_set}", f"training.num_threads={num_threads}"])
    pipeline = compile_pipeline(spec)
    started = time.perf_counter()
    bars, snapshot = load_bars(spec, home, print)
    bundle = train_bundle(pipeline, bars, snapshot, lambda _m: None, home)
    trained = time.perf_counter()
    matrix = market_matrix(pipeline, bars, bundle, num_threads)
    frame = evaluation_frame(spec, bars, matrix, bundle.folds)
    per_symbol = {s: score(frame.filter(pl.col("symbol") == s)) for s in spec.symbols}
    per_fold = {}
    for window in bundle.folds:
        rows = frame.filter(pl.col("fold") == window.index)
        per_fold[window.index] = {
            "span": f"{_utc(window.test_start_ms)[:10]} .. {_utc(window.test_end_ms - 1)[:10]}",
            **fold_metrics(rows["label_up"], rows["label_return"], rows["p_up"], rows["expected_return"]),
        }
    return {
        "feature_set": feature_set,
        "n_features": len(pipeline.feature_names),
        "spec": spec,
        "bars": bars,
        "frame": frame,
        "overall": score(frame),
        "overall_metrics": fold_metrics(frame["label_up"], frame["label_return"], frame["p_up"], frame["expected_return"]),
        "per_symbol": per_symbol,
        "per_fold": per_fold,
        "train_seconds": trained - started,
    }


def mean_over_symbols(result: dict[str, object], scorer: str, key: str) -> float:
    values = [v[scorer][key] for v in result["per_symbol"].values() if not math.isnan(v[scorer][key])]  # type: ignore[union-attr]
    return float(np.mean(values)) if values else math.nan


def render(results: list[dict[str, object]], measured_at: str) -> str:
    first = results[0]
    spec, bars, frame = first["spec"], first["bars"], first["frame"]
    horizon = spec.training.label.horizon_bars
    cost = 2.0 * (spec.execution.taker_fee_bps + spec.execution.slippage.half_spread_bps) / 10_000.0
    lines = [
        "# Model quality on the real history",
        "",
        f"Measured {measured_at} with `bench/model_quality.py` (issue 4, part 9). Regenerate with "
        "`.venv/bin/python bench/model_quality.py --write`; every figure below comes from that run.",
        "",
        "## Setup",
        f"- Data: Binance spot {spec.data.timeframe} candles from `../shared/data` (`run=real`), "
        f"{len(spec.symbols)} symbols ({', '.join(spec.symbols)}), bars {_utc(int(bars['ts'].min()))} to "
        f"{_utc(int(bars['ts'].max()))} UTC ({bars.height:,} bars).",
        f"- Validation: expanding walk-forward, {spec.training.walk_forward.n_folds} folds, the first "
        f"{spec.training.walk_forward.min_train_bars} bars train only, purge {spec.training.walk_forward.purge_bars} "
        f"+ embargo {spec.training.walk_forward.embargo_bars} bars. Out-of-sample rows scored: {frame.height:,} "
        f"({_utc(int(frame['ts'].min()))[:10]} to {_utc(int(frame['ts'].max()))[:10]}).",
        f"- Label: forward log return over {horizon} bars ({horizon} h), net of a round-trip cost of "
        f"{cost:.2%} (Kraken taker fee and slippage, in and out); `label_up` = that net return > 0. "
        f"Share of up labels in the scored rows: {first['overall']['n']['up_share']:.3f}.",
        "- Model: the spine's blend of per-symbol LightGBM specialists and a global cross-asset model "
        f"(specialist weight {spec.model.specialist_weight}), `p_up` scored by AUC, `expected_return` by IC.",
        "- Baselines, scored on the very same rows: always-up (constant score: AUC 0.5, IC undefined), "
        f"last-return sign (sign of the last {spec.data.timeframe} return), momentum sign (sign of the return "
        f"over the last {horizon} bars).",
        "- AUC: probability that a random up row is scored above a random down row (0.5 = no skill). "
        "IC: Spearman rank correlation of the score with the realised net return (0 = no skill). "
        "Hit rate: share of rows where the score's sign equals the realised net return's sign.",
        "",
    ]
    for result in results:
        overall = result["overall"]
        metrics = result["overall_metrics"]
        lines += [
            f"## Feature set `{result['feature_set']}` ({result['n_features']} features)",
            "",
            f"Loading the lake and walk-forward training took {result['train_seconds']:.0f} s (serial, 2 threads, shared machine).",
            "",
            "### Overall (all symbols pooled, and the mean of the per-symbol figures)",
            "",
            "| scorer | AUC pooled | AUC mean per symbol | IC pooled | IC mean per symbol | hit rate pooled |",
            "|---|---|---|---|---|---|",
        ]
        for scorer in SCORERS:
            lines.append(
                f"| {scorer} | {_fmt(overall[scorer]['auc'])} | {_fmt(mean_over_symbols(result, scorer, 'auc'))} | "
                f"{_fmt(overall[scorer]['ic'])} | {_fmt(mean_over_symbols(result, scorer, 'ic'))} | "
                f"{_fmt(overall[scorer]['hit_rate'])} |"
            )
        up_share = overall["n"]["up_share"]
        base_loss = -(up_share * math.log(up_share) + (1.0 - up_share) * math.log(1.0 - up_share))
        lines += [
            "",
            f"Model log loss {_fmt(metrics['log_loss'])}, expected calibration error {_fmt(metrics['calibration_error'])} "
            f"over {int(metrics['n']):,} rows. For scale: a constant forecast at the scored rows' up share "
            f"(known only in hindsight) has log loss {_fmt(base_loss)}; always-down has hit rate "
            f"{_fmt(1.0 - up_share)}; the reversed momentum sign (a 24-bar reversal rule) has AUC "
            f"{_fmt(1.0 - overall['momentum_sign']['auc'])}.",
            "",
            "### Per fold (model, `backend.models.metrics.fold_metrics`)",
            "",
            "| fold | test span | rows | AUC | log loss | IC | hit rate | calibration error |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for index, row in result["per_fold"].items():
            lines.append(
                f"| {index} | {row['span']} | {int(row['n']):,} | {_fmt(row['auc'])} | {_fmt(row['log_loss'])} | "
                f"{_fmt(row['ic'])} | {_fmt(row['hit_rate'])} | {_fmt(row['calibration_error'])} |"
            )
        lines += [
            "",
            "### Per symbol",
            "",
            "| symbol | rows | up share | model AUC | last-return AUC | momentum AUC | model IC | last-return IC | momentum IC |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for symbol, row in result["per_symbol"].items():
            lines.append(
                f"| {symbol} | {int(row['n']['rows']):,} | {_fmt(row['n']['up_share'], 3)} | {_fmt(row['model']['auc'])} | "
                f"{_fmt(row['last_return_sign']['auc'])} | {_fmt(row['momentum_sign']['auc'])} | {_fmt(row['model']['ic'])} | "
                f"{_fmt(row['last_return_sign']['ic'])} | {_fmt(row['momentum_sign']['ic'])} |"
            )
        beats_auc = sum(
            1
            for row in result["per_symbol"].values()
            if row["model"]["auc"] > max(row["last_return_sign"]["auc"], row["momentum_sign"]["auc"], 0.5)
        )
        beats_ic = sum(
            1
            for row in result["per_symbol"].values()
            if row["model"]["ic"] > max(row["last_return_sign"]["ic"], row["momentum_sign"]["ic"], 0.0)
        )
        lines += [
            "",
            f"The model's AUC beats every baseline (and 0.5) on {beats_auc} of {len(result['per_symbol'])} symbols; "
            f"its IC beats every baseline (and 0) on {beats_ic} of {len(result['per_symbol'])}.",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feature-sets", nargs="+", default=["core_v1", "full_v1"])
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write docs/model_quality.md")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "model_quality.md")
    args = parser.parse_args()
    if default_shared_dir() is None:
        print("model_quality: skipped, the recorded data folder ../shared/data is absent (or set ACTS_SHARED_DATA)")
        return 0
    measured_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="acts-quality-") as tmp:
        home = Home(Path(tmp))
        results = [evaluate(name, home, args.num_threads) for name in args.feature_sets]
    text = render(results, measured_at)
    print(text)
    if args.write:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
