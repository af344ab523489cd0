"""The synthetic campaign world: deterministic, other files untouched, effects as specified."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from gpuseg.config import SynthConfig
from gpuseg.data.campaigns import (
    GROUPS,
    OFFERS,
    expected_value,
    incremental_value,
    per_period_hazard,
)
from gpuseg.data.synth import generate

CFG = SynthConfig(n_subscribers=2000, n_periods=12, horizon=4, seed=5)


def test_off_is_unchanged_and_on_is_deterministic(tmp_path):
    generate(CFG, tmp_path / "off")
    on = replace(CFG, campaigns=True)
    s1 = generate(on, tmp_path / "a")
    generate(on, tmp_path / "b")
    for name in ("usage", "labels", "truth"):
        assert (tmp_path / "off" / f"{name}.parquet").read_bytes() == (
            tmp_path / "a" / f"{name}.parquet"
        ).read_bytes()
    for name in ("static", "campaigns", "future", "effects"):
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (
            tmp_path / "b" / f"{name}.parquet"
        ).read_bytes()
    off = pd.read_parquet(tmp_path / "off" / "static.parquet")
    st = pd.read_parquet(tmp_path / "a" / "static.parquet")
    pd.testing.assert_frame_equal(st[off.columns], off)
    assert {"consent_call", "consent_sms", "consent_email", "consent_push", "dnd_from"} <= set(
        st.columns
    )
    assert not (tmp_path / "off" / "campaigns.parquet").exists()
    assert "campaigns" in s1 and "campaigns" not in generate(CFG, tmp_path / "off2")


def test_campaign_table_and_truth(tmp_path):
    generate(replace(CFG, campaigns=True, campaign_waves=2), tmp_path)
    camp = pd.read_parquet(tmp_path / "campaigns.parquet")
    eff = pd.read_parquet(tmp_path / "effects.parquet")
    st = pd.read_parquet(tmp_path / "static.parquet").set_index("subscriber_id")
    assert set(camp["offer"]) == set(OFFERS)
    assert 0.45 < camp["treated"].mean() < 0.55
    assert camp["accepted"][camp["treated"] == 0].sum() == 0
    # a test's channel is one the subscriber consents to
    for c in ("call", "sms", "email", "push"):
        rows = camp[camp["channel"] == c]
        assert st.loc[rows["subscriber_id"], f"consent_{c}"].all()
    for o in OFFERS:
        assert set(eff[f"group_{o}"]) <= set(GROUPS)
    assert eff["sleeping_dog"].any() and eff["lost_cause"].any()
    # sleeping dogs: every contact raises their churn; persuadables gain from a call
    sd = eff[eff["sleeping_dog"]]
    assert (incremental_value(sd, "device_upgrade", "call", 4, 52, 0.998) < 0).all()
    pers = eff[eff["group_service_recovery"] == "persuadable"]
    assert (incremental_value(pers, "service_recovery", "call", 4, 52, 0.998) > 0).all()
    assert np.allclose(
        expected_value(
            eff["churn_prob"].to_numpy(),
            eff["rev_now"].to_numpy(),
            eff["rev_growth"].to_numpy(),
            4,
            52,
            1.0,
        ),
        eff["ltv"],
    )


def test_hazard_matches_horizon_probability():
    p = np.array([0.01, 0.2, 0.9])
    lam = per_period_hazard(p, 8)
    assert np.allclose(1 - (1 - lam) ** 8, p)
