"""Score with the winner: a tuned gradient-boosting churn head saved next to the sequence model.

``model.head`` chooses what a run's ``churn_prob`` comes from:

- ``sequence`` (the config default; the shipped configs and ``gpuseg init`` choose ``blend``): the
  sequence model's calibrated churn logit;
- ``xgboost`` / ``lightgbm``: a :class:`gpuseg.evaluate.boosting.TunedBooster` over the window
  aggregates and static attributes (:func:`gpuseg.features.aggregates.window_features`, what
  ``gpuseg evaluate`` and ``gpuseg compare`` call the baselines), trained on the run's training
  rows and tuned on its validation rows;
- ``auto``: whichever of those has the best validation ROC-AUC (installed boosters only);
- ``blend``: a logistic regression over the validation logits of the sequence model, the
  logistic baseline, scikit-learn's HistGradientBoosting (saved as plain arrays,
  :class:`gpuseg.evaluate.trees.HistGBTrees`) and the installed boosters (:class:`BlendHead`;
  weights >= 0 unless free ones predict better out of fold, :func:`fit_logit_blend`).
  :func:`fit_blend` can add TabM (:mod:`gpuseg.model.tabular`) on the same features as a part
  (``tabm=True``); the head does not, since TabM did not make the blend better on the real
  tables (RESULTS.md, issue 15 session 9). Where the run has migration labels (all three classes
  in its training and validation rows) the blend also gives the migration probabilities
  (:class:`MigrationBlend`): a multinomial logistic regression (:class:`ClassBlend`, the same as
  ``gpuseg compare --target migration``'s blends) over the log class probabilities of the
  sequence model's migration head and of multiclass logistic and booster baselines fitted on the
  training rows, with class-decision weights for macro-F1 fitted on the blend's out-of-fold
  validation probabilities.

The head is saved in the boosters' own formats (XGBoost JSON, LightGBM text model), TabM as
safetensors and the rest as JSON, never pickled, with ``head.json`` naming its kind and feature
count; a missing or damaged part is a :class:`gpuseg.errors.RunDirError`. Embeddings and
segments always come from the sequence model, and migration does too for every head but a blend
with migration labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from gpuseg.data.panel import Panel
from gpuseg.errors import ConfigError, DataError, RunDirError
from gpuseg.evaluate.baselines import GRIDS, tune
from gpuseg.evaluate.boosting import TunedBooster, booster_available
from gpuseg.evaluate.metrics import (
    MIGRATION_NAMES,
    churn_metrics,
    fit_decision_weights,
    macro_roc_auc,
    roc_auc,
)
from gpuseg.evaluate.trees import HistGBTrees
from gpuseg.features.aggregates import window_stats
from gpuseg.features.window import signed_log1p
from gpuseg.io.store import atomic_write, read_json, write_json_atomic
from gpuseg.model.tabular import TabM, TabMSpec
from gpuseg.training.calibration import calibrated, softmax
from gpuseg.training.loop import predict, to_device
from gpuseg.training.tabular import TabMFit, fit_tabm, tabm_proba

HEAD_FILE = "head.json"
MODEL_FILES = {"xgboost": "head.xgb.json", "lightgbm": "head.lgb.txt"}
LOGISTIC_FILE = "head.logistic.json"
HIST_GB_FILE = "head.hist_gb.json"
TABM_FILE = "head.tabm.safetensors"
# model.head: blend's migration parts (multiclass: down / stay / up)
MIGRATION_FILES = {
    "xgboost": "head.migration.xgb.json",
    "lightgbm": "head.migration.lgb.txt",
    "logistic": "head.migration.logistic.json",
}
HEAD_FILES = (
    HEAD_FILE,
    LOGISTIC_FILE,
    HIST_GB_FILE,
    TABM_FILE,
    *MODEL_FILES.values(),
    *MIGRATION_FILES.values(),
)
HEADS = ("sequence", "xgboost", "lightgbm", "auto", "blend")
TARGETS = ("churn", "migration")


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass
class LogitBlend:
    """A logistic regression over the parts' logits, fitted by :func:`fit_logit_blend`; the
    fields and ``predict_proba`` read like scikit-learn's ``LogisticRegression``."""

    coef_: np.ndarray  # (1, P)
    intercept_: np.ndarray  # (1,)
    nonneg: bool  # whether the weights were held >= 0

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64) @ self.coef_[0] + self.intercept_[0]  # (n,)
        p = expit(z)
        return np.column_stack([1.0 - p, p])


