"""Dask: prepare, embed, score and cluster over partitions of subscribers, on one machine or many.

``connect("local" | "local:N" | "tcp://host:8786", backend)`` gives a distributed ``Client``: a
local cluster started here (``LocalCUDACluster`` on GPU when dask-cuda imports, else
``LocalCluster`` with single-threaded worker processes; chosen in :mod:`gpuseg.backend`) or an
existing scheduler. Every function below takes that client and writes the same artifacts as its
single-process twin in :mod:`gpuseg.pipeline`, which stays the default and is unchanged.

- ``prepare``: the input tables are **range-partitioned by subscriber id** (as strings, the order
  the single-process panel uses). Dask reads the usage table; a sample of ids gives the partition
  boundaries (one partition per worker, more so that none holds over ``PART_SUBSCRIBERS``); every
  chunk of every table (usage, static, labels) is split by those boundaries into
  ``<panel>.parts/NNNNN/``; each partition is then prepared by :func:`gpuseg.data.prepare` on a
  worker. The static encoding is merged across partitions (union of categories, "missing" when
  missing anywhere) and the static attributes of partitions whose own encoding differs are
  encoded again with the merged one. The partitions are concatenated in id order into one
  ordinary panel directory (rows, order, counts and ``meta.json`` as the single-process panel),
  and the parts are removed. With ``data.pseudonymize`` rows are sorted within each partition
  only (partitions follow the raw ids).
- ``embed_stage`` / ``score``: the model weights are sent once to every worker
  (``client.scatter(..., broadcast=True)``); tasks map over row ranges of the panel, each writing
  its Parquet part with
  :func:`gpuseg.pipeline.stages.embed_panel`; the parts are concatenated in order.
- ``cluster_stage``: KMeans with the single-process semantics of :class:`gpuseg.cluster.Segmenter`
  (standardisation on all rows, k chosen by silhouette on the same ``sample_size`` sample, which
  is gathered to the client), then the final fit on all rows is distributed: ``cuml.dask`` KMeans
  on RAPIDS, otherwise Lloyd's algorithm over the partitions held in worker memory, started from
  the chosen k's k-means++ fit on the sample and stopped by the scikit-learn rule (squared centre
  shift <= 1e-4 times the mean feature variance, or 300 iterations). HDBSCAN fits on the gathered
  sample as in the single-process path. Labels are the nearest centre, computed per partition.

Workers must see the run directory under the same path (one machine, or a shared filesystem).
Error messages from a partition name the partition's file, and row numbers count within it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from safetensors.torch import load

from gpuseg.backend import Backend
from gpuseg.config import DataConfig, RunConfig
from gpuseg.data.panel import load_panel, panel_rows
from gpuseg.data.prepare import prepare as prepare_single
from gpuseg.data.static import encode_static
from gpuseg.errors import BackendError, ConfigError, DataError, RunDirError
from gpuseg.io.formats import check_table_file, table_format
from gpuseg.io.store import (
    concat_npy_atomic,
    concat_parquet_atomic,
    read_embeddings,
    read_json,
    save_npy_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from gpuseg.io.tables import csv_options
from gpuseg.pipeline.stages import (
    check_scores_path,
    check_scoring_run,
    check_stage,
    embed_panel,
    record_stage,
    with_world_data,
)
from gpuseg.segment.cluster import Segmenter, nearest_centre
from gpuseg.segment.targets import segment_names
from gpuseg.training.checkpoint import load_checkpoint, model_from_info
from gpuseg.training.heads import load_head

NPY_FILES = ("usage.npy", "mask.npy", "static.npy", "churn.npy", "migration.npy")
IDS_PER_CHUNK = 1_000  # ids sampled per input chunk to place the partition boundaries
PART_SUBSCRIBERS = 500_000  # at most about this many subscribers per prepare partition (memory)
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4  # as scikit-learn: relative to the mean feature variance


# ---------------------------------------------------------------------------------------------
# The client


@contextmanager
def connect(spec: str, backend: Backend) -> Iterator[Any]:
    """A distributed ``Client`` for ``--cluster``: ``local``, ``local:N`` or a scheduler address.

    A local cluster is started here and closed on exit; an address connects to a running
    scheduler (``dask scheduler`` / ``dask worker ADDRESS``), which is left running.
    """
    from distributed import Client

    cluster = None
    if spec == "local" or spec.startswith("local:"):
        n = None
        if ":" in spec:
            try:
                n = int(spec.split(":", 1)[1])
            except ValueError:
                n = 0
            if n < 1:
                raise ConfigError(f"--cluster {spec}: local:N needs a worker count N >= 1")
        cluster = backend.local_cluster(n)
        client = Client(cluster)
    else:
        try:
            client = Client(spec, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(
                f"--cluster {spec}: cannot reach a Dask scheduler ({first})"
            ) from None
    try:
        if not client.scheduler_info()["workers"]:
            client.wait_for_workers(1, timeout=60)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def n_workers(client) -> int:
    return max(1, len(client.scheduler_info()["workers"]))


def _row_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, max(1, parts) + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _gather(client, futures) -> list:
    """Results of ``futures``; a GpusegError raised on a worker comes back as itself."""
    return client.gather(futures)


# ---------------------------------------------------------------------------------------------
# prepare


def _read_dask(path: str | Path, what: str, data_cfg: DataConfig | None = None):
    """A Dask frame of the table; CSV ids as text and only ``data.missing_markers`` missing,
    as :func:`gpuseg.io.tables.read_table` reads them."""
    import dask.dataframe as dd

    opts = csv_options(data_cfg.id_column, data_cfg.missing_markers) if data_cfg else {}
    p = check_table_file(path, what)
    kind = table_format(p)
    if kind is None:
        raise DataError(f"{p}: unknown file type '{p.suffix.lower()}' (use .parquet or .csv)")
    try:
        if kind == "parquet":
            return dd.read_parquet(str(p))
        gz = p.name.lower().endswith(".gz")  # one block: a gzip stream cannot be split
        return dd.read_csv(str(p), blocksize=None if gz else "64MB", **opts)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: cannot read {what} table: {msg}") from None


def _keys(frame: pd.DataFrame, id_col: str) -> np.ndarray:
    return frame[id_col].astype(str).to_numpy(dtype=str)


def _key_sample(frame: pd.DataFrame, id_col: str, size: int) -> tuple[int, np.ndarray]:
    """(distinct ids in the chunk, an evenly spaced sample of them)."""
    keys = np.unique(_keys(frame, id_col))
    return len(keys), keys[:: max(1, len(keys) // size)]


def _split_chunk(
    frame: pd.DataFrame, id_col: str, bounds: np.ndarray, root: str, name: str, chunk: int
) -> int:
    """Write the rows of one input chunk to ``root/<partition>/<name>-<chunk>.parquet``."""
    part = np.searchsorted(bounds, _keys(frame, id_col), side="right")
    for j in np.unique(part):
        out = Path(root) / f"{int(j):05d}"
        out.mkdir(parents=True, exist_ok=True)
        frame.iloc[np.flatnonzero(part == j)].to_parquet(
            out / f"{name}-{chunk:05d}.parquet", index=False
        )
    return len(frame)


def _prepare_part(
    data_cfg: DataConfig, backend: Backend, part_dir: str, reference: dict | None
) -> dict:
    """One partition's tables -> its panel (``part_dir/panel``); returns the panel meta."""
    d = Path(part_dir)
    paths: dict[str, str | None] = {}
    for name in ("usage", "static", "labels"):
        target = d / f"{name}.parquet"
        chunks = sorted(d.glob(f"{name}-*.parquet"))
        if not target.is_file() and chunks:
            concat_parquet_atomic(target, chunks)
            for c in chunks:
                c.unlink()
        paths[name] = str(target) if target.is_file() else None
    if paths["usage"] is None:  # the boundaries come from usage ids: never empty
        raise DataError(f"{d}: partition without usage rows")
    if data_cfg.static and paths["static"] is None:
        raise DataError(
            f"{d}: no static rows for this partition's subscribers; run prepare without --cluster"
        )
    cfg = replace(
        data_cfg,
        usage=paths["usage"],
        static=paths["static"] if data_cfg.static else None,
        labels=paths["labels"] if data_cfg.labels else None,
    )
    return prepare_single(cfg, backend, d / "panel", reference=reference)


