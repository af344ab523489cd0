"""The pipeline: each stage a function over a run directory, and ``run_pipeline`` chaining them.

Run directory layout (``cfg.out_dir``)::

    config.yaml            resolved config of the run
    world/                 synthetic world (when cfg.synth is set)
    panel/                 prepared panel (see gpuseg.data), with rejects.csv
    model.safetensors      weights; model.json: architecture, calibration; metrics.json; split.npz
    predictions.parquet    subscriber id, churn probability, migration probabilities
    embeddings.parquet     subscriber id, e0..eE
    segments.parquet       subscriber id, segment; cluster.json: centres, k, scores, backend
    report/                every report table (report.tables.write_report); summary.json: headlines
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.metrics import adjusted_rand_score

from gpuseg.action.features import PLAN_CHUNK
from gpuseg.action.ltv import FIT_SAMPLE
from gpuseg.action.plan import write_plan
from gpuseg.action.stage import ActionRun, plan_run
from gpuseg.backend import Backend
from gpuseg.config import RunConfig, from_dict, load_yaml, save_config, to_dict
from gpuseg.data.panel import (
    META_SCHEMA,
    PANEL_FILES,
    Panel,
    load_attributes,
    load_panel,
    read_rows,
)
from gpuseg.data.prepare import prepare
from gpuseg.data.privacy import pseudonymize_ids
from gpuseg.data.synth import generate
from gpuseg.errors import ConfigError, DataError, RunDirError
from gpuseg.evaluate.metrics import MIGRATION_NAMES, churn_metrics, macro_roc_auc
from gpuseg.io.fingerprint import changed, check_unchanged, fingerprints, read_record, record
from gpuseg.io.lock import RunDirLock
from gpuseg.io.store import (
    read_embeddings,
    read_json,
    require,
    temp_path,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from gpuseg.model.sequence import SubscriberModel
from gpuseg.report.html.page import render_report
from gpuseg.report.html.plan import write_plan_json
from gpuseg.report.tables import build_report, write_report
from gpuseg.segment.cluster import Segmenter
from gpuseg.segment.targets import read_aligned, segment_names
from gpuseg.training.calibration import calibrated
from gpuseg.training.checkpoint import TrainResult, load_checkpoint, save_checkpoint
from gpuseg.training.ddp import DistContext, barrier
from gpuseg.training.heads import (
    HEAD_FILES,
    BlendHead,
    ChurnHead,
    block_scores,
    fit_head,
    head_features,
    head_val_auc,
    load_head,
    sequence_scores,
)
from gpuseg.training.loop import autocast, train_model

Log = Callable[[str], None]
# config keys that change where a run executes (or how inputs are hashed), not what it computes
RUN_NEUTRAL = ("device", "fingerprint")
EMBED_BATCH = 16_384  # subscribers per inference batch (host memory stays bounded)


def _quiet(_: str) -> None:
    pass


def check_run_dir(cfg: RunConfig, overwrite: bool = False) -> Path:
    """Create the run directory, or refuse one that holds a run of a different config.

    With ``overwrite`` a different config is accepted and its training checkpoint is dropped, so
    training never resumes from another config's state.
    """

    run_dir = Path(cfg.out_dir)
    saved = run_dir / "config.yaml"
    if saved.is_file():
        try:
            previous = to_dict(from_dict(RunConfig, load_yaml(saved.read_text()) or {}))
        except Exception:
            if not overwrite:
                raise RunDirError(
                    f"{saved}: unreadable config of an earlier run; use another out_dir or "
                    "--overwrite"
                ) from None
            previous = {"unreadable": True}
        current = to_dict(cfg)
        changed = sorted(
            k for k in previous if k not in RUN_NEUTRAL and previous[k] != current.get(k)
        )
        if changed and not overwrite:
            raise RunDirError(
                f"{run_dir}: holds a run of a different config "
                f"(sections differ: {', '.join(changed)}); use another out_dir or --overwrite"
            )
        if changed:
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, saved)
    return run_dir


# ---------------------------------------------------------------------------------------------
# Stages


def world_dir(cfg: RunConfig, run_dir: Path) -> Path:
    return Path(cfg.synth.out_dir) if cfg.synth.out_dir else run_dir / "world"


def with_world_data(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """With a synthetic world and no usage file given, the data section points at the world."""
    if cfg.synth is None or cfg.data.usage:
        return cfg
    out = world_dir(cfg, run_dir)
    data = replace(
        cfg.data,
        usage=str(out / "usage.parquet"),
        static=str(out / "static.parquet"),
        labels=str(out / "labels.parquet"),
    )
    return replace(cfg, data=data)


def synth_stage(cfg: RunConfig, run_dir: Path) -> tuple[RunConfig, dict]:
    """Generate the synthetic world and point the data section at it."""
    summary = generate(cfg.synth, world_dir(cfg, run_dir))
    return with_world_data(cfg, run_dir), summary


# ---------------------------------------------------------------------------------------------
# What each stage read (gpuseg.io.fingerprint): a later stage refuses stale inputs


def _full(cfg: RunConfig) -> bool:
    return cfg.fingerprint == "full"


def panel_files(run_dir: Path, full: bool = False) -> dict[str, dict]:
    return fingerprints({f"panel/{n}": run_dir / "panel" / n for n in PANEL_FILES}, full)


def stage_inputs(cfg: RunConfig, run_dir: Path, stage: str) -> dict[str, dict]:
    """Fingerprints of what ``stage`` reads: prepare the data tables, train the panel, embed the
    panel and the weights, cluster the embeddings."""
    full = _full(cfg)
    if stage == "prepare":
        d = with_world_data(cfg, run_dir).data
        tables = {"data.usage": d.usage, "data.static": d.static, "data.labels": d.labels}
        return fingerprints({k: Path(p) for k, p in tables.items() if p}, full)
    if stage == "train":
        return panel_files(run_dir, full)
    if stage == "embed":
        weights = {"model.safetensors": run_dir / "model.safetensors"}
        return panel_files(run_dir, full) | fingerprints(weights, full)
    return fingerprints({"embeddings.parquet": run_dir / "embeddings.parquet"}, full)


def record_stage(cfg: RunConfig, run_dir: Path, stage: str) -> None:
    """Record what ``stage`` read (gpuseg.io.fingerprint), for the stages after it."""
    record(run_dir, stage, stage_inputs(cfg, run_dir, stage))


def check_stage(cfg: RunConfig, run_dir: Path, stage: str) -> None:
    """RunDirError when what ``stage`` read has changed since (so its outputs are stale)."""
    check_unchanged(
        run_dir, stage, stage_inputs(cfg, run_dir, stage), f"run `gpuseg {stage}` again"
    )


def prepare_stage(cfg: RunConfig, backend: Backend, run_dir: Path) -> dict:
    """``prepare`` of a run: also checks that the revenue metric (value tiers, ARPU, the
    report) is among the panel's metrics, so a wrong ``data.revenue_metric`` stops here, not
    after training."""
    if cfg.synth is not None and not cfg.data.usage:
        world = world_dir(cfg, run_dir)
        if not (world / "usage.parquet").is_file():
            raise RunDirError(
                f"{world}: no synthetic world yet; `gpuseg run` generates it (or `gpuseg synth "
                f"--out {world}` first)"
            )
    cfg = with_world_data(cfg, run_dir)
    meta = prepare(cfg.data, backend, run_dir / "panel", require_revenue=True)
    record_stage(cfg, run_dir, "prepare")
    return meta


def train_stage(
    cfg: RunConfig,
    backend: Backend,
    run_dir: Path,
    on_epoch: Callable[[dict], None] | None = None,
    dist: DistContext | None = None,
    log: Log = _quiet,
) -> dict:
    """Train on the run's panel and write the model; under DDP (``dist``) only rank 0 writes.

    Refuses when the input tables changed after ``prepare`` read them; an epoch checkpoint made
    on another panel (the data changed) is dropped with a line in ``log``, never resumed."""
    check_stage(cfg, run_dir, "prepare")
    panel = load_panel(run_dir / "panel")
    current = panel_files(run_dir, _full(cfg))
    stale = changed(read_record(run_dir).get("train", current), current)
    if stale and (run_dir / "checkpoint").exists() and (dist is None or dist.is_main):
        log(f"train: {stale[0]} changed since the checkpoint was made; training from scratch")
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    if dist is None or dist.is_main:
        record(run_dir, "train", current)  # before the first epoch, so a resume matches it
    if dist is not None:
        barrier(dist)
    result = train_model(
        panel,
        cfg.model,
        cfg.train,
        backend.torch_device if dist is None else dist.device,
        on_epoch,
        checkpoint_dir=run_dir / "checkpoint",
        dist=dist,
    )
    if dist is None or dist.is_main:
        result.metrics["head"] = train_head(cfg, panel, result, run_dir)
        save_checkpoint(result, panel.meta, cfg.model, run_dir)  # metrics.json holds the head's
    return result.metrics


def train_head(cfg: RunConfig, panel: Panel, result: TrainResult, run_dir: Path) -> dict:
    """``model.head``: fit and save the booster head on the run's split (or remove a stale one)."""
    for name in HEAD_FILES:  # no stale earlier head
        (run_dir / name).unlink(missing_ok=True)
    split = result.split
    if cfg.model.head == "sequence":
        return dict(kind="sequence", requested="sequence")
    blend = cfg.model.head == "blend"  # only the blend reads the sequence model's scores
    seq = {
        name: sequence_scores(result.model, result.platt, panel, rows) if blend else (None, None)
        for name, rows in (("val", split.val), ("test", split.test))
    }
    head = fit_head(
        cfg.model.head,
        panel,
        split.train,
        split.val,
        result.metrics["val_auc"],
        cfg.model.head_trials,
        cfg.train.seed,
        sequence_val_proba=seq["val"][0],
        sequence_val_migration=seq["val"][1],
    )
    if head is None:
        return dict(kind="sequence", requested=cfg.model.head)
    head.save(run_dir)
    info = dict(
        kind=head.kind,
        requested=cfg.model.head,
        val_auc=head.val_auc,
        test_roc_auc=head_val_auc(head, panel, split.test, seq["test"][0]),
    )
    if isinstance(head, BlendHead):
        info["weights"] = head.weights
        info["migration"] = migration_head_info(head, panel, split.test, seq["test"][1])
    return info