def _row_log_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-log p(y | logit z) per row, computed stably."""
    return np.logaddexp(0.0, z) - y * z


def _blend_fit(V: np.ndarray, y: np.ndarray, nonneg: bool, c: float) -> np.ndarray:
    """(P + 1,) weights and intercept minimising the log-loss summed over the rows plus
    ``|w|^2 / (2 c)`` (scikit-learn's ``LogisticRegression(C=c)`` objective, the intercept not
    penalised), with ``nonneg`` subject to w >= 0 (L-BFGS-B)."""
    n_parts = V.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:n_parts], theta[n_parts]
        z = V @ w + b  # (V,)
        r = expit(z) - y  # d nll / dz
        grad = np.append(V.T @ r + w / c, r.sum())
        return float(_row_log_loss(z, y).sum() + w @ w / (2 * c)), grad

    start = np.append(np.full(n_parts, 1.0 / n_parts), 0.0)  # the mean of the parts' logits
    bounds = [(0.0, None) if nonneg else (None, None)] * n_parts + [(None, None)]
    return minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x


def fit_logit_blend(
    logits_val: np.ndarray, y_val: np.ndarray, c: float = 1.0, folds: int = 5, seed: int = 0
) -> LogitBlend:
    """The churn blend of ``model.head: blend`` and of ``gpuseg compare``: a logistic regression
    (:func:`_blend_fit`, C = ``c``) over the parts' validation logits (V, P), with weights held
    >= 0 (stacking with non-negative weights, Breiman 1996), or free where their log-loss out
    of fold, over ``folds`` stratified folds of the validation rows, is lower by more than one
    standard error of the per-row difference (the one-standard-error rule).
    The parts' logits are highly correlated: on a few hundred rows free weights swing to
    opposite signs that cancel (RESULTS.md, issue 15 session 8: Telco fold 0 gave the sequence
    model -0.46), while on tens of thousands a negative weight can be real (the logistic part
    on the 200k burst world: -0.40 to -0.62, free weights chosen in four folds of five)."""
    V = np.asarray(logits_val, dtype=np.float64)  # (V, P)
    y = np.asarray(y_val, dtype=np.float64)  # (V,)
    if len(np.unique(y)) < 2:
        raise DataError("blend: the validation rows hold one class only")
    k = int(min(folds, np.bincount(y.astype(int)).min()))
    nonneg = True
    if k >= 2:
        gain = np.zeros(len(y))  # per row: held weights' out-of-fold log-loss minus free ones'
        for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(V, y):
            for held, sign in ((True, 1.0), (False, -1.0)):
                theta = _blend_fit(V[tr], y[tr], held, c)
                z = V[te] @ theta[:-1] + theta[-1]
                gain[te] += sign * _row_log_loss(z, y[te])
        # the one-standard-error rule: free weights only when their gain exceeds one error
        nonneg = gain.mean() <= gain.std(ddof=1) / np.sqrt(len(gain))
    theta = _blend_fit(V, y, nonneg, c)
    return LogitBlend(theta[None, :-1].copy(), theta[-1:].copy(), nonneg)


def log_proba(p: np.ndarray) -> np.ndarray:
    """log(p), p clipped to [1e-6, 1]: what the multinomial blends read of class probabilities."""
    return np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1))


@dataclass
class ClassBlend:
    """The multinomial blend of ``model.head: blend``'s migration and of ``gpuseg compare
    --target migration``'s blends: a logistic regression (C = 1, free weights) over
    the parts' log class probabilities, the parts in sorted name order. ``predict`` gives (n, K)
    class probabilities, 0 for a class absent from the validation rows it was fitted on."""

    names: list[str]  # the parts, sorted
    classes: np.ndarray  # (C,) the classes of the validation rows
    coef: np.ndarray  # (C, K * P); (1, K * P) with two classes
    intercept: np.ndarray  # (C,); (1,) with two classes
    n_classes: int

    @classmethod
    def fit(cls, probas_val: dict[str, np.ndarray], y_val: np.ndarray) -> ClassBlend:
        names = sorted(probas_val)
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(
            cls.design(probas_val, names), np.asarray(y_val).astype(int)
        )
        k = probas_val[names[0]].shape[1]
        return cls(names, lr.classes_.astype(int), lr.coef_.copy(), lr.intercept_.copy(), k)

    @staticmethod
    def design(probas: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
        return np.column_stack([log_proba(probas[n]) for n in names])  # (n, K * P)

    def predict(self, probas: dict[str, np.ndarray]) -> np.ndarray:
        z = self.design(probas, self.names) @ self.coef.T + self.intercept  # (n, C) or (n, 1)
        if z.shape[1] == 1:  # two classes: sklearn's sigmoid is the softmax of (0, z)
            z = np.column_stack([np.zeros(len(z)), z[:, 0]])
        out = np.zeros((len(z), self.n_classes))
        out[:, self.classes] = softmax(z)
        return out

    def part_weights(self, digits: int | None = None) -> dict[str, list]:
        """Each part's block of coefficients (C, K): how it weighs the part's log-probabilities."""
        k = self.n_classes
        blocks = {n: self.coef[:, k * i : k * (i + 1)] for i, n in enumerate(self.names)}
        return {n: (b if digits is None else b.round(digits)).tolist() for n, b in blocks.items()}

    def state(self) -> dict:
        return dict(
            names=self.names,
            classes=self.classes.tolist(),
            coef=self.coef.tolist(),
            intercept=self.intercept.tolist(),
            n_classes=self.n_classes,
        )

    @classmethod
    def from_state(cls, st: Any, where: Path) -> ClassBlend:
        try:
            blend = cls(
                [str(n) for n in st["names"]],
                np.asarray(st["classes"], dtype=np.int64),
                np.asarray(st["coef"], dtype=np.float64),
                np.asarray(st["intercept"], dtype=np.float64),
                int(st["n_classes"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirError(f"{where}: not a migration blend ({exc})") from None
        c = len(blend.classes)
        ok = (
            blend.names == sorted(blend.names)
            and blend.coef.shape == (1 if c == 2 else c, blend.n_classes * len(blend.names))
            and blend.intercept.shape == (blend.coef.shape[0],)
            and c >= 2
            and blend.classes.min() >= 0
            and blend.classes.max() < blend.n_classes
            and np.isfinite(blend.coef).all()
            and np.isfinite(blend.intercept).all()
        )
        if not ok:
            raise RunDirError(f"{where}: the migration blend's classes, coef and parts disagree")
        return blend


def head_features(usage: np.ndarray, mask: np.ndarray, static: np.ndarray) -> np.ndarray:
    """The baselines' features of one block: usage (B, T, M), mask (B, T), static (B, S)."""
    stats = window_stats(np.array(usage), np.array(mask))  # copies: panels may be read-only maps
    return np.concatenate([stats, np.asarray(static, dtype=np.float32)], axis=1)


