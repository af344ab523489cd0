"""The training loop: panel tensors on the device, whole-batch slicing, early stopping."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gpuseg.config import ModelConfig, TrainConfig
from gpuseg.data.panel import Panel
from gpuseg.data.split import Split, split_subscribers
from gpuseg.errors import DataError, TrainingError
from gpuseg.evaluate.metrics import churn_metrics, macro_f1, migration_metrics, roc_auc
from gpuseg.features.fitting import CHUNK_ROWS, fit_bins, fit_normalization, fit_stats_scale
from gpuseg.model.sequence import SubscriberModel
from gpuseg.training import ddp
from gpuseg.training.calibration import (
    calibrated,
    fit_migration_weights,
    fit_platt,
    migration_decision,
)
from gpuseg.training.checkpoint import EpochCheckpoint, TrainResult
from gpuseg.training.ddp import DistContext
from gpuseg.training.step import Losses, autocast, train_epoch


def to_device(
    panel: Panel, device: torch.device, rows: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """The panel as tensors on ``device``, copied in chunks (memory-mapped source) through pinned
    host memory with non-blocking copies on CUDA: every row, or only ``rows`` (in that order; only
    those rows are read from disk)."""

    def copy(arr: np.ndarray, dtype) -> torch.Tensor:
        n = len(arr) if rows is None else len(rows)
        out = torch.empty((n, *arr.shape[1:]), dtype=dtype, device=device)
        for start in range(0, n, CHUNK_ROWS):
            part = slice(start, start + CHUNK_ROWS)
            host = torch.from_numpy(np.array(arr[part if rows is None else rows[part]]))
            if device.type == "cuda":  # pinned, so the copy runs while the next chunk is read
                host = host.pin_memory()
            out[part] = host.to(device, dtype, non_blocking=True)
        return out

    return dict(
        usage=copy(panel.usage, torch.float32),
        mask=copy(panel.mask, torch.bool),
        static=copy(panel.static, torch.float32),
        churn=copy(panel.churn, torch.int64),
        migration=copy(panel.migration, torch.int64),
    )


@torch.no_grad()
def predict(
    model: SubscriberModel,
    tensors: dict[str, torch.Tensor],
    rows: torch.Tensor | None,
    batch_size: int,
    amp: bool = True,
) -> dict[str, torch.Tensor]:
    """Embedding, churn logit and migration logits for ``rows`` (all when None), batch by batch."""
    model.eval()
    device = tensors["usage"].device
    n = len(tensors["usage"]) if rows is None else len(rows)
    outs: dict[str, list[torch.Tensor]] = {
        "embedding": [],
        "churn_logit": [],
        "migration_logits": [],
    }
    for start in range(0, n, batch_size):
        idx = slice(start, start + batch_size) if rows is None else rows[start : start + batch_size]
        with autocast(device, amp):
            out = model(tensors["usage"][idx], tensors["mask"][idx], tensors["static"][idx])
        for k in outs:
            outs[k].append(out[k].float())
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in outs.items()}


def device_rows(
    panel: Panel, split: Split, device: torch.device, dist: DistContext | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The panel tensors this process works on, and its train, validation and test rows in them.

    Single process: the whole panel, indexed by the split's rows. Under DDP: only this rank's
    shard of the training rows, plus the validation and test rows on rank 0 (which alone
    evaluates); the other ranks hold no validation or test rows.
    """
    if dist is None:
        parts = (split.train, split.val, split.test)
        data = to_device(panel, device)
    else:
        shard = ddp.shard_rows(split.train, dist.rank, dist.world_size)
        held = [shard] + ([split.val, split.test] if dist.is_main else [shard[:0], shard[:0]])
        data = to_device(panel, device, np.concatenate(held))
        ends = np.cumsum([len(h) for h in held])
        parts = tuple(np.arange(e - len(h), e) for h, e in zip(held, ends, strict=True))
    return data, *(torch.as_tensor(p, device=device) for p in parts)


