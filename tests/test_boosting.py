"""TunedBooster: XGBoost and LightGBM tuned by Optuna on validation rows."""

from __future__ import annotations

import numpy as np
import pytest

from gpuseg.errors import ConfigError, DataError
from gpuseg.evaluate.boosting import TunedBooster, booster_available
from gpuseg.evaluate.metrics import macro_roc_auc, roc_auc


def interaction_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Churn from an interaction (x0 > 0 and x1 > 0): out of a linear model's reach."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    p = np.where((X[:, 0] > 0) & (X[:, 1] > 0), 0.8, 0.1)
    return X, (rng.random(n) < p).astype(int)


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_tuned_booster_learns_an_interaction_with_its_budget(kind):
    if not booster_available(kind):
        pytest.skip(f"{kind} not installed")
    X, y = interaction_data(3000, 0)
    Xv, yv = interaction_data(1000, 1)
    Xt, yt = interaction_data(2000, 2)
    model = TunedBooster(kind, n_trials=3, random_state=0).fit(X, y, Xv, yv)
    assert roc_auc(yt, model.predict_proba(Xt)[:, 1]) > 0.8
    assert 0.5 < model.val_auc_ <= 1.0 and "learning_rate" in model.best_params_
    again = TunedBooster(kind, n_trials=3, random_state=0).fit(X, y, Xv, yv)
    assert again.best_params_ == model.best_params_  # seeded study
    assert set(model.predict(Xt)) <= {0, 1}


def test_tuned_booster_refuses_bad_settings():
    X, y = interaction_data(200, 0)
    with pytest.raises(ConfigError, match="unknown booster"):
        TunedBooster("catboost").fit(X, y, X, y)
    if booster_available("xgboost"):
        with pytest.raises(DataError, match="validation"):
            TunedBooster("xgboost").fit(X, y, X, np.zeros(len(y)))
        with pytest.raises(ConfigError, match="trials"):
            TunedBooster("xgboost", n_trials=0).fit(X, y, X, y)


def three_classes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """down / stay / up from x0 (and an interaction for up): a migration-like label."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    down = rng.random(n) < 1 / (1 + np.exp(-(2 * X[:, 0] - 1)))
    up = ~down & (X[:, 1] > 0) & (X[:, 2] > 0) & (rng.random(n) < 0.8)
    return X, np.where(down, 0, np.where(up, 2, 1))


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_tuned_booster_multiclass_is_scored_by_macro_auc(kind):
    """Migration: three classes, tuned on the validation macro one-vs-rest ROC-AUC."""
    if not booster_available(kind):
        pytest.skip(f"{kind} not installed")
    X, y = three_classes(2000, 0)
    Xv, yv = three_classes(600, 1)
    Xt, yt = three_classes(1500, 2)
    model = TunedBooster(kind, n_trials=2, random_state=0).fit(X, y, Xv, yv)
    proba = model.predict_proba(Xt)
    assert proba.shape == (1500, 3) and np.allclose(proba.sum(1), 1)
    assert list(model.classes_) == [0, 1, 2]
    assert macro_roc_auc(yt, proba) > 0.75
    assert model.val_auc_ == pytest.approx(macro_roc_auc(yv, model.predict_proba(Xv)))
    with pytest.raises(DataError, match="every class"):  # no 'up' in validation
        TunedBooster(kind, n_trials=1).fit(X, y, Xv[yv < 2], yv[yv < 2])