@dataclass
class ChurnHead:
    """A fitted booster head: ``predict(features) -> churn probability`` (n,); with ``target``
    migration (a part of :class:`MigrationBlend`) the (n, 3) class probabilities."""

    kind: str
    model: Any  # xgboost.Booster or lightgbm.Booster, cut at the early-stopping round
    n_features: int
    val_auc: float
    target: str = "churn"

    def predict(self, features: np.ndarray) -> np.ndarray:
        if features.shape[1] != self.n_features:
            raise RunDirError(
                f"{self.target} head: {features.shape[1]} features, the head was fitted on "
                f"{self.n_features}"
            )
        if self.kind == "xgboost":
            out = np.asarray(self.model.inplace_predict(features), dtype=np.float64)
        else:
            out = np.asarray(self.model.predict(features), dtype=np.float64)
        want = (
            (len(features), len(MIGRATION_NAMES))
            if self.target == "migration"
            else (len(features),)
        )
        if out.shape != want:
            raise RunDirError(
                f"{self.target} head ({self.kind}): predicts shape {out.shape[1:]}, expected "
                f"{want[1:]}; the model file is not a {self.target} booster"
            )
        return out

    @property
    def file(self) -> str:
        return (MIGRATION_FILES if self.target == "migration" else MODEL_FILES)[self.kind]

    def save_model(self, run_dir: Path) -> None:
        self.model.save_model(str(Path(run_dir) / self.file))

    def save(self, run_dir: Path) -> None:
        self.save_model(run_dir)
        write_json_atomic(
            Path(run_dir) / HEAD_FILE,
            dict(kind=self.kind, n_features=self.n_features, val_auc=self.val_auc),
        )


