"""Qini / AUUC on known cases, and the learners recover a planted effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpuseg.action.uplift import Campaigns, crossfit, qini_coefficient, qini_curve, qini_report


def planted(n: int = 6000, seed: int = 0):
    """x0 decides the effect: +0.3 retention for x0 > 0 when treated, 0 otherwise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    t = (rng.random(n) < 0.5).astype(np.int8)
    base = 0.5 + 0.1 * np.tanh(X[:, 1])
    gain = np.where(X[:, 0] > 0, 0.3, 0.0)
    y = (rng.random(n) < base + t * gain).astype(np.int8)
    return X, t, y, gain


def one_offer_table(t: np.ndarray, y: np.ndarray) -> Campaigns:
    """A campaign table of one offer through one channel, row i = panel row i."""
    n = len(t)
    return Campaigns(
        row=np.arange(n),
        offer=np.full(n, "gift"),
        channel=np.full(n, "sms"),
        treated=t,
        retained=y,
        date=None,
    )


def test_qini_orders_scores():
    X, t, y, gain = planted()
    oracle = qini_coefficient(y, t, gain + 1e-9 * X[:, 2])[0]
    rand = qini_coefficient(y, t, X[:, 3])[0]
    worst = qini_coefficient(y, t, -gain)[0]
    # half the rows gain 0.3, half of them treated: q(1) ~ 0.075, the ideal area ~ 0.019
    assert oracle > 0.012 > abs(rand) and worst < -0.012
    x, q, u = qini_curve(y, t, gain)
    # at the full population the Qini is the uplift curve times the treated share
    assert x[0] == 0 and q[0] == 0 and abs(q[-1] - u[-1] * t.mean()) < 0.005
    r = qini_report(y, t, dict(oracle=gain, noise=X[:, 3]), n_boot=50, ratio_to="oracle")
    assert r["oracle"]["qini_ci"][0] > 0 and r["noise"]["ratio_to_oracle"] < 0.5


def test_learners_recover_planted_effect():
    X, t, y, gain = planted(8000)
    camp = one_offer_table(t, y)
    for learner in ("s", "t"):
        cf = crossfit(X, camp, ["sms"], folds=3, learner=learner)
        assert np.isfinite(cf.oof_uplift).all()
        hi, lo = cf.oof_uplift[gain > 0].mean(), cf.oof_uplift[gain == 0].mean()
        assert hi - lo > 0.15, learner
        p0, p1 = cf.effects(X, np.arange(100), "gift", "sms")
        assert np.all((p0 >= 0) & (p0 <= 1)) and np.all((p1 >= 0) & (p1 <= 1))
        assert cf.effects(X, np.arange(5), "no_such_offer", "sms") is None


def test_read_campaigns_csv_unknown_ids_and_bad_flags(tmp_path):
    from gpuseg.action.uplift import read_campaigns
    from gpuseg.errors import DataError

    ids = np.array(["7", "12", "30"])
    table = pd.DataFrame(
        {
            "msisdn": [12, 99, 7, 12],  # read back as integers from CSV; 99 is not in the run
            "offer": ["a", "b", "a", "b"],
            "channel": ["sms", "sms", "call", "sms"],
            "treated": [1, 0, 1, 0],
            "retained": [1, 1, 0, 1],
            "date": ["2026-01-05", "2026-01-06", "bad", "2026-01-07"],
        }
    )
    table.to_csv(tmp_path / "c.csv", index=False)
    c = read_campaigns(tmp_path / "c.csv", ids, "msisdn")
    assert c.row.tolist() == [1, 0, 1] and c.offer.tolist() == ["a", "a", "b"]
    assert c.channel.tolist() == ["sms", "call", "sms"] and c.treated.tolist() == [1, 1, 0]
    assert c.counts == dict(rows=4, unknown_subscriber=1, used=3)
    assert c.date[0] == np.datetime64("2026-01-05") and np.isnat(c.date[1])
    table["msisdn"] = table["msisdn"].astype(str)
    table.to_parquet(tmp_path / "c.parquet")
    p = read_campaigns(tmp_path / "c.parquet", ids, "msisdn")
    assert p.row.tolist() == c.row.tolist() and p.offer.tolist() == c.offer.tolist()
    table.loc[2, "retained"] = 2
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"column 'retained' row 4: not 0/1"):
        read_campaigns(tmp_path / "bad.csv", ids, "msisdn")


