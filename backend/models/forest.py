"""Exact LightGBM inference, compiled: many boosters flattened into one node table, scored by numba.

LightGBM's own ``predict`` on a dense matrix turns every row into (index, value) pairs and back
before it walks a tree, and a blended prediction calls it once for the global booster and once per
symbol for the specialists. Here the boosters of a fold are parsed once from their model texts into
flat tables, and one compiled pass scores each row with the global booster and its own symbol's
specialist and blends them, with LightGBM's decision rules reproduced exactly:

- numerical split: a NaN reads as 0.0 unless the node's missing type is NaN; a missing value (zero
  under missing type Zero, NaN under missing type NaN) follows the node's default direction;
  otherwise ``value <= threshold`` goes left;
- categorical split: a NaN goes right; the category is the value truncated to int, a negative one
  (or one past int range) goes right, and it goes left when its bit is set in the node's bitset;
- an input whose magnitude is at most ``kZeroThreshold`` (``1e-35f``) reads as 0.0, as in
  LightGBM's dense-row conversion;
- the raw score is the sum of leaf values in tree order from 0.0; ``binary`` applies
  ``1 / (1 + exp(-sigmoid * raw))``; ``regression`` is the raw score.

How it is fast: rows are grouped by specialist and scored in blocks; within a block all rows walk a
tree together, one level at a time, with leaves pointing at themselves so every row takes the
tree's depth in steps and a step has no branch. A categorical split whose feature is constant over
the block (the symbol and cluster codes, within one symbol's block) is decided once for the block
and turned into a plain comparison.

The output is bit-for-bit LightGBM's (tests compare them on trained boosters, NaNs included). The
kernels are plain Python functions compiled with numba; the uncompiled functions are the same code
and run under the tests for line coverage.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from backend.errors import ModelError

ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold, a float widened to double
_CATEGORICAL, _DEFAULT_LEFT, _MISSING_BITS = 1, 2, 12
_MISSING_ZERO, _MISSING_NAN = 1, 2
_IDENTITY = 0.0  # a model's transform: 0.0 for the raw score, else the sigmoid parameter
BLOCK_ROWS = 8192  # rows a parallel task scores (categorical splits are folded once per task)
STEP_ROWS = 64  # rows that walk a tree together, level by level


@dataclass(frozen=True)
class Forest:
    """Boosters flattened into one node table, leaves included, with indices local to each model.

    Model ``m`` owns nodes ``model_nodes[m]`` to ``model_nodes[m + 1]`` and trees ``model_trees[m]``
    to ``model_trees[m + 1]``; it transforms its raw score by ``model_sigmoid[m]`` (0.0: none). Within
    the model, node ``n`` reads feature ``link[n, 0]`` and moves to node ``link[n, 1]`` (left) or
    ``link[n, 2]`` (right). A leaf points at itself and holds ``value[n]``, so a row takes exactly
    ``tree_depth[t]`` steps from ``tree_root[t]``. ``simple[n]`` marks a numerical split with no
    missing-value rule (a NaN reads as 0.0, then ``value <= threshold[n]``); other splits follow
    LightGBM's full rule from ``decision[n]`` and, when categorical, the bitset
    ``cat_words[cat_start[n] : cat_start[n] + cat_len[n]]``. ``tree_simple[t]`` says all of tree
    ``t``'s splits are simple, ``tree_foldable[t]`` that each is simple or categorical;
    ``cat_features[cat_offsets[m] : cat_offsets[m + 1]]`` are the features model ``m`` splits categorically.
    """

    link: np.ndarray
    threshold: np.ndarray
    decision: np.ndarray
    simple: np.ndarray
    value: np.ndarray
    cat_start: np.ndarray
    cat_len: np.ndarray
    cat_words: np.ndarray
    tree_root: np.ndarray
    tree_depth: np.ndarray
    tree_simple: np.ndarray
    tree_foldable: np.ndarray
    model_nodes: np.ndarray
    model_trees: np.ndarray
    model_sigmoid: np.ndarray
    cat_features: np.ndarray
    cat_offsets: np.ndarray
    max_feature: int

    @property
    def models(self) -> int:
        """Return how many models the forest holds."""
        return len(self.model_sigmoid)


_SPLIT_FIELDS = {"split_feature": np.int64, "threshold": np.float64, "decision_type": np.uint8,
                 "left_child": np.int64, "right_child": np.int64}  # fmt: skip


def _transform(header: dict[str, str], where: str) -> float:
    objective = header.get("objective", "")
    if objective == "regression":
        return _IDENTITY
    name, _, option = objective.partition(" ")
    if name == "binary" and option.startswith("sigmoid:"):
        return float(option.removeprefix("sigmoid:"))
    raise ModelError(f"{where}: objective {objective!r} is not supported (binary sigmoid:<s> or regression)")


def _fields(block: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line)


def _field(tree: dict[str, str], key: str, count: int, where: str) -> str:
    """Return a tree field's text after checking it holds ``count`` values."""
    if key not in tree:
        raise ModelError(f"{where}: field {key!r} is missing")
    text = tree[key]
    found = text.count(" ") + 1
    if found != count:
        raise ModelError(f"{where}: field {key!r} has {found} values, expected {count}")
    return text


