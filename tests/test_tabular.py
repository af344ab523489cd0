"""TabM with numeric embeddings (gpuseg.model.tabular) and its fit (gpuseg.training.tabular):
shapes, the piecewise-linear encoding, learning a rule, determinism, and its place in the blend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gpuseg.errors import ConfigError, DataError
from gpuseg.evaluate.boosting import booster_available
from gpuseg.evaluate.metrics import roc_auc
from gpuseg.model.tabular import PiecewiseLinearEmbedding, TabM, TabMSpec
from gpuseg.training.heads import TABM_FILE, BlendHead, fit_blend, load_head
from gpuseg.training.tabular import TabMFit, fit_preprocessing, fit_tabm, make_tabm, tabm_proba

SMALL = TabMSpec(k=4, n_blocks=2, d_block=32, d_embedding=4, n_bins=8, n_frequencies=4)
QUICK = TabMFit(lr=3e-3, batch_size=128, max_epochs=40, patience=8)


def rule_table(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Columns: two uniform numbers, a flag, a constant and a copy of the first number; churn
    follows an interaction (x0 > 0.6 and x1 < 0.4) or the flag, with label noise."""
    rng = np.random.default_rng(seed)
    x0, x1 = rng.random(n), rng.random(n) * 100
    flag = (rng.random(n) < 0.2).astype(float)
    X = np.column_stack([x0, x1, flag, np.full(n, 3.0), x0]).astype(np.float32)
    rule = ((x0 > 0.6) & (x1 < 40)) | (flag > 0)
    y = np.where(rng.random(n) < 0.1, rng.random(n) < 0.5, rule).astype(int)
    return X, y


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ["tabm", "tabm-mini"])
@pytest.mark.parametrize("embedding", ["piecewise", "periodic", "none"])
def test_shapes_and_a_member_per_output(arch, embedding):
    X, _ = rule_table(64)
    spec = TabMSpec(**(SMALL.state() | dict(arch=arch, embedding=embedding)))
    torch.manual_seed(0)
    prep = fit_preprocessing(X, spec.n_bins)
    assert list(prep["numeric"]) == [0, 1] and list(prep["passed"]) == [2]  # constant, copy out
    model = make_tabm(X.shape[1], prep, spec).eval()
    logits = model(torch.as_tensor(X))
    assert logits.shape == (64, spec.k)  # (B, E)
    p = model.proba(torch.as_tensor(X))
    assert p.shape == (64,) and bool(((p > 0) & (p < 1)).all())
    assert torch.allclose(p, torch.sigmoid(logits).mean(1))
    assert not torch.allclose(logits[:, 0], logits[:, 1])  # the members differ
    d_flat = 2 * (spec.d_embedding if embedding != "none" else 1) + 1
    first = model.input_scale if arch == "tabm-mini" else model.blocks[0].r
    assert first.shape == (spec.k, d_flat)
    if embedding != "none":  # one draw per feature across its embedding
        assert torch.equal(first[:, 0], first[:, spec.d_embedding - 1])
    if arch == "tabm":
        assert model.blocks[1].r is not None and bool((model.blocks[1].r == 1).all())
    else:
        assert model.blocks[0].r is None  # the MLP itself is shared


def test_piecewise_linear_encoding():
    emb = PiecewiseLinearEmbedding(2, 3, 4)
    emb.set_bins([torch.tensor([0.0, 1.0, 2.0, 4.0]), torch.tensor([-1.0, 1.0])])
    x = torch.tensor([[1.5, 0.0], [-1.0, 3.0], [5.0, -3.0]])
    enc = emb.encode(x)  # (B, N, K)
    assert enc.shape == (3, 2, 3)
    assert torch.allclose(enc[0, 0], torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(enc[1, 0], torch.tensor([-1.0, 0.0, 0.0]))  # first bin: unbounded below
    assert torch.allclose(enc[2, 0], torch.tensor([1.0, 1.0, 1.5]))  # last bin: unbounded above
    assert torch.allclose(enc[:, 1, 0], torch.tensor([0.5, 2.0, -1.0]))  # one bin: linear
    assert bool((enc[:, 1, 1:] == 0).all())  # bins the feature does not have
    assert emb(x).shape == (3, 2, 4)
    with pytest.raises(DataError, match="bins"):
        emb.set_bins([torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0])])


