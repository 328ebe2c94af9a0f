"""Tests for backend.models.forest: compiled inference that is LightGBM's, bit for bit.

Boosters are trained here with LightGBM itself on data built to exercise every kind of split
(numerical without a missing rule, missing type NaN, missing type Zero, categorical with and
without NaN), then scored by LightGBM and by the forest, compiled and uncompiled. The uncompiled run
is the same kernel code as the compiled one, so it is also what covers the kernels' lines.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from backend.errors import ModelError
from backend.models import forest

ROWS = 1500


def _train(x: np.ndarray, y: np.ndarray, objective: str, seed: int, **extra: object) -> str:
    params = {"objective": objective, "num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 5, "seed": seed,
              "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbosity": -1, **extra}  # fmt: skip
    categorical = extra.pop("categorical", "auto")
    params.pop("categorical", None)
    data = lgb.Dataset(x, label=y, categorical_feature=categorical, params={"verbosity": -1})
    return lgb.train(params, data, num_boost_round=25).model_to_string()


def _lightgbm(text: str, x: np.ndarray) -> np.ndarray:
    """LightGBM's own prediction, on the columns the model was trained with."""
    columns = int(text.split("max_feature_idx=")[1].split("\n")[0]) + 1
    return lgb.Booster(model_str=text).predict(x[:, :columns], num_threads=1)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Features with NaNs, exact zeros, tiny magnitudes and two categorical codes; two targets."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((ROWS, 6))
    x[:, 4] = rng.integers(0, 40, ROWS)  # a symbol-like code, beyond one 32-bit bitset word
    x[:, 5] = rng.integers(0, 5, ROWS)  # a cluster-like code
    x[rng.random(ROWS) < 0.15, 1] = np.nan
    x[rng.random(ROWS) < 0.2, 2] = 0.0
    signal = x[:, 0] + np.nan_to_num(x[:, 1]) + (x[:, 4] % 3 == 0) - 0.5 * (x[:, 5] == 2)
    up = (signal + 0.5 * rng.standard_normal(ROWS) > 0).astype(float)
    ret = 0.01 * signal + 0.002 * rng.standard_normal(ROWS)
    probe = x.copy()
    probe[:40, 0] = np.nan  # NaN where training had none: read as 0.0
    probe[40:60, 2] = 1e-36  # a tiny magnitude reads as 0.0
    probe[60:80, 2] = -1e-36
    probe[80:90, 4] = -3.0  # a negative category goes right
    probe[130:135, 4] = -0.5  # truncates to category 0
    probe[135:140, 4] = 3e9  # past int range
    probe[90:100, 4] = 1e6  # a category past the bitset goes right
    probe[100:110, 4] = np.nan
    probe[110:120, 5] = np.nan
    probe[120:130, 3] = np.inf
    return {"x": x, "up": up, "ret": ret, "probe": probe}


@pytest.fixture(scope="module")
def boosters(data: dict[str, np.ndarray]) -> dict[str, str]:
    """Binary and regression boosters, with categorical codes, and one treating zero as missing."""
    x = data["x"]
    return {
        "binary_categorical": _train(x, data["up"], "binary", 1, categorical=[4, 5]),
        "regression_categorical": _train(x, data["ret"], "regression", 2, categorical=[4, 5]),
        "binary_zero_missing": _train(x, data["up"], "binary", 3, zero_as_missing=True),
        "binary_nan_category": _train(np.where(np.arange(ROWS)[:, None] % 9 == 0, np.nan, x), data["up"], "binary", 4,
                                      categorical=[4, 5]),  # fmt: skip
        "regression_plain": _train(np.nan_to_num(x[:, :4]), data["ret"], "regression", 5),
        "binary_categorical_dense": _train(np.nan_to_num(x), data["up"], "binary", 6, categorical=[4, 5]),
    }


def test_the_boosters_hold_every_kind_of_split(boosters: dict[str, str]) -> None:
    kinds = set()
    for text in boosters.values():
        for line in text.splitlines():
            if line.startswith("decision_type="):
                kinds |= {int(v) for v in line.split("=")[1].split()}
    categorical = {k for k in kinds if k & 1}
    assert 1 in categorical or 9 in categorical
    assert {k for k in kinds if not k & 1 and (k >> 2) & 3 == 2}, "a numerical split with missing type NaN"
    assert {k for k in kinds if not k & 1 and (k >> 2) & 3 == 1}, "a numerical split with missing type Zero"
    assert {k for k in kinds if not k & 1 and (k >> 2) & 3 == 0}, "a plain numerical split"