@dataclass
class LogisticPart:
    """The logistic baseline (signed log1p, standardise, logistic regression) as plain arrays:
    binary (coef (F,), ``predict`` the churn probability) or multinomial (coef (K, F), intercept
    (K,), ``predict`` the (n, K) class probabilities)."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (F,) or (K, F)
    intercept: float | np.ndarray  # or (K,)

    @classmethod
    def from_baseline(cls, baseline: Any) -> LogisticPart:
        pipe = baseline.pipeline_
        scaler, lr = pipe.named_steps["scale"], pipe.named_steps["lr"]
        if lr.coef_.shape[0] > 1:  # multinomial
            return cls(scaler.mean_, scaler.scale_, lr.coef_.copy(), lr.intercept_.copy())
        return cls(scaler.mean_, scaler.scale_, lr.coef_[0], float(lr.intercept_[0]))

    def predict(self, features: np.ndarray) -> np.ndarray:
        z = (signed_log1p(np.asarray(features, dtype=np.float64)) - self.mean) / self.scale
        if self.coef.ndim == 2:
            return softmax(z @ self.coef.T + self.intercept)  # (n, K)
        return 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))

    def state(self) -> dict:
        intercept = self.intercept
        return dict(
            mean=self.mean.tolist(),
            scale=self.scale.tolist(),
            coef=self.coef.tolist(),
            intercept=intercept.tolist() if isinstance(intercept, np.ndarray) else intercept,
        )


@dataclass
class MigrationBlend:
    """``model.head: blend``'s migration: ``proba(features, sequence_proba) -> (n, 3)`` class
    probabilities (down / stay / up), the :class:`ClassBlend` of the sequence model's migration
    head and of ``parts``; ``decision`` the migration class with the validation-fitted weights."""

    parts: dict[str, Any]  # name -> ChurnHead (target migration) or LogisticPart (multinomial)
    blend: ClassBlend  # over "sequence" and the parts
    decision_weights: np.ndarray  # (3,) per-class multipliers (macro-F1 on validation)
    n_features: int
    val_macro_auc: float

    def proba(self, features: np.ndarray, sequence_proba: np.ndarray) -> np.ndarray:
        if features.shape[1] != self.n_features:
            raise RunDirError(
                f"migration head: {features.shape[1]} features, the head was fitted on "
                f"{self.n_features}"
            )
        probas = {"sequence": np.asarray(sequence_proba, dtype=np.float64)}
        probas |= {name: part.predict(features) for name, part in self.parts.items()}
        return self.blend.predict(probas)

    def decision(self, proba: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(proba) * self.decision_weights, axis=1).astype(np.int8)

    def save(self, run_dir: Path) -> dict:
        """Write the parts; the dict that ``head.json`` keeps under ``migration``."""
        for name, part in self.parts.items():
            if name == "logistic":
                write_json_atomic(Path(run_dir) / MIGRATION_FILES["logistic"], part.state())
            else:
                part.save_model(run_dir)
        return dict(
            parts=list(self.parts),
            blend=self.blend.state(),
            decision_weights=self.decision_weights.tolist(),
            n_features=self.n_features,
            val_macro_auc=self.val_macro_auc,
        )


@dataclass
class TabMPart:
    """TabM over the baselines' features (its preprocessing in the model's buffers)."""

    model: TabM

    def predict(self, features: np.ndarray) -> np.ndarray:
        return tabm_proba(self.model, features)

    def state(self) -> dict:
        """What :func:`load_head` needs besides the weights: the spec and the column counts."""
        m = self.model
        return dict(
            spec=m.spec.state(), n_inputs=m.n_inputs, n_numeric=m.n_numeric, n_pass=m.n_pass
        )

    def save_model(self, run_dir: Path) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write(Path(run_dir) / TABM_FILE, lambda p: save_file(tensors, str(p)))


@dataclass
class BlendHead:
    """``model.head: blend``: ``predict(features, sequence_proba) -> churn probability``, a
    logistic regression over the logits of the sequence model and of ``parts``; ``migration``
    (None without migration labels) gives the migration probabilities."""

    parts: dict[str, Any]  # name -> ChurnHead (booster), LogisticPart, HistGBTrees or TabMPart
    weights: dict[str, float]  # "sequence" and each part -> its logit's coefficient
    intercept: float
    n_features: int
    val_auc: float
    kind: str = "blend"
    migration: MigrationBlend | None = None

    def predict(self, features: np.ndarray, sequence_proba: np.ndarray) -> np.ndarray:
        if features.shape[1] != self.n_features:
            raise RunDirError(
                f"churn head: {features.shape[1]} features, the head was fitted on "
                f"{self.n_features}"
            )
        z = self.intercept + self.weights["sequence"] * logit(sequence_proba)
        for name, part in self.parts.items():
            z = z + self.weights[name] * logit(part.predict(features))
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, run_dir: Path) -> None:
        for name, part in self.parts.items():
            if name == "logistic":
                write_json_atomic(Path(run_dir) / LOGISTIC_FILE, part.state())
            elif name == "hist_gb":
                write_json_atomic(Path(run_dir) / HIST_GB_FILE, part.state())
            else:
                part.save_model(run_dir)
        migration = {} if self.migration is None else dict(migration=self.migration.save(run_dir))
        write_json_atomic(
            Path(run_dir) / HEAD_FILE,
            dict(
                kind="blend",
                n_features=self.n_features,
                val_auc=self.val_auc,
                parts=list(self.parts),
                weights=self.weights,
                intercept=self.intercept,
            )
            | ({"tabm": self.parts["tabm"].state()} if "tabm" in self.parts else {})
            | migration,
        )


def sequence_scores(
    model: Any, platt: tuple[float, float], panel: Panel, rows: np.ndarray, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """The sequence model's calibrated churn probability (n,) and migration class probabilities
    (n, 3) (the softmax of its migration head) of panel ``rows`` (read only those)."""
    device = next(model.parameters()).device
    tensors = to_device(panel, device, rows)
    out = predict(model, tensors, None, batch_size, amp=device.type == "cuda")
    churn = calibrated(out["churn_logit"].float().cpu().numpy().astype(np.float64), platt)
    return churn, softmax(out["migration_logits"].float().cpu().numpy())


def sequence_proba(
    model: Any, platt: tuple[float, float], panel: Panel, rows: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """The sequence model's calibrated churn probability of panel ``rows`` (read only those)."""
    return sequence_scores(model, platt, panel, rows, batch_size)[0]