def migration_head_info(
    head: BlendHead, panel: Panel, test: np.ndarray, sequence_test: np.ndarray
) -> dict:
    """metrics.json's account of a blend's migration: what scores it, the blend's validation and
    test macro one-vs-rest ROC-AUC next to the sequence model's on the same test rows."""
    if head.migration is None:
        return dict(kind="sequence", why="no migration labels of every class in train and val")
    y = np.asarray(panel.migration)[test]
    has = y >= 0
    X = head_features(panel.usage[test], panel.mask[test], panel.static[test])
    p = head.migration.proba(X, sequence_test)
    scored = len(np.unique(y[has])) == p.shape[1]
    return dict(
        kind="blend",
        parts=list(head.migration.parts),
        val_macro_roc_auc=head.migration.val_macro_auc,
        test_macro_roc_auc=macro_roc_auc(y[has], p[has]) if scored else None,
        sequence_test_macro_roc_auc=macro_roc_auc(y[has], sequence_test[has]) if scored else None,
        weights=head.migration.blend.part_weights(4),
        decision_weights=head.migration.decision_weights.tolist(),
    )


class ParquetAppender:
    """Parquet files appended to by one writer thread fed through a bounded queue, so the device
    computes the next batch while the host encodes and writes this one; at most ``depth``
    batches wait in memory. An error in the thread comes back from :meth:`put` or :meth:`close`.
    """

    def __init__(self, paths: dict[str, Path], depth: int = 2):
        self.paths = paths
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gpuseg-parquet", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            while (tables := self.queue.get()) is not None:
                if self.error is not None:
                    continue  # keep draining so that put() never blocks on a dead writer
                try:
                    for name, table in tables.items():
                        if name not in writers:
                            writers[name] = pq.ParquetWriter(self.paths[name], table.schema)
                        writers[name].write_table(table)
                except BaseException as exc:  # handed to the caller's thread
                    self.error = exc
        finally:
            for w in writers.values():
                w.close()

    def put(self, tables: dict[str, pa.Table]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(tables)

    def close(self) -> None:
        """Wait for every queued table to be written and the files closed."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None:
            raise self.error


def host_to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``: through pinned memory with a non-blocking copy on CUDA."""
    t = torch.from_numpy(x)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def embed_panel(
    model: SubscriberModel,
    platt: tuple[float, float],
    panel: Panel,
    device: torch.device,
    out_dir: Path,
    amp: bool = True,
    segmenter: Segmenter | None = None,
    embeddings: bool = True,
    segment_names: dict[int, str] | None = None,
    head: ChurnHead | BlendHead | None = None,
) -> int:
    """Embeddings and predictions for every panel row, batch by batch, streamed to Parquet.

    Panel rows are read block by block with explicit file reads
    (:func:`gpuseg.data.panel.read_rows`),
    so a memory-mapped panel of any size never enters the resident set. Batches go to the device
    through pinned memory and come back once per batch; a :class:`ParquetAppender` thread writes
    them while the next batch computes. With ``segmenter`` the predictions get each row's
    segment (and its name, from ``segment_names``); ``embeddings=False`` skips
    embeddings.parquet. With ``head`` (:class:`gpuseg.training.heads.ChurnHead`,
    ``model.head``) churn_prob comes from it, and with a blend head fitted with migration labels
    the migration columns too.
    """
    model.eval()
    id_col = panel.meta["id_column"]
    names = ("embeddings", "predictions") if embeddings else ("predictions",)
    tmp = {name: temp_path(out_dir / f"{name}.parquet") for name in names}
    appender = ParquetAppender(tmp)
    try:
        for s in range(0, len(panel), EMBED_BATCH):
            e = s + EMBED_BATCH
            usage = host_to_device(
                read_rows(panel.usage, s, e).astype(np.float32, copy=False), device
            )
            mask = host_to_device(read_rows(panel.mask, s, e).astype(bool, copy=False), device)
            static = host_to_device(
                read_rows(panel.static, s, e).astype(np.float32, copy=False), device
            )
            with autocast(device, amp):
                out = model(usage, mask, static)
            emb = out["embedding"].float().cpu().numpy()
            mig = torch.softmax(out["migration_logits"].float(), -1).cpu().numpy()
            p = calibrated(out["churn_logit"].float().cpu().numpy(), platt)
            if head is not None:  # a blend head with migration also gives the migration columns
                p, mig = block_scores(head, usage, mask, static, p, mig)
            ids = pa.array(panel.ids[s:e])
            preds = {id_col: ids, "churn_prob": p} | {
                f"migration_{n}": mig[:, j] for j, n in enumerate(MIGRATION_NAMES)
            }
            if segmenter is not None:
                preds["segment"] = segmenter.predict(emb)
                if segment_names:
                    names = [segment_names.get(int(k), "") for k in preds["segment"]]
                    preds["segment_name"] = names
            tables = {"predictions": pa.table(preds)}
            if embeddings:
                tables["embeddings"] = pa.table(
                    {id_col: ids} | {f"e{j}": emb[:, j] for j in range(emb.shape[1])}
                )
            appender.put(tables)
        appender.close()
        for name, path in tmp.items():
            path.replace(out_dir / f"{name}.parquet")
    except BaseException:  # a failed write (disk full, ...) leaves no temporary file behind
        with contextlib.suppress(Exception):
            appender.close()
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    return len(panel)


def embed_stage(cfg: RunConfig, backend: Backend, run_dir: Path) -> int:
    """Embeddings and predictions of the panel; refused when the panel changed after training."""
    check_stage(cfg, run_dir, "train")
    model, info = load_checkpoint(run_dir, backend.torch_device)
    n = embed_panel(
        model,
        tuple(info["platt"]),
        load_panel(run_dir / "panel"),
        backend.torch_device,
        run_dir,
        cfg.train.amp,
        head=load_head(run_dir),
    )
    record_stage(cfg, run_dir, "embed")
    return n


def cluster_stage(cfg: RunConfig, backend: Backend, run_dir: Path) -> dict:
    check_stage(cfg, run_dir, "embed")
    ids, emb = read_embeddings(run_dir / "embeddings.parquet")
    c = cfg.cluster
    seg = Segmenter.from_config(c, backend).fit(emb)
    id_col = load_panel(run_dir / "panel").meta["id_column"]
    write_parquet_atomic(
        run_dir / "segments.parquet", pd.DataFrame({id_col: ids, "segment": seg.labels_})
    )
    write_json_atomic(run_dir / "cluster.json", seg.state())
    record_stage(cfg, run_dir, "cluster")
    return seg.summary()


def report_stage(cfg: RunConfig, run_dir: Path, backend: Backend | None = None) -> pd.DataFrame:
    """Every report table into ``run_dir/report`` (see
    :func:`gpuseg.report.tables.write_report`), then
    ``report.html`` unless ``cfg.report.html`` is off (see
    :func:`gpuseg.report.html.page.render_report`).

    Reads the panel and its attributes, segments.parquet, predictions.parquet (aligned to the
    panel by id) and cluster.json; returns the segment profiles.
    """

    panel = load_panel(require(run_dir / "panel", "run `gpuseg prepare` first"))
    check_stage(cfg, run_dir, "embed")
    check_stage(cfg, run_dir, "cluster")
    id_col = panel.meta.get("id_column", "subscriber_id")
    ids = np.asarray(panel.ids).astype(str)
    labels = read_aligned(run_dir / "segments.parquet", ids, id_col, "segment").to_numpy(np.int64)
    churn_prob = read_aligned(run_dir / "predictions.parquet", ids, id_col, "churn_prob").to_numpy(
        np.float64
    )
    attr_path = run_dir / "panel" / "attributes.parquet"
    attributes = load_attributes(run_dir / "panel") if attr_path.is_file() else None
    state = None
    if (run_dir / "cluster.json").is_file():
        state = read_json(run_dir / "cluster.json")
        Segmenter.from_state(state, run_dir / "cluster.json")  # checked: a damaged file is named
    tables = build_report(
        panel, attributes, labels, churn_prob, cfg.report, cfg.segments, cfg.tags, state
    )
    write_report(tables, run_dir / "report", id_col)
    if cfg.report.html:
        render_report(run_dir, cfg, backend)
    return tables.profiles


def truth_check(run_dir: Path, world_dir: Path, data_cfg=None) -> dict:
    """On a synthetic world: oracle AUC on the test split and ARI of segments against the truth.
    With ``data_cfg.pseudonymize`` the truth's ids are hashed like the panel's."""
    truth = pd.read_parquet(world_dir / "truth.parquet").set_index("subscriber_id")
    if data_cfg is not None:
        truth.index = pseudonymize_ids(truth.index.astype(str).to_numpy(), data_cfg)
    panel = load_panel(run_dir / "panel")
    split = np.load(run_dir / "split.npz", allow_pickle=False)
    test_ids = panel.ids[split["test"]]
    t = truth.loc[test_ids]
    segs = pd.read_parquet(run_dir / "segments.parquet").set_index(panel.meta["id_column"])[
        "segment"
    ]
    return dict(
        oracle_auc_test=churn_metrics(t["churn"].to_numpy(), t["churn_prob"].to_numpy())["roc_auc"],
        segment_ari=float(adjusted_rand_score(truth.loc[segs.index, "segment"], segs.to_numpy())),
    )


# ---------------------------------------------------------------------------------------------
# Scoring new data


def check_scoring_run(run_dir: Path, data_cfg=None) -> None:
    """RunDirError naming the first file a trained run needs for scoring that is missing; with
    ``data_cfg``, a DataError when the run was trained with static attributes and the new data
    has none (the model would read a matrix of the wrong width)."""
    for name in ("model.safetensors", "model.json", "cluster.json", "panel/meta.json"):
        if not (run_dir / name).is_file():
            raise RunDirError(
                f"{run_dir / name}: missing; run the whole pipeline (gpuseg run) first"
            )
    if data_cfg is None:
        return
    reference = read_json(run_dir / "panel" / "meta.json")
    n_static = len(reference.get("static_features", []))
    if n_static and not data_cfg.static:
        raise DataError(
            f"{run_dir}: trained with {n_static} static attributes (from "
            f"{reference.get('sources', {}).get('static')}); give the new subscribers' "
            "attributes with --static (same columns)"
        )


def check_scores_path(out_path: str | Path) -> None:
    """ConfigError, before any work, unless the scores file is named .parquet: scores are
    written as Parquet (streamed, any number of subscribers), never under another name."""
    if Path(out_path).suffix.lower() not in (".parquet", ".pq"):
        raise ConfigError(f"{out_path}: score writes Parquet; name the file .parquet")


def score(run_dir: Path, data_cfg, backend: Backend, out_path: Path) -> dict:
    """New raw tables through a trained run: churn and migration probabilities and segment."""

    run_dir = Path(run_dir)
    check_scores_path(out_path)
    check_scoring_run(run_dir, data_cfg)
    reference = read_json(run_dir / "panel" / "meta.json", META_SCHEMA)
    model, info = load_checkpoint(run_dir, backend.torch_device)
    seg = Segmenter.from_state(read_json(run_dir / "cluster.json"), run_dir / "cluster.json")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # streamed end to end: prepare by chunks, predictions and segments block by block
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".gpuseg-score-") as tmp:
        tmp = Path(tmp)
        meta = prepare(data_cfg, backend, tmp / "panel", reference=reference)
        panel = load_panel(tmp / "panel")
        scored = embed_panel(
            model,
            tuple(info["platt"]),
            panel,
            backend.torch_device,
            tmp,
            segmenter=seg,
            embeddings=False,
            segment_names=segment_names(run_dir),
            head=load_head(run_dir),
        )
        (tmp / "predictions.parquet").replace(out_path)
        rejects = pd.read_csv(tmp / "panel" / "rejects.csv", dtype=str, keep_default_na=False)
        rejects_path = out_path.with_name(out_path.stem + ".rejects.csv")
        write_csv_atomic(rejects_path, rejects)
    return dict(
        scored=scored,
        rejected=len(rejects),
        input=meta["counts"]["input"],
        out=str(out_path),
        rejects=str(rejects_path),
        notes=meta.get("notes", []),
    )