@pytest.mark.parametrize("name", ["binary_categorical", "regression_categorical", "binary_zero_missing",
                                  "binary_nan_category", "regression_plain", "binary_categorical_dense"])  # fmt: skip
@pytest.mark.parametrize("compiled", [True, False])
def test_one_model_scores_exactly_as_lightgbm(boosters: dict[str, str], data: dict[str, np.ndarray], name: str,
                                              compiled: bool) -> None:  # fmt: skip
    x = data["probe"]
    compiled_forest = forest.compile_forest([boosters[name]])

    ours = forest.predict(compiled_forest, 0, x, num_threads=2, compiled=compiled)

    assert ours.tobytes() == _lightgbm(boosters[name], x).tobytes()


@pytest.mark.parametrize("compiled", [True, False])
def test_a_blend_is_the_weighted_sum_of_lightgbm_outputs_per_symbol(boosters: dict[str, str], data: dict[str, np.ndarray],
                                                                    compiled: bool) -> None:  # fmt: skip
    x = data["probe"]
    codes = x[:, 5].copy()
    codes[np.isnan(codes)] = -1
    codes = codes.astype(np.int64)  # rows with no code get the general model alone
    texts = [boosters["binary_categorical"], boosters["binary_zero_missing"], boosters["binary_nan_category"]]
    specialist = np.array([1, 2, -1, 1, 2])  # code 2 has no specialist
    weight = 0.4

    ours = forest.blend(forest.compile_forest(texts), x, codes, 0, specialist, weight, 2, compiled)

    expected = _lightgbm(texts[0], x)
    for code, model in enumerate(specialist):
        rows = codes == code
        if model >= 0:
            expected[rows] = (1.0 - weight) * expected[rows] + weight * _lightgbm(texts[model], x[rows])
    assert ours.tobytes() == expected.tobytes()


@pytest.mark.parametrize("compiled", [True, False])
def test_one_pass_gives_the_global_score_alone_and_the_blend_exactly_as_two_blends(boosters: dict[str, str],
                                                                                    data: dict[str, np.ndarray],
                                                                                    compiled: bool) -> None:  # fmt: skip
    x = data["probe"]
    codes = np.nan_to_num(x[:, 5], nan=-1).astype(np.int64)
    texts = [boosters["regression_categorical"], boosters["regression_plain"], boosters["binary_categorical"]]
    compiled_forest = forest.compile_forest(texts)
    specialist = np.array([1, 2, -1, 1, 2])

    general, blended = forest.blend_with_general(compiled_forest, x, codes, 0, specialist, 1.0, 2, compiled)

    alone = forest.blend(compiled_forest, x, codes, 0, np.full(5, -1), 0.0, 2, compiled)
    assert general.tobytes() == alone.tobytes() == _lightgbm(texts[0], x).tobytes()
    assert blended.tobytes() == forest.blend(compiled_forest, x, codes, 0, specialist, 1.0, 2, compiled).tobytes()


def test_categorical_splits_are_folded_per_block_and_give_the_same_scores(boosters: dict[str, str],
                                                                          data: dict[str, np.ndarray]) -> None:  # fmt: skip
    """Grouping rows by their constant code (folded splits) or not (full rule) gives LightGBM's scores."""
    x = np.nan_to_num(data["x"][:300])
    x[:, 5] = x[:, 4] % 5  # both categorical features constant within each code's rows
    x = x[np.argsort(x[:, 4], kind="stable")]
    text = boosters["binary_categorical_dense"]
    compiled_forest = forest.compile_forest([text] * 41)
    codes = x[:, 4].astype(np.int64)
    per_code = np.arange(1, 41)  # a model of its own per code: rows are grouped by code, splits folded

    grouped = forest.blend(compiled_forest, x, codes, 0, per_code, 0.0, 1, compiled=False)
    mixed = forest.predict(compiled_forest, 0, x, 1, compiled=False)  # one group, codes vary: not folded

    assert grouped.tobytes() == mixed.tobytes() == _lightgbm(text, x).tobytes()


