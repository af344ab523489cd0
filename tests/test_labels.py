"""Derived labels: churn from inactivity in the label window, migration from value tiers."""

import numpy as np
import pandas as pd
import pytest

from gpuseg.backend import resolve_backend
from gpuseg.data.labels import (
    check_windows,
    derive_block,
    inactivity_periods,
    longest_inactive_run,
    tier_cuts,
)
from gpuseg.data.panel import load_panel
from gpuseg.data.prepare import prepare
from gpuseg.errors import ConfigError


def test_longest_inactive_run():
    active = np.array(
        [
            [1, 1, 1, 1, 1, 1],
            [1, 0, 0, 1, 0, 1],
            [0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 1],
        ],
        dtype=bool,
    )
    assert longest_inactive_run(active).tolist() == [0, 2, 6, 3]


def test_inactivity_periods_and_windows():
    assert inactivity_periods("no_usage", 8, 30, 7.0) == 8
    assert inactivity_periods("inactivity", 8, 30, 7.0) == 5  # ceil(30 / 7)
    with pytest.raises(ConfigError, match="data.inactivity_days"):
        inactivity_periods("inactivity", 4, 60, 7.0)
    assert check_windows(26, 8, 0) == 18
    assert check_windows(26, 8, 4) == 14
    with pytest.raises(ConfigError, match="data.label_periods"):
        check_windows(26, 0, 0)
    with pytest.raises(ConfigError, match="observation periods"):
        check_windows(10, 8, 1)


def _block():
    # 4 subscribers x 10 periods x 2 metrics (calls, revenue); observation 6, label window 4
    t = 10
    usage = np.ones((4, t, 2), dtype=np.float32)
    usage[:, :, 1] = 20.0
    mask = np.ones((4, t), dtype=bool)
    usage[1, 6:] = 0.0  # silent for the whole label window: churner under both definitions
    usage[2, 7:9] = 0.0  # two silent periods: churner only for a 2-period inactivity rule
    mask[3, 6:] = False  # absent (no rows) in the label window counts as inactive
    usage[0, 6:, 1] = 60.0  # revenue rises: up a tier
    return usage, mask


def test_derive_block_churn_definitions():
    usage, mask = _block()
    kw = dict(n_obs=6, label_periods=4, activity_idx=[0, 1], revenue_idx=None, cuts=None)
    no_usage = derive_block(usage, mask, min_inactive=4, **kw)
    assert no_usage["churn"].tolist() == [0, 1, 0, 1]
    assert no_usage["usage"].shape == (4, 6, 2) and no_usage["mask"].shape == (4, 6)
    assert (no_usage["migration"] == -1).all()
    two = derive_block(usage, mask, min_inactive=2, **kw)
    assert two["churn"].tolist() == [0, 1, 1, 1]


def test_derive_block_migration_tiers():
    usage, mask = _block()
    cuts = tier_cuts(np.array([10.0, 20.0, 30.0, 40.0, 50.0]), (0.3, 0.7))  # 22, 38
    out = derive_block(
        usage,
        mask,
        n_obs=6,
        label_periods=4,
        min_inactive=4,
        activity_idx=[0, 1],
        revenue_idx=1,
        cuts=cuts,
    )
    # 0: 20 -> 60 crosses both cuts: up; 1: churner: down; 2: two zero periods of four give 10,
    # still below the first cut: stay; 3: absent in the label window, a churner: down
    assert out["migration"].tolist() == [2, 0, 1, 0]


def test_offset_ignores_the_latest_periods():
    usage, mask = _block()
    # with an offset of 4 the observation is periods 0..1 and the label window 2..5: all active
    out = derive_block(
        usage,
        mask,
        n_obs=2,
        label_periods=4,
        min_inactive=4,
        activity_idx=[0],
        revenue_idx=None,
        cuts=None,
    )
    assert out["churn"].tolist() == [0, 0, 0, 0]