# ---------------------------------------------------------------------------------------------
# Everything


def run_pipeline(
    cfg: RunConfig,
    backend: Backend,
    log: Log = _quiet,
    on_epoch: Callable[[dict], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """synth? -> prepare -> train -> embed -> cluster -> report; returns the summary.

    The run directory is locked for the whole run (one writer at a time, gpuseg.io.lock)."""
    with RunDirLock(cfg.out_dir):
        return _run_pipeline(cfg, backend, log, on_epoch, overwrite)


def _run_pipeline(cfg, backend, log, on_epoch, overwrite) -> dict:
    run_dir = check_run_dir(cfg, overwrite)
    summary: dict = dict(
        run_dir=str(run_dir),
        backend=dict(device=backend.device, frames=backend.frames, ml=backend.ml),
    )
    world = None
    if cfg.synth is not None:
        log(f"synth: {cfg.synth.n_subscribers:,} subscribers x {cfg.synth.n_periods} periods")
        cfg, world = synth_stage(cfg, run_dir)
        summary["world"] = {k: world[k] for k in ("n_subscribers", "churn_rate", "oracle_auc")}
    log(f"prepare: {cfg.data.usage} on {backend.frames}")
    meta = prepare_stage(cfg, backend, run_dir)
    for note in meta.get("notes", []):
        log(f"note: {note}")
    summary["counts"] = meta["counts"]
    log(f"train: {cfg.model.encoder} on {backend.device}")
    summary["metrics"] = train_stage(cfg, backend, run_dir, on_epoch, log=log)
    log("embed")
    embed_stage(cfg, backend, run_dir)
    log(f"cluster: {cfg.cluster.algorithm} on {backend.ml}")
    summary["cluster"] = cluster_stage(cfg, backend, run_dir)
    log("report")
    summary["profiles"] = report_stage(cfg, run_dir, backend).to_dict(orient="records")
    if world is not None:
        summary["truth"] = truth_check(run_dir, Path(world["files"]["truth"]).parent, cfg.data)
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


__all__ = [
    "check_run_dir",
    "synth_stage",
    "prepare_stage",
    "train_stage",
    "embed_stage",
    "embed_panel",
    "cluster_stage",
    "report_stage",
    "truth_check",
    "score",
    "run_pipeline",
]


def plan_stage(
    run_dir: Path,
    budget: float,
    offers: Path | None,
    campaigns: Path | None,
    future_revenue: Path | None,
    use_campaigns: bool,
    learner: str,
    backend: Backend,
    output: Path,
    chunk: int = PLAN_CHUNK,
    fit_sample: int = FIT_SAMPLE,
    takeup: bool = True,
) -> tuple[ActionRun, Path, Path]:
    """``gpuseg plan``: the contact plan of a trained run, written to ``output`` (with its
    skipped subscribers beside it) and to ``RUN/report/plan.json``; the report page is rendered
    again when the run has one. Returns (the action run, plan path, skipped path)."""
    a = plan_run(
        run_dir,
        budget,
        offers,
        campaigns,
        future_revenue,
        use_campaigns,
        learner,
        takeup=takeup,
        device=backend.torch_device,
        chunk=chunk,
        fit_sample=fit_sample,
    )
    path, skipped = write_plan(a.result, output)
    write_plan_json(a)
    if (Path(run_dir) / "report" / "report.html").is_file() and a.inputs.cfg.report.html:
        render_report(run_dir, a.inputs.cfg, backend)
    return a, path, skipped