def _joined(texts: list[str], dtype: type) -> np.ndarray:
    return np.array(" ".join(texts).split(), dtype=dtype) if texts else np.empty(0, dtype=dtype)


def _bitsets(trees: list[dict[str, str]], tree_of: np.ndarray, threshold: np.ndarray, categorical: np.ndarray,
             where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Return each inner node's bitset start (in the model's words) and length, and the model's words."""
    bounds, words, first_bound = [], [], np.zeros(len(trees), dtype=np.int64)
    cats = np.zeros(len(trees), dtype=np.int64)
    used = sorted(set(tree_of[categorical].tolist()))
    for t in used:
        tree, here = trees[t], f"{where} tree {t}"
        cats[t] = int(tree.get("num_cat", "0"))
        if cats[t] < 1:
            raise ModelError(f"{here}: a categorical split but num_cat is {cats[t]}")
        edges = np.array(_field(tree, "cat_boundaries", int(cats[t]) + 1, here).split(), dtype=np.int64)
        words.append(_field(tree, "cat_threshold", int(edges[-1]), here))
        first_bound[t] = sum(len(b) for b in bounds)
        bounds.append(edges + sum(w.count(" ") + 1 for w in words[:-1]))
    cat_start = np.zeros(len(threshold), dtype=np.int32)
    cat_len = np.zeros(len(threshold), dtype=np.int32)
    if used:
        index = threshold[categorical].astype(np.int64)
        trees_of = tree_of[categorical]
        bad = (index < 0) | (index >= cats[trees_of])
        if bad.any():
            at = int(np.flatnonzero(bad)[0])
            raise ModelError(f"{where} tree {trees_of[at]}: a categorical split names bitset {index[at]} of {cats[trees_of[at]]}")
        edges = np.concatenate(bounds)
        slot = first_bound[trees_of] + index
        cat_start[categorical] = edges[slot]
        cat_len[categorical] = edges[slot + 1] - edges[slot]
    return cat_start, cat_len, _joined(words, np.uint32)


def _depths(tree_of: np.ndarray, local: np.ndarray, children: np.ndarray, trees: int, where: str) -> np.ndarray:
    """Return each tree's depth: the most inner nodes on a path from its root (local node 0) to a leaf."""
    depth = np.where(local == 0, 1, 0)
    parent = np.repeat(np.arange(len(local)), 2)
    child = children.reshape(-1)
    inner = child >= 0
    parent, child = parent[inner], (child[inner] - local[parent[inner]] + np.arange(len(local))[parent[inner]])
    for _ in range(int(local.max(initial=0)) + 2):
        reached = depth[parent] > 0
        update = np.zeros_like(depth)
        update[child[reached]] = depth[parent[reached]] + 1
        if np.array_equal(np.maximum(depth, update), depth):
            break
        depth = np.maximum(depth, update)
    else:
        raise ModelError(f"{where}: a tree's children form a cycle")
    result = np.zeros(trees, dtype=np.int32)
    np.maximum.at(result, tree_of, depth)
    return result


