"""The numbers behind the report's figures: test-split gain and lift, the 2-D embedding map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuseg.backend import Backend
from gpuseg.data.panel import load_panel
from gpuseg.data.split import load_split
from gpuseg.io.store import embeddings_rows, read_embeddings, read_parquet_checked


def gain_curve(y: np.ndarray, p: np.ndarray, n_points: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gain: share of all churners among the top x share by score, at ``n_points``
    population shares from 0 to 1 (ties broken by row order)."""
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(y[order])])
    x = np.linspace(0.0, 1.0, n_points)
    total = cum[-1]
    gain = cum[np.rint(x * len(y)).astype(int)] / total if total > 0 else x.copy()
    return x, gain


def decile_lift(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Churn rate per score decile (highest scores first) over the overall churn rate."""
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
    base = y.mean() if len(y) else float("nan")
    parts = np.array_split(y[order], n_bins)
    return np.array([part.mean() / base if len(part) and base > 0 else np.nan for part in parts])


def churn_on_test_split(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, churn probabilities) of the labelled test-split subscribers, or None."""

    preds_path, split_path = run_dir / "predictions.parquet", run_dir / "split.npz"
    if not (preds_path.is_file() and split_path.is_file() and (run_dir / "panel").is_dir()):
        return None
    panel = load_panel(run_dir / "panel")
    id_col = panel.meta.get("id_column", "subscriber_id")
    test = load_split(run_dir, len(panel)).test
    preds = read_parquet_checked(preds_path, [id_col, "churn_prob"], numeric=("churn_prob",))
    ids = np.asarray(panel.ids).astype(str)
    pred_ids = preds[id_col].astype(str).to_numpy()
    if len(pred_ids) == len(ids) and np.array_equal(pred_ids, ids):
        p = preds["churn_prob"].to_numpy(dtype=float)[test]
    else:
        p = preds.set_index(pred_ids)["churn_prob"].reindex(ids[test]).to_numpy(dtype=float)
    y = np.asarray(panel.churn)[test].astype(float)
    keep = (y >= 0) & np.isfinite(p)
    return y[keep], p[keep]


def embedding_map(
    run_dir: Path, sample: int, seed: int, backend: Backend
) -> tuple[np.ndarray, np.ndarray, str, int] | None:
    """2-D coordinates of a random sample of the embeddings, their segments, the method used and
    the population size; None without embeddings or segments."""
    emb_path, seg_path = run_dir / "embeddings.parquet", run_dir / "segments.parquet"
    if not (emb_path.is_file() and seg_path.is_file()):
        return None
    n = embeddings_rows(emb_path)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, sample), replace=False))
    ids, x = read_embeddings(emb_path, rows=rows)
    ids = ids.astype(str)
    segs = read_parquet_checked(seg_path, numeric=("segment",))
    labels = segs.set_index(segs.columns[0])["segment"]
    labels.index = labels.index.astype(str)
    lab = labels.reindex(ids).fillna(-1).to_numpy(dtype=np.int64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    est = backend.umap(n_components=2, random_state=seed)
    xy = np.asarray(backend.to_numpy(est.fit_transform(x)), dtype=float)
    mod = type(est).__module__
    method = (
        "cuML UMAP (GPU)"
        if mod.startswith("cuml")
        else "UMAP (umap-learn, CPU)"
        if mod.startswith("umap")
        else "PCA (scikit-learn, CPU; install umap-learn for a UMAP map)"
    )
    return xy, lab, method, n
