"""The synthetic world's campaign truth: past randomised campaigns, true effects, future revenue.

With ``synth.campaigns: true`` :func:`gpuseg.data.synth.generate` also writes

- ``campaigns.parquet``: one past randomised test per subscriber in it (a share
  ``synth.campaign_frac`` of the population): subscriber_id, campaign, offer, channel, date,
  treated (0/1, a fair coin), retained (0/1 over the label horizon after the contact), accepted
  (0/1, treated rows only) and revenue_after (revenue over the same horizon);
- ``future.parquet``: the realised revenue of every subscriber over the lifetime-value horizon
  (``synth.ltv_months``) after the window, undiscounted and discounted, without any campaign;
- ``effects.parquet``: the truth behind both, per subscriber: the churn probability over the
  label horizon, the expected revenue per period now and its growth, the expected lifetime value
  (undiscounted and discounted), the true benefit of each offer (a shift of the churn logit at
  full channel reach), whether contact makes the subscriber leave (``sleeping_dog``) or nothing
  helps (``lost_cause``), and the group per offer (persuadable, sure_thing, lost_cause,
  sleeping_dog);
- per-channel consent columns and a temporary do-not-disturb window in ``static.parquet``.

The causal model: contact with offer o through channel c shifts the subscriber's churn logit over
the label horizon by ``tau = benefit_o * reach_c + harm * intrusion_c * sleeping_dog``; the
per-period hazard that gives that churn probability then holds over the whole lifetime-value
horizon, so the true incremental value of an action is the difference of two expected revenue
sums (:func:`incremental_value`). The past campaign's outcome is drawn from the same model (an
experiment run on these subscribers; the churn labels stay untreated).

Everything is drawn from its own random stream (seed, chunk, 7), so the other tables are
byte-identical whether campaigns are on or off (apart from the extra static columns).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OFFERS = ("device_upgrade", "family_bundle", "data_gift", "service_recovery")
CHANNELS = ("call", "sms", "email", "push", "store")
# how much of an offer's benefit each channel delivers, and how intrusive it is for a sleeping dog
REACH = {"call": 1.0, "store": 0.8, "sms": 0.55, "push": 0.45, "email": 0.35}
INTRUSION = {"call": 1.0, "sms": 0.8, "push": 0.5, "email": 0.3, "store": 0.3}
CONSENT_RATE = {"call": 0.55, "sms": 0.8, "email": 0.6, "push": 0.5}  # store: no consent column
SLEEPING_DOG_HARM = 1.8  # churn-logit shift of a contact at full intrusion
DISCOUNT_ANNUAL = 0.10
DND_WINDOW_FRAC = 0.08  # subscribers with a temporary do-not-disturb window after the window
GROUPS = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")


def per_period_hazard(p_churn: np.ndarray, horizon: int) -> np.ndarray:
    """Constant per-period hazard whose churn probability over ``horizon`` periods is p_churn."""
    p = np.clip(np.asarray(p_churn, dtype=np.float64), 1e-9, 1 - 1e-9)
    return 1.0 - (1.0 - p) ** (1.0 / horizon)


def revenue_path(rev_now: np.ndarray, growth: np.ndarray, n_future: int) -> np.ndarray:
    """Expected revenue per future period t = 1..n_future: (N, n_future), growth held within
    [0.3, 3] times today's level."""
    t = np.arange(1, n_future + 1)[None, :]
    return rev_now[:, None] * np.clip(np.exp(growth[:, None] * t), 0.3, 3.0)


def expected_value(
    p_churn: np.ndarray,
    rev_now: np.ndarray,
    growth: np.ndarray,
    horizon: int,
    n_future: int,
    discount: float,
    chunk: int = 200_000,
) -> np.ndarray:
    """Expected revenue over the next ``n_future`` periods, each discounted by ``discount``^t,
    for a subscriber alive in period t with probability (1 - hazard)^t."""
    out = np.empty(len(p_churn))
    t = np.arange(1, n_future + 1)[None, :]
    for s in range(0, len(p_churn), chunk):
        e = s + chunk
        lam = per_period_hazard(p_churn[s:e], horizon)[:, None]
        alive = (1.0 - lam) ** t
        out[s:e] = (alive * revenue_path(rev_now[s:e], growth[s:e], n_future) * discount**t).sum(1)
    return out