def train_model(
    panel: Panel,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    device: torch.device,
    on_epoch: Callable[[dict], None] | None = None,
    checkpoint_dir: Path | None = None,
    dist: DistContext | None = None,
    split: Split | None = None,
) -> TrainResult:
    """Train the subscriber model on ``panel``; return the best model (by validation AUC) and
    metrics.

    ``split`` (rows of the panel) replaces the seeded random split, e.g. one fold of
    :mod:`gpuseg.pipeline.compare`; its rows must carry churn labels.

    With ``dist`` (under torchrun, see :mod:`gpuseg.ddp`) the model runs in DDP: each rank trains
    on its shard of the training rows with ``cfg.batch_size / world_size`` rows per step (the
    global batch stays ``cfg.batch_size``); rank 0 validates, decides early stopping, writes the
    epoch checkpoints and computes the final metrics, and every rank returns the same result.
    """
    main = dist is None or dist.is_main
    torch.manual_seed(cfg.seed)
    labelled = np.flatnonzero(np.asarray(panel.churn) >= 0)
    if len(labelled) < 20:
        raise DataError(
            f"training needs churn labels; {len(labelled)} labelled subscribers in the panel"
        )
    if split is None:
        split = split_subscribers(len(labelled), cfg.val_frac, cfg.test_frac, cfg.seed)
        split = Split(*(labelled[s] for s in (split.train, split.val, split.test)))
    elif not all(np.isin(p, labelled).all() for p in (split.train, split.val, split.test)):
        raise DataError("training split: every train, val and test row needs a churn label")
    churn_all = np.asarray(panel.churn)
    if len(np.unique(churn_all[split.train])) < 2:
        raise DataError("training split has only one churn class; need churners and stayers")
    if len(np.unique(churn_all[split.val])) < 2:  # early stopping and calibration read its AUC
        raise DataError(
            f"validation split ({len(split.val)} of {len(labelled)} labelled subscribers) has "
            "only one churn class; need churners and stayers in it: more labelled subscribers "
            f"or a larger train.val_frac (now {cfg.val_frac})"
        )

    # model with normalisation fitted on the training split only
    n, t, m = panel.usage.shape
    model = SubscriberModel(m, panel.static.shape[1], t, model_cfg)
    if main:  # under DDP the other ranks receive it from rank 0 in ddp.wrap
        model.set_normalization(
            **fit_normalization(panel, split.train, static_log=model_cfg.static_log)
        )
        if model.n_stats:
            model.set_stats_scale(*fit_stats_scale(panel, split.train, cfg.seed))
        if model_cfg.wide_heads and model_cfg.wide_bins > 0:
            model.set_bins(fit_bins(model, panel, split.train, model_cfg.wide_bins, cfg.seed))
    model.to(device)
    net = model  # what the training steps call: the model, or under DDP its wrapper
    if dist is not None:  # every step uses every head (ignore_index, not a skipped loss term)
        net = ddp.wrap(model, dist, unused=False)
    data, train_rows, val_rows, test_rows = device_rows(panel, split, device, dist)
    batch_size = ddp.local_batch_size(cfg.batch_size, dist)

    # losses: churn (imbalance via pos_weight), migration (class weights), usage profile
    losses = Losses.fit(
        churn_all[split.train], np.asarray(panel.migration)[split.train], cfg, device
    )
    pos_weight = losses.pos_weight
    mig_val = np.asarray(panel.migration)[split.val]
    has_val_mig = mig_val >= 0
    if cfg.compile:  # the forward compiled once; the step and the state dict stay the model's
        net = torch.compile(net)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / batch_size)  # the same on every rank
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(cfg.epochs * steps_per_epoch, 1), pct_start=0.15
    )
    # one seed on every rank: equal shard lengths keep the RNG states equal, so rank 0's
    # checkpoint resumes every rank exactly
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)

    best_score, best_auc, best_state, best_epoch, history, stale, start_epoch, done = (
        -1.0,
        -1.0,
        None,
        -1,
        [],
        0,
        0,
        False,
    )
    ckpt = EpochCheckpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():  # resume after the last finished epoch
        best_state, saved = ckpt.load(model, opt, sched, gen)
        best_auc, best_epoch, stale = saved["best_auc"], saved["best_epoch"], saved["stale"]
        best_score = saved.get("best_score", best_auc)
        history, start_epoch, done = saved["history"], saved["epoch"], saved["done"]
    ddp.barrier(dist)  # every rank has read the checkpoint before rank 0 writes the next one
    for epoch in range(start_epoch, cfg.epochs):
        if done:
            break
        t0 = time.perf_counter()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen).to(device)]
        total = train_epoch(net, model, data, perm, batch_size, losses, opt, sched, cfg.amp)
        total = float(total)  # the epoch's one read of the loss (waits for the device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0

        rows_seen, val_auc, val_f1 = len(perm), math.nan, math.nan
        if main:
            val = predict(model, data, val_rows, 4 * cfg.batch_size, cfg.amp)
            val_auc = roc_auc(churn_all[split.val], val["churn_logit"].cpu().numpy())
            if has_val_mig.any():  # argmax classes; the fitted decision comes after training
                pred = val["migration_logits"].float().argmax(1).cpu().numpy()
                val_f1 = macro_f1(mig_val[has_val_mig], pred[has_val_mig])
        if dist is not None:  # totals of the job; rank 0's validation scores on every rank
            total, rows_seen = ddp.all_reduce([total, rows_seen], dist)
            (seconds,) = ddp.all_reduce([seconds], dist, op="max")
            val_auc, val_f1 = ddp.broadcast([val_auc, val_f1], dist)
        if not (math.isfinite(total) and math.isfinite(val_auc)):  # the same on every rank
            what = (
                f"the loss is {total / rows_seen}"
                if not math.isfinite(total)
                else "the validation scores are not finite"
            )
            raise TrainingError(
                f"training diverged: {what} in epoch {epoch + 1}; lower train.lr (now "
                f"{cfg.lr}) or look for extreme input values (gpuseg check)"
            )
        score = val_auc
        if cfg.select == "churn_auc+migration_f1" and math.isfinite(val_f1):
            score = val_auc + val_f1
        record = dict(
            epoch=epoch + 1,
            loss=total / rows_seen,
            val_auc=val_auc,
            val_migration_f1=val_f1,
            seconds=seconds,
            subscribers_per_s=rows_seen / seconds,
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if score > best_score + 1e-4:
            best_score, best_auc, best_epoch, stale = score, val_auc, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        done = stale >= cfg.patience or epoch + 1 == cfg.epochs  # the same on every rank
        if ckpt is not None and main:
            scalars = dict(
                epoch=epoch + 1,
                best_auc=best_auc,
                best_score=best_score,
                best_epoch=best_epoch,
                stale=stale,
                history=history,
                done=done,
            )
            ckpt.save(model, best_state, opt, sched, gen, scalars)
        if done:
            break

    model.load_state_dict(best_state)
    platt = mig_weights = metrics = None  # rank 0 computes them and sends them to the others
    if main:  # calibration on validation, metrics on test (under DDP rank 0 holds both)
        val = predict(model, data, val_rows, 4 * cfg.batch_size, cfg.amp)
        platt = fit_platt(val["churn_logit"].cpu().numpy(), churn_all[split.val])
        mig_weights = fit_migration_weights(
            val["migration_logits"].cpu().numpy(), np.asarray(panel.migration)[split.val]
        )
        test = predict(model, data, test_rows, 4 * cfg.batch_size, cfg.amp)
        p_test = calibrated(test["churn_logit"].cpu().numpy(), platt)
        mig_test = np.asarray(panel.migration)[split.test]
        has = mig_test >= 0
        metrics = dict(
            churn=churn_metrics(churn_all[split.test], p_test),
            migration=migration_metrics(
                mig_test[has],
                migration_decision(test["migration_logits"].cpu().numpy(), mig_weights)[has],
            ),
            best_epoch=best_epoch,
            epochs_run=len(history),
            val_auc=best_auc,
            pos_weight=pos_weight,
            sizes=dict(train=len(split.train), val=len(split.val), test=len(split.test)),
        )
    if dist is not None:
        platt, mig_weights, metrics = ddp.broadcast_object((platt, mig_weights, metrics), dist)
    return TrainResult(
        model=model,
        metrics=metrics,
        split=split,
        platt=platt,
        history=history,
        migration_weights=tuple(float(w) for w in mig_weights),
    )
