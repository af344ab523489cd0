"""One training step, and one epoch of them: what ``gpuseg train``, ``gpuseg tune`` and
``gpuseg bench`` all run.

The step keeps to the device: missing migration labels (-1) are left out by ``ignore_index``
instead of a boolean-mask index, and the epoch's loss is summed on the device and read by the
caller once per epoch, so nothing in the loop waits for the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gpuseg.config import TrainConfig
from gpuseg.model.sequence import SubscriberModel

IGNORE = -1  # migration label of a subscriber without one (panel convention)


@dataclass(frozen=True)
class Losses:
    """The weighted objective: churn BCE (imbalance via ``pos_weight``), migration cross-entropy
    (class weights, unlabelled rows ignored) and the usage-profile MSE."""

    churn_weight: float
    migration_weight: float
    profile_weight: float
    pos_weight: float
    pos_weight_t: torch.Tensor  # () on the device
    migration_class_weight: torch.Tensor  # (3,) on the device, mean 1

    @classmethod
    def fit(
        cls, churn: np.ndarray, migration: np.ndarray, cfg: TrainConfig, device: torch.device
    ) -> Losses:
        """Weights from the training rows' labels: ``pos_weight`` = ``cfg.pos_weight`` or
        sqrt(stayers / churners); migration class weights sqrt(total / count) (add-one counts),
        scaled to mean 1."""
        pos = float(np.mean(churn))
        pos_weight = (
            cfg.pos_weight if cfg.pos_weight is not None else math.sqrt((1 - pos) / max(pos, 1e-6))
        )
        counts = np.bincount(migration[migration >= 0], minlength=3).astype(float) + 1
        w = torch.tensor((counts.sum() / counts) ** 0.5, dtype=torch.float32, device=device)
        return cls(
            churn_weight=cfg.churn_weight,
            migration_weight=cfg.migration_weight,
            profile_weight=cfg.profile_weight,
            pos_weight=pos_weight,
            pos_weight_t=torch.tensor(pos_weight, device=device),
            migration_class_weight=w / w.mean(),
        )

    def __call__(
        self,
        model: SubscriberModel,
        out: dict[str, torch.Tensor],
        usage: torch.Tensor,
        mask: torch.Tensor,
        churn: torch.Tensor,
        migration: torch.Tensor,
    ) -> torch.Tensor:
        """Scalar loss of one batch: out (the model's forward), usage (B, T, M), mask (B, T),
        churn (B,) in {0, 1}, migration (B,) in {-1, 0, 1, 2}."""
        target = model.profile_target(model.normalize(usage, mask), mask)  # (B, 2M)
        loss = self.churn_weight * F.binary_cross_entropy_with_logits(
            out["churn_logit"].float(), churn.float(), pos_weight=self.pos_weight_t
        )
        # class-weighted mean over the labelled rows; 0 (not NaN) when a batch has none
        per_row = F.cross_entropy(
            out["migration_logits"].float(),
            migration,
            weight=self.migration_class_weight,
            ignore_index=IGNORE,
            reduction="none",
        )  # (B,) 0 where ignored
        labelled = migration != IGNORE  # (B,)
        row_weight = self.migration_class_weight[migration.clamp_min(0)] * labelled  # (B,)
        mig = per_row.sum() / row_weight.sum().clamp_min(1e-12)
        loss = loss + self.migration_weight * mig
        return loss + self.profile_weight * F.mse_loss(out["profile"].float(), target)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


def train_step(
    net: torch.nn.Module,
    model: SubscriberModel,
    batch: dict[str, torch.Tensor],
    losses: Losses,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    amp: bool,
) -> torch.Tensor:
    """Forward, loss, backward, clipped optimizer step and scheduler step on one batch.

    ``net`` is what runs forward (the model, its DDP wrapper or its compiled form); ``model`` the
    plain module (normalisation, profile target, parameters). Returns the batch loss, detached,
    on the device (no host sync).
    """
    usage, mask, static = batch["usage"], batch["mask"], batch["static"]  # (B, T, M) (B, T) (B, S)
    with autocast(usage.device, amp):
        out = net(usage, mask, static)  # under DDP, backward averages the gradients
    loss = losses(model, out, usage, mask, batch["churn"], batch["migration"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if sched is not None:
        sched.step()
    return loss.detach()


def train_epoch(
    net: torch.nn.Module,
    model: SubscriberModel,
    data: dict[str, torch.Tensor],
    rows: torch.Tensor,
    batch_size: int,
    losses: Losses,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    amp: bool,
) -> torch.Tensor:
    """:func:`train_step` over ``rows`` of the device tensors ``data`` in batches of
    ``batch_size``, in the order given. Returns the sum of batch loss x batch size, a float64
    scalar on the device: read it once per epoch."""
    net.train()
    total = torch.zeros((), dtype=torch.float64, device=rows.device)
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        batch = {k: v[idx] for k, v in data.items()}
        loss = train_step(net, model, batch, losses, opt, sched, amp)
        total += loss.double() * len(idx)
    return total
