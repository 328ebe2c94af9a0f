"""Tests for backend.models.lgbm: deterministic parameters, reproducible fits, categorical features."""

from __future__ import annotations

import numpy as np
import pytest

from backend.config.schema import LgbmParamsSpec
from backend.models import lgbm

SMALL = LgbmParamsSpec(num_leaves=7, n_estimators=12, min_data_in_leaf=10)
NO_SAMPLING = LgbmParamsSpec(num_leaves=7, n_estimators=12, min_data_in_leaf=10, bagging_freq=0, bagging_fraction=1.0, feature_fraction=1.0)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, a binary target and a continuous target from a fixed seed."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((600, 4))
    noise = rng.standard_normal(600)
    return x, (x[:, 0] + 0.5 * noise > 0).astype(float), 0.01 * x[:, 1] + 0.002 * noise


def _trees(model_text: str) -> str:
    """The model text without its trailing parameter dump (which echoes the seed)."""
    return model_text.split("\nparameters:")[0]


def test_lgbm_params_set_every_determinism_switch() -> None:
    params = lgbm.lgbm_params(SMALL, "binary", seed=42, num_threads=3)

    assert params == {
        "objective": "binary",
        "num_leaves": 7,
        "learning_rate": 0.05,
        "min_data_in_leaf": 10,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 63,
        "seed": 42,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 3,
        "verbosity": -1,
    }


@pytest.mark.parametrize(("objective", "target"), [("binary", 1), ("regression", 2)])
def test_two_fits_with_the_same_data_and_seed_give_identical_text_and_bit_identical_predictions(
    data: tuple[np.ndarray, ...], objective: str, target: int
) -> None:
    x, y = data[0], data[target]

    first = lgbm.fit(x, y, SMALL, objective, seed=5, num_threads=1)
    second = lgbm.fit(x.copy(), y.copy(), SMALL, objective, seed=5, num_threads=1)

    assert first == second
    assert lgbm.predict(first, x, 1).tobytes() == lgbm.predict(second, x, 1).tobytes()


def test_a_different_seed_grows_different_trees_when_bagging_is_on(data: tuple[np.ndarray, ...]) -> None:
    x, y, _ = data

    first = lgbm.fit(x, y, SMALL, "binary", seed=5, num_threads=1)
    second = lgbm.fit(x, y, SMALL, "binary", seed=6, num_threads=1)

    assert first != second
    assert _trees(first) != _trees(second)
    assert not np.array_equal(lgbm.predict(first, x, 1), lgbm.predict(second, x, 1))


def test_without_row_or_feature_sampling_the_seed_does_not_change_the_trees(data: tuple[np.ndarray, ...]) -> None:
    x, y, _ = data

    first = lgbm.fit(x, y, NO_SAMPLING, "binary", seed=5, num_threads=1)
    second = lgbm.fit(x, y, NO_SAMPLING, "binary", seed=6, num_threads=1)

    assert _trees(first) == _trees(second)


def test_a_binary_model_predicts_probabilities_that_follow_the_signal(data: tuple[np.ndarray, ...]) -> None:
    x, y, _ = data

    p_up = lgbm.predict(lgbm.fit(x, y, SMALL, "binary", seed=5, num_threads=1), x, 1)

    assert p_up.shape == (600,)
    assert np.all((p_up > 0.0) & (p_up < 1.0))
    assert p_up[x[:, 0] > 1.0].mean() > 0.6 > 0.4 > p_up[x[:, 0] < -1.0].mean()


def test_categorical_columns_are_split_as_categories_only_when_declared() -> None:
    rng = np.random.default_rng(2)
    code = rng.integers(0, 6, 800).astype(float)
    x = np.column_stack([rng.standard_normal(800), code])
    # Codes 1 and 4 are "up": not a threshold on the code, so only a categorical split finds it at once.
    y = np.isin(code, [1, 4]).astype(float)

    declared = lgbm.fit(x, y, SMALL, "binary", seed=1, num_threads=1, categorical=[1])
    numeric = lgbm.fit(x, y, SMALL, "binary", seed=1, num_threads=1, categorical=None)

    assert "num_cat=1" in declared and "num_cat=1" not in numeric
    p_up = lgbm.predict(declared, x, 1)
    assert p_up[y == 1].min() > p_up[y == 0].max()
