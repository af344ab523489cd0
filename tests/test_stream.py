"""Streaming prepare and score (issue 5): chunked reading gives the same panel as the whole-table
path, errors name the same file row, scoring in blocks equals scoring at once, and the scaling
benchmark manifest validates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gpuseg.backend import resolve_backend
from gpuseg.bench import PROFILES_DIR, load_manifest
from gpuseg.config import DataConfig, load_config
from gpuseg.data import stream
from gpuseg.data.panel import id_table, load_panel, read_rows
from gpuseg.data.prepare import build_panel, build_panel_whole, prepare
from gpuseg.errors import DataError
from gpuseg.io.store import read_json
from gpuseg.pipeline import stages as pipeline
from gpuseg.segment.cluster import Segmenter
from gpuseg.training.calibration import calibrated
from gpuseg.training.checkpoint import load_checkpoint

CPU = resolve_backend("cpu")
ROOT = Path(__file__).resolve().parents[1]
CHUNK = 997  # rows per chunk: many chunks on the tiny world, boundaries inside subscribers


def assert_same_panel(a, b) -> None:
    for name in ("usage", "mask", "static", "churn", "migration"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), name
    assert np.asarray(a.ids).astype(str).tolist() == np.asarray(b.ids).astype(str).tolist()
    assert a.meta == b.meta


def messy_world(tiny_world, tmp_path: Path, fmt: str, shuffle: bool) -> DataConfig:
    """The tiny world with rejects of every kind, optionally shuffled, as Parquet or CSV."""
    usage = pd.read_parquet(tiny_world.usage)
    static = pd.read_parquet(tiny_world.static)
    ids = sorted(usage["subscriber_id"].unique())
    sparse = usage["subscriber_id"] == ids[5]
    usage = usage[~sparse | (usage.groupby("subscriber_id").cumcount() < 1)]  # too sparse
    static = static[static["subscriber_id"] != ids[7]]  # no static attributes
    extra = static.iloc[[0]].assign(subscriber_id="Z-static-only")  # no usage rows
    static = pd.concat([static, extra], ignore_index=True)
    if shuffle:
        usage = usage.sample(frac=1.0, random_state=3)
    if fmt == "csv":
        usage = usage.assign(period=usage["period"].astype(str))
    upath = tmp_path / f"usage.{fmt}"
    if fmt == "csv":
        usage.to_csv(upath, index=False)
    else:
        usage.to_parquet(upath, index=False, row_group_size=1500)
    spath = tmp_path / "static.parquet"
    static.to_parquet(spath, index=False)
    return DataConfig(
        usage=str(upath), static=str(spath), labels=str(tiny_world.labels), max_missing_frac=0.5
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["sorted", "shuffled"])
def test_streaming_prepare_equals_whole_table(tiny_world, tmp_path, fmt, shuffle, monkeypatch):
    cfg = messy_world(tiny_world, tmp_path, fmt, shuffle)
    monkeypatch.setattr(stream, "MERGE_IDS", 50)  # merge the distinct ids many times on the way
    whole, w_attrs, w_rej = build_panel_whole(cfg, CPU)
    meta = prepare(cfg, CPU, tmp_path / "panel", chunk_rows=CHUNK)
    streamed = load_panel(tmp_path / "panel")
    assert_same_panel(whole, streamed)
    assert meta == whole.meta
    c = meta["counts"]
    assert c["input"] == c["output"] + c["rejected"] and c["rejected"] >= 3
    rejects = pd.read_csv(tmp_path / "panel" / "rejects.csv")
    assert rejects.astype(str).values.tolist() == w_rej.astype(str).values.tolist()
    assert set(rejects["reason"]) == {
        "no static attributes",
        "no usage rows",
        "too many missing periods",
    }
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "panel" / "attributes.parquet"), w_attrs
    )
    # the in-memory API streams too, with any chunk size
    mem, _, _ = build_panel(cfg, CPU, chunk_rows=4096)
    assert_same_panel(whole, mem)


def test_streaming_scoring_window_equals_whole_table(tiny_world, tiny_panel_dir, tmp_path):
    """Scoring data with fewer periods (padded) or as many streams like the whole path."""
    ref = load_panel(tiny_panel_dir).meta
    long = pd.read_parquet(tiny_world.usage)
    periods = sorted(long["period"].unique())
    for name, keep in (("fewer", periods[-8:]), ("all", periods)):
        path = tmp_path / f"{name}.parquet"
        long[long["period"].isin(keep)].to_parquet(path, index=False, row_group_size=2000)
        cfg = DataConfig(usage=str(path), static=str(tiny_world.static))
        whole, _, _ = build_panel_whole(cfg, CPU, reference=ref)
        streamed, _, _ = build_panel(cfg, CPU, reference=ref, chunk_rows=CHUNK)
        assert_same_panel(whole, streamed)
        assert streamed.usage.shape[1:] == load_panel(tiny_panel_dir).usage.shape[1:]


def long_usage(n: int = 40, periods: int = 6) -> pd.DataFrame:
    rows = [
        dict(subscriber_id=f"s{i:03d}", period=p, arpu=float(i + p), data=float(10 * i))
        for i in range(n)
        for p in range(1, periods + 1)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_errors_in_later_chunks_name_the_file_row(tmp_path, fmt):
    def check(frame: pd.DataFrame, *expected: str) -> None:
        path = tmp_path / f"u.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        cfg = DataConfig(usage=str(path))
        for build in (
            lambda: build_panel(cfg, CPU, chunk_rows=7),
            lambda: build_panel_whole(cfg, CPU),
        ):
            with pytest.raises(DataError) as info:
                build()
            msg = str(info.value)
            assert "\n" not in msg and str(path) in msg
            for part in expected:
                assert part in msg, (part, msg)

    frame = long_usage()
    dup = pd.concat([frame, frame.iloc[[100]]], ignore_index=True)
    check(dup, f"row {len(dup)}", "duplicate")
    bad = frame.astype({"arpu": str})
    bad.loc[150, "arpu"] = "lots"
    check(bad, "column 'arpu' row 151", "non-numeric")
    neg = frame.copy()
    neg.loc[99, "data"] = -1.0
    check(neg, "column 'data' row 100", "negative")
    no_id = frame.astype({"subscriber_id": object})
    no_id.loc[57, "subscriber_id"] = None
    check(no_id, "column 'subscriber_id' row 58", "missing subscriber id")


@pytest.mark.parametrize(
    "ids",
    [
        np.array([f"S{i:08d}" for i in range(1000)]),
        np.array([], dtype=str),
        np.array(["é", "ab", "日本", ""], dtype=object),
        np.array(["a" * 64, "b"]),
    ],
)
def test_index_parquet_is_written_as_pandas_writes_it(tmp_path, ids):
    from gpuseg.io.store import write_parquet_atomic

    ours, theirs = tmp_path / "ours.parquet", tmp_path / "theirs.parquet"
    write_parquet_atomic(ours, id_table("subscriber_id", ids))
    pd.DataFrame({"subscriber_id": ids}).to_parquet(theirs, index=False)
    assert ours.read_bytes() == theirs.read_bytes()


def test_index_table_makes_no_python_string_per_id():
    """At 10M ids a Python string per id cost ~1 GB at the peak of ``gpuseg score``."""
    import tracemalloc

    ids = np.array([f"S{i:08d}" for i in range(200_000)])  # numpy 'U9': 7.2 MB
    tracemalloc.start()
    try:
        id_table("subscriber_id", ids)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        pd.DataFrame({"subscriber_id": ids})  # the frame route, for scale
        frame_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20 and frame_peak > 5 * peak, (peak, frame_peak)


def test_read_rows_reads_memory_mapped_rows_like_slicing(tiny_panel_dir):
    panel = load_panel(tiny_panel_dir)
    assert isinstance(panel.usage, np.memmap)
    n = len(panel)
    for start, stop in ((0, 7), (n - 5, n + 10), (100, 100), (3, n)):
        for name in ("usage", "mask", "static"):
            arr = getattr(panel, name)
            got = read_rows(arr, start, stop)
            assert not isinstance(got, np.memmap)
            assert np.array_equal(got, np.asarray(arr[start:stop])), (name, start, stop)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("stream_run") / "run"
    pipeline.run_pipeline(load_config(ROOT / "configs" / "tiny.yaml", [f"out_dir={out}"]), CPU)
    return out


def test_score_in_blocks_equals_score_at_once(tiny_run, tmp_path, monkeypatch):
    world = tiny_run / "world"
    usage = pd.read_parquet(world / "usage.parquet").sample(frac=1.0, random_state=1)
    upath = tmp_path / "u.parquet"
    usage.to_parquet(upath, index=False, row_group_size=1000)
    cfg = DataConfig(usage=str(upath), static=str(world / "static.parquet"))
    monkeypatch.setattr(pipeline, "EMBED_BATCH", 97)  # many blocks, the last one short
    out = tmp_path / "scores.parquet"
    summary = pipeline.score(tiny_run, cfg, CPU, out)
    blocks = pd.read_parquet(out)
    assert summary["scored"] == len(blocks) and summary["input"] == 1200
    assert summary["scored"] + summary["rejected"] == summary["input"]

    # at once: the whole-table panel through the model in one forward pass
    ref = read_json(tiny_run / "panel" / "meta.json")
    panel, _, _ = build_panel_whole(cfg, CPU, reference=ref)
    model, info = load_checkpoint(tiny_run, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        o = model(
            torch.from_numpy(panel.usage),
            torch.from_numpy(panel.mask),
            torch.from_numpy(panel.static),
        )
    p = calibrated(o["churn_logit"].float().numpy(), tuple(info["platt"]))
    seg = Segmenter.from_state(read_json(tiny_run / "cluster.json")).predict(
        o["embedding"].float().numpy()
    )
    assert blocks["subscriber_id"].tolist() == panel.ids.tolist()
    np.testing.assert_allclose(blocks["churn_prob"].to_numpy(), p, atol=1e-5)
    agree = (blocks["segment"].to_numpy() == seg).mean()
    assert agree > 0.995, agree  # only float ties at cluster borders may differ


def test_scaling_manifest_validates():
    m = load_manifest(PROFILES_DIR / "scaling.yaml")
    assert m.period_sweep == [13, 26, 52, 104]
    pts = m.points()
    assert (1_000_000, 26, False) in pts and (100_000, 104, False) in pts
    assert len(pts) == len({p[:2] for p in pts})  # (100k, 26) is measured once
