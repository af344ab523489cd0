"""A protocol that tells models apart: K-fold comparison of gpuseg and tuned baselines (issue 15).

:func:`compare` splits the churn-labelled subscribers into ``folds`` stratified folds (repeated
``repeats`` times with other shuffles). Each fold in turn is the test set; of the other rows a
stratified ``val_frac`` share is the validation set, the rest trains. Every candidate sees the very
same train / validation / test rows of every fold:

- ``sequence``: gpuseg's sequence model (:func:`gpuseg.training.loop.train_model` on the fold's
  rows, Platt-calibrated on validation); ``seeds`` > 1 averages the logits of that many seeds;
- ``stack``: a tuned XGBoost head over the window aggregates plus the sequence model's churn logit,
  **cross-fitted**: the training rows are cut in two halves, an encoder trains on each half and
  gives the logits of the other half, and validation / test rows get the mean of both encoders'
  logits (:class:`CrossFit` refuses a logit from an encoder that trained on the row);
- ``auto``: what ``model.head: auto`` scores with (:mod:`gpuseg.training.heads`): on each fold,
  whichever of ``sequence``, ``xgboost`` and ``lightgbm`` (those among the candidates) has the
  best validation ROC-AUC; the boosters were tuned on those rows, so the choice leans to them;
- ``head_blend``: what ``model.head: blend`` scores with: the blend (as ``blend``) of only
  ``sequence``, ``logistic``, ``hist_gb``, ``xgboost`` and ``lightgbm`` (those among the
  candidates); with ``target="migration"`` the multinomial blend of their class probabilities
  (all but ``hist_gb``), which is what ``model.head: blend`` scores a run's migration with
  (:class:`gpuseg.training.heads.ClassBlend`);
- ``head_blend_tabm``: the same blend with ``tabm`` as a fifth part (measured in RESULTS.md,
  issue 15 session 9: no better than ``head_blend``, so ``model.head: blend`` leaves TabM out);
- ``tabm``: TabM with piecewise-linear numeric embeddings (:mod:`gpuseg.model.tabular`,
  :func:`gpuseg.training.tabular.fit_tabm`) on the boosters' features, early-stopped on
  validation;
- ``logistic``, ``hist_gb`` (the grids of :mod:`gpuseg.evaluate.baselines`) and ``xgboost``,
  ``lightgbm`` (:class:`gpuseg.evaluate.boosting.TunedBooster`, ``trials`` Optuna trials each on
  validation), all on the window aggregates and static attributes of
  :func:`gpuseg.features.aggregates.window_features`.

For ROC-AUC and top-decile lift, ``paired`` holds the reported candidate (``head``) minus every
other: the mean over folds with a t interval over folds, and a paired bootstrap interval (test
rows resampled within each fold, the same resamples for both candidates, the mean over folds
recomputed). ``best_baseline`` names the baseline with the highest mean ROC-AUC and by how much it
leads or trails.

``target="migration"`` runs the same protocol on the value-tier migration label (0 down, 1 stay,
2 up; given in the labels or derived from a revenue series, see :mod:`gpuseg.data.labels`): the
folds are stratified by migration class over the rows with both labels (the sequence model
trains on churn as well), every candidate predicts the three class probabilities (``sequence``:
the softmax of its migration head, which is what a run scores with; the baselines: multiclass
models on the same features, tuned on validation by the macro one-vs-rest ROC-AUC; the blends: a
multinomial logistic regression over the parts' validation log-probabilities), and the metrics
are the macro one-vs-rest ROC-AUC (the primary one), the ROC-AUC of ``down`` and the top-decile
lift of ``down`` (:data:`MIGRATION_METRICS`), with the same paired intervals. ``stack`` and
``auto`` are churn heads and are refused, as are ``tabm`` and ``head_blend_tabm`` (TabM's fit is
binary); so is a panel without migration labels
(:class:`gpuseg.errors.DataError`, one line saying why).

Out of time (``test_panel``: a later window's panel with the same periods, metrics and static
columns, e.g. prepared with the same config): the folds' train and validation rows are the run
panel's, exactly as in time (so every fitted thing, the sequence model's normalisation, quantile
bins and Platt calibration, the boosters' tuning and the blends' weights, is the same as in the
in-time comparison with the same seed), and the test rows come from the later panel: its
labelled subscribers cut into ``folds`` stratified parts (seeded, :func:`out_of_time_splits`),
fold f tests on part f. Test parts are disjoint and cover every labelled row of the later panel
once per repeat, so the fold t interval and the paired bootstrap keep their meaning. The two
panels are concatenated (:func:`stack_panels`) so that the candidates' code is the same in both
modes; nothing is fitted on the later rows. An incompatible panel is refused
(:func:`check_test_panel`, one line naming what differs). The candidates also score the run
panel's own fold test rows, so ``in_time`` holds the in-time figures of the very same models
(summary and paired differences, as in an in-time run with the same seed).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import t as student_t
from sklearn.model_selection import StratifiedKFold, train_test_split

from gpuseg.config import ModelConfig, TrainConfig
from gpuseg.data.panel import Panel, load_panel
from gpuseg.data.split import Split
from gpuseg.errors import ConfigError, DataError, LeakageError
from gpuseg.evaluate.baselines import GRIDS, tune
from gpuseg.evaluate.boosting import TunedBooster, booster_available
from gpuseg.evaluate.metrics import (
    MIGRATION_NAMES,
    down_roc_auc,
    down_top_decile_lift,
    macro_roc_auc,
    roc_auc,
    top_decile_lift,
)
from gpuseg.features.aggregates import window_features
from gpuseg.features.sequence import sequence_features
from gpuseg.io.store import atomic_write, json_ready, write_json_atomic
from gpuseg.model.tabular import TabMSpec
from gpuseg.pipeline.stages import (
    check_stage,
    prepare_stage,
    synth_stage,
    with_world_data,
    world_dir,
)
from gpuseg.training.calibration import calibrated, fit_platt, softmax
from gpuseg.training.heads import ClassBlend, fit_logit_blend, logit
from gpuseg.training.loop import predict, to_device, train_model
from gpuseg.training.tabular import TabMFit, fit_tabm, tabm_proba

MODEL_CANDIDATES = (
    "sequence",
    "stack",
    "xgboost_seq",
    "tabm",
    "blend",
    "auto",
    "head_blend",
    "head_blend_tabm",
)
BASELINES = ("logistic", "hist_gb", "xgboost", "lightgbm")
BLENDS = ("blend", "blend_baselines")  # fitted on the other candidates' validation predictions
AUTO_PARTS = ("sequence", "xgboost", "lightgbm")  # what model.head: auto chooses from
HEAD_BLEND_PARTS = ("sequence", "logistic", "hist_gb", "xgboost", "lightgbm")  # model.head: blend
# model.head: blend's migration parts (its HistGradientBoosting part is binary)
MIGRATION_HEAD_BLEND_PARTS = ("sequence", "logistic", "xgboost", "lightgbm")
DERIVED = BLENDS + ("auto", "head_blend", "head_blend_tabm")  # run after (and from) the others
CANDIDATES = MODEL_CANDIDATES + BASELINES + ("blend_baselines",)
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": roc_auc,
    "top_decile_lift": top_decile_lift,
}
# --target migration: y in {0 down, 1 stay, 2 up}, scores (n, 3) class probabilities
MIGRATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "macro_roc_auc": macro_roc_auc,
    "down_roc_auc": down_roc_auc,
    "down_top_decile_lift": down_top_decile_lift,
}
TARGETS = ("churn", "migration")
TARGET_METRICS = {"churn": METRICS, "migration": MIGRATION_METRICS}
PRIMARY = {"churn": "roc_auc", "migration": "macro_roc_auc"}  # best baseline, verdict
# churn heads and TabM (binary): not for migration
CHURN_ONLY = ("stack", "auto", "head_blend_tabm", "tabm")

# ---------------------------------------------------------------------------------------------
# Folds


def stratified_folds(
    churn: np.ndarray,
    folds: int = 5,
    repeats: int = 1,
    val_frac: float = 0.15,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[Split]:
    """``folds`` x ``repeats`` splits of the churn-labelled rows (``churn >= 0``) by subscriber.

    Within a repeat the test parts are disjoint and cover every labelled row once; validation is
    a stratified ``val_frac`` share of all labelled rows, taken from the non-test rows.
    ``class_names`` (e.g. down, stay, up): ``churn`` holds another label with that many classes
    (0..K-1, -1 unlabelled), stratified alike; every class needs ``folds`` rows.
    """
    if folds < 2:
        raise ConfigError(f"folds must be >= 2, got {folds}")
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    if not 0 < val_frac < 1 - 1 / folds:
        raise ConfigError(f"val_frac must be in (0, {1 - 1 / folds:g}), got {val_frac}")
    churn = np.asarray(churn)
    labelled = np.flatnonzero(churn >= 0)
    y = churn[labelled].astype(int)
    _check_class_counts(y, folds, class_names, "the panel")
    out = []
    for r in range(repeats):
        kfold = StratifiedKFold(folds, shuffle=True, random_state=seed + 1000 * r)
        for rest, test in kfold.split(labelled, y):
            share = val_frac / (1 - 1 / folds)  # of the non-test rows
            train, val = train_test_split(
                rest, test_size=share, stratify=y[rest], random_state=seed + 1000 * r + len(out)
            )
            out.append(Split(*(np.sort(labelled[p]) for p in (train, val, test))))
    return out


def _check_class_counts(
    y: np.ndarray, folds: int, class_names: Sequence[str] | None, where: str
) -> None:
    """DataError unless every class of ``y`` (labelled rows) has ``folds`` rows."""
    counts = np.bincount(y, minlength=2 if class_names is None else len(class_names))
    if class_names is not None and counts.min() < folds:
        have = ", ".join(f"{c} {n}" for c, n in zip(class_names, counts, strict=True))
        raise DataError(
            f"{folds} folds need at least {folds} labelled subscribers of each class; "
            f"{where} has {have}"
        )
    if counts.min() < folds:
        raise DataError(
            f"{folds} folds need at least {folds} churners and {folds} stayers; "
            f"{where} has {counts[1]} and {counts[0]}"
        )


def out_of_time_splits(
    splits: Sequence[Split],
    later_labels: np.ndarray,
    offset: int,
    folds: int,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[Split]:
    """``splits`` (``folds`` x repeats, of the run panel) with their test rows replaced by a later
    panel's: its labelled rows (``later_labels >= 0``) cut into ``folds`` stratified parts per
    repeat (another shuffle per repeat), fold f of a repeat testing on part f. The later panel's
    rows are numbered from ``offset`` (they follow the run panel's, see :func:`stack_panels`);
    train and validation rows are kept as they are."""
    later_labels = np.asarray(later_labels)
    labelled = np.flatnonzero(later_labels >= 0)
    y = later_labels[labelled].astype(int)
    _check_class_counts(y, folds, class_names, "the test panel")
    if len(splits) % folds:
        raise ConfigError(f"{len(splits)} splits are not repeats of {folds} folds")
    out = []
    for r in range(len(splits) // folds):
        kfold = StratifiedKFold(folds, shuffle=True, random_state=seed + 1000 * r + 500)
        for f, (_, test) in enumerate(kfold.split(labelled, y)):
            s = splits[r * folds + f]
            out.append(Split(s.train, s.val, offset + np.sort(labelled[test])))
    return out


def check_test_panel(panel: Panel, later: Panel, name: str = "the test panel") -> None:
    """DataError (one line naming what differs) unless ``later`` has ``panel``'s layout: the
    number of periods, the metrics (in order) and the encoded static columns (in order)."""
    t, t_later = panel.usage.shape[1], later.usage.shape[1]
    if t != t_later:
        raise DataError(f"{name}: {t_later} periods, the run's panel has {t}")
    if list(later.metrics) != list(panel.metrics):
        raise DataError(
            f"{name}: metrics {', '.join(later.metrics)} differ from the run panel's "
            f"{', '.join(panel.metrics)}"
        )
    ours = list(panel.meta.get("static_features", []))
    theirs = list(later.meta.get("static_features", []))
    if ours != theirs or panel.static.shape[1] != later.static.shape[1]:
        only = [c for c in theirs if c not in ours][:3] + [c for c in ours if c not in theirs][:3]
        why = f"e.g. {', '.join(only)}" if only else "in another order"
        raise DataError(
            f"{name}: static columns differ from the run panel's ({len(theirs)} against "
            f"{len(ours)}, {why}); prepare it with the run's config"
        )


def stack_panels(panel: Panel, later: Panel) -> Panel:
    """``panel``'s rows followed by ``later``'s (same layout, see :func:`check_test_panel`), with
    ``panel``'s meta: what the candidates read out of time."""
    return Panel(
        usage=np.concatenate([np.asarray(panel.usage), np.asarray(later.usage)]),
        mask=np.concatenate([np.asarray(panel.mask), np.asarray(later.mask)]),
        static=np.concatenate([np.asarray(panel.static), np.asarray(later.static)]),
        churn=np.concatenate([np.asarray(panel.churn), np.asarray(later.churn)]),
        migration=np.concatenate([np.asarray(panel.migration), np.asarray(later.migration)]),
        ids=np.concatenate([np.asarray(panel.ids), np.asarray(later.ids)]),
        meta=panel.meta,
    )


# ---------------------------------------------------------------------------------------------
# Cross-fitting: a head never sees a feature learned from its own row


@dataclass
class CrossFit:
    """Per-row features (e.g. churn logits) from several encoders, each with its training rows.

    :meth:`out_of_fold` gives each requested row the mean of the features of the encoders that
    did **not** train on it and raises :class:`LeakageError` when a row has no such encoder, so a
    head trained on its output never sees a leaked embedding.
    """

    n_rows: int
    encoders: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, train_rows: np.ndarray, features: np.ndarray) -> CrossFit:
        """An encoder trained on ``train_rows``; ``features`` (n_rows, ...) over every row."""
        features = np.asarray(features, dtype=np.float64)
        if len(features) != self.n_rows:
            raise DataError(f"cross-fit: {len(features)} feature rows, expected {self.n_rows}")
        seen = np.zeros(self.n_rows, dtype=bool)
        seen[np.asarray(train_rows, dtype=np.int64)] = True
        self.encoders.append((seen, features))
        return self

    def out_of_fold(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not self.encoders:
            raise LeakageError("cross-fit: no encoder added")
        total = np.zeros((len(rows), *self.encoders[0][1].shape[1:]))
        count = np.zeros(len(rows))
        for seen, feats in self.encoders:
            fresh = ~seen[rows]
            total[fresh] += feats[rows[fresh]]
            count[fresh] += 1
        if (count == 0).any():
            raise LeakageError(
                f"cross-fit: {int((count == 0).sum())} rows have features only from encoders "
                "trained on them (a head over them would learn leaked embeddings)"
            )
        return total / count.reshape(-1, *([1] * (total.ndim - 1)))


# ---------------------------------------------------------------------------------------------
# Candidates


@dataclass
class FoldData:
    panel: Panel
    tensors: dict[str, torch.Tensor]
    features: np.ndarray  # window aggregates + static, every row
    device: torch.device
    seq_features: np.ndarray | None = None  # gpuseg.features.sequence, every row
    target: str = "churn"  # or "migration": what the candidates predict

    @property
    def y(self) -> np.ndarray:
        """The target's labels of every row: churn 0/1, or migration 0/1/2 (-1 unlabelled)."""
        return np.asarray(self.panel.migration if self.target == "migration" else self.panel.churn)


def _logits(model, fd: FoldData, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """The churn logits (n,) of ``rows``, or with ``fd.target`` migration its logits (n, 3)."""
    out = predict(model, fd.tensors, torch.as_tensor(rows, device=fd.device), batch_size, False)
    key = "migration_logits" if fd.target == "migration" else "churn_logit"
    return out[key].cpu().numpy().astype(np.float64)


def _train_logits(
    fd: FoldData,
    split: Split,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    rows: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Train on ``split`` with ``seed``; the churn (or migration) logits of ``rows``."""
    result = train_model(fd.panel, model_cfg, replace(train_cfg, seed=seed), fd.device, split=split)
    return _logits(result.model, fd, rows, 4 * train_cfg.batch_size)


def sequence_candidate(
    fd: FoldData,
    split: Split,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seeds: int = 1,
    seed: int = 0,
) -> dict:
    """gpuseg's sequence model on one fold: mean logit over ``seeds`` seeds, Platt on val
    (migration: the softmax of the mean migration logits, as a run scores)."""
    rows = np.concatenate([split.val, split.test])
    logit = np.mean(
        [_train_logits(fd, split, model_cfg, train_cfg, rows, seed + s) for s in range(seeds)],
        axis=0,
    )
    if fd.target == "migration":
        p = softmax(logit)  # (n_val + n_test, 3)
        return dict(proba=p[len(split.val) :], proba_val=p[: len(split.val)])
    y_val = np.asarray(fd.panel.churn)[split.val]
    platt = fit_platt(logit[: len(split.val)], y_val)
    p = calibrated(logit, platt)
    return dict(proba=p[len(split.val) :], proba_val=p[: len(split.val)])


def stack_candidate(
    fd: FoldData,
    split: Split,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    trials: int,
    seed: int = 0,
) -> dict:
    """Tuned XGBoost over window aggregates + the cross-fitted sequence logit (two halves)."""
    churn = np.asarray(fd.panel.churn)
    halves = train_test_split(
        split.train, test_size=0.5, stratify=churn[split.train], random_state=seed
    )
    n = len(churn)
    rows = np.concatenate([split.train, split.val, split.test])
    cross = CrossFit(n)
    for h, half in enumerate(halves):
        logits = np.zeros(n)
        part = Split(np.sort(half), split.val, split.test)
        logits[rows] = _train_logits(fd, part, model_cfg, train_cfg, rows, seed + 100 + h)
        cross.add(half, logits)
    X = {
        name: np.column_stack([_wide(fd, r), cross.out_of_fold(r)])
        for name, r in (("train", split.train), ("val", split.val), ("test", split.test))
    }
    head = TunedBooster("xgboost", n_trials=trials, random_state=seed).fit(
        X["train"], churn[split.train], X["val"], churn[split.val]
    )
    return dict(
        proba=head.predict_proba(X["test"])[:, 1],
        proba_val=head.predict_proba(X["val"])[:, 1],
        params=head.best_params_,
    )


def _wide(fd: FoldData, rows: np.ndarray) -> np.ndarray:
    """Window aggregates, static and (when computed) the sequence features of ``rows``."""
    if fd.seq_features is None:
        return fd.features[rows]
    return np.column_stack([fd.features[rows], fd.seq_features[rows]])


def blend_candidate(fd: FoldData, split: Split, parts: dict[str, dict]) -> dict:
    """Logistic regression over the logits of ``parts`` (candidates already run on this fold),
    fitted on their validation predictions: rows none of them trained on (the boosters did
    early-stop and tune on them, so their weights lean slightly optimistic;
    :func:`gpuseg.training.heads.fit_logit_blend`). Migration: a multinomial one over the parts'
    log-probabilities of the three classes."""
    names = sorted(parts)
    if fd.target == "migration":  # the same blend as model.head: blend's migration
        blend = ClassBlend.fit({n: parts[n]["proba_val"] for n in names}, fd.y[split.val])
        return dict(
            proba=blend.predict({n: parts[n]["proba"] for n in names}),
            proba_val=blend.predict({n: parts[n]["proba_val"] for n in names}),
            params=blend.part_weights(4),
        )
    V = np.column_stack([logit(parts[n]["proba_val"]) for n in names])
    T = np.column_stack([logit(parts[n]["proba"]) for n in names])
    lr = fit_logit_blend(V, np.asarray(fd.panel.churn)[split.val])
    return dict(
        proba=lr.predict_proba(T)[:, 1],
        proba_val=lr.predict_proba(V)[:, 1],
        params=dict(zip(names, lr.coef_[0].round(4).tolist(), strict=True)),
    )


def auto_candidate(fd: FoldData, split: Split, parts: dict[str, dict]) -> dict:
    """The candidate of ``parts`` (run on this fold) with the best validation ROC-AUC, as
    ``model.head: auto`` chooses a run's churn head; the sequence model wins ties."""
    y_val = np.asarray(fd.panel.churn)[split.val]
    aucs = {n: roc_auc(y_val, parts[n]["proba_val"]) for n in AUTO_PARTS if n in parts}
    chosen = max(aucs, key=lambda n: (aucs[n], n == "sequence"))
    return dict(parts[chosen]) | dict(
        params=dict(chose=chosen) | {n: round(a, 4) for n, a in aucs.items()}
    )


def tabm_candidate(
    fd: FoldData,
    split: Split,
    seed: int = 0,
    spec: TabMSpec = TabMSpec(),
    fit: TabMFit = TabMFit(),
) -> dict:
    """TabM on the boosters' features of one fold, early-stopped on validation."""
    churn = np.asarray(fd.panel.churn)
    X = fd.features
    res = fit_tabm(
        X[split.train],
        churn[split.train],
        X[split.val],
        churn[split.val],
        spec,
        fit,
        seed=seed,
        device=fd.device,
    )
    return dict(
        proba=tabm_proba(res.model, X[split.test]),
        proba_val=tabm_proba(res.model, X[split.val]),
        params=dict(
            val_auc=round(res.val_auc, 4), best_epoch=res.best_epoch, epochs_run=res.epochs_run
        ),
    )


def _class_proba(model: Any, X: np.ndarray) -> np.ndarray:
    """(n, 3) migration class probabilities of a fitted classifier (absent classes 0)."""
    out = np.zeros((len(X), len(MIGRATION_NAMES)))
    out[:, np.asarray(model.classes_).astype(int)] = model.predict_proba(X)
    return out


def baseline_candidate(name: str, fd: FoldData, split: Split, trials: int, seed: int = 0) -> dict:
    """One feature baseline on one fold: grid-tuned (logistic, hist_gb) or Optuna-tuned.
    Migration: the same models multiclass (the grids' migration column), tuned alike on the
    validation macro one-vs-rest ROC-AUC."""
    migration = fd.target == "migration"
    y = fd.y.astype(int) if migration else np.asarray(fd.panel.churn)
    feats = (lambda r: _wide(fd, r)) if name == "xgboost_seq" else (lambda r: fd.features[r])
    X_tr, X_va, X_te = (feats(p) for p in (split.train, split.val, split.test))
    y_tr, y_va = y[split.train], y[split.val]

    def proba(model: Any, X: np.ndarray) -> np.ndarray:  # (n,) churn or (n, 3) migration
        if migration:
            return _class_proba(model, X)
        return model.predict_proba(X)[:, 1].astype(np.float64)

    if name in ("xgboost", "lightgbm", "xgboost_seq"):
        kind = "xgboost" if name == "xgboost_seq" else name
        model = TunedBooster(kind, n_trials=trials, random_state=seed).fit(X_tr, y_tr, X_va, y_va)
        params = model.best_params_
    else:
        cls, churn_grid, migration_grid = GRIDS[name]
        seeded = "random_state" in inspect.signature(cls.__init__).parameters

        def make(**kw: Any) -> Any:
            return cls(**kw, random_state=seed) if seeded else cls(**kw)

        def score(model: Any, X: np.ndarray, yv: np.ndarray) -> float:
            return macro_roc_auc(yv, proba(model, X)) if migration else roc_auc(yv, proba(model, X))

        grid = migration_grid if migration else churn_grid
        model, params, _ = tune(make, grid, X_tr, y_tr, X_va, y_va, score)
    return dict(proba=proba(model, X_te), proba_val=proba(model, X_va), params=params)


# ---------------------------------------------------------------------------------------------
# Intervals


def _t_quantile(df: int, level: float) -> float:
    return float(student_t.ppf(1 - (1 - level) / 2, df))


def fold_interval(values: Sequence[float], level: float = 0.95, overlap: float = 0.0) -> dict:
    """Mean of per-fold values with a t interval over folds (value, lo, hi, sd).

    ``overlap`` > 0 (repeated K-fold: ``1 / (K - 1)``, the test rows over the training rows)
    widens the interval by the corrected resampled t (Nadeau and Bengio 2003; Bouckaert and Frank
    2004): the variance of the mean is ``sd**2 * (1 / J + overlap)`` over the J folds, not
    ``sd**2 / J``, because folds of different repeats reuse the same rows and their values are
    not independent; without it the interval would shrink with every repeat though no row was
    added."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return dict(value=mean, lo=None, hi=None, sd=None)
    sd = float(v.std(ddof=1))
    half = _t_quantile(len(v) - 1, level) * sd * math.sqrt(1 / len(v) + overlap)
    return dict(value=mean, lo=mean - half, hi=mean + half, sd=sd)


def repeat_overlap(folds: int, repeats: int) -> float:
    """The ``overlap`` of :func:`fold_interval` for ``folds`` x ``repeats`` splits: 0 for one
    repeat (the plain t interval over folds), else test over training rows, ``1 / (folds - 1)``."""
    return 0.0 if repeats <= 1 else 1.0 / (folds - 1)


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    ys: Sequence[np.ndarray],
    pa: Sequence[np.ndarray],
    pb: Sequence[np.ndarray],
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    rows: Sequence[np.ndarray] | None = None,
) -> tuple[float, float]:
    """Percentile interval of mean-over-folds ``metric(a) - metric(b)``, test rows resampled
    within each fold (the same rows for a and b).

    With ``rows`` (each fold's test rows as subscriber numbers; repeated K-fold, where every
    subscriber is tested once per repeat) subscribers are resampled instead, once per
    resample for all folds: a subscriber drawn k times counts k times in every fold that tests
    it, so the repeats' shared rows are not taken for independent evidence."""
    rng = np.random.default_rng(seed)
    if rows is not None:
        subscribers, where = np.unique(np.concatenate(rows), return_inverse=True)
        where = np.split(where, np.cumsum([len(r) for r in rows])[:-1])
    values = []
    for _ in range(n_boot):
        diffs = []
        if rows is not None:
            n = len(subscribers)
            counts = rng.multinomial(n, np.full(n, 1 / n))  # (S,) draws of each subscriber
        for f, (y, a, b) in enumerate(zip(ys, pa, pb, strict=True)):
            if rows is None:
                idx = rng.integers(0, len(y), len(y))
            else:
                idx = np.repeat(np.arange(len(y)), counts[where[f]])
            try:
                diffs.append(metric(y[idx], a[idx]) - metric(y[idx], b[idx]))
            except ValueError:  # one class in the resample
                break
        else:
            values.append(float(np.mean(diffs)))
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------
# The protocol


def compare(
    panel: Panel,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    folds: int = 5,
    repeats: int = 1,
    candidates: Sequence[str] | None = None,
    head: str = "sequence",
    trials: int = 15,
    seeds: int = 1,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    shuffle_labels: bool = False,
    device: str | torch.device = "cpu",
    out_path: str | Path | None = None,
    on_fold: Callable[[dict], None] | None = None,
    target: str = "churn",
    tabm_spec: TabMSpec = TabMSpec(),
    tabm_fit: TabMFit = TabMFit(),
    test_panel: Panel | None = None,
    test_panel_name: str | None = None,
    predictions_path: str | Path | None = None,
) -> dict:
    """Run every candidate on the same folds and compare ``head`` with the others.

    ``shuffle_labels`` permutes the target's labels among labelled rows first (seeded): a control
    whose every candidate must score ROC-AUC 0.5 up to noise. ``target``: ``churn``, or
    ``migration`` (value-tier migration, three classes; see the module docstring). Returns (and
    writes to ``out_path`` as JSON) the per-fold metrics and seconds, the summary per candidate
    and the paired differences; see the module docstring. ``tabm_spec`` and ``tabm_fit``: the
    ``tabm`` candidate's architecture and training. ``predictions_path``: also write
    :func:`save_predictions`'s .npz there.

    ``test_panel`` (named ``test_panel_name`` in the result): out of time, the test rows are
    that later panel's labelled subscribers (see the module docstring); the train and validation
    rows stay ``panel``'s. The predictions' test rows are then the run panel's own fold test rows
    followed by the later panel's (numbered from ``len(panel)``).
    """
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1 (the sequence model's seeds averaged), got {seeds}")
    if n_boot < 0:
        raise ConfigError(f"boot must be >= 0 (0: no bootstrap interval), got {n_boot}")
    names = list(candidates) if candidates is not None else default_candidates()
    for name in names:
        if name not in CANDIDATES:
            raise ConfigError(f"unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")
        if target == "migration" and name in CHURN_ONLY:
            allowed = ", ".join(c for c in CANDIDATES if c not in CHURN_ONLY)
            raise ConfigError(
                f"candidate {name!r} is churn-only (a model.head churn head, or TabM's binary "
                f"fit); with target migration "
                f"choose from {allowed}"
            )
        if name in ("xgboost", "lightgbm", "stack", "xgboost_seq"):
            needed = "lightgbm" if name == "lightgbm" else "xgboost"
            if not booster_available(needed):
                raise ConfigError(f"candidate {name!r} needs the {needed} package")
    if head not in names:
        raise ConfigError(f"head {head!r} is not among the candidates {names}")
    names = [head] + [n for n in names if n != head]
    if any(b in names for b in BLENDS) and len([n for n in names if n not in DERIVED]) < 2:
        raise ConfigError("a blend needs at least two other candidates")
    for derived in ("auto", "head_blend", "head_blend_tabm"):
        if derived in names and "sequence" not in names:
            raise ConfigError(f"candidate {derived!r} is built on the sequence model: add sequence")
    if "head_blend_tabm" in names and "tabm" not in names:
        raise ConfigError("candidate 'head_blend_tabm' has a TabM part: add tabm")
    device = torch.device(device)
    t0 = time.perf_counter()
    metrics = TARGET_METRICS[target]
    n_run = len(panel)  # the run panel's rows; a test panel's follow them
    if test_panel is not None:
        test_panel_name = test_panel_name or "the test panel"
        check_test_panel(panel, test_panel, test_panel_name)
        if target == "migration" and (np.asarray(test_panel.migration) >= 0).sum() == 0:
            raise DataError(f"{test_panel_name}: no migration labels to test on")
        panel = stack_panels(panel, test_panel)
    if target == "migration":
        # rows with both labels: the sequence model trains on churn too
        labels = np.where(np.asarray(panel.churn) >= 0, np.asarray(panel.migration), -1)
        labels = labels.astype(np.int8)
        if (labels >= 0).sum() == 0:
            raise DataError(no_migration_labels(panel.meta))
    else:
        labels = np.asarray(panel.churn).astype(np.int8)
    if shuffle_labels:  # within each panel
        labels = labels.copy()
        rng = np.random.default_rng(seed + 7)
        for lo, hi in ((0, n_run), (n_run, len(labels))):
            labelled = lo + np.flatnonzero(labels[lo:hi] >= 0)
            labels[labelled] = rng.permutation(labels[labelled])
    if target == "migration":
        panel = replace(panel, migration=labels)
        class_names: tuple[str, ...] | None = MIGRATION_NAMES
    else:
        panel = replace(panel, churn=labels)
        class_names = None
    inner = stratified_folds(labels[:n_run], folds, repeats, train_cfg.val_frac, seed, class_names)
    splits = inner
    if test_panel is not None:
        splits = out_of_time_splits(inner, labels[n_run:], n_run, folds, seed, class_names)
    features = window_features(panel)
    seq = None
    if any(n in names for n in ("stack", "xgboost_seq")):
        seq = sequence_features(panel)
    fd = FoldData(panel, to_device(panel, device), features, device, seq, target)
    feature_seconds = time.perf_counter() - t0

    per_fold: list[dict] = []
    kept: list[dict[str, dict]] = []  # each fold's candidates' results (save_predictions)
    scored: list[Split] = []  # the rows they scored
    ys: list[np.ndarray] = []
    probas: dict[str, list[np.ndarray]] = {n: [] for n in names}
    ys_in: list[np.ndarray] = []  # out of time: the run panel's own fold test rows, in time
    test_rows: list[np.ndarray] = []  # each fold's test rows (panel rows), and in time
    test_rows_in: list[np.ndarray] = []
    probas_in: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f, (oot_split, own) in enumerate(zip(splits, inner, strict=True)):
        y = labels[oot_split.test].astype(int)
        ys.append(y)
        test_rows.append(oot_split.test)
        record: dict[str, Any] = dict(
            fold=f, n_train=len(oot_split.train), n_val=len(oot_split.val), n_test=len(y)
        )
        # out of time the candidates also score the fold's own test rows (in front): the in-time
        # figures of the very same models, at the cost of their predictions only
        k = len(own.test) if test_panel is not None else 0
        split = oot_split
        if k:
            split = Split(oot_split.train, oot_split.val, np.r_[own.test, oot_split.test])
            ys_in.append(labels[own.test].astype(int))
            test_rows_in.append(own.test)
            record["n_test_in_time"] = k
        done: dict[str, dict] = {}
        for name in sorted(names, key=lambda n: n in DERIVED):  # blends, auto after their parts
            t1, c1 = time.perf_counter(), time.process_time()
            fold_seed = seed + f
            if name in BLENDS:
                parts = {
                    n: r
                    for n, r in done.items()
                    if n not in DERIVED and (name == "blend" or n in BASELINES)
                }
                res = blend_candidate(fd, split, parts)
            elif name == "auto":
                res = auto_candidate(fd, split, done)
            elif name in ("head_blend", "head_blend_tabm"):
                chosen = HEAD_BLEND_PARTS if target == "churn" else MIGRATION_HEAD_BLEND_PARTS
                chosen += ("tabm",) if name == "head_blend_tabm" else ()
                parts = {n: done[n] for n in chosen if n in done}
                res = blend_candidate(fd, split, parts)
            elif name == "sequence":
                res = sequence_candidate(fd, split, model_cfg, train_cfg, seeds, fold_seed)
            elif name == "stack":
                res = stack_candidate(fd, split, model_cfg, train_cfg, trials, fold_seed)
            elif name == "tabm":
                res = tabm_candidate(fd, split, fold_seed, tabm_spec, tabm_fit)
            else:
                res = baseline_candidate(name, fd, split, trials, fold_seed)
            done[name] = res
            p = res["proba"][k:]
            probas[name].append(p)
            record[name] = {m: fn(y, p) for m, fn in metrics.items()} | dict(
                seconds=time.perf_counter() - t1,
                cpu_seconds=time.process_time() - c1,
                params=res.get("params"),
            )
            if k:
                probas_in[name].append(res["proba"][:k])
                record[name]["in_time"] = {
                    m: fn(ys_in[-1], probas_in[name][-1]) for m, fn in metrics.items()
                }
        per_fold.append(record)
        if predictions_path is not None:
            kept.append(done)
            scored.append(split)  # out of time: the fold's own test rows, then the later ones
        if on_fold is not None:
            on_fold(record)

    overlap = repeat_overlap(folds, repeats)
    summary = {
        name: {m: fold_interval([r[name][m] for r in per_fold], level, overlap) for m in metrics}
        | {k: float(sum(r[name][k] for r in per_fold)) for k in ("seconds", "cpu_seconds")}
        for name in names
    }
    boot = dict(n_boot=n_boot, seed=seed, level=level, overlap=overlap)
    by_subscriber = repeats > 1  # a repeated K-fold bootstraps subscribers, not fold rows
    paired = paired_differences(
        metrics, names, per_fold, ys, probas, **boot, rows=test_rows if by_subscriber else None
    )
    in_time = None
    if test_panel is not None:
        values = [{n: r[n]["in_time"] for n in names} for r in per_fold]
        in_time = dict(
            n_test=int(sum(len(y) for y in ys_in)),
            summary={
                n: {m: fold_interval([v[n][m] for v in values], level, overlap) for m in metrics}
                for n in names
            },
            difference=paired_differences(
                metrics,
                names,
                values,
                ys_in,
                probas_in,
                **boot,
                rows=test_rows_in if by_subscriber else None,
            ),
        )
    baselines = [n for n in names if n in BASELINES or n == "blend_baselines"]
    best = None
    primary = PRIMARY[target]
    if baselines:
        b = max(baselines, key=lambda n: summary[n][primary]["value"])
        best = (
            dict(name=b)
            | {primary: summary[b][primary]["value"]}
            | (dict(head_minus_best=paired[b][primary]) if b != head else {})
        )
    rates = _label_rates(labels[:n_run], target)
    later = None
    if test_panel is not None:
        later = dict(
            path=test_panel_name,
            subscribers=len(labels) - n_run,
            n_labelled=int((labels[n_run:] >= 0).sum()),
        ) | _label_rates(labels[n_run:], target)
    result = json_ready(
        dict(
            target=target,
            head=head,
            candidates=names,
            folds=folds,
            repeats=repeats,
            trials=trials,
            seeds=seeds,
            n_boot=n_boot,
            level=level,
            seed=seed,
            shuffle_labels=shuffle_labels,
            out_of_time=test_panel is not None,
            test_panel=later,
            n_labelled=int((labels[:n_run] >= 0).sum()),
            **rates,
            shape=dict(
                subscribers=n_run,
                periods=int(panel.usage.shape[1]),
                metrics=int(panel.usage.shape[2]),
                static=int(panel.static.shape[1]),
                features=int(features.shape[1]),
            ),
            per_fold=per_fold,
            summary=summary,
            paired=dict(reference=head, difference=paired),
            in_time=in_time,
            best_baseline=best,
            seconds=dict(features=feature_seconds, total=time.perf_counter() - t0),
        )
    )
    if out_path is not None:
        write_json_atomic(Path(out_path), result)
    if predictions_path is not None:
        save_predictions(predictions_path, scored, labels, kept)
    return result


def paired_differences(
    metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]],
    names: Sequence[str],
    values: Sequence[dict],
    ys: Sequence[np.ndarray],
    probas: dict[str, list[np.ndarray]],
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    overlap: float = 0.0,
    rows: Sequence[np.ndarray] | None = None,
) -> dict[str, dict]:
    """``names[0]`` minus each other name, per metric: the mean over folds with a t interval
    (``values``: per fold, name -> metric -> value; ``overlap``: see :func:`fold_interval`) and
    the paired bootstrap interval (``ys`` and ``probas[name]``: per fold, the test labels and
    scores; ``rows``: see :func:`paired_bootstrap`)."""
    head, out = names[0], {}
    for other in names[1:]:
        out[other] = {}
        for m, fn in metrics.items():
            cell = fold_interval([v[head][m] - v[other][m] for v in values], level, overlap)
            lo, hi = paired_bootstrap(
                fn, ys, probas[head], probas[other], n_boot, seed, level, rows
            )
            out[other][m] = cell | dict(boot_lo=lo, boot_hi=hi)
    return out


def _label_rates(labels: np.ndarray, target: str) -> dict:
    """``churn_rate``, or with target migration ``class_rates``, of the labelled rows."""
    y = labels[labels >= 0]
    if target == "migration":
        return dict(class_rates={c: float((y == k).mean()) for k, c in enumerate(MIGRATION_NAMES)})
    return dict(churn_rate=float(y.mean()))


def save_predictions(
    path: str | Path, splits: Sequence[Split], labels: np.ndarray, kept: list[dict[str, dict]]
) -> None:
    """Every candidate's probabilities per fold as an .npz: ``fold{f}_{val,test}_rows`` (panel
    rows), ``fold{f}_{val,test}_y`` (labels) and ``fold{f}_{name}_{val,test}`` ((n,) churn or
    (n, 3) migration probabilities, float32), so that a blend can be studied on the folds'
    validation rows and checked on their test rows without running the candidates again."""
    arrays: dict[str, np.ndarray] = {}
    for f, (split, done) in enumerate(zip(splits, kept, strict=True)):
        for part, rows in (("val", split.val), ("test", split.test)):
            arrays[f"fold{f}_{part}_rows"] = np.asarray(rows, dtype=np.int64)
            arrays[f"fold{f}_{part}_y"] = labels[rows].astype(np.int8)
        for name, res in done.items():
            arrays[f"fold{f}_{name}_test"] = np.asarray(res["proba"], dtype=np.float32)
            if "proba_val" in res:
                arrays[f"fold{f}_{name}_val"] = np.asarray(res["proba_val"], dtype=np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(Path(path), write)


def default_candidates(head: str = "sequence") -> list[str]:
    """The sequence model and every baseline that runs here (boosters when installed); with a
    blend ``head``, it and the baselines' blend (the strongest baseline) as well."""
    names = ["sequence", "logistic", "hist_gb"] + [
        k for k in ("xgboost", "lightgbm") if booster_available(k)
    ]
    if head in ("head_blend", "blend"):
        names = [head, *names, "blend_baselines"]
    elif head not in names:
        names = [head, *names]
    return names


def _ci(cell: dict, digits: int = 4, lo: str = "lo", hi: str = "hi") -> str:
    if cell.get(lo) is None or cell.get(hi) is None:
        return f"{cell['value']:+.{digits}f}"
    return f"{cell['value']:+.{digits}f} [{cell[lo]:+.{digits}f}, {cell[hi]:+.{digits}f}]"


def no_migration_labels(meta: dict) -> str:
    """One line: why a panel has no migration labels (for ``--target migration``)."""
    derived = meta.get("labels") or {}
    if derived.get("definition"):
        return (
            "target migration: the panel has no migration labels: they are derived from a "
            "revenue series (value tiers), and the usage has no revenue metric "
            "(data.revenue_metric names it)"
        )
    return (
        "target migration: the panel has no migration labels: the labels have no migration "
        "column (data.migration_column) and none can be derived without a revenue series over "
        "periods (labels: null with data.churn_definition and data.revenue_metric)"
    )


_METRIC_NAMES = {"roc_auc": "ROC-AUC", "macro_roc_auc": "macro ROC-AUC"}


def verdict(result: dict) -> str:
    """One line: which baseline is ahead of the reported candidate and by how much, or not."""
    best, head = result.get("best_baseline"), result["head"]
    migration = result.get("target") == "migration"
    what = _METRIC_NAMES["macro_roc_auc" if migration else "roc_auc"]
    if not best:
        return f"{head}: no baseline was run"
    if "head_minus_best" not in best:
        return f"the reported candidate is the baseline {head} itself"
    d = best["head_minus_best"]
    if d["value"] >= 0:
        state = "a real win" if (d.get("lo") or 0) > 0 else "level within the interval"
        return (
            f"{head} is ahead of the best baseline {best['name']} by {d['value']:+.4f} {what} "
            f"({state}; fold interval {_ci(d)})"
        )
    state = "a real loss" if (d.get("hi") or 0) < 0 else "within the interval"
    hint = (
        f"; a run scores churn with it under -s model.head={best['name']} (or auto)"
        if best["name"] in ("xgboost", "lightgbm") and not migration
        else ""
    )
    if migration and head != "head_blend":
        hint = (
            "; a run scores migration with the blend of the sequence model and the baselines "
            "under -s model.head=blend (measured here as head_blend)"
        )
    return (
        f"{best['name']} is AHEAD of {head} by {-d['value']:.4f} {what} ({state}; {head} minus "
        f"{best['name']} {_ci(d)}){hint}"
    )


def _out_of_time_line(result: dict) -> str:
    """The markdown header's out-of-time sentence ("" in time)."""
    later = result.get("test_panel")
    if not result.get("out_of_time") or not later:
        return ""
    if "class_rates" in later:
        rates = " / ".join(f"{c} {r:.3f}" for c, r in later["class_rates"].items())
    else:
        rates = f"churn rate {later['churn_rate']:.3f}"
    return (
        f"\n\nOUT OF TIME: train and validation rows from the run's panel, test rows from the "
        f"later panel {later['path']} ({later['n_labelled']} labelled, {rates}; cut into "
        f"{result['folds']} stratified parts, fold f tests on part f)"
    )


def _intervals_note(result: dict) -> str:
    """``95% intervals over the K folds`` and what they are corrected for."""
    return (
        f"{result['level'] * 100:g}% intervals over the {result['folds'] * result['repeats']} folds"
        + (
            " (t intervals corrected for the repeats' shared rows, Nadeau and Bengio 2003; the "
            "bootstrap resamples subscribers across repeats)"
            if result["repeats"] > 1
            else ""
        )
        + (" (SHUFFLED LABELS: a control)" if result.get("shuffle_labels") else "")
    )


def comparison_markdown(result: dict) -> str:
    """Mean (t interval over folds) per candidate; paired differences; the verdict."""
    if result.get("target") == "migration":
        return migration_markdown(result)
    s = result["summary"]
    lines = [
        f"{result['folds']}-fold x {result['repeats']} stratified splits by subscriber "
        f"({result['n_labelled']} labelled, churn rate {result['churn_rate']:.3f}); "
        + _intervals_note(result)
        + _out_of_time_line(result),
        "",
        "| candidate | ROC-AUC | Lift@10% | wall s (all folds) | CPU s |",
        "|---|---|---|---|---|",
    ]
    for name in result["candidates"]:
        a, lift = s[name]["roc_auc"], s[name]["top_decile_lift"]
        lo, hi = (a[b] if a[b] is not None else a["value"] for b in ("lo", "hi"))
        lines.append(
            f"| {name} | {a['value']:.4f} [{lo:.4f}, {hi:.4f}] | {lift['value']:.3f} "
            f"| {s[name]['seconds']:.1f} | {s[name]['cpu_seconds']:.1f} |"
        )
    diff = result["paired"]["difference"]
    if diff:
        lines += [
            "",
            f"| {result['head']} minus | ROC-AUC [fold t interval] | ROC-AUC [bootstrap] | "
            "Lift@10% [fold t interval] |",
            "|---|---|---|---|",
        ]
        for other, cell in diff.items():
            a, lift = cell["roc_auc"], cell["top_decile_lift"]
            lines.append(
                f"| {other} | {_ci(a)} | {_ci(a, lo='boot_lo', hi='boot_hi')} | {_ci(lift, 3)} |"
            )
    return "\n".join(lines + in_time_lines(result) + ["", verdict(result)]) + "\n"


def in_time_lines(result: dict) -> list[str]:
    """Out of time: the primary metric in time (the run panel's own fold test rows, the same
    models) beside out of time, and the head's differences in both (markdown table lines)."""
    in_time = result.get("in_time")
    if not in_time:
        return []
    primary = PRIMARY[result.get("target", "churn")]
    what, head = _METRIC_NAMES[primary], result["head"]
    lines = [
        "",
        f"In time, for reference: the same models on the run panel's own fold test rows "
        f"({in_time['n_test']} labelled; {what}, fold t intervals):",
        "",
        f"| candidate | {what} in time | {what} out of time | {head} minus, in time "
        f"| {head} minus, out of time |",
        "|---|---|---|---|---|",
    ]
    for name in result["candidates"]:
        a, b = in_time["summary"][name][primary], result["summary"][name][primary]
        d_in = in_time["difference"].get(name, {}).get(primary)
        d_out = result["paired"]["difference"].get(name, {}).get(primary)
        cells = [_ci(d) if d else "" for d in (d_in, d_out)]
        lines.append(f"| {name} | {a['value']:.4f} | {b['value']:.4f} | {cells[0]} | {cells[1]} |")
    return lines


def migration_markdown(result: dict) -> str:
    """:func:`comparison_markdown` of a ``target="migration"`` result."""
    s = result["summary"]
    rates = " / ".join(f"{c} {r:.3f}" for c, r in result["class_rates"].items())
    lines = [
        f"migration (down / stay / up): {result['folds']}-fold x {result['repeats']} splits by "
        f"subscriber stratified by class ({result['n_labelled']} labelled, {rates}); "
        + _intervals_note(result)
        + _out_of_time_line(result),
        "",
        "| candidate | macro ROC-AUC (one-vs-rest) | down ROC-AUC | down Lift@10% "
        "| wall s (all folds) | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for name in result["candidates"]:
        a, d, lift = (s[name][m] for m in MIGRATION_METRICS)
        lo, hi = (a[b] if a[b] is not None else a["value"] for b in ("lo", "hi"))
        lines.append(
            f"| {name} | {a['value']:.4f} [{lo:.4f}, {hi:.4f}] | {d['value']:.4f} "
            f"| {lift['value']:.3f} | {s[name]['seconds']:.1f} | {s[name]['cpu_seconds']:.1f} |"
        )
    diff = result["paired"]["difference"]
    if diff:
        lines += [
            "",
            f"| {result['head']} minus | macro ROC-AUC [fold t interval] | macro ROC-AUC "
            "[bootstrap] | down ROC-AUC [fold t interval] | down ROC-AUC [bootstrap] "
            "| down Lift@10% [fold t interval] |",
            "|---|---|---|---|---|---|",
        ]
        for other, cell in diff.items():
            a, d, lift = (cell[m] for m in MIGRATION_METRICS)
            boot = dict(lo="boot_lo", hi="boot_hi")
            lines.append(
                f"| {other} | {_ci(a)} | {_ci(a, **boot)} | {_ci(d)} | {_ci(d, **boot)} "
                f"| {_ci(lift, 3)} |"
            )
    return "\n".join(lines + in_time_lines(result) + ["", verdict(result)]) + "\n"


def result_name(target: str, out_of_time: bool = False) -> str:
    """The file :func:`compare_stage` writes in the run directory for ``target`` (out of time:
    ``compare_oot.json``, ``compare_migration_oot.json``)."""
    stem = "compare" if target == "churn" else f"compare_{target}"
    return f"{stem}_oot.json" if out_of_time else f"{stem}.json"


def compare_stage(cfg: Any, backend: Any, run_dir: Path, **kw: Any) -> dict:
    """:func:`compare` on the run's panel, made first when missing (synthetic world, prepare).

    Writes ``run_dir/compare.json`` (``target`` migration: ``compare_migration.json``; out of
    time ``..._oot.json``) unless ``out_path`` is given in ``kw``. ``test_panel_dir``: out of
    time, the later panel to test on (see the module docstring). A panel made from input tables
    that have changed since is refused (run ``gpuseg prepare`` again).
    """
    if not (run_dir / "panel" / "meta.json").is_file():
        synthetic = cfg.synth is not None and not cfg.data.usage
        if synthetic and not (world_dir(cfg, run_dir) / "labels.parquet").is_file():
            synth_stage(cfg, run_dir)
        prepare_stage(with_world_data(cfg, run_dir), backend, run_dir)
    check_stage(cfg, run_dir, "prepare")
    panel = load_panel(run_dir / "panel", mmap=False)
    test_panel_dir = kw.pop("test_panel_dir", None)
    if test_panel_dir is not None:
        kw["test_panel"] = load_panel(test_panel_dir, mmap=False)
        kw["test_panel_name"] = str(test_panel_dir)
    oot = test_panel_dir is not None
    kw.setdefault("out_path", run_dir / result_name(kw.get("target", "churn"), oot))
    if kw.get("head") is None:  # the model the config scores with, and what it is built on
        head = scoring_candidate(cfg.model.head, kw.get("target", "churn"))
        given = kw.get("candidates")
        if given is None:
            kw["candidates"] = default_candidates(head)
        elif head not in given:  # the candidates asked for: sequence first, as before
            head = "sequence" if "sequence" in given else given[0]
        kw["head"] = head
    return compare(panel, cfg.model, cfg.train, device=backend.torch_device, seed=cfg.seed, **kw)


def scoring_candidate(model_head: str, target: str = "churn") -> str:
    """The candidate that measures what ``model.head`` scores a run with (``blend``:
    ``head_blend``; ``auto``, a churn head, is ``sequence`` for migration)."""
    name = {"blend": "head_blend"}.get(model_head, model_head)
    return "sequence" if target == "migration" and name in CHURN_ONLY else name
