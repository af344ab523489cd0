"""TunedBooster: XGBoost and LightGBM tuned by Optuna on validation rows."""

from __future__ import annotations

import numpy as np
import pytest

from gpuseg.errors import ConfigError, DataError
from gpuseg.evaluate.boosting import TunedBooster, booster_available
from gpuseg.evaluate.metrics import roc_auc


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
