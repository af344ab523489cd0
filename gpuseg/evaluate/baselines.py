"""Feature baselines: window aggregates of the usage series plus static attributes, fed to
logistic regression, histogram gradient boosting and (when installed) XGBoost.

They answer "does the sequence model beat what a good tabular model gets from summary features?"
on the very split the model was trained and tested on.

Features (per metric, over the periods where the subscriber is present):

- ``mean``          masked mean
- ``last``          value in the latest present period
- ``last_quarter``  mean over the last quarter of the window (``max(T // 4, 1)`` periods)
- ``slope``         least-squares slope per period (period index as x)
- ``drop``          ``log((first_half_mean + 1) / (last_quarter_mean + 1))``: positive when usage
                    fell; 0 when either window has no present period
- ``std``           masked standard deviation (population)

then ``share_present`` (present periods / T) and the encoded static features. Absent periods
never enter a statistic; a subscriber with no present period at all gets zeros.

Extraction is vectorised over a chunk of subscribers and runs chunk by chunk, so memory is bounded
by the chunk size whatever the panel size (the panel is usually memory-mapped).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from gpuseg.data.panel import Panel
from gpuseg.data.split import Split
from gpuseg.errors import DataError
from gpuseg.evaluate.metrics import (
    churn_metrics,
    fit_decision_weights,
    macro_f1,
    migration_metrics,
    roc_auc,
)
from gpuseg.features.aggregates import (
    FEATURE_CHUNK_ROWS,
    feature_names,
    window_features,
)
from gpuseg.features.window import signed_log1p


class LogisticBaseline(ClassifierMixin, BaseEstimator):
    """signed log1p -> standardise -> (multinomial) logistic regression."""

    def __init__(
        self, C: float = 1.0, class_weight: str | dict | None = None, max_iter: int = 1000
    ) -> None:
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> LogisticBaseline:
        """Fit on (X, y); the validation arguments are accepted for a uniform interface."""
        self.pipeline_ = Pipeline(
            [
                ("log", FunctionTransformer(signed_log1p)),
                ("scale", StandardScaler()),
                (
                    "lr",
                    LogisticRegression(
                        C=self.C, class_weight=self.class_weight, max_iter=self.max_iter
                    ),
                ),
            ]
        ).fit(X, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


_HGB_TAKES_VAL = "X_val" in inspect.signature(HistGradientBoostingClassifier.fit).parameters


class HistGBBaseline(ClassifierMixin, BaseEstimator):
    """scikit-learn's HistGradientBoostingClassifier with early stopping on the validation rows
    (scikit-learn >= 1.7; older versions hold out 10% of the training rows instead)."""

    def __init__(
        self,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        max_iter: int = 300,
        class_weight: str | dict | None = None,
        random_state: int = 0,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> HistGBBaseline:
        use_val = X_val is not None and y_val is not None and _HGB_TAKES_VAL
        use_val = use_val and len(np.unique(y_val)) > 1
        model = HistGradientBoostingClassifier(
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_iter=self.max_iter,
            class_weight=self.class_weight,
            early_stopping=True,
            n_iter_no_change=20,
            validation_fraction=None if use_val else 0.1,
            random_state=self.random_state,
        )
        if use_val:
            model.fit(X, y, X_val=X_val, y_val=y_val)
        else:
            model.fit(X, y)
        self.model_ = model
        self.classes_ = model.classes_
        self.n_iter_ = model.n_iter_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def xgboost_available() -> bool:
    """Whether the optional ``xgboost`` package can be imported."""
    try:
        import xgboost  # noqa: F401
    except Exception:  # ImportError, or a broken native library
        return False
    return True


class XGBoostBaseline(ClassifierMixin, BaseEstimator):
    """xgboost's XGBClassifier (hist trees) with early stopping on the validation rows.

    ``class_weight="balanced"`` becomes per-row sample weights. Needs the optional ``xgboost``.
    """

    def __init__(
        self,
        learning_rate: float = 0.1,
        max_depth: int = 6,
        n_estimators: int = 500,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        class_weight: str | None = None,
        random_state: int = 0,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.n_estimators = n_estimators
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> XGBoostBaseline:
        import xgboost

        self.classes_ = np.unique(y)
        code = {c: i for i, c in enumerate(self.classes_)}
        yy = np.vectorize(code.__getitem__)(y) if len(y) else y
        use_val = X_val is not None and y_val is not None and len(y_val) > 0
        use_val = use_val and set(np.unique(y_val)) <= set(code)
        weight = compute_sample_weight(self.class_weight, yy) if self.class_weight else None
        model = xgboost.XGBClassifier(
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            n_estimators=self.n_estimators,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            tree_method="hist",
            early_stopping_rounds=30 if use_val else None,
            random_state=self.random_state,
        )
        fit_kw: dict[str, Any] = dict(sample_weight=weight, verbose=False)
        if use_val:
            yv = np.vectorize(code.__getitem__)(y_val)
            wv = compute_sample_weight(self.class_weight, yv) if self.class_weight else None
            fit_kw["eval_set"] = [(X_val, yv)]
            if wv is not None:
                fit_kw["sample_weight_eval_set"] = [wv]
        self.model_ = model.fit(X, yy, **fit_kw)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class DecisionWeighted(ClassifierMixin, BaseEstimator):
    """A classifier whose class decision is re-weighted on validation to maximise macro-F1.

    The wrapped estimator trains unweighted (so ``predict_proba`` stays a probability); ``fit``
    then learns ``weights_`` on the validation rows with :func:`fit_decision_weights` and
    ``predict`` returns ``argmax(predict_proba * weights_)``. Without validation rows the weights
    are 1 (plain argmax). On the synthetic world this beats ``class_weight="balanced"`` on
    macro-F1 and trains several times faster for gradient boosting.
    """

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> DecisionWeighted:
        base = clone(self.estimator if self.estimator is not None else LogisticBaseline())
        self.estimator_ = base.fit(X, y, X_val, y_val)
        self.classes_ = self.estimator_.classes_
        self.weights_ = np.ones(len(self.classes_))
        if X_val is not None and y_val is not None and len(y_val):
            known = np.isin(y_val, self.classes_)
            if known.any():
                pos = np.searchsorted(self.classes_, np.asarray(y_val)[known])
                self.weights_ = fit_decision_weights(self.predict_proba(X_val[known]), pos)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.estimator_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X) * self.weights_, axis=1)]


# name -> (estimator class, churn grid, migration grid); grids are small on purpose. Migration
# models are wrapped in DecisionWeighted (macro-F1 decision tuned on validation).
GRIDS: dict[str, tuple[type, list[dict], list[dict]]] = {
    "logistic": (
        LogisticBaseline,
        [dict(C=c) for c in (0.01, 0.1, 1.0)],
        [dict(C=c) for c in (0.01, 0.1, 1.0)],
    ),
    "hist_gb": (
        HistGBBaseline,
        [dict(learning_rate=0.1, max_leaf_nodes=15), dict(learning_rate=0.05, max_leaf_nodes=31)],
        [dict(learning_rate=0.1, max_leaf_nodes=15), dict(learning_rate=0.05, max_leaf_nodes=31)],
    ),
    "xgboost": (
        XGBoostBaseline,
        [dict(max_depth=4), dict(max_depth=6, learning_rate=0.05)],
        [dict(max_depth=4), dict(max_depth=6, learning_rate=0.05)],
    ),
}


def _val_roc_auc(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    return roc_auc(y, model.predict_proba(X)[:, 1])


def _val_macro_f1(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    return macro_f1(y, model.predict(X))


def tune(
    make: Callable[..., Any],
    grid: Sequence[dict],
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    score: Callable[[Any, np.ndarray, np.ndarray], float],
) -> tuple[Any, dict, float]:
    """Fit ``make(**params)`` for each params in ``grid`` on (X, y); keep the best by
    ``score(model, X_val, y_val)`` (higher is better). Without a usable validation set (empty, or
    one class only) the first grid point is kept. Returns (model, params, validation score)."""
    usable = len(y_val) > 0 and len(np.unique(y_val)) > 1
    best: tuple[Any, dict, float] | None = None
    for params in grid if usable else grid[:1]:
        model = make(**params).fit(X, y, X_val if usable else None, y_val if usable else None)
        value = score(model, X_val, y_val) if usable else float("nan")
        if best is None or value > best[2]:
            best = (model, dict(params), value)
    assert best is not None, "empty grid"
    return best


def as_split(split: Split | Mapping[str, np.ndarray]) -> Split:
    """A :class:`gpuseg.train.Split` from a Split or any mapping with train/val/test (e.g. the
    arrays of ``run_dir/split.npz``)."""
    if isinstance(split, Split):
        return split
    try:
        return Split(*(np.asarray(split[k], dtype=np.int64) for k in ("train", "val", "test")))
    except KeyError as exc:
        raise DataError(f"split: missing part {exc}; need train, val and test rows") from None


def default_models() -> list[str]:
    """Baselines that run here: logistic, hist_gb, and xgboost when it is installed."""
    return ["logistic", "hist_gb"] + (["xgboost"] if xgboost_available() else [])


def run_baselines(
    panel: Panel,
    split: Split | Mapping[str, np.ndarray],
    seed: int = 0,
    models: Sequence[str] | None = None,
    chunk_rows: int = FEATURE_CHUNK_ROWS,
    test_panel: Panel | None = None,
) -> dict:
    """Train each baseline on ``split.train`` (tuned on ``split.val``) and predict ``split.test``.

    With ``test_panel`` (out of time: a later window of the same layout), ``split.test`` indexes
    that panel's rows, and test features and labels come from it.

    Churn models train on rows with a churn label, migration models on rows with a migration
    label (unweighted, then wrapped in :class:`DecisionWeighted`: class decision weights tuned on
    validation for macro-F1). Predictions cover every test row, metrics the labelled ones.

    Returns::

        {"feature_names": [...], "test_rows": (n_test,) int64,
         "seconds": {"features": s},
         "models": {name: {"churn": {"proba": (n_test,) float64, "params": {...},
                                     "val_roc_auc": float, "metrics": churn_metrics(...),
                                     "seconds": s},
                           "migration": {"pred": (n_test,) int8, "proba": (n_test, 3),
                                         "params": {..., "decision_weights": [w0, w1, w2]},
                                         "val_macro_f1": float,
                                         "metrics": migration_metrics(...), "seconds": s}
                                        or None when the training rows lack migration labels}}}
    """
    split = as_split(split)
    names = list(models) if models is not None else default_models()
    for name in names:
        if name not in GRIDS:
            raise DataError(f"unknown baseline {name!r}; choose from {', '.join(GRIDS)}")
        if name == "xgboost" and not xgboost_available():
            raise DataError("baseline 'xgboost' needs the xgboost package (pip install xgboost)")

    t0 = time.perf_counter()
    parts = (split.train, split.val, split.test)
    later = test_panel if test_panel is not None else panel
    if later.usage.shape[1:] != panel.usage.shape[1:] or later.metrics != panel.metrics:
        raise DataError("baselines: the test panel's periods or metrics differ from the training's")
    X = window_features(panel, np.concatenate(parts[:2]), chunk_rows)
    X_tr, X_va = X[: len(split.train)], X[len(split.train) :]
    X_te = window_features(later, split.test, chunk_rows)
    feature_seconds = time.perf_counter() - t0

    c_tr, c_va = (np.asarray(panel.churn)[p] for p in parts[:2])
    g_tr, g_va = (np.asarray(panel.migration)[p] for p in parts[:2])
    c_te, g_te = np.asarray(later.churn)[split.test], np.asarray(later.migration)[split.test]
    if len(np.unique(c_tr[c_tr >= 0])) < 2:
        raise DataError("baselines: the training split needs churners and stayers")
    has_mig = len(np.unique(g_tr[g_tr >= 0])) >= 2

    out: dict[str, Any] = dict(
        feature_names=feature_names(panel),
        test_rows=np.asarray(split.test, dtype=np.int64),
        seconds=dict(features=feature_seconds),
        models={},
    )
    for name in names:
        cls, churn_grid, mig_grid = GRIDS[name]
        make = _with_seed(cls, seed)
        t1 = time.perf_counter()
        tr, va, te = c_tr >= 0, c_va >= 0, c_te >= 0
        model, params, val_score = tune(
            make, churn_grid, X_tr[tr], c_tr[tr], X_va[va], c_va[va], _val_roc_auc
        )
        proba = model.predict_proba(X_te)[:, 1].astype(np.float64)
        result: dict[str, Any] = dict(
            churn=dict(
                proba=proba,
                params=params,
                val_roc_auc=val_score,
                metrics=churn_metrics(c_te[te], proba[te]),
                seconds=time.perf_counter() - t1,
            ),
            migration=None,
        )
        if has_mig:
            t2 = time.perf_counter()
            tr, va, te = g_tr >= 0, g_va >= 0, g_te >= 0
            model, params, val_score = tune(
                _decision_weighted(make),
                mig_grid,
                X_tr[tr],
                g_tr[tr],
                X_va[va],
                g_va[va],
                _val_macro_f1,
            )
            params["decision_weights"] = [float(w) for w in model.weights_]
            full = np.zeros((len(X_te), 3))
            full[:, model.classes_.astype(int)] = model.predict_proba(X_te)
            pred = model.predict(X_te).astype(np.int8)
            result["migration"] = dict(
                pred=pred,
                proba=full,
                params=params,
                val_macro_f1=val_score,
                metrics=migration_metrics(g_te[te], pred[te]),
                seconds=time.perf_counter() - t2,
            )
        out["models"][name] = result
    return out


def _with_seed(cls: type, seed: int) -> Callable[..., Any]:
    """A factory for ``cls`` that passes ``random_state=seed`` where the class takes one."""
    takes_seed = "random_state" in inspect.signature(cls.__init__).parameters

    def make(**params: Any) -> Any:
        return cls(**params, random_state=seed) if takes_seed else cls(**params)

    return make


def _decision_weighted(make: Callable[..., Any]) -> Callable[..., Any]:
    """A factory like ``make`` whose estimators are wrapped in :class:`DecisionWeighted`."""

    def wrapped(**params: Any) -> DecisionWeighted:
        return DecisionWeighted(make(**params))

    return wrapped
