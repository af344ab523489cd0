"""Device and backend choice, in one place.

``resolve_backend("auto" | "cpu" | "cuda")`` decides, once per run, which device torch uses and
whether data preparation and clustering run on RAPIDS (cuDF, cuML) or on pandas / scikit-learn.
cuDF and cuML are imported lazily here and nowhere else; other modules ask this one for the
estimator classes and frame module they need, so one interface serves both backends.
"""

from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas
import sklearn
import sklearn.cluster
import torch
from sklearn.decomposition import PCA

from gpuseg.errors import BackendError


def _try_import(name: str) -> tuple[Any | None, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a CUDA runtime error raised at import
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


def cuda_available() -> bool:

    return torch.cuda.is_available()


def rapids_available() -> tuple[bool, str]:
    """(True, '') when cuDF and cuML import; else (False, why)."""
    for name in ("cudf", "cuml"):
        mod, err = _try_import(name)
        if mod is None:
            return False, f"{name} not importable ({err})"
    return True, ""


@dataclass(frozen=True)
class Backend:
    """What each stage runs on. ``notes`` explains every fallback in one line each."""

    device: str  # "cuda" or "cpu": where torch runs
    frames: str  # "cudf" or "pandas": data preparation
    ml: str  # "cuml" or "sklearn": clustering, UMAP
    notes: tuple[str, ...] = field(default=())

    @property
    def torch_device(self):

        return torch.device(self.device)

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    # -- estimator and frame factories: the only doors to RAPIDS ------------------------------
    def frame_module(self):
        """``cudf`` or ``pandas``."""
        return importlib.import_module("cudf" if self.frames == "cudf" else "pandas")

    def kmeans(self, **params):
        if self.ml == "cuml":
            from cuml.cluster import KMeans

            return KMeans(**params)
        return sklearn.cluster.KMeans(**params)

    def hdbscan(self, **params):
        if self.ml == "cuml":
            from cuml.cluster import HDBSCAN

            return HDBSCAN(prediction_data=True, **params)
        return sklearn.cluster.HDBSCAN(**params)

    def approximate_predict(self, model, x) -> Any:
        """Cluster ids (host int64, -1 noise) of rows ``x`` under a fitted cuML HDBSCAN, by
        ``cuml.cluster.hdbscan.approximate_predict``; None on scikit-learn (no such method)."""
        if self.ml != "cuml":
            return None
        from cuml.cluster.hdbscan import approximate_predict

        labels, _ = approximate_predict(model, x)
        return self.to_numpy(labels).astype("int64")

    def array_module(self):
        """``cupy`` with cuML (arrays on the GPU), else ``numpy``."""
        return importlib.import_module("cupy" if self.ml == "cuml" else "numpy")

    def umap(self, **params):
        """2-D map of embeddings: cuML UMAP, umap-learn when installed, else PCA."""
        if self.ml == "cuml":
            from cuml.manifold import UMAP

            return UMAP(**params)
        mod, _ = _try_import("umap")
        if mod is not None:
            return mod.UMAP(**params)

        return PCA(
            n_components=params.get("n_components", 2), random_state=params.get("random_state")
        )

    def to_numpy(self, array) -> Any:
        """Host copy of a cupy/cudf/numpy/pandas array."""

        if hasattr(array, "to_numpy"):
            array = array.to_numpy()
        if hasattr(array, "get"):
            array = array.get()
        return np.asarray(array)

    # -- Dask: which local cluster and which distributed KMeans (see gpuseg.parallel) -----------
    def local_cluster(self, n_workers: int | None = None):
        """A Dask cluster on this machine.

        On GPU with dask-cuda importable: ``LocalCUDACluster``, one worker per visible GPU (or
        ``n_workers``). On a GPU with cuML but no dask-cuda: :class:`BackendError` (CPU workers
        would share the one GPU through ``cuml.dask``). Otherwise ``LocalCluster`` with
        ``n_workers`` single-threaded worker processes (default: one per CPU core).
        """
        if self.gpu:
            mod, why = _try_import("dask_cuda")
            if mod is not None:
                kw = {} if n_workers is None else dict(n_workers=n_workers)
                return mod.LocalCUDACluster(dashboard_address=":0", **kw)
            if self.ml == "cuml":
                raise BackendError(
                    f"--cluster local on a GPU with cuML needs dask-cuda ({why}); install "
                    "gpuseg[cuda12] or gpuseg[cuda13], or run with --device cpu"
                )
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=n_workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: several clusters may share a machine
        )

    def dask_kmeans(self, **params):
        """``cuml.dask.cluster.KMeans`` on RAPIDS; None on CPU (gpuseg.parallel runs Lloyd's)."""
        if self.ml != "cuml":
            return None
        from cuml.dask.cluster import KMeans

        return KMeans(**params)


def resolve_backend(requested: str = "auto") -> Backend:
    """Pick the backend for ``--device auto|cpu|cuda``.

    ``auto`` uses CUDA and RAPIDS when present and falls back stage by stage, with one note saying
    why. An explicit ``cuda`` without a GPU or without RAPIDS raises :class:`BackendError`.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise BackendError(f"--device must be auto, cpu or cuda, not {requested!r}")
    if requested == "cpu":
        return Backend("cpu", "pandas", "sklearn", ("device cpu requested",))
    has_cuda = cuda_available()
    has_rapids, why_not = rapids_available() if has_cuda else (False, "no CUDA GPU")
    if requested == "cuda":
        if not has_cuda:
            raise BackendError(
                "--device cuda: torch sees no CUDA GPU (torch.cuda.is_available() is False)"
            )
        if not has_rapids:
            raise BackendError(
                f"--device cuda: RAPIDS is missing ({why_not}); install gpuseg[cuda12] or "
                "gpuseg[cuda13]"
            )
        return Backend("cuda", "cudf", "cuml")
    if not has_cuda:
        return Backend("cpu", "pandas", "sklearn", ("device auto -> cpu: torch sees no CUDA GPU",))
    if not has_rapids:
        note = (
            f"device auto -> cuda for torch; pandas/scikit-learn for data and clustering: {why_not}"
        )
        return Backend("cuda", "pandas", "sklearn", (note,))
    return Backend("cuda", "cudf", "cuml")


def describe_environment() -> dict[str, str]:
    """Versions and devices, for ``gpuseg info`` and benchmark records."""

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": str(torch.version.cuda),
        "cuda_available": str(torch.cuda.is_available()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
    }
    for name in ("cudf", "cuml", "optuna", "dask"):
        mod, err = _try_import(name)
        info[name] = getattr(mod, "__version__", "?") if mod is not None else "not installed"
    return info
