"""Segments from embeddings: KMeans (all rows) or HDBSCAN (fit on a sample, extended to all rows).

``Segmenter`` is a scikit-learn style estimator: parameters stored as given, ``fit`` returns self,
learned state ends in ``_``. The backend object supplies cuML or scikit-learn estimators, so the
same code runs on both; inputs are standardised with statistics learned in ``fit``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

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

    # -- helpers ----------------------------------------------------------------------------
    def _backend(self) -> Backend:
        return self.backend if self.backend is not None else resolve_backend("cpu")

    def _sample(self, n: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(n, size=min(n, self.sample_size), replace=False))

    def _scale(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.scale_).astype(np.float32)

    def _kmeans(self, k: int):
        return self._backend().kmeans(
            n_clusters=k, n_init=self.n_init, random_state=self.seed, max_iter=300
        )

    # -- estimator API ------------------------------------------------------------------------
    def fit(self, x: np.ndarray) -> Segmenter:
        from sklearn.metrics import davies_bouldin_score, silhouette_score

        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) < 2:
            raise ConfigError(f"cluster: need a 2-D array of at least 2 rows, got shape {x.shape}")
        be = self._backend()
        self.mean_ = x.mean(0)
        self.scale_ = x.std(0) + 1e-6
        z = self._scale(x)
        sample = self._sample(len(z))
        self.scores_ = []

        if self.algorithm == "kmeans":
            ks = [self.k] if self.k is not None else list(range(self.k_min, self.k_max + 1))
            ks = [k for k in ks if 2 <= k < len(z)]
            if not ks:
                asked = (
                    f"cluster.k={self.k}"
                    if self.k is not None
                    else (f"cluster.k_min..k_max [{self.k_min}, {self.k_max}]")
                )
                raise ConfigError(
                    f"{asked}: needs more subscribers than segments; there are {len(z)}"
                )
            best = None
            for k in ks:
                if len(ks) == 1:
                    model = self._kmeans(k).fit(z)
                    self.scores_.append(dict(k=k))
                    best = (k, model)
                    break
                model = self._kmeans(k).fit(z[sample])  # choose k on the sample, refit on all rows
                labels = be.to_numpy(model.predict(z[sample]))
                sil = float(
                    silhouette_score(
                        z[sample],
                        labels,
                        sample_size=min(len(sample), 10_000),
                        random_state=self.seed,
                    )
                )
                db = float(davies_bouldin_score(z[sample], labels))
                self.scores_.append(dict(k=k, silhouette=sil, davies_bouldin=db))
                if best is None or sil > best[0]:
                    best = (sil, k)
            if len(ks) > 1:
                k = best[1]
                model = self._kmeans(k).fit(z)
                best = (k, model)
                by_db = min(self.scores_, key=lambda s: s["davies_bouldin"])["k"]
                chosen = next(s for s in self.scores_ if s["k"] == k)
            self.k_, self.model_ = best
            self.cluster_centers_ = be.to_numpy(self.model_.cluster_centers_).astype(np.float32)
            self.labels_ = self._nearest(z)
            self.reason_ = (
                f"k={self.k_} fixed in config"
                if len(ks) == 1
                else f"k={self.k_}: highest silhouette ({chosen['silhouette']:.3f}) over k in "
                f"{ks[0]}..{ks[-1]}; Davies-Bouldin {chosen['davies_bouldin']:.3f}"
                + (" (also the lowest)" if by_db == self.k_ else f" (lowest at k={by_db})")
            )
        elif self.algorithm == "hdbscan":
            centers, sample_labels = self._hdbscan_centers(z[sample])
            if centers is None:
                raise ConfigError(
                    "cluster: HDBSCAN found no cluster; lower cluster.min_cluster_size"
                )
            # extend to all rows: nearest centroid of the sample's clusters (noise: the nearest)
            self.cluster_centers_ = centers
            model = self._hdbscan_model_
            self.k_ = len(centers)
            self.model_ = model
            self.noise_fraction_ = float((sample_labels == -1).mean())
            self.labels_ = self._nearest(z)
            self.reason_ = (
                f"HDBSCAN on {len(sample)} rows found {self.k_} clusters "
                f"({self.noise_fraction_:.1%} noise)"
            )
        else:
            raise ConfigError(f"cluster.algorithm: unknown algorithm {self.algorithm!r}")
        self.backend_ = be.ml
        self.sizes_ = np.bincount(self.labels_, minlength=self.k_)
        self.stability_ari_ = self._stability(z[sample], self.labels_[sample])
        return self

    def _hdbscan_centers(self, zs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """HDBSCAN on ``zs``: (centroids of its clusters or None when it finds none, labels)."""
        be = self._backend()
        params: dict = dict(min_cluster_size=min(self.min_cluster_size, max(len(zs) // 10, 2)))
        if be.ml == "sklearn":
            params["copy"] = True  # explicit: silences scikit-learn's FutureWarning
        model = be.hdbscan(**params)
        labels = be.to_numpy(model.fit_predict(zs))
        clusters = sorted(set(labels.tolist()) - {-1})
        self._hdbscan_model_ = model
        if not clusters:
            return None, labels
        return np.stack([zs[labels == c].mean(0) for c in clusters]).astype(np.float32), labels

    def _stability(self, zs: np.ndarray, labels: np.ndarray) -> list[float]:
        """ARI of re-fits on bootstrap samples of ``zs`` against ``labels`` (see the class doc)."""
        from sklearn.metrics import adjusted_rand_score

        out = []
        for r in range(self.stability_repeats):
            rng = np.random.default_rng([self.seed, r + 1])
            boot = zs[rng.integers(0, len(zs), size=len(zs))]
            if self.algorithm == "kmeans":
                est = (
                    self._backend()
                    .kmeans(
                        n_clusters=self.k_,
                        n_init=self.n_init,
                        random_state=self.seed + r + 1,
                        max_iter=300,
                    )
                    .fit(boot)
                )
                centers = self._backend().to_numpy(est.cluster_centers_).astype(np.float32)
            else:
                centers, _ = self._hdbscan_centers(boot)
                if centers is None:  # no cluster at all: as unstable as it gets
                    out.append(0.0)
                    continue
            out.append(float(adjusted_rand_score(labels, _nearest_to(zs, centers))))
        return out

    def _nearest(self, z: np.ndarray) -> np.ndarray:
        return _nearest_to(z, self.cluster_centers_)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Segment of each row: nearest learned centre (the same rule for both algorithms)."""
        return self._nearest(self._scale(np.asarray(x, dtype=np.float32)))

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


def _nearest_to(z: np.ndarray, centers: np.ndarray, chunk: int = 262_144) -> np.ndarray:
    """Index of the nearest row of ``centers`` for each row of ``z``, in chunks."""
    out = np.empty(len(z), dtype=np.int32)
    cc = (centers * centers).sum(1)
    for s in range(0, len(z), chunk):
        b = z[s : s + chunk]
        out[s : s + chunk] = np.argmin(cc[None, :] - 2 * b @ centers.T, axis=1)
    return out
