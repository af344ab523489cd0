"""The synthetic world: deterministic per seed, expected tables, plausible churn, the formula."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gpuseg.backend import resolve_backend
from gpuseg.config import DataConfig, SynthConfig
from gpuseg.data.prepare import build_panel
from gpuseg.data.synth import METRICS, SEGMENTS, churn_probability, generate
from gpuseg.errors import ConfigError

SMALL = SynthConfig(
    n_subscribers=300, n_periods=10, horizon=3, seed=3, late_joiner_frac=0.2, missing_frac=0.1
)
TABLES = ("usage", "static", "labels", "truth")


def read(out, name: str, fmt: str = "parquet") -> pd.DataFrame:
    path = out / f"{name}.{'parquet' if name == 'truth' else fmt}"
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def test_deterministic_for_a_seed(tmp_path):
    a = generate(SMALL, tmp_path / "a")
    b = generate(SMALL, tmp_path / "b")
    for name in TABLES:
        pd.testing.assert_frame_equal(read(tmp_path / "a", name), read(tmp_path / "b", name))
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (
            tmp_path / "b" / f"{name}.parquet"
        ).read_bytes()
    drop = lambda s: {k: v for k, v in s.items() if k != "files"}  # noqa: E731
    assert drop(a) == drop(b)
    assert drop(json.loads((tmp_path / "a" / "world.json").read_text())) == drop(
        json.loads(json.dumps(a))
    )


def test_other_seed_differs(tmp_path):
    generate(SMALL, tmp_path / "a")
    generate(SynthConfig(**{**SMALL.__dict__, "seed": 4}), tmp_path / "b")
    ua, ub = read(tmp_path / "a", "usage"), read(tmp_path / "b", "usage")
    assert not ua.equals(ub)
    ta, tb = read(tmp_path / "a", "truth"), read(tmp_path / "b", "truth")
    assert (ta["segment"] != tb["segment"]).mean() > 0.3


def test_expected_columns(tiny_world):
    usage = read(tiny_world.dir, "usage")
    assert list(usage.columns) == ["subscriber_id", "period", *METRICS]
    assert len(usage) == 1500 * 12 and not usage.duplicated(["subscriber_id", "period"]).any()
    assert (usage[list(METRICS)] >= 0).all().all()
    static = read(tiny_world.dir, "static")
    assert list(static.columns) == [
        "subscriber_id",
        "plan_type",
        "contract_months",
        "weeks_to_contract_end",
        "tenure_months",
        "n_bundles",
        "family_plan",
        "broadband",
        "marketing_consent",
        "do_not_disturb",
        "region",
    ]
    assert set(static["plan_type"]) == {"prepaid", "postpaid"}
    labels = read(tiny_world.dir, "labels")
    assert list(labels.columns) == ["subscriber_id", "churn", "migration"]
    assert set(labels["churn"]) == {0, 1} and set(labels["migration"]) <= {"down", "stay", "up"}
    truth = read(tiny_world.dir, "truth")
    assert {
        "subscriber_id",
        "segment",
        "segment_name",
        "churn",
        "churn_prob",
        "tier_now",
        "tier_next",
    } <= set(truth.columns)
    assert len(static) == len(labels) == len(truth) == 1500
    assert (labels["subscriber_id"] == static["subscriber_id"]).all()


def test_world_summary_plausible(tiny_world):
    world = json.loads((tiny_world.dir / "world.json").read_text())
    assert 0.05 <= world["churn_rate"] <= 0.35
    assert 0.6 <= world["oracle_auc"] <= 0.95
    assert set(world["segments"]) == {s.name for s in SEGMENTS}
    assert all(share > 0.03 for share in world["segments"].values())
    truth = read(tiny_world.dir, "truth")
    assert set(truth["segment"]) == set(range(len(SEGMENTS)))
    assert world["churn_rate"] == pytest.approx(truth["churn"].mean())
    assert world["periods"] == ["2026-01-05", "2026-03-23"]
    # churners migrate down
    labels = read(tiny_world.dir, "labels")
    assert (labels.loc[labels["churn"] == 1, "migration"] == "down").all()


def test_late_joiners_and_missing_rows(tmp_path):
    generate(SMALL, tmp_path)
    usage = read(tmp_path, "usage")
    per_sub = usage.groupby("subscriber_id").size()
    assert per_sub.max() == SMALL.n_periods and per_sub.min() < SMALL.n_periods
    assert usage["subscriber_id"].nunique() == SMALL.n_subscribers  # everyone keeps the last period
    last = usage["period"].max()
    assert usage.loc[usage["period"] == last, "subscriber_id"].nunique() == SMALL.n_subscribers


def _static(n: int) -> dict[str, np.ndarray]:
    return dict(
        prepaid=np.zeros(n),
        tenure_months=np.full(n, 24.0),
        weeks_to_contract_end=np.full(n, np.nan),
        family_plan=np.zeros(n),
        n_bundles=np.ones(n),
    )


def test_churn_probability_increases_with_support_contacts():
    n, t = 10, 12
    usage = np.zeros((n, t, len(METRICS)), dtype=np.float32)
    m = {name: i for i, name in enumerate(METRICS)}
    usage[:, :, m["data_mb"]] = 1000.0
    usage[:, :, m["voice_min"]] = 100.0
    usage[:, :, m["revenue"]] = 10.0
    usage[:, -1, m["support_contacts"]] = np.arange(n)  # 0..9 contacts in the last period
    valid = np.ones((n, t), dtype=bool)
    p = churn_probability(usage, valid, _static(n), horizon=4)
    assert p.shape == (n,) and ((p > 0) & (p < 1)).all()
    assert (np.diff(p[:7]) > 0).all()  # strictly more risk up to the cap of 6 contacts
    assert np.allclose(p[6:], p[6])  # capped
    # contacts before the last 8 periods do not count
    old = usage.copy()
    old[:, -1, m["support_contacts"]] = 0
    old[:, 0, m["support_contacts"]] = np.arange(n)
    assert np.allclose(churn_probability(old, valid, _static(n), horizon=4), p[0])
    # weaker signal, smaller effect
    p_hard = churn_probability(usage, valid, _static(n), horizon=4, signal=0.6)
    assert p_hard[6] - p_hard[0] < p[6] - p[0]


def test_churn_probability_other_drivers():
    n, t = 2, 12
    m = {name: i for i, name in enumerate(METRICS)}
    usage = np.zeros((n, t, len(METRICS)), dtype=np.float32)
    usage[:, :, m["data_mb"]] = 2000.0
    usage[:, :, m["voice_min"]] = 200.0
    usage[1, -4:, m["data_mb"]] = 50.0  # subscriber 1 declines at the end
    usage[1, -4:, m["voice_min"]] = 5.0
    valid = np.ones((n, t), dtype=bool)
    p = churn_probability(usage, valid, _static(n), horizon=4)
    assert p[1] > p[0]
    static = _static(n)
    static["weeks_to_contract_end"] = np.array([40.0, 2.0])  # 1 is near the end of its contract
    p = churn_probability(usage[[0, 0]], valid, static, horizon=4)
    assert p[1] > p[0]


def test_csv_world_prepares_like_parquet(tmp_path):
    """The world written as CSV gives the same panel; a killed run's temp file is not reused."""
    cfg = SynthConfig(n_subscribers=200, n_periods=8, horizon=2, seed=1)
    generate(cfg, tmp_path / "pq")
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / ".usage.csv.tmp").write_text("stale,rows\n1,2\n")
    generate(cfg, tmp_path / "csv", fmt="csv")
    be = resolve_backend("cpu")
    panels = []
    for fmt in ("parquet", "csv"):
        d = tmp_path / ("pq" if fmt == "parquet" else "csv")
        panels.append(
            build_panel(
                DataConfig(
                    usage=str(d / f"usage.{fmt}"),
                    static=str(d / f"static.{fmt}"),
                    labels=str(d / f"labels.{fmt}"),
                ),
                be,
            )[0]
        )
    a, b = panels
    assert a.ids.tolist() == b.ids.tolist() and a.meta["periods"] == b.meta["periods"]
    np.testing.assert_allclose(a.usage, b.usage, rtol=1e-6)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.meta["static_features"] == b.meta["static_features"]
    np.testing.assert_allclose(a.static, b.static, rtol=1e-6)
    np.testing.assert_array_equal(a.churn, b.churn)
    np.testing.assert_array_equal(a.migration, b.migration)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"n_subscribers": 5}, "synth.n_subscribers"),
        ({"n_periods": 4}, "synth.n_periods"),
        ({"preset": "easy"}, "synth.preset"),
    ],
)
def test_bad_synth_config(tmp_path, change, key):
    with pytest.raises(ConfigError, match=key):
        generate(SynthConfig(**{**SMALL.__dict__, **change}), tmp_path)


def test_monthly_and_hard_preset(tmp_path):
    world = generate(
        SynthConfig(n_subscribers=400, n_periods=8, horizon=2, freq="M", preset="hard", seed=2),
        tmp_path,
    )
    assert world["periods"] == [
        "2026-01-01",
        "2026-08-01",
    ]  # from the month holding start (2026-01-05)
    usage = read(tmp_path, "usage")
    assert (pd.to_datetime(usage["period"]).dt.day == 1).all()
