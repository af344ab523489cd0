"""Classic segmentations: known answers on hand-built panels, independent checks on a tiny world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpuseg.backend import resolve_backend
from gpuseg.config import DataConfig, SegmentsConfig, SynthConfig, from_dict
from gpuseg.data.panel import Panel, load_attributes, load_panel
from gpuseg.data.prepare import prepare
from gpuseg.data.synth import generate
from gpuseg.errors import ConfigError, DataError
from gpuseg.segment.classic import (
    PRIORITY,
    classic_segments,
    gini,
    lifecycle_stage,
    periods_per_month,
    rfm_groups,
    score_by_edges,
    segment_edges,
    subscriber_revenue,
    usage_change,
    value_concentration,
    value_stability_matrix,
)

METRICS = ["data_mb", "voice_min", "sms", "revenue", "distinct_contacts"]


def make_panel(
    usage: np.ndarray,
    metrics: list[str],
    mask: np.ndarray | None = None,
    periods: list[str] | None = None,
    revenue_metric: str = "revenue",
) -> Panel:
    n, t, _ = usage.shape
    if periods is None:
        periods = [str(np.datetime64("2026-01-05") + 7 * i) for i in range(t)]
    return Panel(
        usage=usage.astype(np.float32),
        mask=np.ones((n, t), bool) if mask is None else mask,
        static=np.zeros((n, 0), np.float32),
        churn=np.full(n, -1, np.int8),
        migration=np.full(n, -1, np.int8),
        ids=np.array([f"S{i:03d}" for i in range(n)]),
        meta=dict(
            metrics=metrics,
            periods=periods,
            revenue_metric=revenue_metric,
            id_column="subscriber_id",
        ),
    )


def flat_usage(n: int, t: int, data=3000.0, voice=100.0, sms=10.0, revenue=10.0, contacts=20.0):
    """(n, t, 5) usage in METRICS order, constant over time."""
    u = np.zeros((n, t, 5))
    u[..., 0], u[..., 1], u[..., 2], u[..., 3], u[..., 4] = data, voice, sms, revenue, contacts
    return u


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate(
        SynthConfig(
            n_subscribers=2000, n_periods=26, late_joiner_frac=0.1, missing_frac=0.05, seed=3
        ),
        root / "w",
    )
    cfg = DataConfig(
        usage=str(root / "w/usage.parquet"),
        static=str(root / "w/static.parquet"),
        labels=str(root / "w/labels.parquet"),
    )
    prepare(cfg, resolve_backend("cpu"), root / "p")
    panel, attributes = load_panel(root / "p"), load_attributes(root / "p")
    frame = classic_segments(panel, attributes, SegmentsConfig())
    return dict(
        root=root,
        panel=panel,
        attributes=attributes,
        frame=frame,
        usage=pd.read_parquet(root / "w/usage.parquet"),
        truth=pd.read_parquet(root / "w/truth.parquet"),
    )


# ---------------------------------------------------------------------------------------------
# Value concentration


def test_gini_known_values():
    assert gini(np.full(50, 7.0)) == pytest.approx(0.0, abs=1e-12)
    assert gini(np.array([0.0, 0.0, 0.0, 10.0])) == pytest.approx(3 / 4)
    # mean absolute difference of [1, 2, 3, 4] is 20/16; G = MAD / (2 * mean) = 1.25 / 5
    assert gini(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx(0.25)
    assert gini(np.zeros(5)) == 0.0


def test_concentration_equal_and_hand_values():
    eq = value_concentration(np.full(100, 3.0))
    assert eq["gini"] == pytest.approx(0.0, abs=1e-12)
    assert eq["top_share"]["top_20pct"] == pytest.approx(0.2)
    assert eq["top_share"]["top_1pct"] == pytest.approx(0.01)
    np.testing.assert_allclose(eq["lorenz"]["revenue"], eq["lorenz"]["population"], atol=1e-12)

    x = np.arange(1.0, 11.0)  # 1..10, total 55
    c = value_concentration(x, tops=(0.1, 0.2, 0.05), n_points=11)
    assert c["top_share"]["top_10pct"] == pytest.approx(10 / 55)
    assert c["top_share"]["top_20pct"] == pytest.approx(19 / 55)
    assert c["top_share"]["top_5pct"] == pytest.approx(10 / 55)  # ceil(0.5) = 1 subscriber
    assert c["lorenz"]["revenue"][0] == 0.0 and c["lorenz"]["revenue"][-1] == pytest.approx(1.0)
    assert c["lorenz"]["revenue"][5] == pytest.approx(15 / 55)  # poorest half: 1..5
    with pytest.raises(DataError):
        value_concentration(np.array([1.0, -1.0]))


def test_concentration_matches_data_files(world):
    """Top-20% share and Gini recomputed from usage.parquet with pandas, independently."""
    per_sub = world["usage"].groupby("subscriber_id")["revenue"].sum()
    per_sub = per_sub.reindex(world["panel"].ids)
    top = per_sub.sort_values(ascending=False).head(len(per_sub) // 5).sum() / per_sub.sum()
    v = per_sub.to_numpy()
    mad_gini = np.abs(v[:, None] - v[None, :]).sum() / (2 * len(v) ** 2 * v.mean())

    c = value_concentration(subscriber_revenue(world["panel"]))
    assert c["top_share"]["top_20pct"] == pytest.approx(top, rel=1e-5)
    assert c["gini"] == pytest.approx(mad_gini, rel=1e-5)
    assert 0.1 < c["gini"] < 0.9
    np.testing.assert_allclose(world["frame"]["revenue"].to_numpy(), v, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Value tiers


def test_arpu_and_value_levels_on_world(world):
    frame, usage = world["frame"], world["usage"]
    expected = usage.groupby("subscriber_id")["revenue"].mean().reindex(frame.index) * 52 / 12
    np.testing.assert_allclose(frame["arpu"].to_numpy(), expected.to_numpy(), rtol=1e-5)
    assert frame.attrs["periods_per_month"] == pytest.approx(52 / 12)
    # continuous ARPU, no ties: the default 40/70/90/98 percentile cuts give exact level sizes
    counts = frame["value_level"].value_counts().reindex(["low", "mid", "high", "premium", "vip"])
    assert counts.tolist() == [800, 600, 400, 160, 40]
    assert (frame["value_decile"].value_counts().sort_index() == 200).all()
    # levels and deciles agree with the ARPU order
    assert frame.groupby("value_decile")["arpu"].min().is_monotonic_increasing
    vip_min = frame.loc[frame["value_level"] == "vip", "arpu"].min()
    assert (frame.loc[frame["value_level"] != "vip", "arpu"] < vip_min).all()


def test_value_level_config_is_validated():
    panel = make_panel(flat_usage(4, 8), METRICS)
    with pytest.raises(ConfigError, match="value_quantiles"):
        classic_segments(
            panel, None, SegmentsConfig(value_quantiles=[0.5], value_levels=["a", "b", "c"])
        )
    with pytest.raises(ConfigError, match="3 to 5"):
        classic_segments(
            panel, None, SegmentsConfig(value_quantiles=[0.5], value_levels=["a", "b"])
        )
    with pytest.raises(ConfigError, match="increase"):
        classic_segments(panel, None, SegmentsConfig(value_quantiles=[0.7, 0.5, 0.9, 0.95]))
    custom = classic_segments(
        panel,
        None,
        SegmentsConfig(value_quantiles=[0.3, 0.6], value_levels=["bronze", "silver", "gold"]),
    )
    assert list(custom["value_level"].cat.categories) == ["bronze", "silver", "gold"]


def test_missing_revenue_metric_raises_data_error():
    panel = make_panel(flat_usage(3, 8)[..., [0, 1, 2]], ["data_mb", "voice_min", "sms"])
    with pytest.raises(DataError, match="'revenue'"):
        classic_segments(panel, None)
    renamed = make_panel(flat_usage(3, 8), METRICS, revenue_metric="arpu")
    with pytest.raises(DataError, match="'arpu'"):
        classic_segments(renamed, None)


# ---------------------------------------------------------------------------------------------
# RFM


def test_score_by_edges_and_groups():
    edges = np.array([1.0, 2.0, 3.0, 4.0])
    got = score_by_edges(np.array([0.5, 1.0, 2.5, 4.0, 9.0]), edges)
    assert got.tolist() == [1, 2, 3, 5, 5]
    r = np.array([5, 3, 5, 1, 1, 3, 2])
    f = np.array([5, 3, 1, 4, 1, 2, 3])
    m = np.array([5, 3, 2, 4, 5, 3, 2])
    assert rfm_groups(r, f, m).tolist() == [
        "champions",
        "loyal",
        "promising",
        "at_risk",
        "hibernating",
        "need_attention",
        "need_attention",
    ]


def test_recency_frequency_hand_built():
    t = 10
    u = flat_usage(4, t)
    u[0, -2:, 3] = 0.0  # stops paying two periods before the end -> recency 2, frequency 0.8
    u[1, :, 3] = 0.0  # never pays: falls back to any activity, which is in every period
    u[2] = 0.0  # never active at all -> recency T, frequency 0
    u[3, ::2, 3] = 0.0  # pays every other period, last one included -> recency 0, frequency 0.5
    frame = classic_segments(make_panel(u, METRICS), None)
    assert frame["recency"].tolist() == [2, 0, t, 0]
    assert frame["frequency"].tolist() == pytest.approx([0.8, 1.0, 0.0, 0.5])
    assert frame["monetary"].to_numpy() == pytest.approx(frame["arpu"].to_numpy())
    r, f, m = frame["r_score"], frame["f_score"], frame["m_score"]
    assert (frame["rfm_score"] == r + f + m).all()
    assert frame["rfm_code"].tolist() == [f"{a}{b}{c}" for a, b, c in zip(r, f, m, strict=True)]
    assert r.iloc[2] == 1 and r.iloc[1] == 5  # never active is least recent; ties share the top


def test_partition_with_global_edges_matches_whole(world):
    """Scoring a slice against the whole panel's cut points gives the whole panel's answers."""
    panel, attributes, frame = world["panel"], world["attributes"], world["frame"]
    edges = segment_edges(panel, SegmentsConfig())
    assert edges == frame.attrs["edges"]
    part = Panel(
        panel.usage[500:900],
        panel.mask[500:900],
        panel.static[500:900],
        panel.churn[500:900],
        panel.migration[500:900],
        panel.ids[500:900],
        panel.meta,
    )
    sub = classic_segments(part, attributes.iloc[500:900], SegmentsConfig(), edges=edges)
    cols = [
        "value_decile",
        "value_level",
        "r_score",
        "f_score",
        "m_score",
        "rfm_group",
        "stability",
        "lifecycle_stage",
        "priority",
    ]
    pd.testing.assert_frame_equal(sub[cols], frame.iloc[500:900][cols])
    own = classic_segments(part, attributes.iloc[500:900], SegmentsConfig())
    assert (own["value_decile"].value_counts() == 40).all()  # its own deciles differ


# ---------------------------------------------------------------------------------------------
# Stability


def _attrs(n: int, **cols) -> pd.DataFrame:
    frame = pd.DataFrame({"subscriber_id": [f"S{i:03d}" for i in range(n)]})
    for k, v in cols.items():
        frame[k] = v
    return frame


def test_stability_known_values():
    u = flat_usage(3, 8)
    u[0, :, 4], u[1, :, 4], u[2, :, 4] = 40.0, 0.0, 20.0
    attrs = _attrs(
        3,
        tenure_months=[60.0, 0.0, 30.0],
        family_plan=[True, False, True],
        broadband=[True, False, False],
        n_bundles=[3, 0, 1],
        contract_months=[24, 0, 12],
    )
    frame = classic_segments(make_panel(u, METRICS), attrs)
    s = SegmentsConfig().stability
    mid = (
        s.tenure_weight * 0.5
        + s.social_weight * 0.5
        + s.services_weight * (1 + 0 + 1 / 3) / 3
        + s.contract_weight * 0.5
    ) / (s.tenure_weight + s.social_weight + s.services_weight + s.contract_weight)
    assert frame["stability"].tolist() == pytest.approx([1.0, 0.0, mid])
    assert frame["stability_band"].astype(str).tolist() == ["high", "low", "mid"]
    assert not [n for n in frame.attrs["notes"] if n.startswith("stability")]


def test_stability_degrades_without_contacts_or_attributes():
    u = flat_usage(2, 8)
    u[0, :, 4], u[1, :, 4] = 10.0, 30.0
    only_social = classic_segments(make_panel(u, METRICS), None)
    # no attributes: the score is the social component alone (weights renormalised)
    assert only_social["stability"].tolist() == pytest.approx([0.25, 0.75])
    assert only_social["stability_tenure"].isna().all()
    notes = " | ".join(only_social.attrs["notes"])
    assert "no attributes" in notes and "tenure component skipped" in notes
    assert only_social["contract_group"].astype(str).tolist() == ["unknown", "unknown"]

    no_contacts = make_panel(u[..., :4], METRICS[:4])
    attrs = _attrs(2, tenure_months=[30.0, 60.0])
    frame = classic_segments(no_contacts, attrs)
    assert frame["stability"].tolist() == pytest.approx([0.5, 1.0])
    assert any("distinct_contacts" in n for n in frame.attrs["notes"])
    assert any("contract component skipped" in n for n in frame.attrs["notes"])
    bare = classic_segments(no_contacts, None)
    assert bare["stability"].isna().all() and (bare["stability_band"] == "mid").all()


def test_attributes_must_match_panel_rows():
    panel = make_panel(flat_usage(3, 8), METRICS)
    with pytest.raises(DataError, match="rows"):
        classic_segments(panel, _attrs(2))
    shuffled = _attrs(3)
    shuffled["subscriber_id"] = ["S001", "S000", "S002"]
    with pytest.raises(DataError, match="row 1"):
        classic_segments(panel, shuffled)


# ---------------------------------------------------------------------------------------------
# Lifecycle and profiles


def test_usage_change_exact():
    t = 12
    u = np.ones((3, t, 2))
    u[0, -4:] = 0.5  # both metrics halve in the last 4 periods
    u[1, -4:, 0] = 3.0  # one metric triples, the other is never used
    u[1, :, 1] = 0.0
    mask = np.ones((3, t), bool)
    mask[2, :9] = False  # 3 present periods: k shrinks to 1
    u[2, -1] = 2.0
    got = usage_change(u, mask, 4)
    assert got.tolist() == pytest.approx([-0.5, 2.0, 1.0])


def test_lifecycle_stages_hand_built():
    t = 12
    u = flat_usage(6, t)
    u[1, -4:, :3] *= 0.5  # declining
    u[4, -4:, :3] *= 2.0  # growing
    u[5, -4:, :3] *= 0.5  # declining and near contract end: declining wins
    u[0, -4:, :3] *= 0.5  # new and declining: new wins
    attrs = _attrs(
        6,
        tenure_months=[1.0, 40.0, 40.0, 40.0, 40.0, 40.0],
        weeks_to_contract_end=[np.nan, np.nan, 4.0, np.nan, np.nan, 2.0],
        contract_months=[0, 0, 12, 0, 0, 24],
    )
    frame = classic_segments(make_panel(u, METRICS), attrs)
    assert frame["lifecycle_stage"].astype(str).tolist() == [
        "new",
        "declining",
        "near_contract_end",
        "mature",
        "growing",
        "declining",
    ]
    assert frame["usage_change"].tolist() == pytest.approx([-0.5, -0.5, 0.0, 0.0, 1.0, -0.5])

    cfg = SegmentsConfig().lifecycle
    change = np.array([0.0, 0.0, 0.0])
    weeks = np.array([-1.0, cfg.contract_end_periods, cfg.contract_end_periods + 1])
    assert lifecycle_stage(change, None, weeks, cfg).tolist() == [
        "mature",
        "near_contract_end",
        "mature",
    ]


def test_new_without_tenure_uses_join_period():
    t = 26
    mask = np.ones((2, t), bool)
    mask[0, :22] = False  # joined 4 weekly periods before the end: under 3 months
    frame = classic_segments(make_panel(flat_usage(2, t), METRICS, mask=mask), None)
    assert frame["lifecycle_stage"].astype(str).tolist() == ["new", "mature"]
    assert any("tenure_months" in n for n in frame.attrs["notes"])


def test_contract_bundling_and_usage_profiles():
    u = flat_usage(5, 8, data=0.0, voice=0.0, sms=0.0)
    per_week = 12 / 52
    u[0, :, 0] = 20000 * per_week  # data-heavy
    u[1, :, 1] = 1000 * per_week  # voice
    u[2, :, 2] = 500 * per_week  # sms
    u[3, :, :3] = 1.0  # light
    u[4, :, 0], u[4, :, 1] = 6000 * per_week, 330 * per_week  # data 1.2x ref, voice 1.1x ref
    attrs = _attrs(
        5,
        plan_type=["prepaid", "postpaid", "postpaid", "postpaid", "postpaid"],
        contract_months=[0, 0, 12, 24, 36],
        family_plan=[False, True, True, False, False],
        broadband=[False, True, False, True, False],
        n_bundles=[0, 0, 0, 2, 1],
    )
    frame = classic_segments(make_panel(u, METRICS), attrs)
    assert frame["contract_group"].astype(str).tolist() == [
        "prepaid",
        "no_contract",
        "1-12m",
        "13-24m",
        "25m+",
    ]
    assert frame["bundling_profile"].astype(str).tolist() == [
        "mobile_only",
        "family_convergent",
        "family",
        "convergent",
        "bundled",
    ]
    assert frame["n_products"].tolist() == [0, 2, 1, 3, 1]
    assert frame["usage_profile"].astype(str).tolist() == [
        "data_heavy",
        "voice_centric",
        "sms_centric",
        "light",
        "data_heavy",
    ]


def test_periods_per_month_inference():
    cfg = SegmentsConfig()
    weekly = make_panel(flat_usage(1, 8), METRICS)
    assert periods_per_month(weekly, cfg) == (pytest.approx(52 / 12), None)
    monthly = make_panel(
        flat_usage(1, 4), METRICS, periods=["2026-01", "2026-02", "2026-03", "2026-04"]
    )
    monthly.meta["periods"] = ["2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"]
    assert periods_per_month(monthly, cfg) == (1.0, None)
    ints = make_panel(flat_usage(1, 3), METRICS, periods=["1", "2", "3"])
    value, note = periods_per_month(ints, cfg)
    assert value == 1.0 and "not dates" in note
    assert periods_per_month(ints, SegmentsConfig(periods_per_month=2.0)) == (2.0, None)


# ---------------------------------------------------------------------------------------------
# Value x stability


def test_value_stability_matrix(world):
    frame, truth = world["frame"], world["truth"].set_index("subscriber_id")
    prob = truth.loc[frame.index, "churn_prob"].to_numpy()
    m = value_stability_matrix(frame, prob)
    assert len(m) == 15 and m["subscribers"].sum() == len(frame)
    assert m["revenue"].sum() == pytest.approx(frame["revenue"].sum())
    assert m["share_revenue"].sum() == pytest.approx(1.0)
    expected = (
        pd.Series(prob, index=frame.index)
        .groupby([frame["value_level"].astype(str), frame["stability_band"].astype(str)])
        .mean()
    )
    got = m.set_index([m["value_level"].astype(str), m["stability_band"].astype(str)])[
        "mean_churn_risk"
    ]
    pd.testing.assert_series_equal(got.loc[expected.index], expected, check_names=False)
    cell = m.set_index(["value_level", "stability_band"])
    assert tuple(cell.loc[("vip", "low"), ["priority", "action"]]) == (1, "retain now")
    assert tuple(cell.loc[("premium", "low"), ["priority", "action"]]) == (1, "retain now")
    assert tuple(cell.loc[("low", "high"), ["priority", "action"]]) == (5, "maintain")
    assert tuple(cell.loc[("mid", "low"), ["priority", "action"]]) == PRIORITY[("middle", "low")]
    # the per-subscriber priority column agrees with its cell
    joined = frame.merge(m, on=["value_level", "stability_band"], suffixes=("", "_cell"))
    assert (joined["priority"] == joined["priority_cell"]).all()
    assert value_stability_matrix(frame)["mean_churn_risk"].isna().all()


def test_world_segments_are_plausible(world):
    """The synthetic world's latent segments show up in the classic ones."""
    frame, truth = (
        world["frame"],
        world["truth"].set_index("subscriber_id").loc[world["frame"].index],
    )
    profile = pd.crosstab(
        truth["segment_name"], frame["usage_profile"].astype(str), normalize="index"
    )
    assert profile.loc["heavy_data_streamers", "data_heavy"] > 0.9
    assert profile.loc["voice_centric_seniors", "voice_centric"] > 0.9
    declining = frame["lifecycle_stage"] == "declining"
    assert (
        truth.loc[declining.to_numpy(), "churn_prob"].mean()
        > truth.loc[~declining.to_numpy(), "churn_prob"].mean()
    )
    prepaid = (world["attributes"]["plan_type"] == "prepaid").to_numpy()
    assert (frame["contract_group"].astype(str).eq("prepaid").to_numpy() == prepaid).all()
    assert frame.attrs["notes"] == []


def test_config_sections_load_from_dict():
    cfg = from_dict(
        SegmentsConfig,
        {"stability": {"tenure_weight": 0.5, "bands": [0.2, 0.8]}, "lifecycle": {"new_months": 6}},
    )
    assert cfg.stability.tenure_weight == 0.5 and cfg.lifecycle.new_months == 6
    with pytest.raises(ConfigError, match="stability.tenure_wieght"):
        from_dict(SegmentsConfig, {"stability": {"tenure_wieght": 0.5}})
