"""Sequence features the window aggregates miss, on hand-made series."""

from __future__ import annotations

import numpy as np
import pytest

from gpuseg.features.sequence import SEQUENCE_STATS, sequence_feature_names, sequence_stats


def test_peak_burst_quiet_and_absent_runs_of_a_known_series():
    # one metric, 12 periods: steady 4, a burst of 20 + 20 in periods 9-10 (0-based), then quiet;
    # the last quarter is the last 3 periods
    usage = np.array([[4] * 9 + [20, 20, 0]], dtype=float)[..., None]  # (1, 12, 1)
    mask = np.ones((1, 12), dtype=bool)
    out = sequence_stats(usage, mask)[0]
    peak, age, burst, quiet, drop, absent = out
    assert peak == pytest.approx(np.log1p(20))
    assert age == pytest.approx(1 / 12)  # last peak one period before the latest
    assert burst == pytest.approx(np.log1p(40) - np.log1p(2 * 4), rel=1e-5)  # vs own rate of 4
    assert quiet == pytest.approx(1 / 12)  # the last period below a quarter of the mean
    assert drop == pytest.approx(-np.log1p(20), rel=1e-5)
    assert absent == 0.0


def test_absent_periods_count_as_zero_and_the_trailing_absent_run():
    usage = np.full((2, 6, 2), 5.0)
    mask = np.ones((2, 6), dtype=bool)
    mask[1, -3:] = False  # gone for the last three periods
    usage[1, -3:] = 999.0  # whatever absent rows hold never counts
    out = sequence_stats(usage, mask)
    assert out.shape == (2, len(SEQUENCE_STATS) * 2 + 1)
    assert out[0, -1] == 0.0 and out[1, -1] == pytest.approx(3 / 6)
    assert out[1, 0] == pytest.approx(np.log1p(5.0))  # the 999s are not the peak
    assert len(sequence_feature_names(["a", "b"])) == out.shape[1]


def test_a_single_period_table_works():
    out = sequence_stats(np.ones((3, 1, 2)), np.ones((3, 1), dtype=bool))
    assert out.shape == (3, len(SEQUENCE_STATS) * 2 + 1) and np.isfinite(out).all()
