"""Score with the winner: a tuned gradient-boosting churn head saved next to the sequence model.

``model.head`` chooses what a run's ``churn_prob`` comes from:

- ``sequence`` (default): the sequence model's calibrated churn logit;
- ``xgboost`` / ``lightgbm``: a :class:`gpuseg.evaluate.boosting.TunedBooster` over the window
  aggregates and static attributes (:func:`gpuseg.features.aggregates.window_features`, what
  ``gpuseg evaluate`` and ``gpuseg compare`` call the baselines), trained on the run's training
  rows and tuned on its validation rows;
- ``auto``: whichever of those has the best validation ROC-AUC (installed boosters only);
- ``blend``: a logistic regression over the validation logits of the sequence model, the
  logistic baseline and the installed boosters. :func:`fit_blend` can add TabM
  (:mod:`gpuseg.model.tabular`) on the same features as a part (``tabm=True``); the head does
  not, since TabM did not make the blend better on the real tables (RESULTS.md, issue 15
  session 9).

The head is saved in the boosters' own formats (XGBoost JSON, LightGBM text model), TabM as
safetensors, never pickled, with ``head.json`` naming its kind and feature count. Embeddings,
migration and segments always come from the sequence model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression

from gpuseg.data.panel import Panel
from gpuseg.errors import ConfigError, DataError, RunDirError
from gpuseg.evaluate.baselines import GRIDS, tune
from gpuseg.evaluate.boosting import TunedBooster, booster_available
from gpuseg.evaluate.metrics import roc_auc
from gpuseg.features.aggregates import window_stats
from gpuseg.features.window import signed_log1p
from gpuseg.io.store import atomic_write, read_json, write_json_atomic
from gpuseg.model.tabular import TabM, TabMSpec
from gpuseg.training.calibration import calibrated
from gpuseg.training.loop import predict, to_device
from gpuseg.training.tabular import TabMFit, fit_tabm, tabm_proba

HEAD_FILE = "head.json"
MODEL_FILES = {"xgboost": "head.xgb.json", "lightgbm": "head.lgb.txt"}
LOGISTIC_FILE = "head.logistic.json"
TABM_FILE = "head.tabm.safetensors"
HEADS = ("sequence", "xgboost", "lightgbm", "auto", "blend")


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_logit_blend(logits_val: np.ndarray, y_val: np.ndarray) -> LogisticRegression:
    """The blend of ``model.head: blend`` and of ``gpuseg compare``'s blends: a logistic
    regression (C = 1) over the parts' validation logits (V, P)."""
    return LogisticRegression(C=1.0, max_iter=1000).fit(logits_val, y_val)


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

    def save_model(self, run_dir: Path) -> None:
        self.model.save_model(str(Path(run_dir) / MODEL_FILES[self.kind]))

    def save(self, run_dir: Path) -> None:
        self.save_model(run_dir)
        write_json_atomic(
            Path(run_dir) / HEAD_FILE,
            dict(kind=self.kind, n_features=self.n_features, val_auc=self.val_auc),
        )


@dataclass
class LogisticPart:
    """The logistic baseline (signed log1p, standardise, logistic regression) as plain arrays."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (F,)
    intercept: float

    @classmethod
    def from_baseline(cls, baseline: Any) -> LogisticPart:
        pipe = baseline.pipeline_
        scaler, lr = pipe.named_steps["scale"], pipe.named_steps["lr"]
        return cls(scaler.mean_, scaler.scale_, lr.coef_[0], float(lr.intercept_[0]))

    def predict(self, features: np.ndarray) -> np.ndarray:
        z = (signed_log1p(np.asarray(features, dtype=np.float64)) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))

    def state(self) -> dict:
        return dict(
            mean=self.mean.tolist(),
            scale=self.scale.tolist(),
            coef=self.coef.tolist(),
            intercept=self.intercept,
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
    logistic regression over the logits of the sequence model and of ``parts``."""

    parts: dict[str, Any]  # name -> ChurnHead (booster), LogisticPart or TabMPart
    weights: dict[str, float]  # "sequence" and each part -> its logit's coefficient
    intercept: float
    n_features: int
    val_auc: float
    kind: str = "blend"

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
            else:
                part.save_model(run_dir)
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
            | ({"tabm": self.parts["tabm"].state()} if "tabm" in self.parts else {}),
        )