def test_fit_learns_an_interaction_above_chance():
    X, y = rule_table(4000)
    Xt, yt = rule_table(2000, seed=1)
    res = fit_tabm(X[:3000], y[:3000], X[3000:], y[3000:], SMALL, QUICK, seed=0)
    auc = roc_auc(yt, tabm_proba(res.model, Xt))
    assert auc > 0.85, auc  # the oracle is ~0.95; a linear model misses the interaction
    assert res.val_auc > 0.85 and 1 <= res.best_epoch <= res.epochs_run <= QUICK.max_epochs


def test_fit_is_deterministic_by_seed():
    X, y = rule_table(1500)
    fit = TabMFit(max_epochs=3, patience=3)
    a = fit_tabm(X[:1000], y[:1000], X[1000:], y[1000:], SMALL, fit, seed=3)
    b = fit_tabm(X[:1000], y[:1000], X[1000:], y[1000:], SMALL, fit, seed=3)
    c = fit_tabm(X[:1000], y[:1000], X[1000:], y[1000:], SMALL, fit, seed=4)
    pa, pb, pc = (tabm_proba(r.model, X[1000:]) for r in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert a.history == b.history
    assert np.abs(pa - pc).max() > 1e-4


def test_a_fit_refuses_one_class_and_constant_columns():
    X, y = rule_table(200)
    with pytest.raises(DataError, match="both classes"):
        fit_tabm(X, np.zeros(200), X, y, SMALL, QUICK)
    with pytest.raises(DataError, match="constant"):
        fit_tabm(np.ones_like(X), y, X, y, SMALL, QUICK)
    with pytest.raises(ConfigError, match="max_epochs"):
        TabMFit(max_epochs=0)
    with pytest.raises(ConfigError, match="embedding"):
        TabMSpec(embedding="onehot")


@pytest.mark.skipif(
    not (booster_available("xgboost") and booster_available("lightgbm")),
    reason="xgboost or lightgbm not installed",
)
def test_the_blend_has_a_tabm_part_saved_and_loaded(tmp_path: Path):
    """model.head: blend fits TabM next to the other parts, weighs its logit, saves it as
    safetensors and loads it back with the same predictions."""
    X, y = rule_table(3000)
    Xs = {"train": X[:2000], "val": X[2000:]}
    ys = {"train": y[:2000], "val": y[2000:]}
    seq = np.clip(0.3 + 0.1 * np.random.default_rng(0).standard_normal(1000), 0.01, 0.99)
    head = fit_blend(Xs, ys, seq, ["xgboost", "lightgbm"], 2, 0, True, SMALL, QUICK)
    assert list(head.parts) == ["logistic", "hist_gb", "xgboost", "lightgbm", "tabm"]
    assert set(head.weights) == {"sequence", "logistic", "hist_gb", "xgboost", "lightgbm", "tabm"}
    assert isinstance(head.parts["tabm"].model, TabM)
    without = fit_blend(Xs, ys, seq, ["xgboost"], trials=2, tabm=False)
    assert "tabm" not in without.parts
    head.save(tmp_path)
    assert (tmp_path / TABM_FILE).is_file()
    loaded = load_head(tmp_path)
    assert isinstance(loaded, BlendHead) and list(loaded.parts) == list(head.parts)
    np.testing.assert_allclose(loaded.predict(X[:50], seq[:50]), head.predict(X[:50], seq[:50]))
    np.testing.assert_allclose(
        loaded.parts["tabm"].predict(X[:50]), head.parts["tabm"].predict(X[:50]), rtol=1e-6
    )
