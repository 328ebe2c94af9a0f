"""The training config groups compose into the validated spec: Ray, recovery target, gates, schedule, model source."""

from __future__ import annotations

import pytest

from backend.config.compose import compose_spec
from backend.errors import ConfigError


def test_the_default_training_config_declares_ray_recovery_gates_and_schedule() -> None:
    spec = compose_spec([])
    training = spec.training

    assert spec.model.source == "train"
    assert training.ray.model_dump() == {"enabled": False, "address": None, "num_cpus": 2, "max_retries": 2, "tasks_per_call": 8}
    assert training.recovery.model_dump() == {"lookback_bars": 288, "recover_fraction": 0.5, "min_depth": 0.05, "min_rows": 200}
    assert training.promotion.model_dump() == {
        "min_auc": 0.5,
        "max_calibration_error": 0.1,
        "min_ic": 0.0,
        "min_fold_auc": 0.45,
        "min_auc_improvement": 0.0,
        "max_strategy_shortfall_pct": 0.0,
    }
    assert (training.schedule.cadence_hours, training.schedule.poll_seconds) == (24.0, 300.0)
    assert training.schedule.drift.model_dump() == {"window_bars": 2016, "max_psi": 0.25, "max_log_loss_increase": 0.05, "max_calibration_error": 0.15}
    assert training.inject_failure is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.ray.num_cpus=0", "'training.ray.num_cpus' must be >= 1, was 0"),
        ("training.ray.max_retries=11", "'training.ray.max_retries' must be <= 10, was 11"),
        ("training.ray.tasks_per_call=0", "'training.ray.tasks_per_call' must be >= 1, was 0"),
        ("training.recovery.min_depth=0", "'training.recovery.min_depth' must be > 0"),
        ("training.promotion.min_auc=1.5", "'training.promotion.min_auc' must be <= 1"),
        ("training.schedule.cadence_hours=0", "'training.schedule.cadence_hours' must be > 0"),
        ("model.source=latest", "'model.source'"),
    ],
)
def test_out_of_bound_training_settings_are_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose_spec([override])