def _parse_model(text: str, where: str) -> Forest:
    """Parse one LightGBM model text into a one-model forest, every tree at once."""
    head, _, body = text.partition("\nTree=")
    header = _fields(head)
    if header.get("num_tree_per_iteration", "1") != "1" or header.get("num_class", "1") != "1":
        raise ModelError(f"{where}: only single-output models are supported")
    sigmoid = _transform(header, where)
    trees = [_fields(block) for block in body.split("\nend of trees")[0].split("\nTree=")] if body else []
    leaves = np.zeros(len(trees), dtype=np.int64)
    texts: dict[str, list[str]] = {key: [] for key in (*_SPLIT_FIELDS, "leaf_value")}
    for t, tree in enumerate(trees):
        here = f"{where} tree {t}"
        if not tree.get("num_leaves", "").isdigit() or int(tree["num_leaves"]) < 1:
            raise ModelError(f"{here}: num_leaves must be at least 1, was {tree.get('num_leaves')!r}")
        if tree.get("is_linear", "0") != "0":
            raise ModelError(f"{here}: linear trees are not supported")
        leaves[t] = int(tree["num_leaves"])
        texts["leaf_value"].append(_field(tree, "leaf_value", int(leaves[t]), here))
        for key in _SPLIT_FIELDS if leaves[t] > 1 else ():
            texts[key].append(_field(tree, key, int(leaves[t]) - 1, here))
    split = {key: _joined(texts[key], dtype) for key, dtype in _SPLIT_FIELDS.items()}
    inner = leaves - 1
    starts = np.cumsum(inner + leaves) - (inner + leaves)  # each tree's first node
    tree_of = np.repeat(np.arange(len(trees)), inner)
    local = np.arange(int(inner.sum())) - np.repeat(np.cumsum(inner) - inner, inner)
    children = np.stack([split["left_child"], split["right_child"]], axis=1)
    low, high = -leaves[tree_of][:, None], inner[tree_of][:, None]
    if ((children < low) | (children >= high)).any() or (split["split_feature"] < 0).any():
        bad = int(tree_of[np.flatnonzero(((children < low) | (children >= high)).any(axis=1) | (split["split_feature"] < 0))[0]])
        raise ModelError(f"{where} tree {bad}: a child or feature index is outside the tree")
    position = starts[tree_of] + local
    targets = np.where(children >= 0, starts[tree_of][:, None] + children,
                       (starts + inner)[tree_of][:, None] + ~children)  # fmt: skip
    nodes = int((inner + leaves).sum())
    link = np.zeros((nodes, 3), dtype=np.uint32)
    link[position, 0] = split["split_feature"]
    link[position, 1:] = targets
    leaf_position = np.repeat(starts + inner, leaves) + (np.arange(int(leaves.sum())) - np.repeat(np.cumsum(leaves) - leaves, leaves))
    link[leaf_position, 1] = link[leaf_position, 2] = leaf_position
    threshold, decision = np.zeros(nodes), np.zeros(nodes, dtype=np.uint8)
    threshold[position], decision[position] = split["threshold"], split["decision_type"]
    categorical = (split["decision_type"] & _CATEGORICAL) != 0
    simple_inner = (split["decision_type"] & (_CATEGORICAL | _MISSING_BITS)) == 0
    simple = np.ones(nodes, dtype=bool)
    simple[position] = simple_inner
    value = np.zeros(nodes)
    value[leaf_position] = _joined(texts["leaf_value"], np.float64)
    inner_start, inner_len, words = _bitsets(trees, tree_of, split["threshold"], categorical, where)
    cat_start, cat_len = np.zeros(nodes, dtype=np.int32), np.zeros(nodes, dtype=np.int32)
    cat_start[position], cat_len[position] = inner_start, inner_len
    blocking = np.bincount(tree_of, weights=~simple_inner, minlength=len(trees)) == 0
    foldable = np.bincount(tree_of, weights=~(simple_inner | categorical), minlength=len(trees)) == 0
    cat_features = np.unique(split["split_feature"][categorical])
    return Forest(
        link=link, threshold=threshold, decision=decision, simple=simple, value=value,
        cat_start=cat_start, cat_len=cat_len, cat_words=words,
        tree_root=starts.astype(np.int32),
        tree_depth=_depths(tree_of, local, np.where(children >= 0, children, -1), len(trees), where),
        tree_simple=blocking, tree_foldable=foldable,
        model_nodes=np.array([0, nodes]), model_trees=np.array([0, len(trees)]), model_sigmoid=np.array([sigmoid]),
        cat_features=cat_features, cat_offsets=np.array([0, len(cat_features)]),
        max_feature=int(split["split_feature"].max(initial=-1)),
    )  # fmt: skip