def _fit_booster(
    kind: str,
    X: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    trials: int,
    seed: int,
    target: str = "churn",
) -> ChurnHead:
    booster = TunedBooster(kind, n_trials=trials, random_state=seed).fit(
        X["train"], y["train"], X["val"], y["val"]
    )
    if kind == "xgboost":  # the trees up to the best round only
        model = booster.model_.get_booster()[: booster.model_.best_iteration + 1]
    else:
        model = booster.model_.booster_
    return ChurnHead(kind, model, X["train"].shape[1], booster.val_auc_, target)


def _design(panel: Panel, train: np.ndarray, val: np.ndarray):
    X = {
        name: head_features(panel.usage[rows], panel.mask[rows], panel.static[rows])
        for name, rows in (("train", train), ("val", val))
    }
    churn = np.asarray(panel.churn)
    return X, {"train": churn[train], "val": churn[val]}


def fit_head(
    kind: str,
    panel: Panel,
    train: np.ndarray,
    val: np.ndarray,
    sequence_val_auc: float,
    trials: int = 15,
    seed: int = 0,
    sequence_val_proba: np.ndarray | None = None,
    sequence_val_migration: np.ndarray | None = None,
) -> ChurnHead | BlendHead | None:
    """The head ``kind`` fitted on ``train`` and tuned on ``val``; None for ``sequence`` (or for
    ``auto`` when the sequence model's validation ROC-AUC is the best). ``blend`` needs
    ``sequence_val_proba``, the sequence model's calibrated probability of the ``val`` rows;
    with ``sequence_val_migration`` (its (len(val), 3) migration probabilities) and migration
    labels of every class in both ``train`` and ``val``, the blend gives migration too."""
    if kind not in HEADS:
        raise ConfigError(f"model.head: unknown head {kind!r}; choose from {', '.join(HEADS)}")
    if kind == "sequence":
        return None
    if kind != "auto" and kind != "blend" and not booster_available(kind):
        raise ConfigError(f"model.head={kind} needs the {kind} package (pip install {kind})")
    kinds = [kind] if kind in MODEL_FILES else [k for k in MODEL_FILES if booster_available(k)]
    X, y = _design(panel, train, val)
    if kind == "blend":
        if sequence_val_proba is None or len(sequence_val_proba) != len(val):
            raise ConfigError("model.head=blend needs the sequence model's validation scores")
        head = fit_blend(X, y, sequence_val_proba, kinds, trials, seed)
        if sequence_val_migration is not None:
            mig = np.asarray(panel.migration)
            head.migration = fit_migration_blend(
                X,
                {"train": mig[train], "val": mig[val]},
                sequence_val_migration,
                kinds,
                trials,
                seed,
            )
        return head
    best: ChurnHead | None = None
    for k in kinds:
        head = _fit_booster(k, X, y, trials, seed)
        if best is None or head.val_auc > best.val_auc:
            best = head
    if kind == "auto" and (best is None or best.val_auc <= sequence_val_auc):
        return None
    return best