def test_s_learner_finds_an_effect_that_needs_an_interaction():
    """The effect lives where two features are both high, under a baseline driven by a third:
    the trees must reach a treatment x feature x feature interaction."""
    rng = np.random.default_rng(3)
    n = 12_000
    X = rng.normal(size=(n, 5)).astype(np.float32)
    t = (rng.random(n) < 0.5).astype(np.int8)
    base = 1 / (1 + np.exp(-(0.5 + 1.5 * X[:, 2])))
    gain = np.where((X[:, 0] > 0.3) & (X[:, 1] > 0.3), 0.25, 0.0)
    y = (rng.random(n) < np.clip(base + t * gain, 0, 1)).astype(np.int8)
    camp = one_offer_table(t, y)
    cf = crossfit(X, camp, ["sms"], folds=3, learner="s")
    hi, lo = cf.oof_uplift[gain > 0].mean(), cf.oof_uplift[gain == 0].mean()
    assert hi - lo > 0.1, (hi, lo)
    assert np.corrcoef(cf.oof_uplift, gain)[0, 1] > 0.4


def test_read_campaigns_accepted_column(tmp_path):
    """accepted is optional, 0/1 on treated rows (control rows: anything, read as 0); a bad
    treated value names the column and the row."""
    from gpuseg.action.uplift import read_campaigns
    from gpuseg.errors import DataError

    ids = np.array(["a", "b", "c"])
    table = pd.DataFrame(
        {
            "subscriber_id": ["a", "b", "c", "zz"],
            "offer": ["o"] * 4,
            "channel": ["sms"] * 4,
            "treated": [1, 0, 1, 1],
            "retained": [1, 1, 0, 1],
            "accepted": [1.0, np.nan, 0.0, 1.0],
        }
    )
    table.to_csv(tmp_path / "c.csv", index=False)
    c = read_campaigns(tmp_path / "c.csv", ids, "subscriber_id")
    assert c.accepted.tolist() == [1, 0, 0] and c.accepted.dtype == np.int8
    table.drop(columns="accepted").to_csv(tmp_path / "none.csv", index=False)
    assert read_campaigns(tmp_path / "none.csv", ids, "subscriber_id").accepted is None
    table.loc[2, "accepted"] = np.nan  # a treated row that does not say
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"column 'accepted' row 4: not 0/1 on a treated row"):
        read_campaigns(tmp_path / "bad.csv", ids, "subscriber_id")


