"""GPU checks (marker ``gpu``): skipped unless torch sees CUDA and cuDF / cuML import.

Run on a GPU machine with ``pytest -m gpu``. They check that the RAPIDS backend resolves, that
preparing on cuDF gives the same arrays as pandas, that cuML KMeans agrees with scikit-learn, and
that a 1-epoch training runs on CUDA, that the shared training step keeps its loss on the device
and that HDBSCAN on cuML is extended to every row by approximate_predict.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from gpuseg.backend import resolve_backend
from gpuseg.config import ModelConfig, TrainConfig
from gpuseg.data.panel import load_panel
from gpuseg.data.prepare import prepare


def _rapids_missing() -> str | None:
    for name in ("cudf", "cuml"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a CUDA runtime error raised at import
            return f"{name} does not import ({type(exc).__name__})"
    return None


HAS_CUDA = torch.cuda.is_available()
NO_RAPIDS = _rapids_missing() if HAS_CUDA else "no CUDA GPU"

needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="torch.cuda.is_available() is False")
needs_rapids = pytest.mark.skipif(NO_RAPIDS is not None, reason=f"RAPIDS unavailable: {NO_RAPIDS}")
pytestmark = [pytest.mark.gpu, needs_cuda]


@needs_rapids
def test_resolve_cuda():
    be = resolve_backend("cuda")
    assert (be.device, be.frames, be.ml) == ("cuda", "cudf", "cuml") and be.gpu
    assert be.torch_device.type == "cuda"
    assert be.frame_module().__name__ == "cudf"
    auto = resolve_backend("auto")
    assert (auto.device, auto.frames, auto.ml) == ("cuda", "cudf", "cuml")


@needs_rapids
def test_prepare_on_cudf_equals_pandas(tiny_world, tiny_panel_dir, tmp_path):
    prepare(tiny_world.data_config(), resolve_backend("cuda"), tmp_path / "gpu")
    gpu, cpu = load_panel(tmp_path / "gpu"), load_panel(tiny_panel_dir)
    assert gpu.ids.tolist() == cpu.ids.tolist()
    assert gpu.meta["metrics"] == cpu.meta["metrics"] and gpu.meta["periods"] == cpu.meta["periods"]
    assert gpu.meta["static_features"] == cpu.meta["static_features"]
    assert gpu.meta["counts"] == cpu.meta["counts"]
    for name in ("usage", "mask", "static", "churn", "migration"):
        np.testing.assert_array_equal(getattr(gpu, name), getattr(cpu, name), err_msg=name)


@needs_rapids
def test_cuml_kmeans_agrees_with_sklearn():
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from gpuseg.segment.cluster import Segmenter

    x, y = make_blobs(n_samples=5000, centers=5, n_features=8, cluster_std=0.7, random_state=0)
    x = x.astype(np.float32)
    gpu = Segmenter(k=5, n_init=2, backend=resolve_backend("cuda")).fit(x)
    cpu = Segmenter(k=5, n_init=2, backend=resolve_backend("cpu")).fit(x)
    assert gpu.backend_ == "cuml" and cpu.backend_ == "sklearn"
    assert adjusted_rand_score(cpu.labels_, gpu.labels_) > 0.9
    assert adjusted_rand_score(y, gpu.labels_) > 0.9
    auto = Segmenter(k=None, k_min=3, k_max=7, n_init=2, backend=resolve_backend("cuda")).fit(x)
    assert auto.k_ == 5


def test_one_epoch_on_cuda(tiny_panel):
    from gpuseg.training.loop import predict, to_device, train_model

    device = torch.device("cuda")
    model_cfg = ModelConfig(encoder="gru", hidden_size=16, embedding_dim=8, static_hidden=8)
    res = train_model(
        tiny_panel, model_cfg, TrainConfig(epochs=1, batch_size=128, lr=1e-2, seed=0), device
    )
    assert res.metrics["epochs_run"] == 1
    assert np.isfinite(res.history[0]["loss"]) and res.metrics["churn"]["roc_auc"] > 0.55
    assert next(res.model.parameters()).device.type == "cuda"
    out = predict(res.model, to_device(tiny_panel, device), None, 512)
    assert out["embedding"].shape == (len(tiny_panel), 8) and out["embedding"].device.type == "cuda"
    assert torch.isfinite(out["embedding"]).all()


@needs_rapids
def test_cuml_hdbscan_extended_by_approximate_predict():
    """HDBSCAN on cuML: fitted on a sample, every row labelled through approximate_predict (noise
    by the nearest centre); the segments agree with the CPU path's."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from gpuseg.segment.cluster import Segmenter

    x, y = make_blobs(n_samples=6000, centers=4, n_features=8, cluster_std=0.6, random_state=1)
    x = x.astype(np.float32)
    kw = dict(algorithm="hdbscan", sample_size=3000, min_cluster_size=50, stability_repeats=1)
    gpu = Segmenter(**kw, backend=resolve_backend("cuda")).fit(x)
    cpu = Segmenter(**kw, backend=resolve_backend("cpu")).fit(x)
    assert gpu.k_ == cpu.k_ == 4
    assert len(gpu.labels_) == len(x) and gpu.labels_.min() >= 0
    assert adjusted_rand_score(y, gpu.labels_) > 0.9
    assert adjusted_rand_score(cpu.labels_, gpu.labels_) > 0.9


def test_training_step_stays_on_the_device(tiny_panel):
    """One epoch of the shared step on CUDA reads the loss once: the result is a device scalar."""
    from gpuseg.config import TrainConfig as TC
    from gpuseg.model.sequence import SubscriberModel
    from gpuseg.training.loop import to_device
    from gpuseg.training.step import Losses, train_epoch

    device = torch.device("cuda")
    cfg = ModelConfig(hidden_size=16, embedding_dim=8)
    _, t, m = tiny_panel.usage.shape
    model = SubscriberModel(m, tiny_panel.static.shape[1], t, cfg).to(device)
    data = to_device(tiny_panel, device)
    rows = torch.nonzero(data["churn"] >= 0).squeeze(1)
    churn, mig = np.asarray(tiny_panel.churn), np.asarray(tiny_panel.migration)
    losses = Losses.fit(churn[churn >= 0], mig[churn >= 0], TC(), device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    total = train_epoch(model, model, data, rows, 256, losses, opt, None, True)
    assert total.device.type == "cuda" and total.dtype == torch.float64
    assert torch.isfinite(total) and float(total) > 0


def test_uplift_learners_predict_on_cuda_as_on_cpu():
    """The plan's effect models fitted once, predicting on the GPU (torch tree walk) and on the
    CPU (scikit-learn): the same effects to rounding."""
    from gpuseg.action.uplift import Campaigns, crossfit

    rng = np.random.default_rng(0)
    n = 4000
    X = rng.normal(size=(n, 5)).astype(np.float32)
    t = (rng.random(n) < 0.5).astype(np.int8)
    y = (rng.random(n) < 0.5 + 0.2 * t * (X[:, 0] > 0)).astype(np.int8)
    camp = Campaigns(
        np.arange(n // 2),
        np.full(n // 2, "gift"),
        np.full(n // 2, "sms"),
        t[: n // 2],
        y[: n // 2],
        None,
    )
    camp.accepted = (t[: n // 2] * (rng.random(n // 2) < 0.4)).astype(np.int8)
    cf = crossfit(X, camp, ["sms"], folds=3)
    rows = np.arange(n)
    want = cf.effects(X, rows, "gift", "sms")
    got = cf.to(torch.device("cuda")).effects(X, rows, "gift", "sms")
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