def fit_blend(
    X: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    sequence_val_proba: np.ndarray,
    boosters: list[str],
    trials: int = 15,
    seed: int = 0,
    tabm: bool = False,
    tabm_spec: TabMSpec = TabMSpec(),
    tabm_fit: TabMFit = TabMFit(),
) -> BlendHead:
    """The logistic baseline and HistGradientBoosting (each from its grid, tuned on validation),
    each booster in ``boosters`` and (``tabm``) TabM fitted on the training rows, then a
    logistic regression over their and the sequence model's validation logits (the boosters
    and TabM early-stopped on those rows, the boosters were tuned on them, so their weights
    lean slightly optimistic; as ``gpuseg compare``'s blends)."""

    def tuned(name: str, **fixed: Any) -> Any:  # a grid baseline, tuned on validation ROC-AUC
        cls, grid, _ = GRIDS[name]

        def score(model: Any, Xv: np.ndarray, yv: np.ndarray) -> float:
            return roc_auc(yv, model.predict_proba(Xv)[:, 1])

        def make(**kw: Any) -> Any:
            return cls(**kw, **fixed)

        return tune(make, grid, X["train"], y["train"], X["val"], y["val"], score)[0]

    parts: dict[str, Any] = {
        "logistic": LogisticPart.from_baseline(tuned("logistic")),
        "hist_gb": HistGBTrees.from_model(tuned("hist_gb", random_state=seed)),
    }
    for k in boosters:
        parts[k] = _fit_booster(k, X, y, trials, seed)
    if tabm:
        parts["tabm"] = TabMPart(
            fit_tabm(X["train"], y["train"], X["val"], y["val"], tabm_spec, tabm_fit, seed).model
        )
    names = ["sequence", *parts]
    V = np.column_stack(
        [logit(sequence_val_proba)] + [logit(parts[n].predict(X["val"])) for n in parts]
    )
    lr = fit_logit_blend(V, y["val"])
    head = BlendHead(
        parts,
        dict(zip(names, lr.coef_[0].astype(float).tolist(), strict=True)),
        float(lr.intercept_[0]),
        X["train"].shape[1],
        float("nan"),
    )
    head.val_auc = roc_auc(y["val"], head.predict(X["val"], sequence_val_proba))
    return head


def fit_migration_blend(
    X: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    sequence_val_migration: np.ndarray,
    boosters: list[str],
    trials: int = 15,
    seed: int = 0,
) -> MigrationBlend | None:
    """``model.head: blend``'s migration, on the rows of ``X`` whose migration label ``y`` is
    known (-1: unknown): the multinomial logistic baseline (C from its migration grid by the
    validation macro one-vs-rest ROC-AUC) and each booster in ``boosters`` (multiclass, tuned by
    the same) fitted on the training rows, then the :class:`ClassBlend` of their and the sequence
    model's validation class probabilities (as ``gpuseg compare --target migration``'s
    ``head_blend``) and the class-decision weights on its cross-fitted validation probabilities
    (:func:`cross_fitted_blend`). None when the
    training or the validation rows lack one of the three classes (no migration labels)."""
    has = {k: np.asarray(y[k]) >= 0 for k in ("train", "val")}
    Xm = {k: X[k][has[k]] for k in has}
    ym = {k: np.asarray(y[k])[has[k]].astype(int) for k in has}
    classes = np.arange(len(MIGRATION_NAMES))
    if any(not np.array_equal(np.unique(ym[k]), classes) for k in ym):
        return None
    seq_val = np.asarray(sequence_val_migration, dtype=np.float64)
    if seq_val.shape != (len(has["val"]), len(MIGRATION_NAMES)):
        raise ConfigError("model.head=blend: the sequence model's validation migration scores")
    cls, _, grid = GRIDS["logistic"]

    def score(model: Any, Xv: np.ndarray, yv: np.ndarray) -> float:
        return macro_roc_auc(yv, model.predict_proba(Xv))

    baseline, _, _ = tune(cls, grid, Xm["train"], ym["train"], Xm["val"], ym["val"], score)
    parts: dict[str, Any] = {"logistic": LogisticPart.from_baseline(baseline)}
    for k in boosters:
        parts[k] = _fit_booster(k, Xm, ym, trials, seed, target="migration")
    probas = {"sequence": seq_val[has["val"]]} | {n: p.predict(Xm["val"]) for n, p in parts.items()}
    blend = ClassBlend.fit(probas, ym["val"])
    return MigrationBlend(
        parts,
        blend,
        fit_decision_weights(cross_fitted_blend(probas, ym["val"], seed=seed), ym["val"]),
        X["train"].shape[1],
        macro_roc_auc(ym["val"], blend.predict(probas)),
    )