def _reencode_static(part_dir: str, encoding: list[dict], static_path: str) -> dict:
    """Encode a partition's static attributes again with the merged ``encoding``.

    ``attributes.parquet`` holds the raw static columns of the panel rows, in order; this is the
    encoding step of :func:`gpuseg.data.prepare.build_panel` on them with a reference encoding.
    """
    d = Path(part_dir) / "panel"
    meta = read_json(d / "meta.json")
    columns = [e["column"] for e in encoding]
    kept = pd.read_parquet(d / "attributes.parquet")[columns].reset_index(drop=True)
    last = str(meta["periods"][-1])
    end_day = (
        int(np.datetime64(last, "D").astype(np.int64))
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", last)
        else None
    )
    matrix, names, enc = encode_static(
        kept.infer_objects(), columns, Path(static_path), encoding, end_day
    )
    save_npy_atomic(d / "static.npy", np.ascontiguousarray(matrix, dtype=np.float32))
    meta.update(static_features=names, static_encoding=enc)
    write_json_atomic(d / "meta.json", meta)
    return meta


def _merge_encoding(encodings: list[list[dict]]) -> list[dict]:
    """One static encoding for all partitions: union of categories; missing if missing anywhere."""
    merged = []
    for column in zip(*encodings, strict=True):
        first = column[0]
        kinds = {e["kind"] for e in column}
        if len(kinds) > 1 or len({e["column"] for e in column}) > 1:
            raise DataError(
                f"static column '{first['column']}' reads as {' and '.join(sorted(kinds))} in "
                "different partitions; run prepare without --cluster"
            )
        e = dict(first)
        if e["kind"] == "category":
            e["categories"] = sorted(set().union(*(x["categories"] for x in column)))
        elif "missing" in e:
            e["missing"] = any(x["missing"] for x in column)
        merged.append(e)
    return merged