def test_one_leaf_trees_and_a_model_without_trees_score_like_lightgbm(data: dict[str, np.ndarray]) -> None:
    x = data["x"][:50]
    constant = _train(x, np.full(50, 0.25), "regression", 9)
    header = constant.split("\nTree=")[0] + "\n"  # no trees at all: the raw score is 0.0

    compiled_forest = forest.compile_forest([constant, header])

    assert "num_leaves=1" in constant
    assert forest.predict(compiled_forest, 0, x).tobytes() == _lightgbm(constant, x).tobytes()
    assert (forest.predict(compiled_forest, 1, x) == 0.0).all()


def test_the_compiled_result_does_not_depend_on_the_thread_count(boosters: dict[str, str],
                                                                 data: dict[str, np.ndarray]) -> None:  # fmt: skip
    x = np.tile(data["probe"], (12, 1))  # enough rows for several parallel blocks
    compiled_forest = forest.compile_forest([boosters["binary_categorical"]])

    one, two = (forest.predict(compiled_forest, 0, x, n) for n in (1, 2))

    assert one.tobytes() == two.tobytes()


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (1, -1.0, False),  # categorical: a negative category goes right
        (1, -0.5, True),  # truncated to category 0, whose bit is set
        (9, np.nan, False),  # categorical: NaN goes right, whatever the missing type
        (1, np.nan, False),
        (1, np.inf, False),  # past int range: LightGBM's cast turns negative
        (1, 64.0, False),  # past the bitset
        (1, 1.0, False),  # bit 1 clear
        (1, 33.0, True),  # bit 1 of the second word set
        (0, np.nan, True),  # numerical, no missing rule: NaN reads 0.0 <= 0.5
        (0, 0.7, False),
        (4 | 2, 0.0, True),  # missing Zero, default left
        (4, 0.0, False),  # missing Zero, default right
        (8 | 2, np.nan, True),  # missing NaN, default left
        (8, np.nan, False),
        (8, 0.2, True),  # missing NaN but a value: compared
    ],
)
def test_goes_left_follows_lightgbm_decision_rules(kind: int, value: float, expected: bool) -> None:
    words = np.array([0b01, 0b10], dtype=np.uint32)

    assert bool(forest._goes_left(value, kind, 0.5, 0, 2, words)) is expected


def test_an_empty_forest_has_no_models_and_refuses_to_score() -> None:
    empty = forest.compile_forest([])

    assert empty.models == 0 and empty.max_feature == -1
    with pytest.raises(ModelError, match="model index out of range"):
        forest.predict(empty, 0, np.zeros((2, 1)))


def _edit(text: str, field: str, value: str, tree: int = 0) -> str:
    head, *trees = text.split("\nTree=")
    lines = trees[tree].splitlines()
    trees[tree] = "\n".join(f"{field}={value}" if line.startswith(f"{field}=") else line for line in lines)
    return "\nTree=".join([head, *trees])


def _drop(text: str, field: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(f"{field}="))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("objective=binary sigmoid:1", "objective=multiclass num_class:3"), "objective 'multiclass"),
        (lambda t: t.replace("num_class=1", "num_class=3"), "only single-output"),
        (lambda t: _edit(t, "num_leaves", "0"), "num_leaves must be at least 1"),
        (lambda t: _edit(t, "is_linear", "1"), "linear trees are not supported"),
        (lambda t: _drop(t, "split_feature"), "field 'split_feature' is missing"),
        (lambda t: _edit(t, "leaf_value", "0.1 0.2"), "field 'leaf_value' has 2 values"),
        (lambda t: _edit(t, "left_child", " ".join(["99"] * 14)), "outside the tree"),
        (lambda t: _edit(t, "split_feature", " ".join(["-1"] * 14)), "outside the tree"),
        (lambda t: _edit(t, "num_cat", "0"), "num_cat is 0"),
        (lambda t: _edit(t, "cat_boundaries", "0"), "field 'cat_boundaries' has 1 values"),
    ],
)
def test_inconsistent_model_texts_are_refused_naming_model_and_tree(boosters: dict[str, str], change: object,
                                                                     message: str) -> None:  # fmt: skip
    text = boosters["binary_categorical"]
    first_categorical = next(i for i, tree in enumerate(text.split("\nTree=")[1:]) if "num_cat=0" not in tree)
    if "num_cat" in message or "cat_boundaries" in message:
        text = text.split("\nTree=")[0] + "\nTree=" + text.split("\nTree=")[1 + first_categorical]

    with pytest.raises(ModelError, match=message) as error:
        forest.compile_forest([change(text)])  # type: ignore[operator]

    assert "model 0" in str(error.value)


