"""The post-install smoke check: predict the stored sample again and compare with the manifest's outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from backend.bundles.verify import Verified
from backend.models.bundle import TARGETS
from backend.models.train import predict_bundle


@dataclass(frozen=True)
class SmokeResult:
    """The smoke check's verdict: rows compared, the largest difference, the first mismatch (empty: none)."""

    rows: int
    max_abs_diff: float
    mismatch: str

    @property
    def passed(self) -> bool:
        return not self.mismatch


def _same(got: float | None, want: float | None, tolerance: float) -> tuple[bool, float]:
    got = None if got is None or math.isnan(got) else got
    if got is None or want is None:
        return got is None and want is None, 0.0
    diff = abs(got - want)
    return diff <= tolerance * max(1.0, abs(want)), diff


def smoke_check(verified: Verified, num_threads: int = 1) -> SmokeResult:
    """Predict the bundle's stored sample and compare every output with the manifest, within its tolerance.

    The sample is read from the verified folder; predictions are forward (the last fold covers rows
    after its test span), as when a run uses the bundle.
    """
    smoke = verified.manifest.smoke
    sample = pl.read_parquet(verified.path / smoke.sample)
    predicted = predict_bundle(verified.model, sample, dict(verified.manifest.compat.clusters), num_threads, forward=True)
    rows = {(r["ts"], r["symbol"]): r for r in predicted.iter_rows(named=True)}
    worst = 0.0
    for want in smoke.expected:
        got = rows.get((want.ts, want.symbol))
        if got is None:
            return SmokeResult(len(smoke.expected), worst, f"no prediction for {want.symbol} at ts {want.ts}")
        for target in TARGETS:
            same, diff = _same(got[target], getattr(want, target), smoke.tolerance)
            worst = max(worst, diff)
            if not same:
                return SmokeResult(
                    len(smoke.expected),
                    worst,
                    f"{target} of {want.symbol} at ts {want.ts} is {got[target]!r}, the manifest expects {getattr(want, target)!r}",
                )
    return SmokeResult(len(smoke.expected), worst, "")


def expected_outputs(predicted: pl.DataFrame) -> list[dict[str, object]]:
    """Return predictions as the manifest's ``smoke.expected`` rows (NaN as null)."""
    return [
        {
            "ts": int(r["ts"]),
            "symbol": r["symbol"],
            **{t: None if r[t] is None or math.isnan(r[t]) else float(r[t]) for t in TARGETS},
        }
        for r in predicted.iter_rows(named=True)
    ]
