"""Deterministic LightGBM: the parameter set that makes the same data give the same trees.

LightGBM (and the pandas it imports) is imported on the first fit or predict, not with this module: a run
that only predicts, with the compiled forest (:mod:`backend.models.forest`), never loads it (ADR-082).
"""

from __future__ import annotations

import numpy as np

from backend.config.schema import LgbmParamsSpec


def lgbm_params(params: LgbmParamsSpec, objective: str, seed: int, num_threads: int) -> dict[str, object]:
    """Return LightGBM parameters with every determinism switch set."""
    return {
        "objective": objective,
        "num_leaves": params.num_leaves,
        "learning_rate": params.learning_rate,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "max_bin": params.max_bin,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
        "verbosity": -1,
    }


def fit(
    features: np.ndarray,
    target: np.ndarray,
    params: LgbmParamsSpec,
    objective: str,
    seed: int,
    num_threads: int,
    categorical: list[int] | None = None,
) -> str:
    """Train one booster and return its model text (the artifact that is hashed and stored)."""
    import lightgbm as lgb

    dataset = lgb.Dataset(
        features,
        label=target,
        categorical_feature=categorical if categorical else "auto",
        free_raw_data=True,
        params={"max_bin": params.max_bin, "verbosity": -1},
    )
    booster = lgb.train(lgbm_params(params, objective, seed, num_threads), dataset, num_boost_round=params.n_estimators)
    return booster.model_to_string()


def predict(model_text: str, features: np.ndarray, num_threads: int) -> np.ndarray:
    """Predict with a model given as text, so training and replay use the same path."""
    import lightgbm as lgb

    booster = lgb.Booster(model_str=model_text)
    return booster.predict(features, num_threads=num_threads)
