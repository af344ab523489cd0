"""Segments from embeddings: KMeans (all rows) or HDBSCAN (fit on a sample, extended to all rows).

``Segmenter`` is a scikit-learn style estimator: parameters stored as given, ``fit`` returns self,
learned state ends in ``_``. The backend object supplies cuML or scikit-learn estimators, so the
same code runs on both; inputs are standardised with statistics learned in ``fit``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score

from gpuseg.backend import Backend, resolve_backend
from gpuseg.config import ClusterConfig
from gpuseg.errors import ConfigError, RunDirError
from gpuseg.io.store import ListOf, check_json

# what cluster.json must hold to be used (checked by Segmenter.from_state)
CLUSTER_SCHEMA = dict(
    algorithm=str, k=int, mean=ListOf(float), scale=ListOf(float), centers=ListOf(list),
    backend=str, scores=list, reason=str,
)  # fmt: skip


class Segmenter:
    """Cluster subscriber embeddings into segments.

    Parameters mirror :class:`gpuseg.config.ClusterConfig`. With ``k=None`` the number of segments
    is chosen over ``[k_min, k_max]`` by the silhouette score on a sample of ``sample_size`` rows;
    the Davies-Bouldin index is computed next to it (``scores_``) and the choice explained in
    ``reason_``.

    Stability (``stability_ari_``): ``stability_repeats`` re-fits of the chosen model (same k for
    KMeans, same settings for HDBSCAN) on bootstrap samples of the sample rows, each with its own
    seed derived from ``seed``; each re-fit labels the sample rows and is compared with the final
    labels there by the adjusted Rand index (1 = the same partition).
    """

    def __init__(
        self,
        algorithm: str = "kmeans",
        k: int | None = None,
        k_min: int = 3,
        k_max: int = 8,
        sample_size: int = 20_000,
        min_cluster_size: int = 200,
        n_init: int = 4,
        seed: int = 0,
        backend: Backend | None = None,
        stability_repeats: int = 5,
    ):
        self.algorithm = algorithm
        self.k = k
        self.k_min = k_min
        self.k_max = k_max
        self.sample_size = sample_size
        self.min_cluster_size = min_cluster_size
        self.n_init = n_init
        self.seed = seed
        self.backend = backend
        self.stability_repeats = stability_repeats

    @classmethod
    def from_config(cls, cfg: ClusterConfig, backend: Backend | None = None) -> Segmenter:
        """An unfitted Segmenter with every parameter from the config's cluster section."""
        return cls(
            **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}, backend=backend
        )

    # -- the steps of fit, public so that the Dask path runs the same ones --------------------
    def _backend(self) -> Backend:
        return self.backend if self.backend is not None else resolve_backend("cpu")

    def sample_rows(self, n: int) -> np.ndarray:
        """The seeded, sorted sample of at most ``sample_size`` of ``n`` rows that k is chosen
        on (and HDBSCAN fitted on)."""
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(n, size=min(n, self.sample_size), replace=False))

    def set_scale(self, mean: np.ndarray, scale: np.ndarray) -> Segmenter:
        """The standardisation ``(x - mean) / scale`` (``scale`` = std + 1e-6 in :meth:`fit`)."""
        self.mean_ = np.asarray(mean, dtype=np.float32)
        self.scale_ = np.asarray(scale, dtype=np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardised rows, float32."""
        return ((x - self.mean_) / self.scale_).astype(np.float32)

    def kmeans(self, k: int, seed: int | None = None):
        """An unfitted KMeans of the backend with this Segmenter's settings."""
        return self._backend().kmeans(
            n_clusters=k,
            n_init=self.n_init,
            random_state=self.seed if seed is None else seed,
            max_iter=300,
        )

    def candidate_ks(self, n: int) -> list[int]:
        """The k values tried for ``n`` rows: ``[k]`` when fixed, else ``k_min..k_max``."""
        ks = [self.k] if self.k is not None else list(range(self.k_min, self.k_max + 1))
        ks = [k for k in ks if 2 <= k < n]
        if not ks:
            asked = (
                f"cluster.k={self.k}"
                if self.k is not None
                else f"cluster.k_min..k_max [{self.k_min}, {self.k_max}]"
            )
            raise ConfigError(f"{asked}: needs more subscribers than segments; there are {n}")
        return ks

    def choose_k(self, zs: np.ndarray, ks: list[int]) -> int:
        """k with the highest silhouette over ``ks`` of KMeans fitted on the standardised sample
        ``zs``, Davies-Bouldin next to it (``scores_``, ``reason_``); a single k is taken as
        given."""
        if len(ks) == 1:
            self.scores_ = [dict(k=ks[0])]
            self.reason_ = f"k={ks[0]} fixed in config"
            return ks[0]
        be = self._backend()
        self.scores_ = []
        for k in ks:
            labels = be.to_numpy(self.kmeans(k).fit(zs).predict(zs))
            sil = float(
                silhouette_score(
                    zs, labels, sample_size=min(len(zs), 10_000), random_state=self.seed
                )
            )
            db = float(davies_bouldin_score(zs, labels))
            self.scores_.append(dict(k=k, silhouette=sil, davies_bouldin=db))
        chosen = max(self.scores_, key=lambda s: s["silhouette"])  # the first of equal ones
        by_db = min(self.scores_, key=lambda s: s["davies_bouldin"])["k"]
        k = chosen["k"]
        self.reason_ = (
            f"k={k}: highest silhouette ({chosen['silhouette']:.3f}) over k in "
            f"{ks[0]}..{ks[-1]}; Davies-Bouldin {chosen['davies_bouldin']:.3f}"
            + (" (also the lowest)" if by_db == k else f" (lowest at k={by_db})")
        )
        return k

    def fit_kmeans(self, z: np.ndarray, k: int) -> Segmenter:
        """KMeans with ``k`` clusters on all standardised rows ``z``: ``model_``, centres."""
        self.k_ = k
        self.model_ = self.kmeans(k).fit(z)
        self.cluster_centers_ = self._backend().to_numpy(self.model_.cluster_centers_)
        self.cluster_centers_ = self.cluster_centers_.astype(np.float32)
        return self

    def fit_hdbscan(self, zs: np.ndarray) -> Segmenter:
        """HDBSCAN on the standardised sample ``zs``: its clusters' centroids, ``model_`` (kept
        to extend the clusters to other rows), noise share and ``reason_``."""
        centers, sample_labels, model = self._hdbscan(zs)
        self.cluster_ids_ = sorted(set(sample_labels.tolist()) - {-1})
        if centers is None:
            raise ConfigError("cluster: HDBSCAN found no cluster; lower cluster.min_cluster_size")
        self.cluster_centers_, self.model_, self.k_ = centers, model, len(centers)
        self.noise_fraction_ = float((sample_labels == -1).mean())
        self.scores_ = []
        self.reason_ = (
            f"HDBSCAN on {len(zs)} rows found {self.k_} clusters ({self.noise_fraction_:.1%} noise)"
        )
        return self

    def _hdbscan(self, zs: np.ndarray):
        """(centroids of HDBSCAN's clusters on ``zs`` or None when it finds none, labels,
        the fitted estimator)."""
        be = self._backend()
        params: dict = dict(min_cluster_size=min(self.min_cluster_size, max(len(zs) // 10, 2)))
        if be.ml == "sklearn":
            params["copy"] = True  # explicit: silences scikit-learn's FutureWarning
        model = be.hdbscan(**params)
        labels = be.to_numpy(model.fit_predict(zs))
        clusters = sorted(set(labels.tolist()) - {-1})
        if not clusters:
            return None, labels, model
        centers = np.stack([zs[labels == c].mean(0) for c in clusters]).astype(np.float32)
        return centers, labels, model

    def stability(self, zs: np.ndarray, labels: np.ndarray) -> list[float]:
        """ARI of re-fits on bootstrap samples of ``zs`` against ``labels`` (see the class doc)."""
        out = []
        for r in range(self.stability_repeats):
            rng = np.random.default_rng([self.seed, r + 1])
            boot = zs[rng.integers(0, len(zs), size=len(zs))]
            if self.algorithm == "kmeans":
                est = self.kmeans(self.k_, seed=self.seed + r + 1).fit(boot)
                centers = self._backend().to_numpy(est.cluster_centers_).astype(np.float32)
            else:
                centers, _, _ = self._hdbscan(boot)
                if centers is None:  # no cluster at all: as unstable as it gets
                    out.append(0.0)
                    continue
            out.append(float(adjusted_rand_score(labels, nearest_centre(zs, centers))))
        return out

    def assign(self, z: np.ndarray) -> np.ndarray:
        """Segment of each standardised row: the nearest learned centre, computed on the
        backend's array module (CuPy with cuML); a host array."""
        be = self._backend()
        return be.to_numpy(nearest_centre(z, self.cluster_centers_, xp=be.array_module()))

    def extend(self, z: np.ndarray) -> np.ndarray:
        """Segments of all standardised rows after :meth:`fit_kmeans` / :meth:`fit_hdbscan`.

        KMeans, and HDBSCAN on scikit-learn: the nearest centre. HDBSCAN on cuML: cuML's
        ``approximate_predict`` with the fitted model's prediction data, its cluster ids mapped to
        the centres' order, and the nearest centre for the rows it calls noise. (Scoring new data
        later uses the saved centres: the nearest-centre rule.)"""
        labels = self.assign(z)
        if self.algorithm != "hdbscan":
            return labels
        be = self._backend()
        predicted = be.approximate_predict(self.model_, z)  # None off cuML
        if predicted is None:
            return labels
        return map_cluster_ids(predicted, self.cluster_ids_, labels)

    # -- estimator API ------------------------------------------------------------------------
    def fit(self, x: np.ndarray) -> Segmenter:
        """Standardise on all rows; choose k on the sample (KMeans) and fit on all rows, or fit
        HDBSCAN on the sample; label every row by the nearest centre; stability on the sample."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) < 2:
            raise ConfigError(f"cluster: need a 2-D array of at least 2 rows, got shape {x.shape}")
        if self.algorithm not in ("kmeans", "hdbscan"):
            raise ConfigError(f"cluster.algorithm: unknown algorithm {self.algorithm!r}")
        self.set_scale(x.mean(0), x.std(0) + 1e-6)
        z = self.transform(x)
        sample = self.sample_rows(len(z))
        if self.algorithm == "kmeans":
            k = self.choose_k(z[sample], self.candidate_ks(len(z)))
            self.fit_kmeans(z, k)
        else:
            self.fit_hdbscan(z[sample])
        self.labels_ = self.extend(z)
        self.backend_ = self._backend().ml
        self.sizes_ = np.bincount(self.labels_, minlength=self.k_)
        self.stability_ari_ = self.stability(z[sample], self.labels_[sample])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Segment of each row: nearest learned centre (the same rule for both algorithms)."""
        return self.assign(self.transform(np.asarray(x, dtype=np.float32)))

    def fit_predict(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).labels_

    # -- persistence (plain arrays, no pickle) --------------------------------------------------
    def state(self) -> dict:
        return dict(
            algorithm=self.algorithm,
            k=int(self.k_),
            mean=self.mean_.tolist(),
            scale=self.scale_.tolist(),
            centers=self.cluster_centers_.tolist(),
            backend=self.backend_,
            scores=self.scores_,
            reason=self.reason_,
            stability_ari=list(getattr(self, "stability_ari_", [])),
        )

    def summary(self) -> dict:
        """What a cluster stage reports: k, the reason, backend, segment sizes and scores."""
        return dict(
            k=self.k_,
            reason=self.reason_,
            backend=self.backend_,
            sizes=np.asarray(self.sizes_).tolist(),
            scores=self.scores_,
        )

    @classmethod
    def from_state(cls, state: dict, path: Path | str = "cluster.json") -> Segmenter:
        """The fitted segmenter saved by :meth:`state`; a damaged state raises RunDirError
        naming ``path``."""
        check_json(Path(path), state, CLUSTER_SCHEMA)
        centers = np.asarray(state["centers"], dtype=object)
        dim = len(state["mean"])
        if (
            state["algorithm"] not in ("kmeans", "hdbscan")
            or centers.ndim != 2
            or centers.shape[1] != dim
            or len(state["scale"]) != dim
            or not all(isinstance(v, (int, float)) for v in centers.ravel())
        ):
            raise RunDirError(
                f"{path}: 'centers', 'mean' and 'scale' must be numbers of one width, "
                "'algorithm' kmeans or hdbscan"
            )
        seg = cls(algorithm=state["algorithm"], k=state["k"])
        seg.k_ = state["k"]
        seg.mean_ = np.asarray(state["mean"], dtype=np.float32)
        seg.scale_ = np.asarray(state["scale"], dtype=np.float32)
        seg.cluster_centers_ = np.asarray(state["centers"], dtype=np.float32)
        seg.backend_, seg.scores_, seg.reason_ = state["backend"], state["scores"], state["reason"]
        seg.stability_ari_ = list(state.get("stability_ari", []))  # absent in older runs
        return seg


def map_cluster_ids(
    predicted: np.ndarray, cluster_ids: list[int], fallback: np.ndarray
) -> np.ndarray:
    """HDBSCAN cluster ids (-1 noise) -> index into the centres, which follow the sorted
    ``cluster_ids``; rows that are noise (or name a cluster without a centre) take ``fallback``
    (their nearest centre)."""
    predicted = np.asarray(predicted, dtype=np.int64)
    ids = np.asarray(cluster_ids, dtype=np.int64)
    top = max(int(predicted.max(initial=-1)), int(ids.max(initial=-1)))
    order = np.full(top + 2, -1, dtype=np.int64)
    order[ids + 1] = np.arange(len(ids))
    mapped = order[predicted + 1]
    return np.where(mapped >= 0, mapped, fallback).astype(np.int32)


def nearest_centre(z, centers, chunk: int = 262_144, distances: bool = False, xp: Any = np):
    """Index of the nearest row of ``centers`` (K, E) for each row of ``z`` (N, E), in chunks,
    on the array module ``xp`` (NumPy, or CuPy on the GPU backend; inputs are moved there); with
    ``distances`` also the squared distance to it: ``(labels, d2)``. Results are ``xp`` arrays."""
    z, centers = xp.asarray(z), xp.asarray(centers)
    out = xp.empty(len(z), dtype=xp.int32)
    d2 = xp.empty(len(z), dtype=xp.float64) if distances else None
    cc = (centers * centers).sum(1)  # (K,)
    for s in range(0, len(z), chunk):
        b = z[s : s + chunk]  # (b, E)
        d = cc[None, :] - 2 * b @ centers.T  # (b, K): squared distance less |b|^2
        labels = xp.argmin(d, axis=1)
        out[s : s + chunk] = labels
        if d2 is not None:
            own = d[xp.arange(len(b)), labels] + (b * b).sum(1)
            d2[s : s + chunk] = xp.maximum(own, 0)
    return (out, d2) if distances else out
