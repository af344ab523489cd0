"""Gradient boosting tuned with a small Optuna budget: the baselines to beat (issue 15).

:class:`TunedBooster` wraps XGBoost or LightGBM (both optional packages) for binary churn, or for
a multiclass label such as value-tier migration (labels 0..K-1, K > 2, e.g. down / stay / up).
``fit`` runs an Optuna study of ``n_trials`` trials (TPE sampler, seeded); each trial trains on
the training rows with early stopping on the validation rows (binary: validation AUC; multiclass:
validation log-loss) and is scored by validation ROC-AUC (multiclass: the macro one-vs-rest
ROC-AUC). The best trial's model is kept (``model_``, ``best_params_``, ``best_iteration_``,
``val_auc_``).

The search space is the usual one for tabular boosting (learning rate, depth or leaves, minimum
child weight, row and column subsampling, L2), small on purpose: the budget is a dozen or two
trials, what a careful engineer spends on a baseline.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import optuna
from sklearn.base import BaseEstimator, ClassifierMixin

from gpuseg.errors import ConfigError, DataError
from gpuseg.evaluate.metrics import macro_roc_auc, roc_auc

KINDS = ("xgboost", "lightgbm")
MAX_ROUNDS = 2000  # with early stopping (50 rounds without a validation gain)
EARLY_STOP = 50


def booster_available(kind: str) -> bool:
    """Whether the optional package behind ``kind`` ('xgboost' or 'lightgbm') imports."""
    try:
        __import__(kind)
    except Exception:  # ImportError, or a broken native library
        return False
    return True


def _suggest(trial: Any, kind: str) -> dict:
    lr = trial.suggest_float("learning_rate", 0.01, 0.3, log=True)
    common = dict(
        learning_rate=lr,
        subsample=trial.suggest_float("subsample", 0.5, 1.0),
        colsample_bytree=trial.suggest_float("colsample_bytree", 0.3, 1.0),
        reg_lambda=trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
    )
    if kind == "xgboost":
        return common | dict(
            max_depth=trial.suggest_int("max_depth", 2, 8),
            min_child_weight=trial.suggest_float("min_child_weight", 0.5, 50.0, log=True),
        )
    return common | dict(
        num_leaves=trial.suggest_int("num_leaves", 4, 64, log=True),
        min_child_samples=trial.suggest_int("min_child_samples", 5, 200, log=True),
    )


def fit_booster(
    kind: str,
    params: dict,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    seed: int = 0,
    n_jobs: int = 1,
) -> Any:
    """One booster of ``kind`` with ``params``, early-stopped on (X_val, y_val): on validation AUC
    for a binary ``y``, on validation log-loss for a multiclass one (labels 0..K-1, K > 2)."""
    multiclass = len(np.unique(y)) > 2
    if kind == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(
            n_estimators=MAX_ROUNDS,
            tree_method="hist",
            early_stopping_rounds=EARLY_STOP,
            eval_metric="mlogloss" if multiclass else "auc",
            random_state=seed,
            n_jobs=n_jobs,
            **params,
        )
        return model.fit(X, y, eval_set=[(X_val, y_val)], verbose=False)
    if kind == "lightgbm":
        import lightgbm

        model = lightgbm.LGBMClassifier(
            n_estimators=MAX_ROUNDS,
            subsample_freq=1,
            random_state=seed,
            n_jobs=n_jobs,
            verbose=-1,
            **params,
        )
        return model.fit(
            X,
            y,
            eval_set=[(X_val, y_val)],
            eval_metric="multi_logloss" if multiclass else "auc",
            callbacks=[lightgbm.early_stopping(EARLY_STOP, verbose=False)],
        )
    raise ConfigError(f"unknown booster {kind!r}; choose from {', '.join(KINDS)}")


class TunedBooster(ClassifierMixin, BaseEstimator):
    """XGBoost or LightGBM tuned by Optuna on the validation rows (binary churn, or multiclass
    labels 0..K-1 scored by the macro one-vs-rest ROC-AUC)."""

    def __init__(
        self, kind: str = "xgboost", n_trials: int = 15, random_state: int = 0, n_jobs: int = 1
    ) -> None:
        self.kind = kind
        self.n_trials = n_trials
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> TunedBooster:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown booster {self.kind!r}; choose from {', '.join(KINDS)}")
        if not booster_available(self.kind):
            raise ConfigError(f"baseline {self.kind!r} needs the {self.kind} package (pip install)")
        if self.n_trials < 1:
            raise ConfigError(f"booster trials must be >= 1, got {self.n_trials}")
        if X_val is None or y_val is None or len(np.unique(y_val)) < 2:
            raise DataError(f"{self.kind}: tuning needs validation rows with both classes")
        y, y_val = np.asarray(y).astype(int), np.asarray(y_val).astype(int)
        classes = np.unique(y)
        multiclass = len(classes) > 2
        if multiclass and not (
            np.array_equal(classes, np.arange(len(classes)))
            and np.array_equal(np.unique(y_val), classes)
        ):
            raise DataError(
                f"{self.kind}: multiclass tuning needs labels 0..K-1 with every class in both "
                f"the training and the validation rows (training {classes.tolist()}, "
                f"validation {np.unique(y_val).tolist()})"
            )
        kept: dict[int, Any] = {}

        def val_score(proba: np.ndarray) -> float:
            return macro_roc_auc(y_val, proba) if multiclass else roc_auc(y_val, proba[:, 1])

        def objective(trial: Any) -> float:
            params = _suggest(trial, self.kind)
            model = fit_booster(
                self.kind, params, X, y, X_val, y_val, self.random_state, self.n_jobs
            )
            kept[trial.number] = model
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                return val_score(model.predict_proba(X_val))

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.random_state)
        )
        study.optimize(objective, n_trials=self.n_trials)
        best = study.best_trial
        self.model_ = kept[best.number]
        self.best_params_ = dict(best.params)
        self.val_auc_ = float(best.value)
        self.best_iteration_ = int(
            getattr(self.model_, "best_iteration", None)
            or getattr(self.model_, "best_iteration_", None)
            or 0
        )
        self.classes_ = classes if multiclass else np.array([0, 1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # lightgbm names numpy columns, then warns about it
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return self.model_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