@pytest.fixture(scope="module")
def quiet_usage(tiny_world, tmp_path_factory):
    """The tiny world's usage with some subscribers going silent at the end: 150 report zeros in
    the last 6 periods and 150 have no rows at all in the last 5."""
    usage = pd.read_parquet(tiny_world.usage)
    metrics = [c for c in usage.columns if c not in ("subscriber_id", "period")]
    periods = np.sort(usage["period"].unique())
    ids = np.sort(usage["subscriber_id"].unique())
    zero = usage["subscriber_id"].isin(ids[:150]) & usage["period"].isin(periods[-6:])
    usage.loc[zero, metrics] = 0
    gone = usage["subscriber_id"].isin(ids[150:300]) & usage["period"].isin(periods[-5:])
    path = tmp_path_factory.mktemp("quiet") / "usage.parquet"
    usage[~gone].to_parquet(path)
    return path


def _raw_churn(usage_path, label_window: list[str]) -> pd.Series:
    """Directly from the usage file: no activity at all in the label window, per subscriber."""
    usage = pd.read_parquet(usage_path)
    metrics = [c for c in usage.columns if c not in ("subscriber_id", "period")]
    usage["period"] = pd.to_datetime(usage["period"]).dt.strftime("%Y-%m-%d")
    window = usage[usage["period"].isin(label_window)]
    active = (window[metrics] > 0).any(axis=1).groupby(window["subscriber_id"].astype(str)).any()
    ids = usage["subscriber_id"].astype(str).unique()
    return (~active.reindex(ids, fill_value=False)).astype(int)


@pytest.mark.parametrize("offset", [0, 2])
def test_prepare_derives_labels_from_usage(tiny_world, quiet_usage, tmp_path, offset):
    cfg = tiny_world.data_config(
        usage=str(quiet_usage),
        labels=None,
        churn_definition="no_usage",
        label_periods=4,
        window_offset=offset,
    )
    meta = prepare(cfg, resolve_backend("cpu"), tmp_path / "panel")
    panel = load_panel(tmp_path / "panel")
    n_obs = 12 - 4 - offset
    assert panel.usage.shape[1] == n_obs == len(meta["periods"]) and panel.mask.shape[1] == n_obs
    assert meta["labels"]["definition"] == "no_usage"
    periods = pd.to_datetime(pd.read_parquet(quiet_usage)["period"]).dt.strftime("%Y-%m-%d")
    label_window = sorted(periods.unique())[n_obs : n_obs + 4]
    assert meta["labels"]["label_window"] == [label_window[0], label_window[-1]]
    expected = _raw_churn(quiet_usage, label_window).reindex(np.asarray(panel.ids).astype(str))
    assert expected.sum() == (300 if offset == 0 else 150)  # the silent ones, and only them
    assert np.array_equal(np.asarray(panel.churn), expected.to_numpy())
    assert set(np.unique(panel.migration)) <= {0, 1, 2}
    assert (np.asarray(panel.migration)[np.asarray(panel.churn) == 1] == 0).all()  # churn: down
    # the observation window holds exactly the first n_obs periods of the whole panel
    whole = tmp_path / "whole"
    prepare(
        tiny_world.data_config(usage=str(quiet_usage), labels=None), resolve_backend("cpu"), whole
    )
    assert np.array_equal(np.asarray(panel.usage), np.asarray(load_panel(whole).usage)[:, :n_obs])


def test_derived_label_errors(tiny_world, tmp_path):
    with pytest.raises(ConfigError, match="data.labels"):
        prepare(
            tiny_world.data_config(churn_definition="no_usage", label_periods=4),
            resolve_backend("cpu"),
            tmp_path / "a",
        )
    with pytest.raises(ConfigError, match="data.window_offset"):
        prepare(tiny_world.data_config(window_offset=2), resolve_backend("cpu"), tmp_path / "b")
    with pytest.raises(ConfigError, match="data.activity_metrics"):
        prepare(
            tiny_world.data_config(
                labels=None,
                churn_definition="inactivity",
                label_periods=4,
                activity_metrics=["nope"],
            ),
            resolve_backend("cpu"),
            tmp_path / "c",
        )