def treated_probability(p_churn: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Churn probability over the label horizon after a contact that shifts the logit by tau."""
    p = np.clip(np.asarray(p_churn, dtype=np.float64), 1e-9, 1 - 1e-9)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + tau)))


def effect_logit(benefit: np.ndarray, sleeping_dog: np.ndarray, channel: str) -> np.ndarray:
    """True churn-logit shift of a contact with an offer of ``benefit`` through ``channel``."""
    return benefit * REACH[channel] + SLEEPING_DOG_HARM * INTRUSION[channel] * sleeping_dog


def incremental_value(
    effects: pd.DataFrame, offer: str, channel: str, horizon: int, n_future: int, discount: float
) -> np.ndarray:
    """True expected incremental (discounted) revenue of contacting each row of ``effects``
    (an effects.parquet frame) with ``offer`` through ``channel``, before costs."""
    p0 = effects["churn_prob"].to_numpy(float)
    tau = effect_logit(
        effects[f"benefit_{offer}"].to_numpy(float),
        effects["sleeping_dog"].to_numpy(float),
        channel,
    )
    rev, g = effects["rev_now"].to_numpy(float), effects["rev_growth"].to_numpy(float)
    treated = expected_value(treated_probability(p0, tau), rev, g, horizon, n_future, discount)
    return treated - expected_value(p0, rev, g, horizon, n_future, discount)


def true_benefits(ch: dict, static: pd.DataFrame, scale: float, horizon: int) -> dict:
    """Per-subscriber benefit of each offer (churn-logit shift, negative helps), sleeping dogs and
    lost causes, from what the subscriber is: value, contract stage, plan, complaints, decline."""
    n = len(static)
    rev = ch["rev_now"] / scale  # weekly-equivalent revenue
    prepaid = (static["plan_type"] == "prepaid").to_numpy()
    weeks_left = static["weeks_to_contract_end"].to_numpy(float)
    has_contract = np.isfinite(weeks_left)
    per_month = 52.0 / 12.0 if scale == 1.0 else 1.0
    renewal = has_contract & (weeks_left <= 3 * per_month)  # contract ends within 3 months
    out_of_contract = ~prepaid & ~has_contract
    tenure = static["tenure_months"].to_numpy(float)
    family = static["family_plan"].to_numpy(bool)
    high, mid = rev >= 13.0, (rev >= 7.0) & (rev < 13.0)
    low = ~high & ~mid
    complaint = (ch["support8"] >= 3) | (ch["drops8"] >= 15)
    lost = ch["declining_long"]
    sleeping = (
        ~prepaid
        & (renewal | out_of_contract)
        & (tenure >= 40)
        & (ch["support8"] == 0)
        & ~family
        & ~lost
    )
    b = {}
    b["device_upgrade"] = np.where(
        renewal | out_of_contract, np.where(high, -2.4, np.where(mid, -1.2, -0.1)), -0.1
    )
    b["family_bundle"] = np.where(
        family, 0.0, np.where(~prepaid & (high | mid) & (ch["contacts"] >= 30), -1.8, -0.5)
    )
    b["data_gift"] = np.where(prepaid & low, -1.6, np.where(low, -0.6, -0.1))
    b["service_recovery"] = np.where(complaint, -2.4, -0.05)
    for k in b:
        b[k] = np.where(lost, 0.1 * b[k], b[k])  # nothing helps a lost cause
        b[k] = np.where(sleeping, 0.0, b[k])  # an offer does not outweigh the reminder to leave
    assert all(len(v) == n for v in b.values())
    return dict(benefit=b, sleeping_dog=sleeping, lost_cause=lost, horizon=horizon)


def campaign_chunk(
    cfg, start: int, ch: dict, static: pd.DataFrame, ids: np.ndarray, last_date: np.datetime64
) -> dict:
    """The campaign tables of one generation chunk (see the module docstring)."""
    rng = np.random.default_rng([cfg.seed, start // 50_000, 7])
    n = len(ids)
    h = cfg.horizon
    scale = 1.0 if cfg.freq == "W" else 52.0 / 12.0
    periods_per_year = 52.0 if cfg.freq == "W" else 12.0
    n_future = int(round(cfg.ltv_months * periods_per_year / 12.0))
    discount = (1.0 + DISCOUNT_ANNUAL) ** (-1.0 / periods_per_year)
    truth = true_benefits(ch, static, scale, h)
    p0 = ch["p_churn"]
    rev, growth = ch["rev_now"], ch["rev_growth"]

    # consent per channel and a temporary do-not-disturb window in the next 60 days
    extra = {f"consent_{c}": rng.random(n) < CONSENT_RATE[c] for c in CONSENT_RATE}
    has_window = rng.random(n) < DND_WINDOW_FRAC
    day0 = last_date + np.timedelta64(7 if cfg.freq == "W" else 31, "D")
    offset = rng.integers(0, 45, n).astype("timedelta64[D]")
    length = rng.integers(3, 21, n).astype("timedelta64[D]")
    nat = np.datetime64("NaT", "D")
    extra["dnd_from"] = np.where(has_window, day0 + offset, nat)
    extra["dnd_to"] = np.where(has_window, day0 + offset + length, nat)

    # realised future revenue without any campaign, consistent with the churn label
    lam = per_period_hazard(p0, h)
    u = rng.random(n)
    log_keep = np.log1p(-lam)
    churn_at = np.where(
        ch["churn"] == 1,
        np.clip(np.ceil(np.log1p(-u * p0) / log_keep), 1, h),
        h + np.maximum(np.ceil(np.log1p(-u) / log_keep), 1),
    )
    t = np.arange(1, n_future + 1)[None, :]
    level_noise = np.exp(rng.normal(0, 0.3, n) - 0.045)[:, None]
    period_noise = np.exp(rng.normal(0, 0.15, (n, n_future)) - 0.01125)
    prepaid = (static["plan_type"] == "prepaid").to_numpy()[:, None]
    skip = prepaid & (rng.random((n, n_future)) < 0.2)  # prepaid periods without a top-up
    earned = revenue_path(rev, growth, n_future) * level_noise * period_noise
    earned = np.where(skip, 0.0, np.where(prepaid, earned / 0.8, earned))
    earned = earned * (t < churn_at[:, None])
    future = dict(
        future_revenue=np.round(earned.sum(1), 2),
        future_revenue_disc=np.round((earned * discount**t).sum(1), 2),
    )

    # past randomised tests: in each wave, a share campaign_frac of subscribers in one test
    waves = []
    for wave in range(cfg.campaign_waves):
        in_test = np.flatnonzero(rng.random(n) < cfg.campaign_frac)
        m = len(in_test)
        offer_idx = rng.integers(0, len(OFFERS), m)
        treated = (rng.random(m) < 0.5).astype(np.int8)
        # channel: uniform among the channels the subscriber consents to (store needs none)
        ok = np.stack(
            [
                extra[f"consent_{c}"][in_test] if c in CONSENT_RATE else np.ones(m, bool)
                for c in CHANNELS
            ],
            axis=1,
        )
        pick = rng.random((m, len(CHANNELS))) * ok
        chan_idx = pick.argmax(1)
        weeks_back = rng.integers(1, 9, m) + 8 * wave
        dates = last_date - (weeks_back * 7).astype("timedelta64[D]") + np.timedelta64(7, "D")
        tau = np.zeros(m)
        for j, c in enumerate(CHANNELS):
            sel = chan_idx == j
            for i, o in enumerate(OFFERS):
                both = sel & (offer_idx == i)
                tau[both] = effect_logit(
                    truth["benefit"][o][in_test[both]], truth["sleeping_dog"][in_test[both]], c
                )
        p_obs = treated_probability(p0[in_test], tau * treated)
        lam_c = per_period_hazard(p_obs, h)
        churn_at_c = np.maximum(np.ceil(np.log1p(-rng.random(m)) / np.log1p(-lam_c)), 1)
        retained = (churn_at_c > h).astype(np.int8)
        reach = np.array([REACH[c] for c in CHANNELS])[chan_idx]
        helps = np.array([truth["benefit"][o][in_test] for o in OFFERS]).T[np.arange(m), offer_idx]
        p_accept = np.where(helps < -0.3, 0.5, 0.12) * reach
        accepted = (treated == 1) & (rng.random(m) < p_accept)
        th = np.arange(1, h + 1)[None, :]
        rev_after = (earned[in_test, :h] * (th < churn_at_c[:, None])).sum(1)
        waves.append(
            pd.DataFrame(
                dict(
                    subscriber_id=ids[in_test],
                    campaign=np.array([f"wave{wave + 1}_{o}" for o in OFFERS])[offer_idx],
                    offer=np.array(OFFERS)[offer_idx],
                    channel=np.array(CHANNELS)[chan_idx],
                    date=dates.astype("datetime64[ms]"),
                    treated=treated,
                    retained=retained,
                    accepted=accepted.astype(np.int8),
                    revenue_after=np.round(rev_after, 2),
                )
            )
        )

    campaigns = pd.concat(waves, ignore_index=True)

    ltv = expected_value(p0, rev, growth, h, n_future, 1.0)
    ltv_disc = expected_value(p0, rev, growth, h, n_future, discount)
    effects = dict(
        subscriber_id=ids,
        churn_prob=p0,
        rev_now=rev,
        rev_growth=growth,
        ltv=ltv,
        ltv_disc=ltv_disc,
        sleeping_dog=truth["sleeping_dog"],
        lost_cause=truth["lost_cause"],
    )
    for o in OFFERS:
        b = truth["benefit"][o]
        effects[f"benefit_{o}"] = b
        effects[f"group_{o}"] = np.select(
            [truth["sleeping_dog"], (b <= -0.3) & ~truth["lost_cause"] & (p0 >= 0.05), p0 < 0.15],
            ["sleeping_dog", "persuadable", "sure_thing"],
            "lost_cause",
        )
    return dict(
        static=pd.DataFrame(extra),
        campaigns=campaigns,
        future=pd.DataFrame(dict(subscriber_id=ids, **future)),
        effects=pd.DataFrame(effects),
        meta=dict(n_future=n_future, discount=discount),
    )


def world_meta(cfg) -> dict:
    """The constants an evaluation needs, for world.json."""
    periods_per_year = 52.0 if cfg.freq == "W" else 12.0
    return dict(
        offers=list(OFFERS),
        channels=list(CHANNELS),
        reach=REACH,
        intrusion=INTRUSION,
        sleeping_dog_harm=SLEEPING_DOG_HARM,
        horizon=cfg.horizon,
        n_future=int(round(cfg.ltv_months * periods_per_year / 12.0)),
        discount=(1.0 + DISCOUNT_ANNUAL) ** (-1.0 / periods_per_year),
        discount_annual=DISCOUNT_ANNUAL,
        ltv_months=cfg.ltv_months,
        campaign_frac=cfg.campaign_frac,
    )
