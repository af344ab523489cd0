"""Backend resolution: cpu, explicit cuda without a GPU, auto fallback with a note."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from gpuseg.backend import Backend, describe_environment, resolve_backend
from gpuseg.errors import BackendError

HAS_CUDA = torch.cuda.is_available()


def test_cpu():
    be = resolve_backend("cpu")
    assert (be.device, be.frames, be.ml) == ("cpu", "pandas", "sklearn")
    assert be.torch_device == torch.device("cpu") and not be.gpu
    assert be.frame_module() is pd
    from sklearn.cluster import HDBSCAN, KMeans

    assert isinstance(be.kmeans(n_clusters=2), KMeans)
    assert isinstance(be.hdbscan(min_cluster_size=5), HDBSCAN)
    x = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    xy = np.asarray(be.umap(n_components=2, random_state=0).fit_transform(x))
    assert xy.shape == (60, 2) and np.isfinite(xy).all() and xy.std(0).min() > 0
    assert be.array_module() is np
    assert be.approximate_predict(None, x) is None  # cuML only


def test_gpu_cuml_without_dask_cuda_refuses_local_cluster():
    """A cuML backend on a GPU machine without dask-cuda refuses ``--cluster local`` in one line
    instead of starting CPU workers that would share the GPU."""
    try:
        import dask_cuda  # noqa: F401

        pytest.skip("dask-cuda is installed")
    except ImportError:
        pass
    be = Backend("cuda", "cudf", "cuml")
    with pytest.raises(BackendError, match="dask-cuda") as info:
        be.local_cluster(2)
    assert "\n" not in str(info.value) and "gpuseg[cuda12]" in str(info.value)


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present")
def test_cuda_without_gpu_is_an_error():
    with pytest.raises(BackendError) as info:
        resolve_backend("cuda")
    msg = str(info.value)
    assert "--device cuda" in msg and "GPU" in msg and "\n" not in msg


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present")
def test_auto_falls_back_to_cpu_with_a_note():
    be = resolve_backend("auto")
    assert (be.device, be.frames, be.ml) == ("cpu", "pandas", "sklearn")
    assert len(be.notes) == 1 and "cpu" in be.notes[0] and "no CUDA GPU" in be.notes[0]


def test_auto_matches_hardware():
    be = resolve_backend("auto")
    assert be.device == ("cuda" if HAS_CUDA else "cpu")
    if be.frames == "pandas" and HAS_CUDA:
        assert be.notes  # a fallback always says why


def test_bad_device_name():
    with pytest.raises(BackendError, match="auto, cpu or cuda"):
        resolve_backend("tpu")


def test_to_numpy():
    be = resolve_backend("cpu")
    assert be.to_numpy(pd.Series([1, 2])).tolist() == [1, 2]
    assert be.to_numpy(torch.tensor([3.0]).numpy()).tolist() == [3.0]


def test_describe_environment():
    info = describe_environment()
    assert info["torch"] == torch.__version__
    assert info["cuda_available"] == str(HAS_CUDA)
    assert {"cudf", "cuml", "numpy", "pandas", "scikit-learn"} <= set(info)
