"""Window features and the tabular baselines."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from gpuseg.backend import resolve_backend
from gpuseg.config import DataConfig, SynthConfig
from gpuseg.data.panel import Panel, load_panel
from gpuseg.data.prepare import prepare
from gpuseg.data.split import Split, split_subscribers
from gpuseg.data.synth import generate
from gpuseg.errors import DataError
from gpuseg.evaluate.baselines import (
    GRIDS,
    DecisionWeighted,
    HistGBBaseline,
    LogisticBaseline,
    XGBoostBaseline,
    as_split,
    run_baselines,
    tune,
)
from gpuseg.evaluate.metrics import fast_macro_f1, fit_decision_weights, macro_f1
from gpuseg.features.aggregates import WINDOW_STATS, feature_names, window_features


def hand_panel() -> Panel:
    """Three subscribers, four periods, two metrics (the second is 10x the first)."""
    first = np.array(
        [
            [1, 2, 3, 4],  # all present: slope 1, last 4
            [5, 99, 7, 99],  # periods 1 and 3 absent (their 99s must be ignored)
            [0, 0, 0, 0],  # never present
        ],
        dtype=np.float32,
    )
    usage = np.stack([first, 10 * first], axis=2)  # (3, 4, 2)
    mask = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
    static = np.array([[1.0, 0.5], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    return Panel(
        usage=usage,
        mask=mask,
        static=static,
        churn=np.array([0, 1, 0], np.int8),
        migration=np.array([1, 0, 2], np.int8),
        ids=np.array(["a", "b", "c"]),
        meta=dict(metrics=["x", "y"], static_features=["s1", "s2"]),
    )


def column(panel: Panel, features: np.ndarray, name: str) -> np.ndarray:
    return features[:, feature_names(panel).index(name)]


def test_window_features_known_values():
    panel = hand_panel()
    X = window_features(panel)
    assert X.shape == (3, len(WINDOW_STATS) * 2 + 1 + 2) == (3, len(feature_names(panel)))
    assert X.dtype == np.float32
    get = lambda name: column(panel, X, name)  # noqa: E731
    # subscriber a: 1, 2, 3, 4
    assert get("x__mean")[0] == pytest.approx(2.5)
    assert get("x__last")[0] == 4
    assert get("x__slope")[0] == pytest.approx(1.0)
    assert get("x__last_quarter")[0] == 4  # 4 // 4 = 1 period
    assert get("x__std")[0] == pytest.approx(np.std([1, 2, 3, 4]))
    assert get("x__drop")[0] == pytest.approx(np.log(2.5 / 5.0))  # first half 1.5, last quarter 4
    assert get("y__slope")[0] == pytest.approx(10.0)
    assert get("share_present")[0] == 1.0
    # subscriber b: present 5 (t=0) and 7 (t=2); the 99s in absent periods are ignored
    assert get("x__mean")[1] == pytest.approx(6.0)
    assert get("x__last")[1] == 7  # latest present period, not the last column
    assert get("x__slope")[1] == pytest.approx(1.0)
    assert get("x__std")[1] == pytest.approx(1.0)
    assert get("x__last_quarter")[1] == 0  # no present period in the last quarter
    assert get("x__drop")[1] == 0  # ... so no drop can be measured
    assert get("share_present")[1] == 0.5
    # subscriber c: never present -> zeros; static features pass through unchanged
    assert np.all(X[2, : len(WINDOW_STATS) * 2 + 1] == 0)
    np.testing.assert_array_equal(X[:, -2:], panel.static)


def test_drop_is_positive_when_usage_falls():
    usage = np.array([[10, 10, 10, 10, 10, 10, 1, 1]], dtype=np.float32)[:, :, None]
    panel = Panel(
        usage,
        np.ones((1, 8), bool),
        np.zeros((1, 0), np.float32),
        np.zeros(1, np.int8),
        np.zeros(1, np.int8),
        np.array(["a"]),
        dict(metrics=["x"]),
    )
    X = window_features(panel)
    assert column(panel, X, "x__drop")[0] == pytest.approx(np.log(11 / 2))
    assert column(panel, X, "x__slope")[0] < 0


def test_window_features_chunks_and_rows_agree():
    panel = hand_panel()
    full = window_features(panel)
    np.testing.assert_array_equal(window_features(panel, chunk_rows=1), full)
    np.testing.assert_array_equal(window_features(panel, rows=np.array([2, 0])), full[[2, 0]])
    with pytest.raises(DataError):
        window_features(panel, rows=np.array([3]))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Panel:
    root = tmp_path_factory.mktemp("baselines")
    generate(SynthConfig(n_subscribers=3000), root / "world")
    cfg = DataConfig(
        usage=str(root / "world" / "usage.parquet"),
        static=str(root / "world" / "static.parquet"),
        labels=str(root / "world" / "labels.parquet"),
    )
    prepare(cfg, resolve_backend("cpu"), root / "panel")
    return load_panel(root / "panel")


def world_split(panel: Panel) -> Split:
    return split_subscribers(len(panel), 0.15, 0.15, seed=0)


def test_baselines_beat_chance_on_synthetic_world(world):
    split = world_split(world)
    result = run_baselines(world, split, seed=0, models=["logistic", "hist_gb"])
    assert set(result["models"]) == {"logistic", "hist_gb"}
    np.testing.assert_array_equal(result["test_rows"], split.test)
    assert len(result["feature_names"]) == len(feature_names(world))
    y_mig = np.asarray(world.migration)[split.test]
    for name, res in result["models"].items():
        churn = res["churn"]
        assert churn["proba"].shape == (len(split.test),)
        assert np.all((churn["proba"] >= 0) & (churn["proba"] <= 1))
        # chance is 0.5; the synthetic churn signal is strong (oracle about 0.82)
        assert churn["metrics"]["roc_auc"] > 0.7, name
        assert churn["metrics"]["top_decile_lift"] > 2.0, name
        assert churn["params"] in GRIDS[name][1]
        mig = res["migration"]
        assert mig["proba"].shape == (len(split.test), 3)
        np.testing.assert_allclose(mig["proba"].sum(1), 1.0, rtol=1e-6)
        # always predicting "stay" scores ~0.3 macro-F1; chance guessing about 0.3 as well
        assert mig["metrics"]["macro_f1"] > 0.4, name
        assert mig["metrics"]["macro_f1"] == pytest.approx(macro_f1(y_mig, mig["pred"]))
        assert len(mig["params"]["decision_weights"]) == 3


def test_run_baselines_is_deterministic_and_accepts_npz_style_split(world):
    split = world_split(world)
    a = run_baselines(world, split, seed=3, models=["hist_gb"])
    b = run_baselines(
        world, dict(train=split.train, val=split.val, test=split.test), seed=3, models=["hist_gb"]
    )
    np.testing.assert_array_equal(
        a["models"]["hist_gb"]["churn"]["proba"], b["models"]["hist_gb"]["churn"]["proba"]
    )


def test_run_baselines_errors(world):
    split = world_split(world)
    with pytest.raises(DataError, match="unknown baseline"):
        run_baselines(world, split, models=["forest"])
    with pytest.raises(DataError, match="missing part"):
        as_split(dict(train=split.train, val=split.val))
    stayers = np.flatnonzero(np.asarray(world.churn) == 0)
    one_class = Split(stayers[:500], split.val, split.test)
    with pytest.raises(DataError, match="churners and stayers"):
        run_baselines(world, one_class, models=["logistic"])


def test_run_baselines_without_migration_labels(world):
    panel = Panel(
        world.usage,
        world.mask,
        world.static,
        world.churn,
        np.full(len(world), -1, np.int8),
        world.ids,
        world.meta,
    )
    result = run_baselines(panel, world_split(world), models=["logistic"])
    assert result["models"]["logistic"]["migration"] is None
    assert result["models"]["logistic"]["churn"]["metrics"]["roc_auc"] > 0.7


def separable(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 0.5, n) > 0.8).astype(int)
    return X, y


@pytest.mark.parametrize("make", [LogisticBaseline, HistGBBaseline])
def test_estimators_follow_sklearn_conventions(make):
    X, y = separable()
    est = make()
    assert est.fit(X[:400], y[:400], X[400:], y[400:]) is est
    np.testing.assert_array_equal(est.classes_, [0, 1])
    proba = est.predict_proba(X[400:])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(est.predict(X[400:]), proba.argmax(1))
    assert (est.predict(X[400:]) == y[400:]).mean() > 0.8
    fresh = clone(est)  # get_params / set_params round trip; learned state not copied
    assert fresh.get_params() == est.get_params()
    assert not hasattr(fresh, "classes_")


def test_xgboost_baseline_when_installed():
    pytest.importorskip("xgboost")
    X, y = separable()
    est = XGBoostBaseline(n_estimators=50, class_weight="balanced")
    assert est.fit(X[:400], y[:400], X[400:], y[400:]) is est
    assert (est.predict(X[400:]) == y[400:]).mean() > 0.8


def test_tune_keeps_the_best_by_validation_score():
    X, y = separable()
    grid = [dict(C=1.0), dict(C=0.01), dict(C=0.1)]
    model, params, score = tune(
        LogisticBaseline, grid, X[:400], y[:400], X[400:], y[400:], lambda m, _X, _y: -m.C
    )  # a score that prefers the smallest C
    assert params == dict(C=0.01) and model.C == 0.01 and score == -0.01
    # no usable validation rows (one class): the first grid point, score NaN
    model, params, score = tune(
        LogisticBaseline, grid, X[:400], y[:400], X[400:], np.zeros(200), lambda m, _X, _y: -m.C
    )
    assert params == dict(C=1.0) and np.isnan(score)


def test_decision_weights_raise_macro_f1_for_rare_classes():
    rng = np.random.default_rng(1)
    n = 6000
    y = rng.choice(3, size=n, p=[0.2, 0.75, 0.05])
    # probabilities that lean to the true class but are dominated by the majority prior
    logits = np.log([0.2, 0.75, 0.05]) + 1.2 * np.eye(3)[y] + rng.normal(0, 1, (n, 3))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    plain = fast_macro_f1(y, proba.argmax(1), 3)
    assert plain == pytest.approx(macro_f1(y, proba.argmax(1)))
    w = fit_decision_weights(proba, y)
    assert w[1] == 1.0 and w[0] > 1 and w[2] > 1  # the majority keeps weight 1
    assert fast_macro_f1(y, (proba * w).argmax(1), 3) > plain + 0.05


def test_decision_weighted_wrapper():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 3))
    y = np.where(X[:, 0] > 1.3, 2, np.where(X[:, 0] < -1.0, 0, 1)) * (rng.random(3000) > 0.2)
    est = DecisionWeighted(LogisticBaseline())
    assert est.fit(X[:2000], y[:2000], X[2000:], y[2000:]) is est
    assert est.weights_.shape == (3,)
    np.testing.assert_array_equal(est.predict_proba(X[:5]), est.estimator_.predict_proba(X[:5]))
    tuned = macro_f1(y[2000:], est.predict(X[2000:]))
    plain = macro_f1(y[2000:], est.estimator_.predict(X[2000:]))
    assert tuned >= plain
    unweighted = DecisionWeighted(LogisticBaseline()).fit(X[:2000], y[:2000])
    np.testing.assert_array_equal(unweighted.weights_, np.ones(3))
