"""Dask path (gpuseg.parallel) against the single-process pipeline, on a real 2-worker LocalCluster.

The world is the tiny world with extra trouble, so that partitions disagree and must be reconciled:
rejects of every kind (too sparse, no static row, static row without usage), a category and a
missing value that occur in one partition only (the static encoding is merged and the other
partitions are prepared again). Prepare must give the same panel bit for bit; embed and score the
same numbers within 1e-5 (same weights, same rows; only the batch boundaries differ).

Segments: the k choice sees the same sample as the single-process Segmenter, but the final KMeans
fit differs (distributed Lloyd's from the k-means++ fit on the sample, against scikit-learn's
k-means++ restarts on all rows), so the two can land in slightly different local optima; points
near a boundary may switch. ARI >= 0.9 allows about that and still fails for a different k or a
wrong assignment (a wrong k or shuffled rows gives an ARI far below 0.9 on this world).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("distributed")

from sklearn.metrics import adjusted_rand_score  # noqa: E402

from gpuseg.backend import resolve_backend  # noqa: E402
from gpuseg.config import load_config  # noqa: E402
from gpuseg.data.panel import load_panel  # noqa: E402
from gpuseg.evaluate.boosting import booster_available  # noqa: E402
from gpuseg.pipeline import dask_stages as parallel  # noqa: E402
from gpuseg.pipeline import stages as pipeline  # noqa: E402
from gpuseg.training.heads import fit_head  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPU = resolve_backend("cpu")


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory) -> Path:
    """The tiny world's tables with rejects and partition-local encoding quirks added."""
    out = tmp_path_factory.mktemp("par_world")
    usage = pd.read_parquet(tiny_world.usage)
    static = pd.read_parquet(tiny_world.static)
    labels = pd.read_parquet(tiny_world.labels)
    sparse = [f"S{i:08d}" for i in range(100, 1500, 97)]  # keep 2 of 12 periods: too sparse
    first = usage["period"].isin(sorted(usage["period"].unique())[:2])
    usage = usage[~usage["subscriber_id"].isin(sparse) | first]
    no_static = [f"S{i:08d}" for i in range(50, 1500, 151)]
    static = static[~static["subscriber_id"].isin(no_static)].copy()
    static.loc[static["subscriber_id"] == "S00001450", "region"] = "islands"  # last partition only
    static.loc[static["subscriber_id"] == "S00001401", "tenure_months"] = np.nan
    extra = static.tail(3).copy()
    extra["subscriber_id"] = ["S00001600", "S00001601", "S00001602"]  # static without usage
    static = pd.concat([static, extra], ignore_index=True)
    usage.to_parquet(out / "usage.parquet", index=False)
    static.to_parquet(out / "static.parquet", index=False)
    labels.to_parquet(out / "labels.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def cfg(world, tmp_path_factory):
    c = load_config(ROOT / "configs" / "tiny.yaml", ["device=cpu"])
    data = replace(
        c.data,
        usage=str(world / "usage.parquet"),
        static=str(world / "static.parquet"),
        labels=str(world / "labels.parquet"),
        max_missing_frac=0.5,
    )
    return replace(c, synth=None, data=data)


@pytest.fixture(scope="module")
def client():
    with parallel.connect("local:2", CPU) as c:
        assert parallel.n_workers(c) == 2
        yield c


@pytest.fixture(scope="module")
def runs(cfg, client, tmp_path_factory) -> tuple[Path, Path]:
    """(single-process run, Dask run): prepare -> train (single) -> embed -> cluster."""
    torch.set_num_threads(1)
    a = tmp_path_factory.mktemp("single")
    b = tmp_path_factory.mktemp("dask")
    pipeline.prepare_stage(cfg, CPU, a)
    pipeline.train_stage(cfg, CPU, a)
    pipeline.embed_stage(cfg, CPU, a)
    pipeline.cluster_stage(cfg, CPU, a)
    parallel.prepare_stage(cfg, CPU, b, client)
    for name in ("model.safetensors", "model.json"):  # the same trained model
        shutil.copy(a / name, b / name)
    parallel.embed_stage(cfg, CPU, b, client)
    parallel.cluster_stage(cfg, CPU, b, client)
    return a, b


def test_prepare_gives_the_single_process_panel(runs):
    a, b = runs
    pa, pb = load_panel(a / "panel"), load_panel(b / "panel")
    c = pb.meta["counts"]
    assert c["input"] == c["output"] + c["rejected"] == 1503
    assert c["rejected"] > 20  # every kind of reject is there
    assert pa.meta == pb.meta  # counts, periods, metrics, static encoding (merged), labelled
    assert "region=islands" in pb.meta["static_features"]
    assert "tenure_months_missing" in pb.meta["static_features"]
    for name in ("usage", "mask", "static", "churn", "migration", "ids"):
        assert np.array_equal(getattr(pa, name), getattr(pb, name)), name
    ra = pd.read_csv(a / "panel" / "rejects.csv", dtype=str).sort_values("subscriber_id")
    rb = pd.read_csv(b / "panel" / "rejects.csv", dtype=str).sort_values("subscriber_id")
    assert ra.reset_index(drop=True).equals(rb.reset_index(drop=True))
    assert set(ra["reason"]) == {
        "too many missing periods",
        "no static attributes",
        "no usage rows",
    }
    attr_a = pd.read_parquet(a / "panel" / "attributes.parquet")
    attr_b = pd.read_parquet(b / "panel" / "attributes.parquet")
    pd.testing.assert_frame_equal(attr_a, attr_b, check_dtype=False)
    assert not list(b.glob(".*parts"))  # staging removed


def test_embed_equals_single_process(runs):
    a, b = runs
    for name in ("embeddings", "predictions"):
        fa, fb = pd.read_parquet(a / f"{name}.parquet"), pd.read_parquet(b / f"{name}.parquet")
        assert list(fa.columns) == list(fb.columns)
        assert fa.iloc[:, 0].equals(fb.iloc[:, 0])
        np.testing.assert_allclose(fa.iloc[:, 1:].to_numpy(), fb.iloc[:, 1:].to_numpy(), atol=1e-5)


def test_cluster_agrees_with_single_process(runs):
    a, b = runs
    sa, sb = pd.read_parquet(a / "segments.parquet"), pd.read_parquet(b / "segments.parquet")
    assert sa["subscriber_id"].equals(sb["subscriber_id"])
    ja = pd.read_json(a / "cluster.json", typ="series")
    jb = pd.read_json(b / "cluster.json", typ="series")
    assert ja["k"] == jb["k"]
    assert [s["k"] for s in ja["scores"]] == [s["k"] for s in jb["scores"]]
    ari = adjusted_rand_score(sa["segment"], sb["segment"])
    assert ari >= 0.9, ari
    np.testing.assert_allclose(ja["mean"], jb["mean"], atol=1e-4)


def test_score_equals_single_process(runs, cfg, client, tmp_path):
    a, _ = runs
    data = replace(cfg.data, labels=None)
    ra = pipeline.score(a, data, CPU, tmp_path / "single.parquet")
    rb = parallel.score(a, data, CPU, tmp_path / "dask.parquet", client)
    assert (ra["scored"], ra["rejected"], ra["input"]) == (
        rb["scored"],
        rb["rejected"],
        rb["input"],
    )
    fa, fb = pd.read_parquet(ra["out"]), pd.read_parquet(rb["out"])
    assert list(fa.columns) == list(fb.columns)
    assert fa["subscriber_id"].equals(fb["subscriber_id"])
    num = [c for c in fa.columns if c not in ("subscriber_id", "segment")]
    np.testing.assert_allclose(fa[num].to_numpy(), fb[num].to_numpy(), atol=1e-5)
    assert (fa["segment"].to_numpy() == fb["segment"].to_numpy()).mean() >= 0.999


@pytest.mark.skipif(not booster_available("xgboost"), reason="xgboost not installed")
def test_score_with_a_booster_head_equals_single_process(runs, cfg, client, tmp_path):
    """model.head: the Dask workers score churn with the run's booster head, as one process does."""
    a, _ = runs
    run = tmp_path / "head_run"
    shutil.copytree(a, run)
    panel, split = load_panel(run / "panel"), np.load(run / "split.npz")
    fit_head("xgboost", panel, split["train"], split["val"], 0.0, trials=2).save(run)
    data = replace(cfg.data, labels=None)
    plain = pd.read_parquet(pipeline.score(a, data, CPU, tmp_path / "plain.parquet")["out"])
    fa = pd.read_parquet(pipeline.score(run, data, CPU, tmp_path / "single.parquet")["out"])
    fb = pd.read_parquet(parallel.score(run, data, CPU, tmp_path / "dask.parquet", client)["out"])
    assert fa["subscriber_id"].equals(fb["subscriber_id"]) and fa["subscriber_id"].equals(
        plain["subscriber_id"]
    )
    np.testing.assert_allclose(fa["churn_prob"], fb["churn_prob"], atol=1e-5)
    assert np.abs(fa["churn_prob"] - plain["churn_prob"]).max() > 1e-3  # the head's, not the GRU's
    np.testing.assert_allclose(fa["migration_up"], plain["migration_up"], atol=1e-6)


def test_cli_prepare_on_a_scheduler_address(runs, world, client, tmp_path):
    from typer.testing import CliRunner

    from gpuseg.cli import app

    a, _ = runs
    run_dir = tmp_path / "cli"
    args = ["prepare", "-c", str(ROOT / "configs" / "tiny.yaml"), "--device", "cpu"]
    args += ["-s", f"out_dir={run_dir}", "-s", "data.max_missing_frac=0.5"]
    for name in ("usage", "static", "labels"):
        args += ["-s", f"data.{name}={world / (name + '.parquet')}"]
    r = CliRunner().invoke(app, args + ["--cluster", client.scheduler.address])
    assert r.exit_code == 0, r.output
    assert "input 1,503 = output" in r.output
    assert np.array_equal(load_panel(run_dir / "panel").usage, load_panel(a / "panel").usage)
    bad = CliRunner().invoke(app, args + ["--cluster", "local:0"])
    assert bad.exit_code == 1 and "local:N needs a worker count" in bad.output
