"""One table from several ``gpuseg compare`` results (issue 15).

    python benchmarks/compare_table.py OUT/telco.json OUT/demo.json ... [--head blend]

Per data set: mean ROC-AUC over folds of each candidate; the reported head minus the best
baseline (tuned XGBoost / LightGBM, logistic, hist_gb, and the blend of baselines when run) with
its t interval over folds (corrected for repeats, as ``gpuseg compare`` gives it) and its paired
bootstrap interval; top-decile lift minus the baseline best by lift; and the wall time of all
folds for the head (a ``head_blend`` with its parts) and for the baselines. Results of ``--target
migration`` are read by their macro one-vs-rest ROC-AUC and the top-decile lift of ``down``
(one target per table: the header names the first result's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gpuseg.pipeline.compare import HEAD_BLEND_PARTS, fold_interval, repeat_overlap

BASELINES = ("logistic", "hist_gb", "xgboost", "lightgbm", "blend_baselines")
# target -> (ranking metric, lift metric, their names in the header)
KEYS = {
    "churn": ("roc_auc", "top_decile_lift", "ROC-AUC", "Lift@10%"),
    "migration": ("macro_roc_auc", "down_top_decile_lift", "macro ROC-AUC", "down Lift@10%"),
}


def interval(cell: dict, lo: str = "lo", hi: str = "hi", digits: int = 4) -> str:
    return f"{cell['value']:+.{digits}f} [{cell[lo]:+.{digits}f}, {cell[hi]:+.{digits}f}]"


def paired(res: dict, head: str, other: str, metric: str) -> dict:
    """head minus other per fold, from the per-fold metrics (any head, not only the run's), with
    the t interval ``gpuseg compare`` gives (corrected for repeats when there are any)."""
    d = np.array([f[head][metric] - f[other][metric] for f in res["per_fold"]])
    return fold_interval(d, 0.95, repeat_overlap(res["folds"], res.get("repeats", 1)))


def head_seconds(summary: dict, head: str) -> float:
    """Wall seconds of all folds for ``head``; a blend's include its parts' (it needs them)."""
    parts = [p for p in HEAD_BLEND_PARTS if p in summary] if head.startswith("head_blend") else []
    return summary[head]["seconds"] + sum(summary[p]["seconds"] for p in parts)


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
        best_lift = max(base, key=lambda b: s[b][lift_metric]["value"])
        auc = paired(res, head, best, metric)
        lift = paired(res, head, best_lift, lift_metric)
        boot = ""
        if res["head"] == head:
            cell = res["paired"]["difference"][best][metric]
            boot = f"[{cell['boot_lo']:+.4f}, {cell['boot_hi']:+.4f}]"
        aucs = " / ".join(f"{c} {s[c][metric]['value']:.4f}" for c in res["candidates"])
        secs_head = head_seconds(s, head)
        secs_base = sum(s[b]["seconds"] for b in base if b != "blend_baselines")
        folds = f"{res['folds']}x{res.get('repeats', 1)}"
        rows.append(
            f"| {path.stem} | {res['n_labelled']} | {folds} | {aucs} | {best} | {interval(auc)} "
            f"| {boot} | {best_lift}: {interval(lift, digits=3)} "
            f"| {secs_head:.0f} s / {secs_base:.0f} s |"
        )
    auc_name, lift_name = names or KEYS["churn"][2:]
    print(
        f"| set | labelled | folds x repeats | mean {auc_name} over folds | best baseline | head "
        f"minus best: {auc_name} [fold t 95%] | [paired bootstrap 95%] | {lift_name}: head minus "
        "the best baseline by it [fold t 95%] | wall: head (with its parts) / baselines |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
