"""A world gpuseg was not tuned on: the built-in usage, a different churn mechanism (issue 15).

    python benchmarks/burst_world.py OUT [-n 20000] [--seed 3]

Usage and static attributes come from :func:`gpuseg.data.synth.generate` (default preset); churn is
redrawn from a mechanism unlike the built-in one (a logistic model of window aggregates):

- a **short burst of failures**: the worst 2-week run of dropped calls plus support contacts in
  the last 6 weeks, against the subscriber's own weekly rate in the first 16 weeks; a burst of
  more than twice that rate plus 2 events raises churn sharply, and more so the more recent it is;
- an **interaction of plan and usage decline**: prepaid subscribers whose data + voice over the
  last 4 present weeks fell by more than 40 % from their first 8 weeks churn often; the same
  decline matters little on a postpaid contract;
- **recency of top-ups**: prepaid subscribers with no top-up in the last 3 weeks;
- a tenure effect (new subscribers churn more).

The labels and truth tables are rewritten (``churn``, ``churn_prob``; new churners' migration is
``down``, former churners who now stay get ``stay``), so ``gpuseg evaluate`` and ``gpuseg compare``
read it like any synthetic world, oracle included. Written before any model was run on it and not
tuned afterwards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from gpuseg.config import SynthConfig
from gpuseg.data.synth import METRICS, generate
from gpuseg.evaluate.metrics import roc_auc


def dense(usage: pd.DataFrame, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Long usage -> (N, T, M) values (0 where absent) and (N, T) presence, rows in ``ids``."""
    periods = np.sort(usage["period"].unique())
    row = pd.Index(ids).get_indexer(usage["subscriber_id"])
    col = np.searchsorted(periods, usage["period"].to_numpy())
    values = np.zeros((len(ids), len(periods), len(METRICS)))
    present = np.zeros((len(ids), len(periods)), dtype=bool)
    values[row, col] = usage[list(METRICS)].to_numpy(dtype=float)
    present[row, col] = True
    return values, present


def burst_probability(
    values: np.ndarray, present: np.ndarray, static: pd.DataFrame
) -> tuple[np.ndarray, dict]:
    """True churn probability and the shares of subscribers with a burst / a prepaid decline."""
    m = {name: i for i, name in enumerate(METRICS)}
    n, t, _ = values.shape
    fail = values[:, :, m["dropped_calls"]] + values[:, :, m["support_contacts"]]  # (N, T)
    early = present & (np.arange(t) < 16)
    rate = (fail * early).sum(1) / np.maximum(early.sum(1), 1)  # own weekly rate
    last6 = fail[:, t - 6 :] * present[:, t - 6 :]
    two_week = last6[:, :-1] + last6[:, 1:]  # (N, 5) 2-week sums, oldest first
    worst = two_week.max(1)
    weeks_ago = 4 - two_week.argmax(1)  # 0: the last two weeks
    burst = worst > 2 * 2 * rate + 2
    u = np.log1p(values[:, :, m["data_mb"]] / 500) + np.log1p(values[:, :, m["voice_min"]] / 30)
    order = np.cumsum(present, 1)
    first8 = present & (order <= 8)
    last4 = present & (order > order[:, -1:] - 4)
    e = (np.expm1(u) * first8).sum(1) / np.maximum(first8.sum(1), 1)
    late = (np.expm1(u) * last4).sum(1) / np.maximum(last4.sum(1), 1)
    declined = late < 0.6 * e
    prepaid = static["plan_type"].to_numpy() == "prepaid"
    topups = values[:, t - 3 :, m["topups"]].sum(1)
    tenure = static["tenure_months"].to_numpy(dtype=float)
    logit = (
        -2.6
        + burst * (2.2 - 0.3 * weeks_ago)
        + 2.0 * (prepaid & declined)
        + 0.4 * (~prepaid & declined)
        + 1.0 * (prepaid & (topups == 0))
        - 0.35 * np.log1p(tenure / 12)
    )
    return 1 / (1 + np.exp(-logit)), dict(
        burst=float(burst.mean()), prepaid_declined=float((prepaid & declined).mean())
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    generate(SynthConfig(n_subscribers=args.n, n_periods=26, horizon=8, seed=args.seed), args.out)
    usage = pd.read_parquet(args.out / "usage.parquet")
    static = pd.read_parquet(args.out / "static.parquet")
    truth = pd.read_parquet(args.out / "truth.parquet")
    labels = pd.read_parquet(args.out / "labels.parquet")
    ids = static["subscriber_id"].to_numpy()
    assert (truth["subscriber_id"].to_numpy() == ids).all()
    values, present = dense(usage, ids)
    p, shares = burst_probability(values, present, static)
    rng = np.random.default_rng(args.seed + 12345)
    churn = (rng.random(len(p)) < p).astype(np.int8)
    was = labels["churn"].to_numpy() == 1
    migration = labels["migration"].to_numpy().astype(object)
    migration[churn == 1] = "down"
    migration[was & (churn == 0)] = "stay"
    truth["churn"], truth["churn_prob"] = churn, p
    labels["churn"], labels["migration"] = churn, migration
    truth.to_parquet(args.out / "truth.parquet", index=False)
    labels.to_parquet(args.out / "labels.parquet", index=False)
    summary = dict(
        n=len(p), churn_rate=float(churn.mean()), oracle_auc=roc_auc(churn, p), mechanism="burst"
    ) | dict(shares=shares)
    (args.out / "burst.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
