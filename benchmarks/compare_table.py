"""One table from several ``gpuseg compare`` results (issue 15).

    python benchmarks/compare_table.py OUT/telco.json OUT/demo.json ... [--head blend]

Per data set: mean ROC-AUC over folds of each candidate; the reported head minus the best
baseline (tuned XGBoost / LightGBM, logistic, hist_gb, and the blend of baselines when run) with
its t interval over folds and its paired bootstrap interval; the same for top-decile lift; and
the wall time of all folds for the head and for the baselines. Results of ``--target
migration`` are read by their macro one-vs-rest ROC-AUC and the top-decile lift of ``down``
(one target per table: the header names the first result's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import t

BASELINES = ("logistic", "hist_gb", "xgboost", "lightgbm", "blend_baselines")
# target -> (ranking metric, lift metric, their names in the header)
KEYS = {
    "churn": ("roc_auc", "top_decile_lift", "ROC-AUC", "Lift@10%"),
    "migration": ("macro_roc_auc", "down_top_decile_lift", "macro ROC-AUC", "down Lift@10%"),
}


def interval(cell: dict, lo: str = "lo", hi: str = "hi", digits: int = 4) -> str:
    return f"{cell['value']:+.{digits}f} [{cell[lo]:+.{digits}f}, {cell[hi]:+.{digits}f}]"


def paired(res: dict, head: str, other: str, metric: str) -> dict:
    """head minus other per fold, from the per-fold metrics (any head, not only the run's)."""
    d = np.array([f[head][metric] - f[other][metric] for f in res["per_fold"]])
    half = t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return dict(value=d.mean(), lo=d.mean() - half, hi=d.mean() + half)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--head", default=None, help="candidate to report (default: each run's)")
    args = ap.parse_args()
    rows = []
    names = None
    for path in args.results:
        res = json.loads(path.read_text())
        metric, lift_metric, *shown = KEYS[res.get("target", "churn")]
        names = names or shown
        head = args.head or res["head"]
        s = res["summary"]
        base = [b for b in BASELINES if b in s]
        best = max(base, key=lambda b: s[b][metric]["value"])
        auc = paired(res, head, best, metric)
        lift = paired(res, head, best, lift_metric)
        boot = ""
        if res["head"] == head:
            cell = res["paired"]["difference"][best][metric]
            boot = f"[{cell['boot_lo']:+.4f}, {cell['boot_hi']:+.4f}]"
        aucs = " / ".join(f"{c} {s[c][metric]['value']:.4f}" for c in res["candidates"])
        secs_head = s[head]["seconds"]
        secs_base = sum(s[b]["seconds"] for b in base if b != "blend_baselines")
        rows.append(
            f"| {path.stem} | {res['n_labelled']} | {aucs} | {best} | {interval(auc)} | {boot} "
            f"| {interval(lift, digits=3)} | {secs_head:.0f} s / {secs_base:.0f} s |"
        )
    auc_name, lift_name = names or KEYS["churn"][2:]
    print(
        f"| set | labelled | mean {auc_name} over folds | best baseline | head minus best: "
        f"{auc_name} [fold t 95%] | [paired bootstrap 95%] | {lift_name} [fold t 95%] "
        "| wall: head / baselines |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
