"""Score with the winner: a tuned gradient-boosting churn head saved next to the sequence model.

``model.head`` chooses what a run's ``churn_prob`` comes from:

- ``sequence`` (default): the sequence model's calibrated churn logit;
- ``xgboost`` / ``lightgbm``: a :class:`gpuseg.evaluate.boosting.TunedBooster` over the window
  aggregates and static attributes (:func:`gpuseg.features.aggregates.window_features`, what
  ``gpuseg evaluate`` and ``gpuseg compare`` call the baselines), trained on the run's training
  rows and tuned on its validation rows;
- ``auto``: whichever of those has the best validation ROC-AUC (installed boosters only).

The head is saved in the boosters' own formats (XGBoost JSON, LightGBM text model), never
pickled, with ``head.json`` naming its kind and feature count. Embeddings, migration and segments
always come from the sequence model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpuseg.data.panel import Panel
from gpuseg.errors import ConfigError, RunDirError
from gpuseg.evaluate.boosting import TunedBooster, booster_available
from gpuseg.evaluate.metrics import roc_auc
from gpuseg.features.aggregates import window_stats
from gpuseg.io.store import read_json, write_json_atomic

HEAD_FILE = "head.json"
MODEL_FILES = {"xgboost": "head.xgb.json", "lightgbm": "head.lgb.txt"}
HEADS = ("sequence", "xgboost", "lightgbm", "auto")


def head_features(usage: np.ndarray, mask: np.ndarray, static: np.ndarray) -> np.ndarray:
    """The baselines' features of one block: usage (B, T, M), mask (B, T), static (B, S)."""
    stats = window_stats(np.array(usage), np.array(mask))  # copies: panels may be read-only maps
    return np.concatenate([stats, np.asarray(static, dtype=np.float32)], axis=1)


@dataclass
class ChurnHead:
    """A fitted booster head: ``predict(features) -> churn probability``."""

    kind: str
    model: Any  # xgboost.Booster or lightgbm.Booster, cut at the early-stopping round
    n_features: int
    val_auc: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        if features.shape[1] != self.n_features:
            raise RunDirError(
                f"churn head: {features.shape[1]} features, the head was fitted on "
                f"{self.n_features}"
            )
        if self.kind == "xgboost":
            return np.asarray(self.model.inplace_predict(features), dtype=np.float64)
        return np.asarray(self.model.predict(features), dtype=np.float64)

    def save(self, run_dir: Path) -> None:
        path = Path(run_dir) / MODEL_FILES[self.kind]
        self.model.save_model(str(path))
        write_json_atomic(
            Path(run_dir) / HEAD_FILE,
            dict(kind=self.kind, n_features=self.n_features, val_auc=self.val_auc),
        )


def fit_head(
    kind: str,
    panel: Panel,
    train: np.ndarray,
    val: np.ndarray,
    sequence_val_auc: float,
    trials: int = 15,
    seed: int = 0,
) -> ChurnHead | None:
    """The head ``kind`` fitted on ``train`` and tuned on ``val``; None for ``sequence`` (or for
    ``auto`` when the sequence model's validation ROC-AUC is the best)."""
    if kind not in HEADS:
        raise ConfigError(f"model.head: unknown head {kind!r}; choose from {', '.join(HEADS)}")
    if kind == "sequence":
        return None
    kinds = (
        [k for k in ("xgboost", "lightgbm") if booster_available(k)] if kind == "auto" else [kind]
    )
    if kind != "auto" and not booster_available(kind):
        raise ConfigError(f"model.head={kind} needs the {kind} package (pip install {kind})")
    X = {
        name: head_features(panel.usage[rows], panel.mask[rows], panel.static[rows])
        for name, rows in (("train", train), ("val", val))
    }
    churn = np.asarray(panel.churn)
    best: ChurnHead | None = None
    for k in kinds:
        booster = TunedBooster(k, n_trials=trials, random_state=seed).fit(
            X["train"], churn[train], X["val"], churn[val]
        )
        if k == "xgboost":  # the trees up to the best round only
            model = booster.model_.get_booster()[: booster.model_.best_iteration + 1]
        else:
            model = booster.model_.booster_
        head = ChurnHead(k, model, X["train"].shape[1], booster.val_auc_)
        if best is None or head.val_auc > best.val_auc:
            best = head
    if kind == "auto" and (best is None or best.val_auc <= sequence_val_auc):
        return None
    return best


def load_head(run_dir: Path) -> ChurnHead | None:
    """The run's saved head, or None when the run scores with the sequence model."""
    path = Path(run_dir) / HEAD_FILE
    if not path.is_file():
        return None
    info = read_json(path)
    kind = info.get("kind")
    if kind not in MODEL_FILES:
        raise RunDirError(f"{path}: unknown head kind {kind!r}")
    model_path = Path(run_dir) / MODEL_FILES[kind]
    if not model_path.is_file():
        raise RunDirError(f"{model_path}: missing (the head named in {path})")
    if not booster_available(kind):
        raise RunDirError(f"{path}: the run scores with {kind}; install it (pip install {kind})")
    if kind == "xgboost":
        import xgboost

        model = xgboost.Booster(model_file=str(model_path))
    else:
        import lightgbm

        model = lightgbm.Booster(model_file=str(model_path))
    return ChurnHead(kind, model, int(info["n_features"]), float(info.get("val_auc", np.nan)))


def head_val_auc(head: ChurnHead, panel: Panel, rows: np.ndarray) -> float:
    """ROC-AUC of the head on ``rows`` of the panel."""
    X = head_features(panel.usage[rows], panel.mask[rows], panel.static[rows])
    return roc_auc(np.asarray(panel.churn)[rows], head.predict(X))


def block_proba(head: ChurnHead, usage: torch.Tensor, mask: torch.Tensor, static) -> np.ndarray:
    """The head's churn probability of one embed/score block (tensors on any device)."""
    return head.predict(
        head_features(usage.float().cpu().numpy(), mask.cpu().numpy(), static.float().cpu().numpy())
    )
