"""Every subscriber accounted for (issue 6): input = output + rejected in prepare, embed, cluster
and score, on a tiny world with injected rejects of every kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gpuseg.backend import resolve_backend
from gpuseg.config import ClusterConfig, ModelConfig, RunConfig, TrainConfig
from gpuseg.data.panel import load_panel
from gpuseg.pipeline.stages import (
    check_run_dir,
    cluster_stage,
    embed_stage,
    prepare_stage,
    read_embeddings,
    score,
    train_stage,
)

CPU = resolve_backend("cpu")
NO_STATIC = 5  # subscribers whose static row is dropped
SPARSE = 7  # subscribers left with 2 of 12 periods (max_missing_frac 0.5)
STATIC_ONLY = 3  # static rows of subscribers with no usage


def messy_world(tiny_world, out: Path) -> tuple[Path, Path, Path, dict[str, set[str]]]:
    """The tiny world with rejects injected; returns (usage, static, labels, expected rejects)."""
    usage = pd.read_parquet(tiny_world.usage)
    static = pd.read_parquet(tiny_world.static)
    ids = np.sort(usage["subscriber_id"].unique())
    rng = np.random.default_rng(7)
    picked = rng.choice(ids, NO_STATIC + SPARSE, replace=False)
    no_static, sparse = set(picked[:NO_STATIC]), set(picked[NO_STATIC:])
    periods = np.sort(usage["period"].unique())
    drop = usage["subscriber_id"].isin(sparse) & ~usage["period"].isin(periods[:2])
    usage = usage[~drop].sample(frac=1.0, random_state=1)  # shuffled rows, too
    extra = static.iloc[:STATIC_ONLY].copy()
    extra["subscriber_id"] = [f"ghost{i}" for i in range(STATIC_ONLY)]
    static = pd.concat([static[~static["subscriber_id"].isin(no_static)], extra])
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "usage.parquet", out / "static.parquet", out / "labels.parquet"
    usage.to_parquet(paths[0], index=False)
    static.to_parquet(paths[1], index=False)
    pd.read_parquet(tiny_world.labels).to_parquet(paths[2], index=False)
    expected = {
        "no static attributes": no_static,
        "too many missing periods": sparse,
        "no usage rows": set(extra["subscriber_id"]),
    }
    return *paths, expected


@pytest.fixture(scope="module")
def messy_run(tiny_world, tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("counts")
    usage, static, labels, expected = messy_world(tiny_world, tmp / "world")
    cfg = RunConfig(
        out_dir=str(tmp / "run"),
        device="cpu",
        model=ModelConfig(hidden_size=16, embedding_dim=8, static_hidden=8),
        train=TrainConfig(epochs=1, batch_size=256),
        cluster=ClusterConfig(k=3, sample_size=800, n_init=1, stability_repeats=0),
    )
    cfg.data.usage, cfg.data.static, cfg.data.labels = str(usage), str(static), str(labels)
    cfg.data.max_missing_frac = 0.5
    run_dir = check_run_dir(cfg)
    meta = prepare_stage(cfg, CPU, run_dir)
    train_stage(cfg, CPU, run_dir)
    n_embedded = embed_stage(cfg, CPU, run_dir)
    cluster_stage(cfg, CPU, run_dir)
    all_ids = set(pd.read_parquet(usage)["subscriber_id"])
    all_ids |= set(pd.read_parquet(static)["subscriber_id"])
    return dict(
        cfg=cfg, run_dir=run_dir, meta=meta, n_embedded=n_embedded, all_ids=all_ids,
        expected=expected, usage=usage, static=static, tmp=tmp,
    )  # fmt: skip


def test_prepare_counts_and_reasons(messy_run):
    meta, run_dir, all_ids = messy_run["meta"], messy_run["run_dir"], messy_run["all_ids"]
    c = meta["counts"]
    rejects = pd.read_csv(run_dir / "panel" / "rejects.csv", dtype=str)
    panel = load_panel(run_dir / "panel")
    assert c["input"] == len(all_ids) == c["output"] + c["rejected"]
    assert c["output"] == len(panel) and c["rejected"] == len(rejects)
    assert c["rejected"] == NO_STATIC + SPARSE + STATIC_ONLY
    assert set(panel.ids).isdisjoint(rejects["subscriber_id"])
    assert set(panel.ids) | set(rejects["subscriber_id"]) == all_ids
    got = {r: set(g["subscriber_id"]) for r, g in rejects.groupby("reason")}
    assert got == messy_run["expected"]


def test_embed_counts(messy_run):
    run_dir, c = messy_run["run_dir"], messy_run["meta"]["counts"]
    ids = load_panel(run_dir / "panel").ids
    emb_ids, emb = read_embeddings(run_dir / "embeddings.parquet")
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    assert messy_run["n_embedded"] == len(emb) == len(preds) == len(ids)
    assert len(ids) == c["input"] - c["rejected"]
    assert emb_ids.astype(str).tolist() == ids.tolist() == preds["subscriber_id"].tolist()
    assert np.isfinite(emb).all() and preds["churn_prob"].between(0, 1).all()


def test_cluster_counts(messy_run):
    run_dir = messy_run["run_dir"]
    emb_ids, _ = read_embeddings(run_dir / "embeddings.parquet")
    segs = pd.read_parquet(run_dir / "segments.parquet")
    assert len(segs) == len(emb_ids)
    assert segs["subscriber_id"].tolist() == emb_ids.astype(str).tolist()
    assert segs["segment"].notna().all() and segs["segment"].nunique() == 3


def test_score_counts(messy_run):
    out = messy_run["tmp"] / "scores" / "scores.parquet"
    data = messy_run["cfg"].data
    r = score(messy_run["run_dir"], data, CPU, out)
    scores = pd.read_parquet(out)
    rejects = pd.read_csv(r["rejects"], dtype=str)
    assert r["input"] == len(messy_run["all_ids"]) == r["scored"] + r["rejected"]
    assert len(scores) == r["scored"] and len(rejects) == r["rejected"]
    assert set(scores["subscriber_id"]) | set(rejects["subscriber_id"]) == messy_run["all_ids"]
    assert set(scores["subscriber_id"]).isdisjoint(rejects["subscriber_id"])
    assert scores["segment"].notna().all()