def sequence_proba(
    model: Any, platt: tuple[float, float], panel: Panel, rows: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """The sequence model's calibrated churn probability of panel ``rows`` (read only those)."""
    device = next(model.parameters()).device
    tensors = to_device(panel, device, rows)
    out = predict(model, tensors, None, batch_size, amp=device.type == "cuda")
    return calibrated(out["churn_logit"].float().cpu().numpy().astype(np.float64), platt)


def _fit_booster(
    kind: str, X: dict[str, np.ndarray], y: dict[str, np.ndarray], trials: int, seed: int
) -> ChurnHead:
    booster = TunedBooster(kind, n_trials=trials, random_state=seed).fit(
        X["train"], y["train"], X["val"], y["val"]
    )
    if kind == "xgboost":  # the trees up to the best round only
        model = booster.model_.get_booster()[: booster.model_.best_iteration + 1]
    else:
        model = booster.model_.booster_
    return ChurnHead(kind, model, X["train"].shape[1], booster.val_auc_)


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
) -> ChurnHead | BlendHead | None:
    """The head ``kind`` fitted on ``train`` and tuned on ``val``; None for ``sequence`` (or for
    ``auto`` when the sequence model's validation ROC-AUC is the best). ``blend`` needs
    ``sequence_val_proba``, the sequence model's calibrated probability of the ``val`` rows."""
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
        return fit_blend(X, y, sequence_val_proba, kinds, trials, seed)
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
    """The logistic baseline (C from its grid on validation), each booster in ``boosters`` and
    (``tabm``) TabM fitted on the training rows, then a logistic regression over their and the
    sequence model's validation logits (the boosters and TabM early-stopped on those rows, the
    boosters were tuned on them, so their weights lean slightly optimistic; as ``gpuseg
    compare``'s blends)."""
    cls, grid, _ = GRIDS["logistic"]

    def score(model: Any, Xv: np.ndarray, yv: np.ndarray) -> float:
        return roc_auc(yv, model.predict_proba(Xv)[:, 1])

    baseline, _, _ = tune(cls, grid, X["train"], y["train"], X["val"], y["val"], score)
    parts: dict[str, Any] = {"logistic": LogisticPart.from_baseline(baseline)}
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


def _load_booster(run_dir: Path, kind: str, info: dict, path: Path) -> ChurnHead:
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


def _load_logistic(run_dir: Path, path: Path) -> LogisticPart:
    part_path = Path(run_dir) / LOGISTIC_FILE
    if not part_path.is_file():
        raise RunDirError(f"{part_path}: missing (the head named in {path})")
    st = read_json(part_path)
    try:
        part = LogisticPart(
            np.asarray(st["mean"], float),
            np.asarray(st["scale"], float),
            np.asarray(st["coef"], float),
            float(st["intercept"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{part_path}: not a logistic head ({exc})") from None
    if not (part.mean.shape == part.scale.shape == part.coef.shape):
        raise RunDirError(f"{part_path}: mean, scale and coef differ in length")
    return part


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
        or any(n not in (*MODEL_FILES, "logistic", "tabm") for n in names)
        or set(weights) != {"sequence", *names}
    ):
        raise RunDirError(f"{path}: a blend head needs parts and one weight per part and sequence")
    loaders = dict(
        logistic=lambda: _load_logistic(run_dir, path), tabm=lambda: _load_tabm(run_dir, info, path)
    )
    parts = {
        n: loaders[n]() if n in loaders else _load_booster(run_dir, n, info, path) for n in names
    }
    return BlendHead(
        parts,
        {k: float(v) for k, v in weights.items()},
        float(info.get("intercept", 0.0)),
        int(info["n_features"]),
        float(info.get("val_auc", np.nan)),
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
    calibrated probability of those rows)."""
    X = head_features(panel.usage[rows], panel.mask[rows], panel.static[rows])
    return roc_auc(np.asarray(panel.churn)[rows], head_proba(head, X, sequence))


def block_proba(
    head: ChurnHead | BlendHead,
    usage: torch.Tensor,
    mask: torch.Tensor,
    static,
    sequence: np.ndarray,
) -> np.ndarray:
    """The head's churn probability of one embed/score block (tensors on any device;
    ``sequence``: the sequence model's calibrated probability of the block)."""
    X = head_features(usage.float().cpu().numpy(), mask.cpu().numpy(), static.float().cpu().numpy())
    return head_proba(head, X, sequence)
