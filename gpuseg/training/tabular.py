"""Fit :class:`gpuseg.model.tabular.TabM` on a feature table: the baselines' features of
``gpuseg compare`` and ``model.head`` (window aggregates + static), churn labels.

Preprocessing on the training rows only: columns constant there are dropped, and so is every
column equal to an earlier one (a one-period table repeats its values in several window
statistics); the rest are signed-log1p'd and standardised; columns with more than two values
are embedded (quantile bins for the piecewise-linear embeddings), the others pass through.

Training as in the TabM paper: AdamW, mini-batches of shuffled training rows (whole tensors on
the device, sliced by index), every member's binary cross-entropy averaged, early stopping on the
validation ROC-AUC of the ensemble's probability (the best epoch's weights are kept). Seeded by
the ``seed`` argument: the same seed gives the same model on the same device.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from gpuseg.errors import ConfigError, DataError
from gpuseg.evaluate.metrics import roc_auc
from gpuseg.features.window import signed_log1p
from gpuseg.model.tabular import TabM, TabMSpec

PREDICT_ROWS = 4096  # rows per forward when predicting


@dataclass(frozen=True)
class TabMFit:
    """The optimiser and stopping rule (the ``tabm`` README's AdamW defaults)."""

    lr: float = 2e-3
    weight_decay: float = 3e-4
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 12  # epochs without a validation gain of 1e-4

    def __post_init__(self) -> None:
        if min(self.batch_size, self.max_epochs, self.patience) < 1 or self.lr <= 0:
            raise ConfigError("TabM fit: batch_size, max_epochs and patience >= 1, lr > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"TabM fit: weight_decay must be >= 0, got {self.weight_decay}")

    def state(self) -> dict:
        return asdict(self)


@dataclass
class TabMResult:
    model: TabM  # the best epoch's weights, in eval mode
    val_auc: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[float] = field(default_factory=list)  # validation ROC-AUC per epoch


def fit_preprocessing(X: np.ndarray, n_bins: int) -> dict:
    """Columns, scale and bins of :meth:`TabM.set_preprocessing` from the training rows
    ``X`` (n, F): kept columns (not constant, not a copy of an earlier one), numeric (more than
    two values) first."""
    z = signed_log1p(np.asarray(X, dtype=np.float64))
    n_unique = np.array([len(np.unique(z[:, j])) for j in range(z.shape[1])])
    keep = np.flatnonzero(n_unique > 1)
    if len(keep):
        _, first = np.unique(z[:, keep], axis=1, return_index=True)
        keep = keep[np.sort(first)]  # the first of identical columns
    numeric = keep[n_unique[keep] > 2]
    passed = keep[n_unique[keep] == 2]
    cols = np.concatenate([numeric, passed])
    mean = z[:, cols].mean(0)
    std = z[:, cols].std(0) + 1e-6
    s = (z[:, numeric] - mean[: len(numeric)]) / std[: len(numeric)]
    edges = [
        np.unique(np.quantile(s[:, j], np.linspace(0.0, 1.0, n_bins + 1)))
        for j in range(len(numeric))
    ]
    return dict(numeric=numeric, passed=passed, mean=mean, std=std, edges=edges)


def make_tabm(n_inputs: int, prep: dict, spec: TabMSpec) -> TabM:
    """A TabM for ``n_inputs`` columns with the preprocessing ``prep`` set (weights as drawn)."""
    model = TabM(n_inputs, len(prep["numeric"]), len(prep["passed"]), spec)
    model.set_preprocessing(
        torch.as_tensor(prep["numeric"]),
        torch.as_tensor(prep["passed"]),
        torch.as_tensor(prep["mean"]),
        torch.as_tensor(prep["std"]),
        [torch.as_tensor(e) for e in prep["edges"]],
    )
    return model


@torch.no_grad()
def tabm_proba(model: TabM, X: torch.Tensor | np.ndarray, rows: int = PREDICT_ROWS) -> np.ndarray:
    """The ensemble's churn probability (n,) of feature rows ``X`` (n, F), float64."""
    model.eval()
    device = next(model.parameters()).device
    X = torch.as_tensor(np.asarray(X, dtype=np.float32) if isinstance(X, np.ndarray) else X)
    out = [model.proba(X[s : s + rows].to(device)) for s in range(0, len(X), rows)]
    if not out:
        return np.zeros(0)
    return torch.cat(out).cpu().numpy().astype(np.float64)


def fit_tabm(
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    spec: TabMSpec = TabMSpec(),
    fit: TabMFit = TabMFit(),
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> TabMResult:
    """TabM trained on (X, y), early-stopped on the validation ROC-AUC of (X_val, y_val)."""
    y, y_val = np.asarray(y).astype(int), np.asarray(y_val).astype(int)
    if len(np.unique(y)) < 2 or len(np.unique(y_val)) < 2:
        raise DataError("TabM: training and validation rows need both classes")
    if X.shape[1] != X_val.shape[1]:
        raise DataError(f"TabM: {X.shape[1]} training columns, {X_val.shape[1]} validation")
    t0 = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    prep = fit_preprocessing(X, spec.n_bins)
    if len(prep["numeric"]) + len(prep["passed"]) == 0:
        raise DataError("TabM: every feature column is constant on the training rows")
    model = make_tabm(X.shape[1], prep, spec).to(device)
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
    yt = torch.as_tensor(y, dtype=torch.float32, device=device)
    Xv = torch.as_tensor(np.asarray(X_val, dtype=np.float32), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    best_auc, best_epoch, best_state, stale, history = -math.inf, 0, None, 0, []
    for epoch in range(fit.max_epochs):
        model.train()
        perm = torch.randperm(len(Xt), generator=gen).to(device)
        for start in range(0, len(perm), fit.batch_size):
            idx = perm[start : start + fit.batch_size]
            logits = model(Xt[idx])  # (b, E): every member sees the same rows
            target = yt[idx].unsqueeze(1).expand_as(logits)
            loss = F.binary_cross_entropy_with_logits(logits, target)  # mean over members
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        auc = roc_auc(y_val, tabm_proba(model, Xv))
        history.append(auc)
        if auc > best_auc + 1e-4:
            best_auc, best_epoch, stale = auc, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= fit.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return TabMResult(
        model, float(best_auc), best_epoch, len(history), time.perf_counter() - t0, history
    )
