"""Segments from embeddings: KMeans (all rows) or HDBSCAN (fit on a sample, extended to all rows).

``Segmenter`` is a scikit-learn style estimator: parameters stored as given, ``fit`` returns self,
learned state ends in ``_``. The backend object supplies cuML or scikit-learn estimators, so the
same code runs on both; inputs are standardised with statistics learned in ``fit``.
"""

from __future__ import annotations

import numpy as np

from gpuseg.backend import Backend, resolve_backend
from gpuseg.errors import ConfigError


class Segmenter:
    """Cluster subscriber embeddings into segments.

    Parameters mirror :class:`gpuseg.config.ClusterConfig`. With ``k=None`` the number of segments
    is chosen over ``[k_min, k_max]`` by the silhouette score on a sample of ``sample_size`` rows.
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
                raise ConfigError(
                    f"cluster: no valid k in [{self.k_min}, {self.k_max}] for {len(z)} rows"
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
            self.k_, self.model_ = best
            self.cluster_centers_ = be.to_numpy(self.model_.cluster_centers_).astype(np.float32)
            self.labels_ = self._nearest(z)
            self.reason_ = (
                f"k={self.k_} fixed in config"
                if len(ks) == 1
                else f"k={self.k_}: highest silhouette over k in {ks[0]}..{ks[-1]}"
            )
        elif self.algorithm == "hdbscan":
            model = be.hdbscan(
                min_cluster_size=min(self.min_cluster_size, max(len(sample) // 10, 2))
            )
            sample_labels = be.to_numpy(model.fit_predict(z[sample]))
            clusters = sorted(set(sample_labels.tolist()) - {-1})
            if not clusters:
                raise ConfigError(
                    "cluster: HDBSCAN found no cluster; lower cluster.min_cluster_size"
                )
            # extend to all rows: nearest centroid of the sample's clusters (noise joins the nearest)
            self.cluster_centers_ = np.stack(
                [z[sample][sample_labels == c].mean(0) for c in clusters]
            ).astype(np.float32)
            self.k_ = len(clusters)
            self.model_ = model
            self.noise_fraction_ = float((sample_labels == -1).mean())
            self.labels_ = self._nearest(z)
            self.reason_ = f"HDBSCAN on {len(sample)} rows found {self.k_} clusters ({self.noise_fraction_:.1%} noise)"
        else:
            raise ConfigError(f"cluster.algorithm: unknown algorithm {self.algorithm!r}")
        self.backend_ = be.ml
        self.sizes_ = np.bincount(self.labels_, minlength=self.k_)
        return self

    def _nearest(self, z: np.ndarray, chunk: int = 262_144) -> np.ndarray:
        out = np.empty(len(z), dtype=np.int32)
        c = self.cluster_centers_
        cc = (c * c).sum(1)
        for s in range(0, len(z), chunk):
            b = z[s : s + chunk]
            out[s : s + chunk] = np.argmin(cc[None, :] - 2 * b @ c.T, axis=1)
        return out

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
        )

    @classmethod
    def from_state(cls, state: dict) -> Segmenter:
        seg = cls(algorithm=state["algorithm"], k=state["k"])
        seg.k_ = state["k"]
        seg.mean_ = np.asarray(state["mean"], dtype=np.float32)
        seg.scale_ = np.asarray(state["scale"], dtype=np.float32)
        seg.cluster_centers_ = np.asarray(state["centers"], dtype=np.float32)
        seg.backend_, seg.scores_, seg.reason_ = state["backend"], state["scores"], state["reason"]
        return seg
