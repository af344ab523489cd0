"""Evaluation of a trained run against feature baselines and, on synthetic data, the oracle.

``evaluate_run`` scores the run's test split (``run_dir/split.npz``) with the trained model
(churn: the run's booster head when it has one, ``model.head``), trains the baselines of
:mod:`gpuseg.evaluate.baselines` on the same train/val rows, and, given the synthetic world's
``truth.parquet``, adds the oracle (the true churn probability). Every churn metric comes
with a bootstrap interval over test subscribers; all rows use the same resamples, so their
intervals are paired, and ``paired`` holds the model's ROC-AUC minus each other row's with its
own paired interval.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gpuseg.config import load_config
from gpuseg.data.panel import Panel, load_panel
from gpuseg.data.privacy import pseudonymize_ids
from gpuseg.data.split import Split, load_split
from gpuseg.errors import ConfigError, DataError, RunDirError
from gpuseg.evaluate.baselines import run_baselines
from gpuseg.evaluate.metrics import churn_report, migration_report, paired_difference, roc_auc
from gpuseg.io.store import json_ready, write_json_atomic
from gpuseg.io.tables import read_table, table_columns
from gpuseg.pipeline.compare import check_test_panel
from gpuseg.training.calibration import calibrated, migration_decision, softmax
from gpuseg.training.checkpoint import load_checkpoint
from gpuseg.training.heads import BlendHead, block_scores, load_head
from gpuseg.training.loop import predict, to_device

COLUMNS = (
    "roc_auc",
    "pr_auc",
    "top_decile_lift",
    "precision_at_k",
    "brier",
    "ece",
    "migration_macro_f1",
)
COLUMN_TITLES = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "top_decile_lift": "Lift@10%",
    "precision_at_k": "Precision@{k}",
    "brier": "Brier",
    "ece": "ECE",
    "migration_macro_f1": "Migration macro-F1",
}
EVALUATION_FILE = "evaluation.json"


def _check_compatible(info: dict, panel: Panel, run_dir: Path) -> None:
    n, t, m = panel.usage.shape
    expected = dict(n_metrics=m, n_periods=t, n_static=panel.static.shape[1])
    for key, value in expected.items():
        if info.get(key) != value:
            raise DataError(
                f"{run_dir}: the model has {key}={info.get(key)} but the panel has {value}; "
                "evaluate with the panel the run was trained on"
            )
    if info.get("metrics") is not None and list(info["metrics"]) != list(panel.metrics):
        raise DataError(f"{run_dir}: the model's metrics {info['metrics']} differ from the panel's")


def _subpanel(panel: Panel, rows: np.ndarray) -> Panel:
    """The panel restricted to ``rows`` (read into memory: only the test rows go to the device)."""
    return Panel(
        usage=np.asarray(panel.usage[rows]),
        mask=np.asarray(panel.mask[rows]),
        static=np.asarray(panel.static[rows]),
        churn=np.asarray(panel.churn[rows]),
        migration=np.asarray(panel.migration[rows]),
        ids=panel.ids[rows],
        meta=panel.meta,
    )


def model_predictions(
    run_dir: str | Path,
    panel: Panel,
    rows: np.ndarray,
    device: str | torch.device = "cpu",
    batch_size: int = 4096,
) -> dict[str, np.ndarray]:
    """Calibrated churn probability (Platt from the run; the booster head's when the run has one,
    ``model.head``), migration class probabilities and migration class of ``rows`` (the run's
    validation-fitted class weights; a blend head with migration: its probabilities and
    weights)."""
    device = torch.device(device)
    model, info = load_checkpoint(Path(run_dir), device)
    _check_compatible(info, panel, Path(run_dir))
    tensors = to_device(_subpanel(panel, rows), device)
    out = predict(model, tensors, None, batch_size, amp=device.type == "cuda")
    logits = out["churn_logit"].cpu().numpy().astype(np.float64)
    platt = tuple(info.get("platt", (1.0, 0.0)))
    proba = calibrated(logits, platt)
    mig_logits = out["migration_logits"].cpu().numpy()
    mig_proba = softmax(mig_logits)
    mig_pred = migration_decision(mig_logits, info.get("migration_weights", (1.0, 1.0, 1.0)))
    head = load_head(Path(run_dir))  # model.head: the run scores churn with a booster head
    if head is not None:
        proba, mig_proba = block_scores(
            head, tensors["usage"], tensors["mask"], tensors["static"], proba, mig_proba
        )
        if isinstance(head, BlendHead) and head.migration is not None:
            mig_pred = head.migration.decision(mig_proba)
    return dict(
        churn_proba=proba,
        churn_logit=logits,
        migration_proba=mig_proba,
        migration_pred=mig_pred,
    )


def oracle_probabilities(
    truth_path: str | Path,
    ids: np.ndarray,
    id_column: str,
    data_cfg=None,
    truth_id_column: str | None = None,
) -> np.ndarray:
    """The synthetic world's true churn probability for each of ``ids`` (in that order); with
    ``data_cfg.pseudonymize`` the truth's ids are hashed like the panel's first.

    The truth table is Parquet or CSV with a ``churn_prob`` column; its id column is
    ``truth_id_column``, else the panel's id column when the table has it, else
    ``subscriber_id``. Ids are compared as text, exactly as written."""
    path = Path(truth_path)
    if not path.is_file():
        raise DataError(f"{path}: truth file not found")
    names = table_columns(path, "truth")
    key = truth_id_column or (id_column if id_column in names else "subscriber_id")
    truth = read_table(path, None, "truth", key)
    for col in (key, "churn_prob"):
        if col not in truth.columns:
            what = "--truth-id" if col == key and truth_id_column else "the truth table"
            raise DataError(f"{path}: column '{col}' ({what}) not found in the truth table")
    prob = truth.assign(**{key: truth[key].astype(str)}).set_index(key)["churn_prob"]
    if data_cfg is not None:
        prob.index = pseudonymize_ids(prob.index.to_numpy(), data_cfg, path)
    if prob.index.has_duplicates:
        raise DataError(f"{path}: duplicate subscriber ids in the truth table")
    aligned = prob.reindex(pd.Index(np.asarray(ids).astype(str))).to_numpy(dtype=np.float64)
    missing = np.isnan(aligned)
    if missing.any():
        raise DataError(
            f"{path}: {int(missing.sum())} test subscribers (e.g. {ids[np.argmax(missing)]}) have "
            "no true churn probability; is this the truth of the world the panel came from?"
        )
    return aligned


def evaluate_run(
    run_dir: str | Path,
    panel_dir: str | Path,
    truth_path: str | Path | None = None,
    n_boot: int = 200,
    seed: int = 0,
    *,
    k: float = 0.05,
    level: float = 0.95,
    baselines: list[str] | None = None,
    device: str | torch.device = "cpu",
    out_path: str | Path | None = None,
    test_panel_dir: str | Path | None = None,
    truth_id_column: str | None = None,
) -> dict:
    """Compare the run's model with the baselines (and the oracle) on the run's test split.

    Out of time: with ``test_panel_dir`` (a panel of a later window, same periods, metrics and
    static columns, :func:`gpuseg.pipeline.compare.check_test_panel`), every labelled subscriber
    of that panel is a test row; the baselines still train on the run's train/val rows of
    ``panel_dir``, and ``truth_path`` must be the later world's truth.

    ``k`` is the precision-at-k cut (a fraction of the test rows below 1, a count otherwise);
    ``baselines`` defaults to every baseline available here. Writes the result as JSON to
    ``out_path`` (default ``run_dir/evaluation.json``) and returns it; see the module docstring
    of :mod:`gpuseg.evaluate` and :func:`comparison_markdown`.
    """
    if n_boot < 0:
        raise ConfigError(f"boot must be >= 0 (0: no bootstrap intervals), got {n_boot}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    t0 = time.perf_counter()
    panel = load_panel(panel_dir)
    split = load_split(run_dir, len(panel))
    later = panel
    if test_panel_dir is not None:
        later = load_panel(test_panel_dir)
        check_test_panel(panel, later, str(test_panel_dir))
        split = Split(split.train, split.val, np.flatnonzero(np.asarray(later.churn) >= 0))
    test = split.test
    y = np.asarray(later.churn)[test].astype(int)
    g = np.asarray(later.migration)[test].astype(int)
    labelled, mig_labelled = y >= 0, g >= 0
    if len(np.unique(y[labelled])) < 2:
        raise DataError(f"{run_dir}: the test split needs churners and stayers to be evaluated")

    seconds: dict[str, float] = {}
    t1 = time.perf_counter()
    pred = model_predictions(run_dir, later, test, device)
    seconds["model"] = time.perf_counter() - t1

    # (name, churn probabilities over test rows, migration classes or None)
    entries: list[tuple[str, np.ndarray, np.ndarray | None]] = [
        ("model", pred["churn_proba"], pred["migration_pred"])
    ]
    if truth_path is not None:
        config = Path(run_dir) / "config.yaml"  # the run's data section says how ids were hashed
        data_cfg = load_config(config).data if config.is_file() else None
        oracle = oracle_probabilities(
            truth_path, later.ids[test], later.meta.get("id_column", ""), data_cfg,
            truth_id_column,
        )  # fmt: skip
        entries.append(("oracle", oracle, None))
    t1 = time.perf_counter()
    base = run_baselines(
        panel, split, seed=seed, models=baselines, test_panel=None if later is panel else later
    )
    seconds["baselines"] = time.perf_counter() - t1
    for name, res in base["models"].items():
        mig = res["migration"]["pred"] if res["migration"] is not None else None
        entries.append((name, res["churn"]["proba"], mig))

    t1 = time.perf_counter()
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    rows, details = [], {}
    for name, p, mig in entries:
        churn = churn_report(y[labelled], p[labelled], k=k, **kw)
        migration = (
            migration_report(g[mig_labelled], mig[mig_labelled], **kw)
            if mig is not None and mig_labelled.any()
            else None
        )
        rows.append(
            dict(model=name)
            | {c: churn[c] for c in COLUMNS[:-1]}
            | dict(migration_macro_f1=migration["macro_f1"] if migration else None)
        )
        details[name] = dict(
            reliability=churn["reliability"],
            migration_accuracy=migration["accuracy"] if migration else None,
            migration_confusion=migration["confusion"] if migration else None,
        )
    model_p = pred["churn_proba"][labelled]
    paired = {
        name: paired_difference(roc_auc, y[labelled], model_p, p[labelled], **kw)
        for name, p, _ in entries[1:]
    }
    seconds["metrics"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0

    result = dict(
        run_dir=str(run_dir),
        panel_dir=str(panel_dir),
        test_panel_dir=str(test_panel_dir) if test_panel_dir is not None else None,
        truth=str(truth_path) if truth_path is not None else None,
        n_boot=n_boot,
        seed=seed,
        level=level,
        k=k,
        test=dict(
            n=int(len(test)),
            churn_labelled=int(labelled.sum()),
            positives=int(y[labelled].sum()),
            churn_rate=float(y[labelled].mean()),
            migration_labelled=int(mig_labelled.sum()),
        ),
        columns=list(COLUMNS),
        rows=rows,
        paired=dict(metric="roc_auc", reference="model", difference=paired),
        details=details,
        baselines=dict(
            n_features=len(base["feature_names"]),
            params={
                name: dict(
                    churn=res["churn"]["params"],
                    migration=res["migration"]["params"] if res["migration"] else None,
                )
                for name, res in base["models"].items()
            },
            seconds=base["seconds"]
            | {
                name: res["churn"]["seconds"]
                + (res["migration"]["seconds"] if res["migration"] else 0.0)
                for name, res in base["models"].items()
            },
        ),
        seconds=seconds,
    )
    result = json_ready(result)
    write_json_atomic(Path(out_path) if out_path is not None else run_dir / EVALUATION_FILE, result)
    return result


def _cell(cell: dict | None, digits: int = 3) -> str:
    if not cell or cell.get("value") is None:
        return "–"
    text = f"{cell['value']:.{digits}f}"
    if cell.get("lo") is not None and cell.get("hi") is not None:
        text += f" [{cell['lo']:.{digits}f}, {cell['hi']:.{digits}f}]"
    return text


def _k_label(k: float) -> str:
    return f"{k * 100:g}%" if k < 1 else f"{int(k)}"


def comparison_markdown(result: dict) -> str:
    """The comparison table of :func:`evaluate_run` as Markdown (value [CI lo, hi] per cell),
    followed by the model's paired ROC-AUC differences."""
    k = result.get("k", 0.05)
    columns = result.get("columns", list(COLUMNS))
    titles = [COLUMN_TITLES.get(c, c).format(k=_k_label(k)) for c in columns]
    level = result.get("level", 0.95)
    test = result.get("test", {})
    no_mig = "; migration: no labels" if test.get("migration_labelled", 1) == 0 else ""
    lines = [
        f"Test split: {test.get('n', '?')} subscribers, {test.get('positives', '?')} churners"
        f"{no_mig}; {level * 100:g}% bootstrap intervals ({result.get('n_boot', '?')} resamples).",
        "",
        "| Model | " + " | ".join(titles) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in result["rows"]:
        lines.append(f"| {row['model']} | " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    paired = result.get("paired", {}).get("difference", {})
    if paired:
        lines += ["", "| ROC-AUC of model minus | Difference |", "|---|---|"]
        lines += [f"| {name} | {_cell(cell)} |" for name, cell in paired.items()]
    ahead = best_baseline_line(result)
    if ahead:
        lines += ["", ahead]
    return "\n".join(lines) + "\n"


def best_baseline_line(result: dict) -> str | None:
    """Which baseline has the highest test ROC-AUC, and how far the model is ahead or behind
    it (the paired difference and its interval); None without baselines."""
    rows = [
        r
        for r in result.get("rows", [])
        if r["model"] not in ("model", "oracle")
        and (r.get("roc_auc") or {}).get("value") is not None
    ]
    paired = result.get("paired", {}).get("difference", {})
    if not rows:
        return None
    best = max(rows, key=lambda r: r["roc_auc"]["value"])
    name, cell = best["model"], paired.get(best["model"])
    if not cell or cell.get("value") is None:
        return None
    d = cell["value"]
    interval = _cell(cell, 4)
    if d >= 0:
        return f"The model is ahead of the best baseline, {name}, by {d:.4f} ROC-AUC ({interval})."
    return (
        f"The best baseline, {name}, is AHEAD of the model by {-d:.4f} ROC-AUC (model minus "
        f"{name}: {interval}); `gpuseg compare --folds 5` tells whether that holds over folds."
    )