def compile_forest(texts: Sequence[str]) -> Forest:
    """Parse LightGBM model texts (``Booster.model_to_string()``) into one :class:`Forest`.

    Model ``i`` of the forest is ``texts[i]``.

    Raises
    ------
    ModelError
        When a text is not a single-output LightGBM model with a supported objective, or a tree's
        fields are missing or inconsistent (the model and tree are named).
    """
    models = [_parse_model(text, f"model {number}") for number, text in enumerate(texts)]
    words_before = np.cumsum([0, *(len(m.cat_words) for m in models)])[:-1]

    def joined(name: str, dtype: type) -> np.ndarray:
        parts = [getattr(m, name) for m in models]
        return np.ascontiguousarray(np.concatenate(parts) if parts else np.empty(0, dtype=dtype), dtype=dtype)

    cat_start = [np.where(m.cat_len > 0, m.cat_start + offset, 0) for m, offset in zip(models, words_before)]
    return Forest(
        link=joined("link", np.uint32).reshape(-1, 3),
        threshold=joined("threshold", np.float64),
        decision=joined("decision", np.uint8),
        simple=joined("simple", np.bool_),
        value=joined("value", np.float64),
        cat_start=np.concatenate(cat_start).astype(np.int32) if models else np.empty(0, dtype=np.int32),
        cat_len=joined("cat_len", np.int32),
        cat_words=joined("cat_words", np.uint32),
        tree_root=joined("tree_root", np.int32),
        tree_depth=joined("tree_depth", np.int32),
        tree_simple=joined("tree_simple", np.bool_),
        tree_foldable=joined("tree_foldable", np.bool_),
        model_nodes=np.cumsum([0, *(len(m.value) for m in models)]).astype(np.int64),
        model_trees=np.cumsum([0, *(len(m.tree_root) for m in models)]).astype(np.int64),
        model_sigmoid=joined("model_sigmoid", np.float64),
        cat_features=joined("cat_features", np.int64),
        cat_offsets=np.cumsum([0, *(len(m.cat_features) for m in models)]).astype(np.int64),
        max_feature=max((m.max_feature for m in models), default=-1),
    )


# ---- kernels: plain Python, compiled below; the same code runs uncompiled under the tests ----


