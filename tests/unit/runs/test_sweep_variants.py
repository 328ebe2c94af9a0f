"""The pure part of `acts sweep`: settings, variant expansion in Hydra's -m order, grouping, metrics, the table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stubs import small_spec

from backend.engine.pipeline import compile_pipeline
from backend.errors import ConfigError
from backend.runs.variants import (
    COLUMNS,
    Variant,
    comparison_frame,
    comparison_row,
    expand_variants,
    format_table,
    group_variants,
    market_key,
    run_figures,
    sharpe_ratio,
    split_tokens,
    sweep_settings,
    turnover,
)


def test_sweep_settings_default_to_a_local_ray_of_two_cpus_writing_under_the_home(acts_home: Path) -> None:
    settings = sweep_settings([])

    assert (settings.ray.enabled, settings.ray.address, settings.ray.num_cpus, settings.max_variants) == (True, None, 2, 256)
    assert Path(settings.out).parent == acts_home / "sweeps"


def test_sweep_settings_take_a_cluster_address_like_training_does() -> None:
    settings = sweep_settings(["ray.address=10.0.0.5:6379", "out=/tmp/sweep-a", "max_variants=4"])

    assert (settings.ray.address, settings.out, settings.max_variants) == ("10.0.0.5:6379", "/tmp/sweep-a", 4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ray.address=ray://h:1", r"invalid sweep settings:\n'sweep.ray.address': must be host:port .*, was 'ray://h:1'"),
        ("ray.num_cpus=0", r"'sweep.ray.num_cpus' must be >= 1, was 0"),
        ("max_variants=2000", r"'sweep.max_variants' must be <= 1024, was 2000"),
        ("bogus=1", r"cannot compose the sweep settings with \['sweep.bogus=1'\]: Could not override 'bogus'"),
    ],
)
def test_bad_sweep_settings_are_refused_naming_the_key_the_bound_and_the_value(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sweep_settings([override])


def test_a_sweep_address_without_ray_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ConfigError, match=r"'sweep.ray': 'address' \('h:1'\) is set but 'enabled' is false"):
        sweep_settings(["ray.enabled=false", "ray.address=h:1"])


def test_tokens_split_into_the_sweep_own_settings_and_the_run_overrides() -> None:
    own, run = split_tokens(["risk=aggressive,balanced", "sweep.out=/x", "data.days=10", "sweep.ray.enabled=false"])

    assert own == ["out=/x", "ray.enabled=false"]
    assert run == ["risk=aggressive,balanced", "data.days=10"]


def test_variants_are_the_cartesian_product_in_hydra_multirun_order() -> None:
    variants = expand_variants(["risk=aggressive,balanced", "data.days=10", "risk.entry_min_p_up=choice(0.55,0.6)"], 8)

    assert [v.overrides for v in variants] == [
        ("risk=aggressive", "data.days=10", "risk.entry_min_p_up=0.55"),
        ("risk=aggressive", "data.days=10", "risk.entry_min_p_up=0.6"),
        ("risk=balanced", "data.days=10", "risk.entry_min_p_up=0.55"),
        ("risk=balanced", "data.days=10", "risk.entry_min_p_up=0.6"),
    ]
    assert [v.index for v in variants] == [0, 1, 2, 3]
    assert variants[1].swept == ("risk=aggressive", "risk.entry_min_p_up=0.6")
    assert variants[1].label == "risk=aggressive risk.entry_min_p_up=0.6"
    assert variants[1].folder == "001-risk=aggressive_risk.entry_min_p_up=0.6"


def test_ranges_expand_and_no_swept_override_gives_the_one_base_variant() -> None:
    assert [v.swept for v in expand_variants(["seed=range(1,4)"], 3)] == [("seed=1",), ("seed=2",), ("seed=3",)]
    (base,) = expand_variants(["data.days=10"], 1)
    assert (base.overrides, base.label, base.folder) == (("data.days=10",), "base", "000-base")


def test_a_key_given_twice_keeps_its_first_place_and_its_last_value_as_hydra_does() -> None:
    variants = expand_variants(["risk=aggressive", "data.days=10", "risk=balanced,conservative", "seed=3,4", "seed=5"], 8)

    assert [v.overrides for v in variants] == [("risk=balanced", "data.days=10", "seed=5"), ("risk=conservative", "data.days=10", "seed=5")]
    assert [v.swept for v in variants] == [("risk=balanced",), ("risk=conservative",)]


def test_an_interval_sweep_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'risk.entry_min_p_up' sweeps an interval, which has no list of values"):
        expand_variants(["risk.entry_min_p_up=interval(0.5,0.6)"], 8)


def test_a_variant_folder_name_is_safe_and_bounded() -> None:
    variant = Variant(12, (), ("strategy.name='a b/c'", "x=[1,2]" * 20))

    assert variant.folder.startswith("012-strategy.name=-a-b-c-_x=-1-2-")
    assert len(variant.folder) <= 84
    assert all(c.isalnum() or c in "=._-" for c in variant.folder)


def test_more_variants_than_the_bound_is_refused_with_the_count_and_the_bound() -> None:
    with pytest.raises(ConfigError, match=r"'sweep.max_variants' must be >= the number of variants; the overrides expand to 20, the bound is 16"):
        expand_variants(["seed=range(0,20)"], 16)


def test_an_override_that_does_not_parse_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"cannot parse the sweep overrides \['seed=='\]"):
        expand_variants(["seed=="], 16)


def _key(*overrides: str) -> str:
    from backend.runs.runner import model_training_json, round_trip_cost  # the runner's own inputs

    pipeline = compile_pipeline(small_spec(*overrides))
    return market_key(pipeline, repr((model_training_json(pipeline.spec), round_trip_cost(pipeline.spec))))


def test_profile_and_threshold_variants_share_bars_model_and_predictions() -> None:
    base = _key()

    assert _key("risk=balanced") == base
    assert _key("risk.entry_min_p_up=0.6") == base
    assert _key("execution.slippage.max_bps=40", "name=other") == base
    assert _key("training.ray.enabled=true", "training.promotion.min_auc=0.7") == base


def test_variants_that_change_data_features_model_or_label_costs_do_not_share() -> None:
    base = _key()

    assert _key("seed=8") != base
    assert _key("data.days=11") != base
    assert _key("model.global_model.n_estimators=21") != base
    assert _key("execution.taker_fee_bps=30") != base  # the labels are net of fees
    assert _key("training.label.horizon_bars=40", "training.walk_forward.purge_bars=48") != base


def test_groups_keep_first_appearance_order_and_ascending_members() -> None:
    assert group_variants(["a", "b", "a", "c", "b"]) == [[0, 2], [1, 4], [3]]
    assert group_variants([]) == []


def test_sharpe_is_annualised_from_bar_returns_starting_at_the_initial_equity_and_undefined_without_variation() -> None:
    equity = np.array([101.0, 100.5, 102.0, 101.0])
    returns = np.array([101.0 / 100.0, 100.5 / 101.0, 102.0 / 100.5, 101.0 / 102.0]) - 1.0
    population_std = math.sqrt(sum((r - returns.mean()) ** 2 for r in returns) / len(returns))
    expected = round(returns.mean() / population_std * math.sqrt(365 * 288), 4)

    assert sharpe_ratio(equity, 100.0, 300_000) == expected
    assert sharpe_ratio(np.array([100.0, 100.0, 100.0]), 100.0, 300_000) is None
    assert sharpe_ratio(np.array([100.0]), 100.0, 300_000) is None


def test_turnover_is_traded_notional_over_the_mean_equity() -> None:
    assert turnover(25_000.0, np.array([9_000.0, 10_000.0, 11_000.0])) == 2.5
    assert turnover(0.0, np.array([10_000.0])) == 0.0


def test_run_figures_are_computed_when_the_summary_lacks_them() -> None:
    equity = np.array([10_100.0, 9_900.0, 10_000.0])

    figures = run_figures({"initial_equity": 10_000.0}, equity, 300_000, 5_000.0)

    assert figures == {"sharpe": sharpe_ratio(equity, 10_000.0, 300_000), "turnover": 0.5}
    assert figures["sharpe"] is not None


def test_run_figures_are_the_summary_own_when_it_has_them() -> None:
    summary = {"initial_equity": 10_000.0, "sharpe": 1.75, "turnover": None}

    assert run_figures(summary, np.array([10_100.0, 9_900.0]), 300_000, 5_000.0) == {"sharpe": 1.75, "turnover": None}


def _summary(ret: float, sha: str) -> dict[str, object]:
    return {"return_pct": ret, "max_drawdown_pct": 1.5, "fees_paid": "12.5000", "orders": 4, "fills": 4, "decisions": 9, "final_equity": 10_100.0, "decision_log_sha256": sha, "run_dir": f"/r/{sha}"}


def test_the_comparison_table_has_one_row_per_variant_with_the_fixed_columns_in_order() -> None:
    a, b = Variant(1, ("risk=balanced",), ("risk=balanced",)), Variant(0, ("risk=aggressive",), ("risk=aggressive",))
    rows = [comparison_row(a, _summary(1.0, "aa"), {"sharpe": 0.8, "turnover": 1.25}), comparison_row(b, _summary(-2.0, "bb"), {"sharpe": None, "turnover": 0.0})]

    table = comparison_frame(rows)

    assert table.columns == list(COLUMNS)
    assert table["variant"].to_list() == ["000-risk=aggressive", "001-risk=balanced"]
    assert table.row(1, named=True) == {
        "variant": "001-risk=balanced", "label": "risk=balanced", "return_pct": 1.0, "max_drawdown_pct": 1.5, "sharpe": 0.8,
        "fees_paid": 12.5, "turnover": 1.25, "orders": 4, "fills": 4, "decisions": 9, "final_equity": 10_100.0,
        "decision_log_sha256": "aa", "run_dir": "/r/aa",
    }  # fmt: skip
    assert table["sharpe"].to_list() == [None, 0.8]


def test_the_printed_table_aligns_the_main_columns_and_shows_missing_values_as_a_dash() -> None:
    rows = [comparison_row(Variant(0, (), ("risk=aggressive",)), _summary(-2.0, "bb"), {"sharpe": None, "turnover": 0.0})]

    text = format_table(comparison_frame(rows))

    header, line = text.splitlines()
    assert header.split() == ["variant", "return_pct", "max_drawdown_pct", "sharpe", "fees_paid", "turnover", "orders", "label"]
    assert line.split() == ["000-risk=aggressive", "-2.0", "1.5", "-", "12.5", "0.0", "4", "risk=aggressive"]
    assert line.index("-2.0") == header.index("return_pct")


def test_an_empty_comparison_has_the_columns_and_no_rows() -> None:
    assert comparison_frame([]).shape == (0, len(COLUMNS))
    assert isinstance(comparison_frame([]), pl.DataFrame)