def takeup_world(n: int = 16_000, seed: int = 5):
    """The effect is where x0 and x1 are both high and x2 low (a three-way interaction under a
    baseline driven by x3); those subscribers also take the offer up far more often."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    t = (rng.random(n) < 0.5).astype(np.int8)
    helped = (X[:, 0] > 0.2) & (X[:, 1] > 0.2) & (X[:, 2] < 0.3)
    base = 1 / (1 + np.exp(-(0.8 + 1.2 * X[:, 3])))
    gain = np.where(helped, 0.15, 0.0)
    y = (rng.random(n) < np.clip(base + t * gain, 0, 1)).astype(np.int8)
    took = (t == 1) & (rng.random(n) < np.where(helped, 0.5, 0.1))
    camp = one_offer_table(t, y)
    camp.accepted = took.astype(np.int8)
    return X, camp, gain


def test_takeup_input_sharpens_the_effect_where_acceptance_tells_who_is_helped():
    X, camp, gain = takeup_world()
    plain = crossfit(X, camp, ["sms"], folds=3, takeup=False)
    withtu = crossfit(X, camp, ["sms"], folds=3)
    assert withtu.takeup and not plain.takeup
    assert all(m.takeup_ is not None for m in withtu.learners)
    r_plain = np.corrcoef(plain.oof_uplift, gain)[0, 1]
    r_tu = np.corrcoef(withtu.oof_uplift, gain)[0, 1]
    assert r_tu > r_plain + 0.05, (r_plain, r_tu)
    p0, p1 = withtu.effects(X, np.arange(200), "gift", "sms")
    assert np.all((p1 >= 0) & (p1 <= 1)) and np.isfinite(p0).all()
    # too few acceptances to learn from: the plain S-learner, said so
    camp.accepted = np.zeros_like(camp.accepted)
    assert not crossfit(X, camp, ["sms"], folds=3).takeup


def test_takeup_models_never_saw_the_rows_they_score(monkeypatch):
    """Each row's take-up input, and fold k's effect model's take-up model, come from a model
    fitted without that fold: column 5 carries the row number to trace what each fit saw."""
    import gpuseg.action.uplift as up

    X, camp, _ = takeup_world(6000)
    X[:, 5] = np.arange(len(X))
    seen = {}
    fit = up.TakeUp.fit

    def spy(self, Xf, offer, channel, accepted):
        seen[id(self)] = set(Xf[:, 5].astype(int).tolist())
        return fit(self, Xf, offer, channel, accepted)

    monkeypatch.setattr(up.TakeUp, "fit", spy)
    cf = crossfit(X, camp, ["sms"], folds=3)
    for k, m in enumerate(cf.learners):
        own = set(np.flatnonzero(cf.fold_of_row == k).tolist())
        assert own and not (seen[id(m.takeup_)] & own)


@pytest.mark.parametrize("learner", ["s", "t"])
def test_table_rows_get_their_out_of_fold_model_and_the_others_the_mean_of_all(learner):
    """Subscribers in the table are scored by the fold model that did not see them, the rest by
    the mean of the K fold models; the chunk's control probabilities, computed once, are the
    ones each option would compute itself."""
    X, t, y, gain = planted(6000)
    half = 3000  # panel rows 3000.. are not in the table
    camp = one_offer_table(t[:half], y[:half])
    cf = crossfit(X, camp, ["sms"], folds=3, learner=learner)
    rows = np.arange(len(X))
    p0, p1 = cf.effects(X, rows, "gift", "sms")
    out = rows >= half
    mean1 = np.mean([m.predict_treated(X[out], "gift", "sms") for m in cf.learners], axis=0)
    mean0 = np.mean([m.predict_control(X[out]) for m in cf.learners], axis=0)
    np.testing.assert_allclose(p1[out], mean1, atol=1e-12)
    np.testing.assert_allclose(p0[out], mean0, atol=1e-12)
    for k, m in enumerate(cf.learners):
        own = cf.fold_of_row == k
        assert own[:half].any() and not own[half:].any()
        np.testing.assert_array_equal(p1[own], m.predict_treated(X[own], "gift", "sms"))
        np.testing.assert_array_equal(p0[own], m.predict_control(X[own]))
    # in chunks at an offset, with the control computed once per chunk: the same numbers
    base, chunk = 2500, X[2500:4100]
    sub = np.arange(0, len(chunk), 3)
    ctrl = cf.control(chunk, base=base)
    q0, q1 = cf.effects(chunk, sub, "gift", "sms", base=base, control=ctrl)
    np.testing.assert_allclose(q0, p0[sub + base], atol=1e-12)
    np.testing.assert_allclose(q1, p1[sub + base], atol=1e-12)
    lift = p1[out] - p0[out]
    assert lift[gain[out] > 0].mean() - lift[gain[out] == 0].mean() > 0.15


def test_qini_by_offer_tells_learned_effects_from_a_risk_list():
    """On a planted world the out-of-fold effects beat a score unrelated to the effect (the
    'risk' here), paired; a risk that is the effect itself wins; equal scores are a tie."""
    from gpuseg.action.uplift import qini_by_offer, qini_verdict

    X, t, y, gain = planted(8000)
    camp = one_offer_table(t, y)
    cf = crossfit(X, camp, ["sms"], folds=3)
    q = qini_by_offer(camp, cf.oof_uplift, X[:, 3])["gift"]
    assert q["n"] == 8000 and q["learned_minus_risk_ci"][0] > 0
    assert q["verdict"].startswith("ahead")
    assert abs(q["learned_minus_risk"] - (q["learned"] - q["risk"])) < 1e-12
    worse = qini_by_offer(camp, cf.oof_uplift, gain + 1e-9 * X[:, 2])["gift"]
    assert worse["learned_minus_risk"] < 0
    assert qini_verdict(-0.1, 0.2).startswith("not clearly")
    assert qini_verdict(-0.2, -0.1).startswith("behind")