def _goes_left(value: float, kind: int, threshold: float, start: int, length: int, cat_words: np.ndarray) -> bool:
    """LightGBM's full decision for ``value`` (a tiny magnitude already 0.0, NaN kept) at a split.

    ``kind`` is the split's decision type bits; a categorical split's bitset is
    ``cat_words[start : start + length]``.
    """
    if kind & _CATEGORICAL:
        # LightGBM: a NaN goes right; otherwise the category is the value cast to int (truncated),
        # and a negative one (including a cast out of int range) goes right.
        if not -1.0 < value < 2147483648.0:
            return False
        category = int(value)
        word = category // 32
        if word >= length:
            return False
        return ((cat_words[start + word] >> (category % 32)) & 1) == 1
    missing = (kind >> 2) & 3
    if math.isnan(value) and missing != _MISSING_NAN:
        value = 0.0
    if (missing == _MISSING_ZERO and -ZERO_THRESHOLD <= value <= ZERO_THRESHOLD) or (
        missing == _MISSING_NAN and math.isnan(value)
    ):
        return (kind & _DEFAULT_LEFT) != 0
    return value <= threshold


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _fold_categorical(xr: np.ndarray, width: int, rows: np.ndarray, model: int, link: np.ndarray,
                      threshold: np.ndarray, decision: np.ndarray, simple: np.ndarray, cat_start: np.ndarray,
                      cat_len: np.ndarray, cat_words: np.ndarray, model_nodes: np.ndarray,
                      cat_features: np.ndarray, cat_offsets: np.ndarray, block_link: np.ndarray,
                      block_threshold: np.ndarray, block_simple: np.ndarray) -> bool:  # fmt: skip
    """Decide the model's categorical splits once for ``rows`` when their features are constant there.

    ``xr`` is the row-major matrix flattened, ``width`` columns a row. Fills ``block_*`` with the
    model's tables, each categorical split rewritten as a simple split that reads the all-zero last
    column (``0 > 1.0`` is false: left; ``0 > -1.0``: right).
    Returns False, having written nothing, when the model has no categorical split or one of its
    categorical features varies over ``rows``.
    """
    first, last = cat_offsets[model], cat_offsets[model + 1]
    if first == last:
        return False
    for k in range(first, last):
        feature = np.uint64(cat_features[k])
        anchor = xr[rows[0] * width + feature]
        for j in range(1, len(rows)):
            if not _same(xr[rows[j] * width + feature], anchor):
                return False
    base = model_nodes[model]
    for at in range(model_nodes[model + 1] - base):
        node = base + at
        for column in range(3):
            block_link[at, column] = link[node, column]
        block_threshold[at] = threshold[node]
        block_simple[at] = simple[node]
        if decision[node] & _CATEGORICAL:
            value = xr[rows[0] * width + link[node, 0]]
            left = _goes_left(value, decision[node], threshold[node], cat_start[node], cat_len[node], cat_words)
            block_link[at, 0] = width - 1
            block_threshold[at] = 1.0 if left else -1.0
            block_simple[at] = True
    return True


def _walk(xr: np.ndarray, x0: np.ndarray, width: int, rows: np.ndarray, base: int, link: np.ndarray,
          threshold: np.ndarray, simple: np.ndarray, decision: np.ndarray, value: np.ndarray, cat_start: np.ndarray,
          cat_len: np.ndarray, cat_words: np.ndarray, first_tree: int, last_tree: int, tree_root: np.ndarray,
          tree_depth: np.ndarray, tree_simple: np.ndarray, tree_foldable: np.ndarray, folded: bool, node: np.ndarray,
          total: np.ndarray) -> None:  # fmt: skip
    """Set ``total`` to the raw score of ``rows``: trees in order, ``STEP_ROWS`` rows a level at a time.

    ``xr`` and ``x0`` are row-major matrices flattened, ``width`` columns a row. ``link``, ``threshold``
    and ``simple`` are indexed by model-local node; ``decision``, ``value``, ``cat_start`` and ``cat_len``
    by ``base`` plus it. ``folded``: the categorical splits were folded into simple ones, so a tree
    whose other splits are all simple (``tree_foldable``) needs no branch. Indices are unsigned: the
    compiled code then needs no negative-index wraparound.
    """
    count = len(rows)
    offset = np.empty(STEP_ROWS, dtype=np.uint64)  # where each row starts in the flat matrices
    for lo in range(0, count, STEP_ROWS):
        hi = min(count, lo + STEP_ROWS)
        for j in range(lo, hi):
            total[j] = 0.0
            offset[j - lo] = rows[j] * width
        for tree in range(first_tree, last_tree):
            root = np.uint64(tree_root[tree])
            for j in range(lo, hi):
                node[j] = root
            if tree_simple[tree] or (folded and tree_foldable[tree]):  # the common case: no branch per step
                for _ in range(tree_depth[tree]):
                    moved = False
                    for j in range(lo, hi):
                        at = node[j]
                        right = np.uint64(x0[offset[j - lo] + link[at, 0]] > threshold[at])
                        step = np.uint64(link[at, 1 + right])
                        moved |= step != at
                        node[j] = step
                    if not moved:  # every row is at its leaf
                        break
            else:
                for _ in range(tree_depth[tree]):
                    for j in range(lo, hi):
                        at = node[j]
                        cell = offset[j - lo] + link[at, 0]
                        if simple[at]:
                            right = np.uint64(x0[cell] > threshold[at])
                        else:
                            where = base + at
                            left = _goes_left(xr[cell], decision[where], threshold[at], cat_start[where],
                                              cat_len[where], cat_words)  # fmt: skip
                            right = np.uint64(not left)
                        node[j] = np.uint64(link[at, 1 + right])
            for j in range(lo, hi):
                total[j] += value[base + node[j]]