def prepare(
    client,
    data_cfg: DataConfig,
    backend: Backend,
    out_dir: str | Path,
    reference: dict | None = None,
) -> dict:
    """:func:`gpuseg.data.prepare` over partitions of subscribers; the same panel directory."""
    import dask

    if not data_cfg.usage:
        raise DataError("data.usage: no usage file given")
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.parts"
    shutil.rmtree(staging, ignore_errors=True)
    id_col = data_cfg.id_column
    tables = {"usage": data_cfg.usage, "static": data_cfg.static, "labels": data_cfg.labels}
    if data_cfg.layout == "table":
        raise ConfigError("data.layout: table is prepared in one process; run without --cluster")
    frames = {k: _read_dask(v, k, data_cfg) for k, v in tables.items() if v}
    for name, ddf in frames.items():
        if id_col not in ddf.columns:
            cols = ", ".join(str(c) for c in list(ddf.columns)[:20])
            raise DataError(
                f"{tables[name]}: column '{id_col}' (data.id_column) not found; columns: {cols}"
            )
    try:
        usage_chunks = frames["usage"].to_delayed()
        samples = dask.compute(
            *[dask.delayed(_key_sample)(c, id_col, IDS_PER_CHUNK) for c in usage_chunks]
        )
        keys = np.unique(np.concatenate([s for _, s in samples]))
        n_ids = sum(n for n, _ in samples)  # an upper bound: an id may span chunks
        wanted = max(n_workers(client), -(-n_ids // PART_SUBSCRIBERS))
        n_parts = max(1, min(wanted, len(keys)))
        bounds = np.unique(keys[(np.arange(1, n_parts) * len(keys)) // n_parts])
        bounds = bounds[bounds > keys[0]]
        n_parts = len(bounds) + 1
        splits = [
            dask.delayed(_split_chunk)(c, id_col, bounds, str(staging), name, i)
            for name, ddf in frames.items()
            for i, c in enumerate(ddf.to_delayed())
        ]
        dask.compute(*splits)
        parts = [str(staging / f"{j:05d}") for j in range(n_parts)]
        metas = _gather(
            client,
            client.map(
                _prepare_part,
                [data_cfg] * n_parts,
                [backend] * n_parts,
                parts,
                [reference] * n_parts,
                pure=False,
            ),
        )
        for j, m in enumerate(metas):
            for key in ("metrics", "periods"):
                if m[key] != metas[0][key]:
                    raise DataError(
                        f"{parts[j]}: {key} differ from the first partition's "
                        f"({len(m[key])} vs {len(metas[0][key])}); run prepare without --cluster"
                    )
        if reference is None:
            encoding = _merge_encoding([m["static_encoding"] for m in metas])
            redo = [j for j, m in enumerate(metas) if m["static_encoding"] != encoding]
            dated = any(e["kind"] == "date" for e in encoding)
            if redo and dated and data_cfg.churn_definition != "label":
                raise DataError(
                    f"{data_cfg.static}: date columns with churn derived from usage and "
                    "partition-local categories or missing values; run prepare without "
                    "--cluster"
                )
            if redo:
                again = _gather(
                    client,
                    client.map(
                        _reencode_static,
                        [parts[j] for j in redo],
                        [encoding] * len(redo),
                        [str(data_cfg.static)] * len(redo),
                        pure=False,
                    ),
                )
                for j, m in zip(redo, again, strict=True):
                    metas[j] = m
        meta = _concat_panels([Path(p) / "panel" for p in parts], metas, data_cfg, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def _concat_panels(
    panels: list[Path], metas: list[dict], data_cfg: DataConfig, out_dir: Path
) -> dict:
    """Partition panels, in id order -> one panel directory (meta.json written last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in NPY_FILES:
        concat_npy_atomic(out_dir / name, [p / name for p in panels])
    for name in ("index.parquet", "attributes.parquet"):
        concat_parquet_atomic(out_dir / name, [p / name for p in panels])
    rejects = pd.concat(
        [pd.read_csv(p / "rejects.csv", dtype=str, keep_default_na=False) for p in panels],
        ignore_index=True,
    )
    write_csv_atomic(out_dir / "rejects.csv", rejects)
    meta = dict(metas[0])
    meta["counts"] = {k: sum(m["counts"][k] for m in metas) for k in metas[0]["counts"]}
    meta["labelled"] = {k: sum(m["labelled"][k] for m in metas) for k in metas[0]["labelled"]}
    meta["sources"] = dict(
        usage=str(data_cfg.usage), static=data_cfg.static, labels=data_cfg.labels
    )
    write_json_atomic(out_dir / "meta.json", meta)
    return meta


def prepare_stage(cfg: RunConfig, backend: Backend, run_dir: Path, client) -> dict:
    """:func:`gpuseg.pipeline.prepare_stage` on Dask."""
    meta = prepare(client, with_world_data(cfg, run_dir).data, backend, run_dir / "panel")
    record_stage(cfg, run_dir, "prepare")
    return meta


# ---------------------------------------------------------------------------------------------
# embed and score


def _model_payload(run_dir: Path) -> dict:
    load_checkpoint(run_dir, "cpu")  # the same checks and errors as the single-process path
    load_head(run_dir)  # model.head: a broken or missing booster file stops here, not on a worker
    return dict(
        weights=(run_dir / "model.safetensors").read_bytes(),
        info=read_json(run_dir / "model.json"),
        run_dir=str(run_dir),
    )


def _embed_part(
    payload: dict,
    panel_dir: str,
    start: int,
    stop: int,
    out_dir: str,
    backend: Backend,
    amp: bool,
    segmenter_state: dict | None = None,
    segment_names: dict[int, str] | None = None,
) -> int:
    """Rows ``start:stop`` of the panel through the broadcast model -> Parquet parts in out_dir."""
    info = payload["info"]
    model = model_from_info(info, load(payload["weights"]), Path(payload["run_dir"]))
    device = backend.torch_device
    model = model.to(device).eval()
    panel = panel_rows(load_panel(panel_dir), start, stop)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = load_head(Path(payload["run_dir"]))  # model.head: churn_prob from the booster
    n = embed_panel(model, tuple(info["platt"]), panel, device, out, amp, head=head)
    if segmenter_state is not None:
        _, emb = read_embeddings(out / "embeddings.parquet")
        preds = pd.read_parquet(out / "predictions.parquet")
        preds["segment"] = Segmenter.from_state(segmenter_state).predict(emb)
        if segment_names:
            preds["segment_name"] = preds["segment"].map(segment_names).fillna("")
        write_parquet_atomic(out / "predictions.parquet", preds)
    return n


def _embed_parts(
    client,
    run_dir: Path,
    panel_dir: Path,
    backend: Backend,
    staging: Path,
    amp: bool,
    segmenter_state: dict | None = None,
    segment_names: dict[int, str] | None = None,
) -> list[Path]:
    """Map the broadcast model over row ranges of the panel; returns the part directories."""
    n = len(load_panel(panel_dir))
    [payload] = client.scatter([_model_payload(run_dir)], broadcast=True)
    ranges = _row_ranges(n, 2 * n_workers(client))
    parts = [staging / f"{j:05d}" for j in range(len(ranges))]
    _gather(
        client,
        client.map(
            _embed_part,
            [payload] * len(ranges),
            [str(panel_dir)] * len(ranges),
            [a for a, _ in ranges],
            [b for _, b in ranges],
            [str(p) for p in parts],
            [backend] * len(ranges),
            [amp] * len(ranges),
            [segmenter_state] * len(ranges),
            [segment_names] * len(ranges),
            pure=False,
        ),
    )
    return parts


def embed_stage(cfg: RunConfig, backend: Backend, run_dir: Path, client) -> int:
    """:func:`gpuseg.pipeline.stages.embed_stage` on Dask: the same two Parquet files."""
    check_stage(cfg, run_dir, "train")
    staging = run_dir / ".embed.parts"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        parts = _embed_parts(client, run_dir, run_dir / "panel", backend, staging, cfg.train.amp)
        for name in ("embeddings", "predictions"):
            concat_parquet_atomic(
                run_dir / f"{name}.parquet", [p / f"{name}.parquet" for p in parts]
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record_stage(cfg, run_dir, "embed")
    return len(load_panel(run_dir / "panel"))


def score(run_dir: Path, data_cfg: DataConfig, backend: Backend, out_path: Path, client) -> dict:
    """:func:`gpuseg.pipeline.stages.score` on Dask: the same output and rejects files."""

    run_dir = Path(run_dir)
    check_scores_path(out_path)
    check_scoring_run(run_dir, data_cfg)
    reference = read_json(run_dir / "panel" / "meta.json")
    state = read_json(run_dir / "cluster.json")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        tmp = Path(tmp)
        meta = prepare(client, data_cfg, backend, tmp / "panel", reference=reference)
        names = segment_names(run_dir)
        parts = _embed_parts(
            client, run_dir, tmp / "panel", backend, tmp / "parts", True, state, names
        )
        concat_parquet_atomic(out_path, [p / "predictions.parquet" for p in parts])
        rejects = pd.read_csv(tmp / "panel" / "rejects.csv", dtype=str, keep_default_na=False)
        rejects_path = out_path.with_name(out_path.stem + ".rejects.csv")
        write_csv_atomic(rejects_path, rejects)
    return dict(
        scored=meta["counts"]["output"],
        rejected=len(rejects),
        input=meta["counts"]["input"],
        out=str(out_path),
        rejects=str(rejects_path),
    )


# ---------------------------------------------------------------------------------------------
# cluster


def _load_rows(path: str, start: int, stop: int) -> dict:
    """Rows ``start:stop`` of embeddings.parquet: ids and the float32 matrix."""
    ids, x = read_embeddings(Path(path), start, stop)
    return dict(ids=ids, x=x)


def _moments(part: dict) -> tuple[int, np.ndarray, np.ndarray]:
    x = part["x"].astype(np.float64)
    return len(x), x.sum(0), (x * x).sum(0)


def _take(part: dict, rows: np.ndarray) -> np.ndarray:
    return part["z"][rows]


def _scaled(part: dict, mean: np.ndarray, scale: np.ndarray) -> dict:
    return dict(ids=part["ids"], z=((part["x"] - mean) / scale).astype(np.float32))


def _lloyd_stats(part: dict, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-centre sums and counts of the rows nearest to each centre, and the inertia."""
    z = part["z"]
    labels, dist = nearest_centre(z, centers, distances=True)
    k = len(centers)
    sums = np.stack(
        [np.bincount(labels, weights=z[:, j], minlength=k) for j in range(z.shape[1])], axis=1
    )
    return sums, np.bincount(labels, minlength=k), float(dist.sum())


def _label_part(part: dict, state: dict, path: str, id_col: str) -> np.ndarray:
    """Segments of one partition (the Segmenter's nearest-centre rule) -> Parquet part."""
    seg = Segmenter.from_state(state)
    labels = seg.assign(part["z"])
    write_parquet_atomic(Path(path), pd.DataFrame({id_col: part["ids"], "segment": labels}))
    return np.bincount(labels, minlength=len(seg.cluster_centers_))


def _lloyd(client, zparts: list, init: np.ndarray, tol: float) -> tuple[np.ndarray, int]:
    centers = init.astype(np.float64)
    it = 0
    while it < KMEANS_MAX_ITER:
        it += 1
        c32 = client.scatter(centers.astype(np.float32), broadcast=True)
        stats = _gather(client, client.map(_lloyd_stats, zparts, [c32] * len(zparts), pure=False))
        sums = sum(s for s, _, _ in stats)
        counts = sum(c for _, c, _ in stats)
        new = centers.copy()
        filled = counts > 0  # an empty cluster keeps its centre
        new[filled] = sums[filled] / counts[filled, None]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= tol:
            break
    return centers.astype(np.float32), it


def _shape(part: dict) -> tuple[int, int]:
    return part["z"].shape


def _to_device(part: dict):
    import cupy

    return cupy.asarray(part["z"])


def _dask_kmeans_gpu(client, be: Backend, zparts: list, k: int, init: np.ndarray, seed: int):
    """Final fit with cuml.dask KMeans over the partitions (RAPIDS only; untested without a GPU)."""
    import cupy
    import dask.array as da

    shapes = _gather(client, client.map(_shape, zparts, pure=False))
    on_gpu = client.map(_to_device, zparts, pure=False)
    x = da.concatenate(
        [
            da.from_delayed(f, shape=s, dtype=np.float32, meta=cupy.empty((0, s[1]), np.float32))
            for f, s in zip(on_gpu, shapes, strict=True)
        ]
    )
    model = be.dask_kmeans(
        n_clusters=k, init=cupy.asarray(init), random_state=seed, max_iter=KMEANS_MAX_ITER
    )
    model.fit(x)
    return be.to_numpy(model.cluster_centers_).astype(np.float32)


def cluster_stage(cfg: RunConfig, backend: Backend, run_dir: Path, client) -> dict:
    """:func:`gpuseg.pipeline.stages.cluster_stage` on Dask: segments.parquet and cluster.json.

    The Segmenter's own steps (standardisation, sample, choice of k, HDBSCAN on the sample,
    stability, nearest-centre labels); only the moments and the final KMeans fit on all rows
    are distributed."""
    check_stage(cfg, run_dir, "embed")
    c = cfg.cluster
    seg = Segmenter.from_config(c, backend)
    if c.algorithm not in ("kmeans", "hdbscan"):
        raise ConfigError(f"cluster.algorithm: unknown algorithm {c.algorithm!r}")
    path = str(run_dir / "embeddings.parquet")
    if not Path(path).is_file():
        raise RunDirError(f"{path}: missing (run `gpuseg embed` first)")
    n = pq.ParquetFile(path).metadata.num_rows
    if n < 2:
        raise ConfigError(f"cluster: need a 2-D array of at least 2 rows, got {n} rows")
    ranges = _row_ranges(n, 2 * n_workers(client))
    parts = client.map(
        _load_rows, [path] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges]
    )
    moments = _gather(client, client.map(_moments, parts))
    total = sum(m[1] for m in moments)
    total_sq = sum(m[2] for m in moments)
    mean = total / n
    var = np.maximum(total_sq / n - mean * mean, 0)
    seg.set_scale(mean, np.sqrt(var) + 1e-6)
    zparts = client.map(_scaled, parts, [seg.mean_] * len(parts), [seg.scale_] * len(parts))
    del parts
    sample = seg.sample_rows(n)  # the same rows as the single-process Segmenter
    takes = [sample[(sample >= a) & (sample < b)] - a for a, b in ranges]
    zs = np.concatenate(_gather(client, client.map(_take, zparts, takes, pure=False)))
    be = backend
    if c.algorithm == "kmeans":
        k = seg.choose_k(zs, seg.candidate_ks(n))
        init = be.to_numpy(seg.kmeans(k).fit(zs).cluster_centers_).astype(np.float32)
        if be.ml == "cuml":
            centers, how = _dask_kmeans_gpu(client, be, zparts, k, init, c.seed), "cuml.dask KMeans"
        else:
            tol = KMEANS_TOL * float(np.mean(var / seg.scale_.astype(np.float64) ** 2))
            centers, iters = _lloyd(client, zparts, init, tol)
            how = f"distributed Lloyd's ({iters} iterations)"
        seg.k_ = k
        seg.reason_ += f"; {how} over {len(zparts)} partitions"
    else:
        seg.fit_hdbscan(zs)
        centers = seg.cluster_centers_
    seg.cluster_centers_ = centers
    seg.backend_ = f"{be.ml} on dask"
    seg.stability_ari_ = seg.stability(zs, seg.assign(zs))
    state = seg.state()
    id_col = load_panel(run_dir / "panel").meta["id_column"]
    staging = run_dir / ".segments.parts"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        files = [staging / f"{j:05d}.parquet" for j in range(len(zparts))]
        sizes = _gather(
            client,
            client.map(
                _label_part,
                zparts,
                [state] * len(zparts),
                [str(f) for f in files],
                [id_col] * len(zparts),
                pure=False,
            ),
        )
        concat_parquet_atomic(run_dir / "segments.parquet", files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(run_dir / "cluster.json", state)
    seg.sizes_ = np.sum(sizes, axis=0)
    record_stage(cfg, run_dir, "cluster")
    return seg.summary()


__all__ = [
    "connect",
    "prepare",
    "prepare_stage",
    "embed_stage",
    "score",
    "cluster_stage",
]
