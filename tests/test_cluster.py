"""Segmenter: recovers well-separated blobs, predicts by nearest centre, persists without pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from gpuseg.backend import resolve_backend
from gpuseg.errors import ConfigError
from gpuseg.segment.cluster import Segmenter

CPU = resolve_backend("cpu")


def blobs(n: int = 800, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(
        n_samples=n,
        centers=k,
        n_features=6,
        cluster_std=0.6,
        center_box=(-10, 10),
        random_state=seed,
    )
    x[:, 0] *= 100.0  # different scales per feature: the segmenter standardises
    return x.astype(np.float32), y


def test_kmeans_auto_k_recovers_blobs():
    x, y = blobs()
    seg = Segmenter(k=None, k_min=2, k_max=7, n_init=2, seed=0, backend=CPU).fit(x)
    assert seg.k_ == 4
    assert adjusted_rand_score(y, seg.labels_) > 0.95
    assert [s["k"] for s in seg.scores_] == list(range(2, 8))
    best = max(seg.scores_, key=lambda s: s["silhouette"])
    assert best["k"] == 4 and "silhouette" in seg.reason_
    assert seg.sizes_.sum() == len(x) and len(seg.sizes_) == 4
    assert seg.cluster_centers_.shape == (4, x.shape[1]) and seg.backend_ == "sklearn"


def test_kmeans_fixed_k():
    x, y = blobs(k=3, seed=1)
    seg = Segmenter(k=3, backend=CPU).fit(x)
    assert seg.k_ == 3 and "fixed" in seg.reason_
    assert adjusted_rand_score(y, seg.fit_predict(x)) > 0.95


def test_predict_is_nearest_centre():
    x, _ = blobs()
    seg = Segmenter(k=None, k_min=3, k_max=5, n_init=2, backend=CPU).fit(x)
    new = np.random.default_rng(1).normal(0, 8, size=(300, x.shape[1])).astype(np.float32)
    new[:, 0] *= 100.0
    z = (new - seg.mean_) / seg.scale_
    dist = ((z[:, None, :] - seg.cluster_centers_[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(seg.predict(new), dist.argmin(1))
    np.testing.assert_array_equal(seg.predict(x), seg.labels_)


def test_state_round_trip():
    x, _ = blobs()
    seg = Segmenter(k=None, k_min=3, k_max=5, n_init=2, backend=CPU).fit(x)
    state = json.loads(json.dumps(seg.state()))  # plain JSON
    again = Segmenter.from_state(state)
    assert again.state() == state
    new = np.random.default_rng(2).normal(0, 8, size=(200, x.shape[1])).astype(np.float32)
    np.testing.assert_array_equal(again.predict(new), seg.predict(new))
    np.testing.assert_array_equal(again.predict(x), seg.labels_)


def test_hdbscan_recovers_blobs():
    x, y = blobs(n=600, k=3, seed=2)
    seg = Segmenter(
        algorithm="hdbscan", min_cluster_size=40, sample_size=400, seed=0, backend=CPU
    ).fit(x)
    assert seg.k_ == 3
    assert adjusted_rand_score(y, seg.labels_) > 0.95
    assert 0 <= seg.noise_fraction_ < 0.2 and "HDBSCAN" in seg.reason_
    np.testing.assert_array_equal(seg.predict(x), seg.labels_)
    again = Segmenter.from_state(json.loads(json.dumps(seg.state())))
    np.testing.assert_array_equal(again.predict(x), seg.labels_)


def test_sample_is_used_for_choosing_k():
    x, y = blobs(n=3000, k=5, seed=3)
    seg = Segmenter(k=None, k_min=3, k_max=6, sample_size=500, n_init=2, backend=CPU).fit(x)
    assert seg.k_ == 5 and len(seg.labels_) == 3000
    assert adjusted_rand_score(y, seg.labels_) > 0.95


def test_errors():
    x, _ = blobs(n=50)
    with pytest.raises(ConfigError, match="algorithm"):
        Segmenter(algorithm="dbscan", backend=CPU).fit(x)
    with pytest.raises(ConfigError, match="2-D"):
        Segmenter(backend=CPU).fit(x[:, 0])
    with pytest.raises(ConfigError, match="needs more subscribers than segments; there are 50"):
        Segmenter(k=None, k_min=60, k_max=70, backend=CPU).fit(x)


def test_davies_bouldin_and_reason_next_to_silhouette():
    x, _ = blobs()
    seg = Segmenter(k=None, k_min=3, k_max=6, n_init=2, seed=0, backend=CPU).fit(x)
    assert all(s["davies_bouldin"] > 0 for s in seg.scores_)
    best_db = min(seg.scores_, key=lambda s: s["davies_bouldin"])["k"]
    assert best_db == seg.k_ == 4  # well-separated blobs: both indices agree
    assert "Davies-Bouldin" in seg.reason_ and "also the lowest" in seg.reason_


def test_bootstrap_stability_tells_structure_from_noise():
    x, _ = blobs()
    stable = Segmenter(k=4, n_init=2, seed=0, stability_repeats=4, backend=CPU).fit(x)
    assert len(stable.stability_ari_) == 4 and min(stable.stability_ari_) > 0.95
    noise = np.random.default_rng(0).uniform(size=(800, 6)).astype(np.float32)
    unstable = Segmenter(k=6, n_init=2, seed=0, stability_repeats=4, backend=CPU).fit(noise)
    assert np.mean(unstable.stability_ari_) < 0.6
    again = Segmenter(k=6, n_init=2, seed=0, stability_repeats=4, backend=CPU).fit(noise)
    assert again.stability_ari_ == unstable.stability_ari_  # seeds flow from `seed`
    other = Segmenter(k=6, n_init=2, seed=1, stability_repeats=4, backend=CPU).fit(noise)
    assert other.stability_ari_ != unstable.stability_ari_
    assert Segmenter(k=4, stability_repeats=0, backend=CPU).fit(x).stability_ari_ == []


def test_stability_is_kept_in_state_and_old_states_load():
    x, _ = blobs(n=400)
    seg = Segmenter(k=4, n_init=2, stability_repeats=2, backend=CPU).fit(x)
    state = json.loads(json.dumps(seg.state()))
    assert state["stability_ari"] == seg.stability_ari_
    del state["stability_ari"]  # cluster.json written before stability existed
    assert Segmenter.from_state(state).stability_ari_ == []


def test_hdbscan_stability_on_a_sample():
    x, y = blobs(n=1200, k=3, seed=2)
    seg = Segmenter(
        algorithm="hdbscan",
        min_cluster_size=40,
        sample_size=500,
        stability_repeats=2,
        seed=0,
        backend=CPU,
    ).fit(x)
    assert len(seg.labels_) == 1200 and seg.k_ == 3  # fitted on 500 rows, extended to all
    assert adjusted_rand_score(y, seg.labels_) > 0.95
    assert len(seg.stability_ari_) == 2 and min(seg.stability_ari_) > 0.9


def test_map_cluster_ids_follows_the_centres_and_falls_back_for_noise():
    """cuML's approximate_predict ids -> centre indices (the GPU path's extension of HDBSCAN)."""
    from gpuseg.segment.cluster import map_cluster_ids

    predicted = np.array([5, -1, 2, 7, 2, 9])
    fallback = np.array([0, 1, 0, 0, 2, 1])
    # clusters 2, 5, 7 have centres 0, 1, 2; 9 has none (not in the sample's clusters)
    out = map_cluster_ids(predicted, [2, 5, 7], fallback)
    assert out.tolist() == [1, 1, 0, 2, 0, 1]
    assert map_cluster_ids(np.array([-1, -1]), [0, 3], np.array([1, 0])).tolist() == [1, 0]