def _output(raw: float, sigmoid: float) -> float:
    if sigmoid == _IDENTITY:
        return raw
    return 1.0 / (1.0 + math.exp(-sigmoid * raw))


def _score(xr: np.ndarray, x0: np.ndarray, width: int, rows: np.ndarray, model: int, link: np.ndarray, threshold: np.ndarray,
           decision: np.ndarray, simple: np.ndarray, value: np.ndarray, cat_start: np.ndarray, cat_len: np.ndarray,
           cat_words: np.ndarray, tree_root: np.ndarray, tree_depth: np.ndarray, tree_simple: np.ndarray,
           tree_foldable: np.ndarray, model_nodes: np.ndarray, model_trees: np.ndarray, cat_features: np.ndarray,
           cat_offsets: np.ndarray, node: np.ndarray, total: np.ndarray) -> None:  # fmt: skip
    """Set ``total`` to model ``model``'s raw score of ``rows``, folding its categorical splits when it can."""
    base, end = np.uint64(model_nodes[model]), np.uint64(model_nodes[model + 1])
    block_link = np.empty((end - base, 3), dtype=np.uint32)
    block_threshold = np.empty(end - base, dtype=np.float64)
    block_simple = np.empty(end - base, dtype=np.bool_)
    folded = _fold_categorical(xr, width, rows, model, link, threshold, decision, simple, cat_start,
                               cat_len, cat_words, model_nodes, cat_features, cat_offsets, block_link,
                               block_threshold, block_simple)  # fmt: skip
    if not folded:
        block_link, block_threshold, block_simple = link[base:end], threshold[base:end], simple[base:end]
    _walk(xr, x0, width, rows, base, block_link, block_threshold, block_simple, decision, value, cat_start, cat_len,
          cat_words, model_trees[model], model_trees[model + 1], tree_root, tree_depth, tree_simple, tree_foldable,
          folded, node, total)  # fmt: skip


def _blend(xr: np.ndarray, x0: np.ndarray, width: int, order: np.ndarray, blocks: np.ndarray, general: int, weight: float,
           link: np.ndarray, threshold: np.ndarray, decision: np.ndarray, simple: np.ndarray, value: np.ndarray,
           cat_start: np.ndarray, cat_len: np.ndarray, cat_words: np.ndarray, tree_root: np.ndarray,
           tree_depth: np.ndarray, tree_simple: np.ndarray, tree_foldable: np.ndarray, model_nodes: np.ndarray,
           model_trees: np.ndarray, model_sigmoid: np.ndarray, cat_features: np.ndarray, cat_offsets: np.ndarray,
           out: np.ndarray, general_out: np.ndarray) -> None:  # fmt: skip
    """Score each block ``(first, end, own)`` of ``order``: model ``general``, blended with ``own`` if >= 0.

    ``general_out`` receives model ``general``'s output alone, from the same pass.
    """
    for b in prange(blocks.shape[0]):
        rows = order[blocks[b, 0] : blocks[b, 1]]
        own = blocks[b, 2]
        node = np.empty(len(rows), dtype=np.uint64)
        general_raw = np.empty(len(rows), dtype=np.float64)
        own_raw = np.empty(len(rows), dtype=np.float64)
        _score(xr, x0, width, rows, general, link, threshold, decision, simple, value, cat_start, cat_len, cat_words,
               tree_root, tree_depth, tree_simple, tree_foldable, model_nodes, model_trees, cat_features,
               cat_offsets, node, general_raw)  # fmt: skip
        if own >= 0:
            _score(xr, x0, width, rows, own, link, threshold, decision, simple, value, cat_start, cat_len, cat_words,
                   tree_root, tree_depth, tree_simple, tree_foldable, model_nodes, model_trees, cat_features,
                   cat_offsets, node, own_raw)  # fmt: skip
        for j in range(len(rows)):
            result = _output(general_raw[j], model_sigmoid[general])
            general_out[rows[j]] = result
            if own >= 0:
                result = (1.0 - weight) * result + weight * _output(own_raw[j], model_sigmoid[own])
            out[rows[j]] = result


