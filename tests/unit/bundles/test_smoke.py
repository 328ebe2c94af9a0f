"""The smoke check predicts the stored sample again and compares with the manifest's expected outputs."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from bundle_helpers import copy_bundle, edit_manifest, manifest_of

from backend.bundles.compat import running
from backend.bundles.smoke import _same, expected_outputs, smoke_check
from backend.bundles.verify import verify_bundle


def test_the_built_bundle_passes_its_own_smoke_check_on_every_sample_row(tiny_bundle: Path) -> None:
    result = smoke_check(verify_bundle(tiny_bundle, running()))
    expected = manifest_of(tiny_bundle)["smoke"]["expected"]
    assert result.passed and result.rows == len(expected) == 8  # 2 rows x 4 symbols
    assert result.max_abs_diff <= 1e-9
    assert sorted({r["symbol"] for r in expected}) == ["BTC", "DOGE", "ETH", "SOL"]


def test_an_expected_output_the_model_does_not_give_fails_naming_target_symbol_and_time(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = copy_bundle(tiny_bundle, tmp_path / "b")
    smoke = manifest_of(folder)["smoke"]
    row = smoke["expected"][3]
    row["p_up"] = row["p_up"] + 1e-3
    edit_manifest(folder, smoke=smoke)
    result = smoke_check(verify_bundle(folder, running()))
    assert not result.passed
    assert result.mismatch.startswith(f"p_up of {row['symbol']} at ts {row['ts']} is ")
    assert result.max_abs_diff == pytest.approx(1e-3)


def test_an_expected_row_without_a_prediction_fails(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = copy_bundle(tiny_bundle, tmp_path / "b")
    smoke = manifest_of(folder)["smoke"]
    smoke["expected"][0]["ts"] = 1
    edit_manifest(folder, smoke=smoke)
    result = smoke_check(verify_bundle(folder, running()))
    assert result.mismatch == f"no prediction for {smoke['expected'][0]['symbol']} at ts 1"


@pytest.mark.parametrize(
    ("got", "want", "same"),
    [(None, None, True), (math.nan, None, True), (math.nan, 0.5, False), (0.5, None, False), (0.5, 0.5 + 1e-12, True), (100.0, 100.0 + 1e-8, True), (0.5, 0.5 + 1e-6, False)],
)
def test_outputs_compare_with_nan_as_missing_and_a_relative_tolerance(got, want, same: bool) -> None:
    assert _same(got, want, 1e-9)[0] is same


def test_expected_outputs_write_nan_as_null() -> None:
    frame = pl.DataFrame({"ts": [1], "symbol": ["BTC"], "fold": [0], "p_up": [0.25], "expected_return": [0.01], "p_recovery": [math.nan]})
    assert expected_outputs(frame) == [{"ts": 1, "symbol": "BTC", "p_up": 0.25, "expected_return": 0.01, "p_recovery": None}]