def test_a_categorical_split_naming_a_missing_bitset_is_refused(boosters: dict[str, str]) -> None:
    text = boosters["binary_categorical"]
    tree = next(t for t in text.split("\nTree=")[1:] if "num_cat=1\n" in t)
    lines = dict(line.split("=", 1) for line in tree.splitlines() if "=" in line)
    kinds = lines["decision_type"].split()
    thresholds = lines["threshold"].split()
    thresholds[kinds.index(next(k for k in kinds if int(k) & 1))] = "5"
    broken = text.split("\nTree=")[0] + "\nTree=" + _edit("x\nTree=" + tree, "threshold", " ".join(thresholds)).split("\nTree=")[1]

    with pytest.raises(ModelError, match="names bitset 5 of 1"):
        forest.compile_forest([broken])


def test_a_tree_whose_children_loop_is_refused(boosters: dict[str, str]) -> None:
    text = boosters["regression_plain"]
    tree = text.split("\nTree=")[1]
    fields = dict(line.split("=", 1) for line in tree.splitlines() if "=" in line)
    left = fields["left_child"].split()
    right = fields["right_child"].split()
    # node 1 points back at node 1 on both sides: a walk from it would never reach a leaf
    left[1], right[1] = "1", "1"
    looped = _edit(_edit(text, "left_child", " ".join(left)), "right_child", " ".join(right))

    with pytest.raises(ModelError, match="cycle"):
        forest.compile_forest([looped])


@pytest.mark.parametrize(
    ("x", "codes", "general", "specialist", "message"),
    [
        (np.zeros((3, 2)), np.full(3, -1), 0, [], "at least 6 columns"),
        (np.zeros(6), np.full(1, -1), 0, [], "two-dimensional"),
        (np.zeros((3, 6)), np.full(3, -1), 1, [], "model index out of range"),
        (np.zeros((3, 6)), np.full(3, 0), 0, [3], "model index out of range"),
        (np.zeros((3, 6)), np.full(2, -1), 0, [], "one code per row"),
        (np.zeros((3, 6)), np.full(3, 1), 0, [0], "each below 1"),
    ],
)
def test_blend_refuses_bad_arguments(boosters: dict[str, str], x: np.ndarray, codes: np.ndarray, general: int,
                                     specialist: list[int], message: str) -> None:  # fmt: skip
    compiled_forest = forest.compile_forest([boosters["binary_categorical"]])

    with pytest.raises(ModelError, match=message):
        forest.blend(compiled_forest, x, codes, general, np.array(specialist, dtype=np.int64), 0.5)


def test_warm_compiles_the_kernel_and_scores_its_one_leaf_model() -> None:
    assert forest.warm() == 0.5


def test_prepared_rows_serve_several_outputs_and_reuse_their_grouping(boosters: dict[str, str],
                                                                      data: dict[str, np.ndarray]) -> None:  # fmt: skip
    x = data["probe"]
    codes = np.nan_to_num(x[:, 5], nan=-1).astype(np.int64)
    texts = [boosters["binary_categorical"], boosters["regression_categorical"], boosters["binary_zero_missing"]]
    compiled_forest = forest.compile_forest(texts)
    rows = forest.prepare(x)
    specialist = np.array([2, 2, 2, 2, 2])

    first = forest.blend(compiled_forest, rows, codes, 0, specialist, 0.3, 2)
    second = forest.blend(compiled_forest, rows, codes, 1, specialist, 0.3, 2)
    third = forest.blend(compiled_forest, rows, codes[::-1].copy(), 1, specialist, 0.3, 2)

    assert len(rows.blocks) == 2  # one grouping per (codes, specialists) pair
    assert first.tobytes() == forest.blend(compiled_forest, x, codes, 0, specialist, 0.3, 2).tobytes()
    assert second.tobytes() == forest.blend(compiled_forest, x, codes, 1, specialist, 0.3, 2).tobytes()
    assert third.tobytes() == forest.blend(compiled_forest, x, codes[::-1].copy(), 1, specialist, 0.3, 2).tobytes()