prange = range  # uncompiled, the parallel loop is a plain loop; _kernel() gives the compiled code numba's


@cache
def _kernel() -> Callable[..., None]:
    """Compile the kernels together (numba is imported here, on the first prediction, not at start-up).

    Each compiled kernel calls the compiled versions of the others; the compiled blend's outer loop is
    numba's parallel ``prange``.
    """
    import numba

    namespace = dict(globals(), prange=numba.prange)
    for name in ("_goes_left", "_same", "_fold_categorical", "_walk", "_output", "_score", "_blend"):
        function = globals()[name]
        clone = types.FunctionType(function.__code__, namespace, name)
        options = {"parallel": True} if name == "_blend" else {"inline": "always"}
        namespace[name] = numba.njit(cache=True, **options)(clone)
    return namespace["_blend"]


def _set_threads(num_threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(num_threads, numba.config.NUMBA_NUM_THREADS)))


def _blocks(codes: np.ndarray, specialist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the row order (grouped by specialist model, stable) and its ``(first, end, model)`` blocks."""
    model = np.full(len(codes), -1, dtype=np.int64)
    known = codes >= 0
    model[known] = specialist[codes[known]]
    order = np.argsort(model, kind="stable").astype(np.uint64)
    grouped = model[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if len(order) else np.empty(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(order)].astype(np.int64)
    blocks = [(first, min(first + BLOCK_ROWS, int(end)), int(grouped[start]))
              for start, end in zip(starts, ends) for first in range(int(start), int(end), BLOCK_ROWS)]  # fmt: skip
    return order, np.array(blocks, dtype=np.int64).reshape(-1, 3)


@dataclass(frozen=True)
class Rows:
    """A feature matrix prepared once for any number of blends over it.

    ``xr`` and ``x0`` are the matrix with LightGBM's input rules applied (a magnitude up to
    kZeroThreshold reads as 0.0; ``x0`` also reads NaN as 0.0, as a simple split does), plus an
    all-zero last column that folded categorical splits read, flattened row-major.
    """

    xr: np.ndarray
    x0: np.ndarray
    count: int
    columns: int
    blocks: dict[bytes, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, compare=False)

    def grouped(self, codes: np.ndarray, specialist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return :func:`_blocks` of ``codes`` and ``specialist``, computed once for each pair."""
        key = codes.tobytes() + b"|" + specialist.tobytes()
        if key not in self.blocks:
            self.blocks[key] = _blocks(codes, specialist)
        return self.blocks[key]


def prepare(x: np.ndarray) -> Rows:
    """Prepare a ``(rows, columns)`` feature matrix for :func:`blend`.

    Raises
    ------
    ModelError
        When ``x`` is not two-dimensional.
    """
    matrix = np.asarray(x, dtype=np.float64)
    if matrix.ndim != 2:
        raise ModelError(f"feature matrix must be two-dimensional, shape was {matrix.shape}")
    xr = np.zeros((matrix.shape[0], matrix.shape[1] + 1))
    xr[:, :-1] = np.where(np.abs(matrix) <= ZERO_THRESHOLD, 0.0, matrix)
    x0 = np.where(np.isnan(xr), 0.0, xr)
    return Rows(xr.reshape(-1), x0.reshape(-1), matrix.shape[0], matrix.shape[1])


