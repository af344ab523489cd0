"""gpuseg.evaluate.trees: HistGradientBoosting exported to plain arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from gpuseg.errors import DataError
from gpuseg.evaluate.baselines import HistGBBaseline
from gpuseg.evaluate.trees import BLOCK_ROWS, HistGBTrees


def data(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    X[rng.random(X.shape) < 0.15] = np.nan  # missing values take the learned side
    x = np.nan_to_num(X)
    y = (x[:, 0] + x[:, 1] * x[:, 2] - np.abs(x[:, 3]) + rng.normal(size=n) > 0).astype(int)
    return X, y


def test_the_exported_trees_predict_what_scikit_learn_does_and_survive_json():
    X, y = data()
    model = HistGBBaseline(max_leaf_nodes=15).fit(X[:4000], y[:4000], X[4000:5000], y[4000:5000])
    trees = HistGBTrees.from_model(model)
    assert len(trees.roots) == model.n_iter_ and trees.depths.max() >= 3
    Xt = np.concatenate([X, X[: BLOCK_ROWS + 7]])  # more than one block, a ragged last one
    want = model.predict_proba(Xt)[:, 1]
    np.testing.assert_allclose(trees.predict(Xt), want, rtol=0, atol=1e-12)
    again = HistGBTrees.from_state(json.loads(json.dumps(trees.state())))
    np.testing.assert_array_equal(again.predict(Xt), trees.predict(Xt))
    # a raw HistGradientBoostingClassifier exports too; the width is checked
    raw = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    np.testing.assert_allclose(
        HistGBTrees.from_model(raw).predict(X), raw.predict_proba(X)[:, 1], atol=1e-12
    )
    with pytest.raises(DataError, match="3 features, the trees read 8"):
        trees.predict(X[:, :3])


def test_states_that_disagree_and_multiclass_models_are_refused():
    X, y = data(2000)
    trees = HistGBTrees.from_model(HistGradientBoostingClassifier(max_iter=3).fit(X, y))
    st = trees.state()
    for bad in (
        st | dict(left=st["left"][:-1]),
        st | dict(right=[len(st["right"])] * len(st["right"])),
        st | dict(feature=[99] * len(st["feature"])),
        st | dict(roots=[]),
        {k: v for k, v in st.items() if k != "value"},
    ):
        with pytest.raises(ValueError, match="hist_gb"):
            HistGBTrees.from_state(bad)
    three = HistGradientBoostingClassifier(max_iter=3).fit(X, np.arange(len(y)) % 3)
    with pytest.raises(DataError, match="binary classifiers only"):
        HistGBTrees.from_model(three)


def test_the_torch_walker_predicts_what_scikit_learn_does():
    """The GPU path's walk, run on the CPU here (tests/test_gpu.py runs it on CUDA)."""
    import torch

    from gpuseg.evaluate.trees import TreeWalker

    X, y = data()
    model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15).fit(X, y)
    walker = TreeWalker(HistGBTrees.from_model(model), torch.device("cpu"), block_rows=1000)
    Xt = np.concatenate([X, X[:1007]])  # several blocks, a ragged last one; NaNs included
    np.testing.assert_allclose(walker.predict(Xt), model.predict_proba(Xt)[:, 1], atol=1e-12)
    assert walker.predict(X[:0]).shape == (0,)
    with pytest.raises(DataError, match="3 features, the trees read 8"):
        walker.predict(X[:, :3])
