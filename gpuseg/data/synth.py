"""A synthetic telecom world with ground truth.

Each subscriber belongs to one of six latent segments of distinct behaviour and produces weekly (or
monthly) usage over an observation window: data, voice, SMS, roaming, revenue, top-ups, support
contacts, dropped calls and distinct contacts, with seasonality, a personal trend and noise. Some
subscribers start to decline a few periods before the window ends (usage falls, support contacts
rise): the visible pre-churn behaviour.

Churn within the horizon is drawn from a probability that depends on what the subscriber actually
experienced in the window (usage decline, support contacts, dropped calls) and on static attributes
(contract stage, tenure, prepaid, family plan, bundles, price). That probability is written to the
truth table, so the oracle AUC (ROC-AUC of the true probability against the drawn label) is known.
Value-tier migration compares the ARPU tier at the end of the window with the tier in the next
window, where each subscriber's trend continues; churners migrate down.

Generation is vectorised and chunked by subscriber (fixed chunk size, one seed per chunk), so the
output depends only on the config and 1M subscribers fit in a few GiB.

``shift`` = s makes a *later window* for out-of-time tests: the window starts s periods later
(dates and seasonal phase move) and the market has drifted (data and roaming usage are 1 % per
period of shift higher, voice and SMS 0.5 % lower), while the churn process stays the same. Use
another seed too, so the subscribers are new draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from gpuseg.config import SynthConfig
from gpuseg.data.campaigns import campaign_chunk, world_meta
from gpuseg.errors import ConfigError
from gpuseg.io.store import temp_path, write_csv_atomic, write_json_atomic, write_parquet_atomic

CHUNK = 50_000  # subscribers per generation chunk; part of the seed schedule, do not change

METRICS = (
    "data_mb",
    "voice_min",
    "sms",
    "roaming_mb",
    "revenue",
    "topups",
    "support_contacts",
    "dropped_calls",
    "distinct_contacts",
)
COUNT_METRICS = ("sms", "topups", "support_contacts", "dropped_calls", "distinct_contacts")
MIGRATION_CLASSES = ("down", "stay", "up")
CAMPAIGN_KEYS = (
    "campaigns",
    "campaign_frac",
    "campaign_waves",
    "ltv_months",
)  # left out of world.json when off


@dataclass(frozen=True)
class Segment:
    name: str
    weight: float
    data_mb: float  # weekly base levels
    voice_min: float
    sms: float
    roaming_mb: float
    fee: float  # weekly revenue
    support: float  # weekly support-contact rate
    dropped: float  # weekly dropped-call rate
    contacts: float  # distinct contacts per week
    p_prepaid: float
    contract_probs: tuple[float, float, float]  # postpaid: no contract, 12 months, 24 months
    tenure_months: float
    bundles: float
    p_family: float
    p_broadband: float
    trend: float  # mean log-slope per week


SEGMENTS = (
    Segment(
        "heavy_data_streamers",
        0.20,
        12000,
        40,
        4,
        20,
        14,
        0.05,
        0.5,
        20,
        0.15,
        (0.3, 0.4, 0.3),
        30,
        1.5,
        0.10,
        0.40,
        0.004,
    ),
    Segment(
        "voice_centric_seniors",
        0.15,
        300,
        400,
        25,
        1,
        7,
        0.08,
        0.4,
        20,
        0.30,
        (0.3, 0.5, 0.2),
        90,
        0.3,
        0.15,
        0.30,
        -0.002,
    ),
    Segment(
        "roaming_business",
        0.10,
        3000,
        500,
        8,
        2500,
        22,
        0.05,
        0.6,
        80,
        0.02,
        (0.1, 0.3, 0.6),
        60,
        1.0,
        0.10,
        0.50,
        0.0,
    ),
    Segment(
        "family_bundles",
        0.20,
        1500,
        200,
        30,
        30,
        11,
        0.05,
        0.5,
        60,
        0.05,
        (0.1, 0.3, 0.6),
        70,
        2.5,
        0.85,
        0.80,
        0.002,
    ),
    Segment(
        "budget_prepaid",
        0.20,
        800,
        40,
        40,
        2,
        3,
        0.06,
        0.6,
        15,
        0.92,
        (0.7, 0.3, 0.0),
        18,
        0.2,
        0.02,
        0.05,
        -0.003,
    ),
    Segment(
        "dissatisfied",
        0.15,
        2500,
        120,
        10,
        10,
        9,
        0.45,
        2.5,
        20,
        0.40,
        (0.5, 0.35, 0.15),
        24,
        0.8,
        0.10,
        0.30,
        -0.02,
    ),
)

# Churn logit coefficients; the "hard" preset scales the signal down and the noise up.
CHURN = dict(
    intercept=-2.75,
    prepaid=0.8,
    near_end=1.3,
    out_of_contract=0.4,
    log_tenure=-0.4,
    decline=-0.9,
    support=0.3,
    drops=0.06,
    family=-0.5,
    bundles=-0.15,
    price=0.3,
)
PRESETS = {"default": dict(signal=1.0, noise=1.0), "hard": dict(signal=0.6, noise=2.0)}


def _period_dates(cfg: SynthConfig, n: int) -> pd.DatetimeIndex:
    if cfg.freq == "W":
        return pd.date_range(
            pd.Timestamp(cfg.start) + pd.Timedelta(weeks=cfg.shift), periods=n, freq="7D"
        )
    # monthly: the first period is the month holding ``start`` ("MS" alone would skip to the next)
    first = (pd.Timestamp(cfg.start).to_period("M") + cfg.shift).to_timestamp()
    return pd.date_range(first, periods=n, freq="MS")


def churn_probability(
    usage: np.ndarray,
    valid: np.ndarray,
    static: dict[str, np.ndarray],
    horizon: int,
    signal: float = 1.0,
) -> np.ndarray:
    """True probability of churn within the horizon from the observed window and static attributes.

    usage: (N, T, M) in METRICS order; valid: (N, T) bool. Public so tests can check the formula.
    """
    m = {name: i for i, name in enumerate(METRICS)}
    n, t, _ = usage.shape
    u = np.log1p(usage[:, :, m["data_mb"]] / 500.0) + np.log1p(
        usage[:, :, m["voice_min"]] / 30.0
    )  # (N, T)
    # first 8 and last 4 valid periods of each subscriber
    order = np.cumsum(valid, axis=1)  # 1-based rank of each valid period
    count = order[:, -1:]
    early = valid & (order <= 8)
    late = valid & (order > count - 4)
    mean_early = (u * early).sum(1) / np.maximum(early.sum(1), 1)
    mean_late = (u * late).sum(1) / np.maximum(late.sum(1), 1)
    decline = np.clip(mean_late - mean_early, -3.0, 1.0)
    recent = valid & (np.arange(t)[None, :] >= t - 8)
    support8 = np.minimum((usage[:, :, m["support_contacts"]] * recent).sum(1), 6.0)
    drops8 = np.minimum((usage[:, :, m["dropped_calls"]] * recent).sum(1), 30.0)
    revenue8 = (usage[:, :, m["revenue"]] * recent).sum(1) / np.maximum(recent.sum(1), 1)
    price = (np.log1p(revenue8) - 2.2) / 0.7
    weeks_left = static["weeks_to_contract_end"]
    has_contract = ~np.isnan(weeks_left)
    near_end = has_contract & (weeks_left >= -2) & (weeks_left <= horizon + 2)
    out_of_contract = (static["prepaid"] == 0) & ~has_contract
    c = CHURN
    logit = c["intercept"] + signal * (
        c["prepaid"] * static["prepaid"]
        + c["near_end"] * near_end
        + c["out_of_contract"] * out_of_contract
        + c["log_tenure"] * np.log1p(static["tenure_months"] / 12.0)
        + c["decline"] * decline
        + c["support"] * support8
        + c["drops"] * drops8
        + c["family"] * static["family_plan"]
        + c["bundles"] * static["n_bundles"]
        + c["price"] * price
    )
    return 1.0 / (1.0 + np.exp(-logit))


def _chunk(cfg: SynthConfig, start: int, n: int, preset: dict) -> dict:
    """Generate subscribers [start, start+n): usage (n, T, M), validity, static, truth."""
    rng = np.random.default_rng([cfg.seed, start // CHUNK])
    t_obs, h = cfg.n_periods, cfg.horizon
    scale = 1.0 if cfg.freq == "W" else 52.0 / 12.0  # monthly periods hold ~4.3 weeks of usage
    noise = cfg.noise * preset["noise"]
    seg_w = np.array([s.weight for s in SEGMENTS])
    seg = rng.choice(len(SEGMENTS), size=n, p=seg_w / seg_w.sum())
    col = lambda attr: np.array([getattr(s, attr) for s in SEGMENTS])[seg]  # noqa: E731

    # static attributes
    prepaid = (rng.random(n) < col("p_prepaid")).astype(np.int8)
    probs = np.array([s.contract_probs for s in SEGMENTS])[seg]
    contract_choice = (rng.random(n)[:, None] > np.cumsum(probs, 1)).sum(1)
    contract_months = np.where(
        prepaid == 1, 0, np.array([0, 12, 24])[np.minimum(contract_choice, 2)]
    )
    tenure = rng.gamma(2.0, col("tenure_months") / 2.0)
    # late joiners: joined during the window, so tenure is short and early periods are absent
    join = np.zeros(n, dtype=np.int64)
    late_mask = rng.random(n) < cfg.late_joiner_frac
    join[late_mask] = rng.integers(1, max(t_obs - 6, 2), size=late_mask.sum())
    periods_per_month = 52.0 / 12.0 if cfg.freq == "W" else 1.0
    tenure = np.where(
        late_mask, (t_obs - join) / periods_per_month, tenure + t_obs / periods_per_month
    )
    # contract end relative to the end of the window, in periods (NaN: no contract)
    months_into = np.where(contract_months > 0, rng.random(n) * np.maximum(contract_months, 1), 0)
    weeks_left = np.where(
        contract_months > 0, (contract_months - months_into) * periods_per_month, np.nan
    )
    weeks_left = np.round(weeks_left - 0.0, 0)
    bundles = rng.poisson(col("bundles"))
    family = (rng.random(n) < col("p_family")).astype(np.int8)
    broadband = (rng.random(n) < col("p_broadband")).astype(np.int8)
    consent = (rng.random(n) < 0.75).astype(np.int8)
    dnd = (rng.random(n) < 0.05).astype(np.int8)

    # behaviour over time
    tt = np.arange(t_obs)[None, :]  # (1, T)
    trend = col("trend") + rng.normal(0, 0.006, n)
    decliner = rng.random(n) < 0.12
    decline_start = rng.integers(max(t_obs - 12, 1), max(t_obs - 2, 2), size=n)
    declining = decliner[:, None] & (tt >= decline_start[:, None])  # (N, T)
    drift = trend[:, None] * tt - 0.08 * declining * (
        tt - decline_start[:, None]
    )  # (N, T) log-level
    season = 0.1 * np.sin(2 * np.pi * (tt + cfg.shift) / (13.0 if cfg.freq == "W" else 3.0))
    intensity = rng.normal(0, 0.25, n)[:, None]  # shared across usage metrics

    def level(base: np.ndarray, spread: float = 0.35) -> np.ndarray:  # (N, 1) per-subscriber level
        return (base * scale * np.exp(intensity[:, 0] + rng.normal(0, spread, n)))[:, None]

    def continuous(lvl: np.ndarray, sigma: float = 0.25) -> np.ndarray:
        return lvl * np.exp(drift + season + rng.normal(0, sigma * noise, (n, t_obs)))

    usage = np.empty((n, t_obs, len(METRICS)), dtype=np.float32)
    usage[:, :, 0] = continuous(level(col("data_mb")))
    usage[:, :, 1] = continuous(level(col("voice_min")))
    usage[:, :, 2] = rng.poisson(level(col("sms")) * np.exp(drift + season))
    usage[:, :, 3] = continuous(level(col("roaming_mb"), 0.4), 0.5) * (rng.random((n, t_obs)) < 0.8)
    if cfg.shift:  # the market has moved on since the reference window
        usage[:, :, [0, 3]] *= np.float32(np.exp(0.01 * cfg.shift))
        usage[:, :, [1, 2]] *= np.float32(np.exp(-0.005 * cfg.shift))
    fee = level(col("fee"), 0.25)[:, 0]
    topup_rate = np.where(prepaid == 1, 0.9 * scale, 0.0)[:, None] * np.exp(0.5 * drift)
    topups = rng.poisson(topup_rate * np.ones((1, t_obs)))
    topup_value = fee / (0.9 * scale) * scale
    usage[:, :, 4] = np.where(
        prepaid[:, None] == 1,
        topups * topup_value[:, None],
        fee[:, None] * np.exp(0.5 * drift + rng.normal(0, 0.05 * noise, (n, t_obs)))
        + 0.002 * usage[:, :, 3],
    )
    usage[:, :, 5] = topups
    support_rate = col("support")[:, None] * scale * np.where(declining, 3.0, 1.0)
    usage[:, :, 6] = rng.poisson(support_rate * np.ones((1, t_obs)))
    quality = rng.gamma(4.0, 0.25, n)[:, None]
    usage[:, :, 7] = rng.poisson(col("dropped")[:, None] * scale * quality * np.ones((1, t_obs)))
    usage[:, :, 8] = rng.poisson(level(col("contacts"), 0.2) * np.exp(0.5 * drift))

    valid = tt >= join[:, None]  # (N, T)
    if cfg.missing_frac > 0:
        valid &= rng.random((n, t_obs)) >= cfg.missing_frac
        valid[np.arange(n), np.maximum(join, t_obs - 1)] = True  # keep the last period
    usage[~valid] = 0.0

    static = dict(
        prepaid=prepaid.astype(np.float64),
        tenure_months=tenure,
        weeks_to_contract_end=weeks_left,
        family_plan=family.astype(np.float64),
        n_bundles=bundles.astype(np.float64),
    )
    p_churn = churn_probability(usage, valid, static, h, preset["signal"])
    churn = (rng.random(n) < p_churn).astype(np.int8)

    # value now (last 4 periods) and next window (trend continues), for migration
    rev = usage[:, :, 4]
    last4 = valid & (tt >= t_obs - 4)
    arpu_now = (rev * last4).sum(1) / np.maximum(last4.sum(1), 1)
    slope = trend - 0.08 * decliner * (decline_start < t_obs)
    recent8 = valid & (tt >= t_obs - 8)
    arpu_next = arpu_now * np.exp(0.5 * slope * h * 1.5 + rng.normal(0, 0.1 * noise, n))

    extra = {}
    if cfg.campaigns:  # inputs of gpuseg.data.campaigns; no draw from rng here
        last = tt >= t_obs - 1
        extra = dict(
            rev_now=fee * np.exp(0.5 * drift[:, -1]) * np.where(prepaid == 1, scale, 1.0)
            + np.where(prepaid == 1, 0.0, 0.002 * (usage[:, :, 3] * last).sum(1)),
            rev_growth=0.5 * slope,
            support8=(usage[:, :, 6] * recent8).sum(1),
            drops8=(usage[:, :, 7] * recent8).sum(1),
            contacts=usage[:, :, 8].mean(1) / scale,
            declining_long=decliner & (decline_start <= t_obs - 6),
        )
    return extra | dict(
        seg=seg,
        usage=usage,
        valid=valid,
        churn=churn,
        p_churn=p_churn,
        arpu_now=arpu_now,
        arpu_next=arpu_next,
        static=pd.DataFrame(
            dict(
                plan_type=np.where(prepaid == 1, "prepaid", "postpaid"),
                contract_months=contract_months.astype(np.int32),
                weeks_to_contract_end=weeks_left,
                tenure_months=np.round(tenure, 1),
                n_bundles=bundles.astype(np.int32),
                family_plan=family.astype(bool),
                broadband=broadband.astype(bool),
                marketing_consent=consent.astype(bool),
                do_not_disturb=dnd.astype(bool),
                region=rng.choice(np.array(["north", "south", "east", "west", "capital"]), n),
            )
        ),
    )


def subscriber_ids(start: int, n: int) -> np.ndarray:
    return np.char.add("S", np.char.zfill(np.arange(start, start + n).astype(str), 8))


def value_tiers(arpu: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Tier index (0 = lowest) of each ARPU against ascending cut points."""
    return np.searchsorted(cuts, arpu, side="right")