def blend(forest: Forest, x: np.ndarray | Rows, codes: np.ndarray, general: int, specialist: np.ndarray,
          weight: float, num_threads: int = 1, compiled: bool = True) -> np.ndarray:  # fmt: skip
    """Score every row of ``x`` with model ``general`` blended with its symbol's specialist.

    The blended half of :func:`blend_with_general` (see there).
    """
    return blend_with_general(forest, x, codes, general, specialist, weight, num_threads, compiled)[1]


def blend_with_general(forest: Forest, x: np.ndarray | Rows, codes: np.ndarray, general: int, specialist: np.ndarray,
                       weight: float, num_threads: int = 1,
                       compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Score every row of ``x`` with model ``general`` alone and blended with its symbol's specialist, in one pass.

    Returns ``(general(x), blended)``. The first is what ``blend`` with no specialists gives, the second
    what ``blend`` gives: each row's score depends on that row alone, so scoring the global model once
    for both is exact (and saves a pass over every row).

    Row ``r`` gets ``(1 - weight) * general(x[r]) + weight * specialist[codes[r]](x[r])`` when
    ``codes[r] >= 0`` and ``specialist[codes[r]] >= 0``, else ``general(x[r])``, where ``m(x)`` is
    exactly LightGBM's ``predict`` of model ``m``. ``x`` is a matrix or, to score several outputs of
    the same rows, :func:`prepare` of it. The compiled kernel runs on up to ``num_threads`` threads
    (the result does not depend on it); ``compiled=False`` runs the same kernels uncompiled (slow; for
    tests).

    Raises
    ------
    ModelError
        When ``x`` has fewer columns than a split reads, a model index is out of range, or ``codes``
        does not give one code per row, each below ``len(specialist)``.
    """
    rows = x if isinstance(x, Rows) else prepare(x)
    if rows.columns <= forest.max_feature:
        raise ModelError(f"feature matrix must have at least {forest.max_feature + 1} columns, had {rows.columns}")
    own = np.asarray(specialist, dtype=np.int64)
    used = [general, *own[own >= 0].tolist()]
    if any(m < 0 or m >= forest.models for m in used):
        raise ModelError(f"model index out of range 0..{forest.models - 1}: {used}")
    row_codes = np.asarray(codes, dtype=np.int64)
    if row_codes.shape != (rows.count,) or (row_codes >= len(own)).any():
        raise ModelError(f"codes must give one code per row, each below {len(own)}")
    order, blocks = rows.grouped(row_codes, own)
    out = np.empty(rows.count, dtype=np.float64)
    general_out = np.empty(rows.count, dtype=np.float64)
    if compiled:
        kernel = _kernel()
        _set_threads(num_threads)
    else:
        kernel = _blend
    kernel(rows.xr, rows.x0, np.uint64(rows.columns + 1), order, blocks, general, float(weight), forest.link,
           forest.threshold, forest.decision, forest.simple, forest.value, forest.cat_start, forest.cat_len,
           forest.cat_words, forest.tree_root, forest.tree_depth, forest.tree_simple, forest.tree_foldable,
           forest.model_nodes, forest.model_trees, forest.model_sigmoid, forest.cat_features, forest.cat_offsets,
           out, general_out)  # fmt: skip
    return general_out, out


_WARM_MODEL = "tree\nnum_class=1\nnum_tree_per_iteration=1\nobjective=regression\n\nTree=0\nnum_leaves=1\nleaf_value=0.5\n"


def warm() -> float:
    """Compile the kernel (or load it from numba's cache) by scoring one row; return that row's score.

    ``make install`` calls this so that the first run after an install does not pay the compilation.
    """
    return float(predict(compile_forest([_WARM_MODEL]), 0, np.zeros((1, 1)))[0])


def predict(forest: Forest, model: int, x: np.ndarray, num_threads: int = 1, compiled: bool = True) -> np.ndarray:
    """Score every row of ``x`` with model ``model`` alone: LightGBM's ``predict``, exactly."""
    no_codes = np.full(len(x), -1, dtype=np.int64)
    return blend(forest, x, no_codes, model, np.empty(0, dtype=np.int64), 0.0, num_threads, compiled)