def cross_fitted_blend(
    probas: dict[str, np.ndarray], y: np.ndarray, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold :class:`ClassBlend` probabilities of the validation rows (stratified
    ``folds``, fewer when a class has fewer rows): what the class-decision weights are fitted on,
    since the blend's own fit on those rows makes it look sharper there than on new rows (on the
    demo world at 10k, in-sample weights cost 0.03 test macro-F1). Below two rows of some class:
    the in-sample probabilities."""
    y = np.asarray(y).astype(int)
    k = min(folds, int(np.bincount(y).min()))
    if k < 2:
        return ClassBlend.fit(probas, y).predict(probas)
    out = np.zeros((len(y), next(iter(probas.values())).shape[1]))
    cut = StratifiedKFold(k, shuffle=True, random_state=seed)
    for fit_rows, rows in cut.split(np.zeros((len(y), 1)), y):
        blend = ClassBlend.fit({n: p[fit_rows] for n, p in probas.items()}, y[fit_rows])
        out[rows] = blend.predict({n: p[rows] for n, p in probas.items()})
    return out


def _load_booster(
    run_dir: Path, kind: str, info: dict, path: Path, target: str = "churn"
) -> ChurnHead:
    model_path = Path(run_dir) / (MIGRATION_FILES if target == "migration" else MODEL_FILES)[kind]
    if not model_path.is_file():
        raise RunDirError(f"{model_path}: missing (the head named in {path})")
    if not booster_available(kind):
        raise RunDirError(f"{path}: the run scores with {kind}; install it (pip install {kind})")
    try:
        if kind == "xgboost":
            import xgboost

            model = xgboost.Booster(model_file=str(model_path))
        else:
            import lightgbm

            model = lightgbm.Booster(model_file=str(model_path))
    except Exception as exc:  # xgboost.core.XGBoostError, lightgbm.basic.LightGBMError, ...
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{model_path}: not a {kind} model file ({first})") from None
    try:
        n_features = int(info["n_features"])
    except (KeyError, TypeError, ValueError):
        raise RunDirError(f"{path}: the head needs n_features") from None
    head = ChurnHead(kind, model, n_features, float(info.get("val_auc", np.nan)), target)
    if target == "migration":  # a churn booster (or a truncated file) predicts the wrong shape
        try:
            head.predict(np.zeros((1, n_features), dtype=np.float32))
        except Exception as exc:  # RunDirError (a wrong shape) or the library's own
            raise RunDirError(f"{model_path}: {exc}") from None
    return head


def _load_logistic(run_dir: Path, path: Path, target: str = "churn") -> LogisticPart:
    name = MIGRATION_FILES["logistic"] if target == "migration" else LOGISTIC_FILE
    part_path = Path(run_dir) / name
    if not part_path.is_file():
        raise RunDirError(f"{part_path}: missing (the head named in {path})")
    st = read_json(part_path)
    try:
        part = LogisticPart(
            np.asarray(st["mean"], float),
            np.asarray(st["scale"], float),
            np.asarray(st["coef"], float),
            np.asarray(st["intercept"], float) if target == "migration" else float(st["intercept"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{part_path}: not a logistic head ({exc})") from None
    if target == "migration":
        k = len(MIGRATION_NAMES)
        ok = part.coef.shape == (k, len(part.mean)) and np.shape(part.intercept) == (k,)
        if not (ok and part.mean.shape == part.scale.shape):
            raise RunDirError(
                f"{part_path}: a migration logistic part needs coef ({k}, F), intercept ({k},) "
                "and mean, scale of length F"
            )
        return part
    if not (part.mean.shape == part.scale.shape == part.coef.shape):
        raise RunDirError(f"{part_path}: mean, scale and coef differ in length")
    return part


def _load_migration(run_dir: Path, info: Any, path: Path, n_features: int) -> MigrationBlend:
    """The ``migration`` entry of a blend's ``head.json`` and the parts it names."""
    if not isinstance(info, dict):
        raise RunDirError(f"{path}: the blend's migration entry is not an object")
    names = info.get("parts")
    if not isinstance(names, list) or any(n not in (*MODEL_FILES, "logistic") for n in names):
        raise RunDirError(f"{path}: the blend's migration parts must be logistic or boosters")
    blend = ClassBlend.from_state(info.get("blend"), path)
    if blend.names != sorted(["sequence", *names]) or blend.n_classes != len(MIGRATION_NAMES):
        raise RunDirError(f"{path}: the migration blend's weights do not match its parts")
    try:
        weights = np.asarray(info["decision_weights"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise RunDirError(f"{path}: the migration blend needs decision_weights") from None
    if weights.shape != (len(MIGRATION_NAMES),) or not np.all(weights > 0):
        raise RunDirError(f"{path}: decision_weights must be 3 positive numbers")
    part_info = dict(n_features=n_features)
    parts = {
        n: _load_logistic(run_dir, path, "migration")
        if n == "logistic"
        else _load_booster(run_dir, n, part_info, path, "migration")
        for n in names
    }
    for n, part in parts.items():
        if isinstance(part, LogisticPart) and len(part.mean) != n_features:
            raise RunDirError(f"{path}: the migration {n} part has {len(part.mean)} features")
    return MigrationBlend(
        parts, blend, weights, n_features, float(info.get("val_macro_auc", np.nan))
    )


def _load_hist_gb(run_dir: Path, path: Path, n_features: int) -> HistGBTrees:
    part_path = Path(run_dir) / HIST_GB_FILE
    if not part_path.is_file():
        raise RunDirError(f"{part_path}: missing (the head named in {path})")
    try:
        trees = HistGBTrees.from_state(read_json(part_path))
    except ValueError as exc:
        raise RunDirError(f"{part_path}: {exc}") from None
    if trees.n_features != n_features:
        raise RunDirError(f"{part_path}: the trees read {trees.n_features} features")
    return trees


def _load_tabm(run_dir: Path, info: dict, path: Path) -> TabMPart:
    weights = Path(run_dir) / TABM_FILE
    if not weights.is_file():
        raise RunDirError(f"{weights}: missing (the head named in {path})")
    st = info.get("tabm")
    try:
        model = TabM(
            int(st["n_inputs"]), int(st["n_numeric"]), int(st["n_pass"]), TabMSpec(**st["spec"])
        )
        model.load_state_dict(load_file(str(weights)))
    except SafetensorError as exc:
        raise RunDirError(f"{weights}: not a valid safetensors file ({exc})") from None
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError, DataError) as exc:
        raise RunDirError(f"{path}: the TabM part does not match its weights ({exc})") from None
    if model.n_inputs != int(info["n_features"]):
        raise RunDirError(f"{path}: the TabM part reads {model.n_inputs} features")
    return TabMPart(model.eval())


def load_head(run_dir: Path) -> ChurnHead | BlendHead | None:
    """The run's saved head, or None when the run scores with the sequence model."""
    path = Path(run_dir) / HEAD_FILE
    if not path.is_file():
        return None
    info = read_json(path)
    kind = info.get("kind")
    if kind in MODEL_FILES:
        return _load_booster(run_dir, kind, info, path)
    if kind != "blend":
        raise RunDirError(f"{path}: unknown head kind {kind!r}")
    names = info.get("parts")
    weights = info.get("weights")
    if (
        not isinstance(names, list)
        or not isinstance(weights, dict)
        or any(n not in (*MODEL_FILES, "logistic", "hist_gb", "tabm") for n in names)
        or set(weights) != {"sequence", *names}
    ):
        raise RunDirError(f"{path}: a blend head needs parts and one weight per part and sequence")
    loaders = dict(
        logistic=lambda: _load_logistic(run_dir, path),
        hist_gb=lambda: _load_hist_gb(run_dir, path, int(info["n_features"])),
        tabm=lambda: _load_tabm(run_dir, info, path),
    )
    parts = {
        n: loaders[n]() if n in loaders else _load_booster(run_dir, n, info, path) for n in names
    }
    n_features = int(info["n_features"])
    migration = None
    if "migration" in info:
        migration = _load_migration(run_dir, info["migration"], path, n_features)
    return BlendHead(
        parts,
        {k: float(v) for k, v in weights.items()},
        float(info.get("intercept", 0.0)),
        n_features,
        float(info.get("val_auc", np.nan)),
        migration=migration,
    )


def head_proba(
    head: ChurnHead | BlendHead, features: np.ndarray, sequence_proba: np.ndarray | None
) -> np.ndarray:
    """The head's churn probability given the baselines' features and the sequence model's
    (only a blend reads the latter)."""
    if isinstance(head, BlendHead):
        if sequence_proba is None:
            raise ConfigError("a blend head needs the sequence model's churn probability")
        return head.predict(features, sequence_proba)
    return head.predict(features)


def head_val_auc(
    head: ChurnHead | BlendHead, panel: Panel, rows: np.ndarray, sequence: np.ndarray | None
) -> float:
    """ROC-AUC of the head on ``rows`` of the panel (``sequence``: the sequence model's
    calibrated probability of those rows); NaN where they hold one class, as the sequence
    model's test metrics are (:func:`gpuseg.evaluate.metrics.churn_metrics`)."""
    X = head_features(panel.usage[rows], panel.mask[rows], panel.static[rows])
    y, p = np.asarray(panel.churn)[rows], head_proba(head, X, sequence)
    return churn_metrics(y[y >= 0], p[y >= 0])["roc_auc"]


def block_scores(
    head: ChurnHead | BlendHead,
    usage: torch.Tensor,
    mask: torch.Tensor,
    static,
    sequence: np.ndarray,
    sequence_migration: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The head's churn probability (n,) and migration probabilities (n, 3) of one embed /
    score / evaluate block (tensors on any device; ``sequence`` and ``sequence_migration``: the
    sequence model's calibrated churn probability and migration softmax of the block, the
    latter returned unchanged unless the head is a blend with migration)."""
    X = head_features(usage.float().cpu().numpy(), mask.cpu().numpy(), static.float().cpu().numpy())
    churn = head_proba(head, X, sequence)
    if isinstance(head, BlendHead) and head.migration is not None:
        return churn, head.migration.proba(X, sequence_migration)
    return churn, sequence_migration