def generate(cfg: SynthConfig, out_dir: str | Path, fmt: str = "parquet") -> dict:
    """Write usage (long layout), static, labels and truth tables to ``out_dir``; return a summary.

    Files: ``usage.parquet``, ``static.parquet``, ``labels.parquet``, ``truth.parquet``,
    ``world.json`` (the config, segment names and the oracle AUC).
    """

    if cfg.n_subscribers < 10:
        raise ConfigError(f"synth.n_subscribers: need at least 10, got {cfg.n_subscribers}")
    if cfg.n_periods < 8:
        raise ConfigError(f"synth.n_periods: need at least 8, got {cfg.n_periods}")
    if cfg.preset not in PRESETS:
        raise ConfigError(f"synth.preset: unknown preset {cfg.preset!r}")
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"synth format must be parquet or csv, not {fmt!r}")
    preset = PRESETS[cfg.preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dates = _period_dates(cfg, cfg.n_periods)
    date_arr = dates.values.astype("datetime64[D]")

    usage_path = out / f"usage.{fmt}"
    tmp_path = temp_path(usage_path)  # a new, uniquely named file: CSV chunks are appended to it
    writer = None
    statics, truths = [], []
    extras: dict[str, list[pd.DataFrame]] = {}  # campaign tables (synth.campaigns)
    try:
        for start in range(0, cfg.n_subscribers, CHUNK):
            n = min(CHUNK, cfg.n_subscribers - start)
            ch = _chunk(cfg, start, n, preset)
            ids = subscriber_ids(start, n)
            rows = np.nonzero(ch["valid"])  # (subscriber, period) of every present row
            cols = {
                "subscriber_id": pa.array(ids).take(pa.array(rows[0])),
                "period": pa.array(date_arr[rows[1]]),
            }
            flat = ch["usage"][rows]  # (R, M)
            for j, name in enumerate(METRICS):
                v = flat[:, j]
                cols[name] = pa.array(
                    v.astype(np.int32) if name in COUNT_METRICS else np.round(v, 2)
                )
            table = pa.table(cols)
            if fmt == "parquet":
                if writer is None:
                    writer = pq.ParquetWriter(tmp_path, table.schema)
                writer.write_table(table)
            else:
                with open(tmp_path, "ab") as fh:
                    pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=start == 0))
            static = ch["static"]
            static.insert(0, "subscriber_id", ids)
            if cfg.campaigns:
                camp = campaign_chunk(cfg, start, ch, static, ids, date_arr[-1])
                for col in camp["static"].columns:
                    static[col] = camp["static"][col].to_numpy()
                for key in ("campaigns", "future", "effects"):
                    extras.setdefault(key, []).append(camp[key])
            statics.append(static)
            truths.append(
                pd.DataFrame(
                    dict(
                        subscriber_id=ids,
                        segment=ch["seg"].astype(np.int16),
                        churn=ch["churn"],
                        churn_prob=ch["p_churn"],
                        arpu_now=ch["arpu_now"],
                        arpu_next=ch["arpu_next"],
                    )
                )
            )
    finally:
        if writer is not None:
            writer.close()
    tmp_path.replace(usage_path)

    static = pd.concat(statics, ignore_index=True)
    truth = pd.concat(truths, ignore_index=True)
    truth.insert(2, "segment_name", np.array([s.name for s in SEGMENTS])[truth["segment"]])
    # value tiers: ARPU quintiles of the window's end; churners fall to the bottom
    cuts = np.quantile(truth["arpu_now"], [0.2, 0.4, 0.6, 0.8])
    tier_now = value_tiers(truth["arpu_now"].to_numpy(), cuts)
    tier_next = np.where(truth["churn"] == 1, -1, value_tiers(truth["arpu_next"].to_numpy(), cuts))
    truth["tier_now"] = tier_now.astype(np.int8)
    truth["tier_next"] = tier_next.astype(np.int8)
    migration = np.array(MIGRATION_CLASSES)[np.sign(tier_next - tier_now) + 1]
    labels = pd.DataFrame(
        dict(subscriber_id=truth["subscriber_id"], churn=truth["churn"], migration=migration)
    )

    writer_fn = write_csv_atomic if fmt == "csv" else write_parquet_atomic
    writer_fn(out / f"static.{fmt}", static)
    writer_fn(out / f"labels.{fmt}", labels)
    write_parquet_atomic(out / "truth.parquet", truth)
    for key, frames in extras.items():
        write_parquet_atomic(out / f"{key}.parquet", pd.concat(frames, ignore_index=True))

    oracle = (
        float(roc_auc_score(truth["churn"], truth["churn_prob"]))
        if truth["churn"].nunique() > 1
        else float("nan")
    )
    summary = dict(
        n_subscribers=cfg.n_subscribers,
        n_periods=cfg.n_periods,
        n_rows=int(
            sum(len(s) for s in statics) and pq.ParquetFile(usage_path).metadata.num_rows
            if fmt == "parquet"
            else -1
        ),
        churn_rate=float(truth["churn"].mean()),
        oracle_auc=oracle,
        migration_mix={k: float((migration == k).mean()) for k in MIGRATION_CLASSES},
        segments={s.name: float((truth["segment"] == i).mean()) for i, s in enumerate(SEGMENTS)},
        periods=[str(d.date()) for d in (dates[0], dates[-1])],
        config={k: v for k, v in cfg.__dict__.items() if cfg.campaigns or k not in CAMPAIGN_KEYS},
        files={k: str(out / f"{k}.{fmt}") for k in ("usage", "static", "labels")}
        | {"truth": str(out / "truth.parquet")}
        | {k: str(out / f"{k}.parquet") for k in extras},
    )
    if cfg.campaigns:
        summary["campaigns"] = world_meta(cfg)
    write_json_atomic(out / "world.json", summary)
    return summary
