"""The K-fold protocol of gpuseg.compare: folds, cross-fitting (no leakage), intervals, the
shuffled-label control and the verdict."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.config import ModelConfig, TrainConfig, load_config
from gpuseg.data.panel import Panel, load_panel
from gpuseg.errors import ConfigError, DataError, LeakageError, RunDirError
from gpuseg.evaluate.boosting import booster_available
from gpuseg.evaluate.metrics import macro_roc_auc, roc_auc
from gpuseg.model.tabular import TabMSpec
from gpuseg.pipeline.compare import (
    CrossFit,
    check_test_panel,
    compare,
    comparison_markdown,
    default_candidates,
    fold_interval,
    out_of_time_splits,
    paired_bootstrap,
    repeat_overlap,
    scoring_candidate,
    stratified_folds,
    verdict,
)
from gpuseg.pipeline.evaluate import model_predictions
from gpuseg.training.calibration import softmax
from gpuseg.training.checkpoint import load_checkpoint
from gpuseg.training.heads import (
    HEAD_FILE,
    MIGRATION_FILES,
    BlendHead,
    ClassBlend,
    block_scores,
    cross_fitted_blend,
    fit_head,
    fit_logit_blend,
    head_features,
    head_val_auc,
    load_head,
    sequence_proba,
    sequence_scores,
)
from gpuseg.training.tabular import TabMFit

TINY_MODEL = ModelConfig(
    hidden_size=8, embedding_dim=4, static_hidden=4, wide_heads=True, wide_window_stats=True
)
TINY_TRAIN = TrainConfig(epochs=3, batch_size=256, lr=0.01)
xgb = pytest.mark.skipif(not booster_available("xgboost"), reason="xgboost not installed")
both_boosters = pytest.mark.skipif(
    not (booster_available("xgboost") and booster_available("lightgbm")),
    reason="xgboost or lightgbm not installed",
)


def signal_panel(n: int = 6000, t: int = 6, seed: int = 0) -> Panel:
    """A panel whose churn follows a usage drop and one static attribute (AUC well above 0.5)."""
    rng = np.random.default_rng(seed)
    usage = rng.gamma(2.0, 5.0, size=(n, t, 2)).astype(np.float32)
    static = rng.normal(size=(n, 2)).astype(np.float32)
    drop = rng.random(n) < 0.3
    usage[drop, -2:, 0] *= 0.1
    logit = -2.5 + 3.0 * drop + 1.5 * static[:, 0]
    churn = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    churn[:50] = -1  # unlabelled rows never enter a fold
    return Panel(
        usage=usage,
        mask=np.ones((n, t), dtype=bool),
        static=static,
        churn=churn,
        migration=np.full(n, 1, dtype=np.int8),
        ids=np.array([f"s{i}" for i in range(n)]),
        meta=dict(metrics=["data_mb", "revenue"], static_features=["a", "b"]),
    )


# ---------------------------------------------------------------------------------------------
# Folds


def test_folds_cover_labelled_rows_once_and_parts_are_disjoint():
    churn = np.r_[np.zeros(700), np.ones(300), -np.ones(40)].astype(np.int8)
    splits = stratified_folds(churn, folds=5, repeats=2, val_frac=0.15, seed=1)
    assert len(splits) == 10
    labelled = np.flatnonzero(churn >= 0)
    for r in range(2):
        tests = np.concatenate([s.test for s in splits[5 * r : 5 * r + 5]])
        assert np.array_equal(np.sort(tests), labelled)  # each labelled row tested once
    for s in splits:
        parts = [set(s.train), set(s.val), set(s.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(s.train) + len(s.val) + len(s.test) == len(labelled)
        assert abs(len(s.val) - 0.15 * len(labelled)) <= 2
        for p in (s.train, s.val, s.test):  # stratified: the churn rate of every part is ~0.3
            assert abs(churn[p].mean() - 0.3) < 0.02
    assert not np.array_equal(splits[0].test, splits[5].test)  # a repeat reshuffles


def test_folds_refuse_bad_settings():
    churn = np.r_[np.zeros(50), np.ones(3)].astype(np.int8)
    with pytest.raises(DataError, match="churners"):
        stratified_folds(churn, folds=5)
    with pytest.raises(ConfigError, match="folds"):
        stratified_folds(churn, folds=1)
    with pytest.raises(ConfigError, match="val_frac"):
        stratified_folds(np.r_[np.zeros(50), np.ones(20)], folds=5, val_frac=0.9)


# ---------------------------------------------------------------------------------------------
# No leakage: a head never sees features an encoder learned on the same row


def test_crossfit_refuses_features_from_an_encoder_trained_on_the_row():
    n = 100
    rows = np.arange(60)
    cross = CrossFit(n).add(rows, np.arange(n, dtype=float))
    with pytest.raises(LeakageError, match="trained on them"):
        cross.out_of_fold(rows)  # the head's training rows are the encoder's: refused
    assert np.array_equal(cross.out_of_fold(np.arange(60, 100)), np.arange(60, 100))


def test_crossfit_gives_each_row_only_other_encoders_features():
    n = 10
    a, b = np.arange(5), np.arange(5, 10)
    cross = CrossFit(n).add(a, np.full(n, 1.0)).add(b, np.full(n, 3.0))
    oof = cross.out_of_fold(np.arange(n))
    assert np.array_equal(oof[:5], np.full(5, 3.0))  # rows of encoder a get encoder b's value
    assert np.array_equal(oof[5:], np.full(5, 1.0))
    both = CrossFit(n).add(a, np.full(n, 1.0)).add(b, np.full(n, 3.0))
    assert both.out_of_fold(np.array([0]))[0] == 3.0
    with pytest.raises(DataError, match="feature rows"):
        CrossFit(n).add(a, np.zeros(n - 1))


# ---------------------------------------------------------------------------------------------
# Intervals


def test_fold_interval_is_a_t_interval():
    cell = fold_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert cell["value"] == 3.0
    half = 2.7764451 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)  # t(4) 97.5 %
    assert cell["lo"] == pytest.approx(3.0 - half) and cell["hi"] == pytest.approx(3.0 + half)


def test_repeated_folds_get_the_corrected_interval_one_repeat_the_plain_one():
    values = [0.01, 0.03, -0.02, 0.02, 0.00] * 4  # 5 folds x 4 repeats
    assert repeat_overlap(5, 1) == 0.0 and repeat_overlap(5, 4) == 0.25
    plain = fold_interval(values)
    corrected = fold_interval(values, overlap=repeat_overlap(5, 4))
    assert corrected["value"] == plain["value"] and corrected["sd"] == plain["sd"]
    ratio = (corrected["hi"] - corrected["lo"]) / (plain["hi"] - plain["lo"])
    assert ratio == pytest.approx(np.sqrt((1 / 20 + 0.25) * 20))  # sd**2 (1/J + 1/(K-1))


def test_subscriber_bootstrap_does_not_count_a_repeat_as_new_evidence():
    """Four repeats that test the same 600 subscribers in the same folds: resampling each fold
    on its own narrows the interval by about sqrt(4); resampling subscribers does not."""
    rng = np.random.default_rng(0)
    rows = np.array_split(rng.permutation(600), 3)  # 3 folds of one repeat
    y = (rng.random(600) < 0.3).astype(int)
    a, b = y + rng.normal(0, 1.0, 600), y + rng.normal(0, 1.2, 600)
    one = [[v[r] for r in rows] for v in (y, a, b)]
    four = [f * 4 for f in one]
    width = lambda lo_hi: lo_hi[1] - lo_hi[0]  # noqa: E731
    base = width(paired_bootstrap(roc_auc, *one, n_boot=300, seed=1, rows=rows))
    naive = width(paired_bootstrap(roc_auc, *four, n_boot=300, seed=1))
    joint = width(paired_bootstrap(roc_auc, *four, n_boot=300, seed=1, rows=rows * 4))
    assert naive < 0.7 * base  # the repeats taken for independent rows
    assert 0.8 * base < joint < 1.25 * base


def test_paired_bootstrap_of_equal_predictions_is_zero_and_of_better_is_positive():
    rng = np.random.default_rng(0)
    ys = [rng.integers(0, 2, 500) for _ in range(3)]
    good = [y + rng.normal(0, 0.7, len(y)) for y in ys]
    noise = [rng.normal(size=len(y)) for y in ys]
    assert paired_bootstrap(roc_auc, ys, good, good, n_boot=50) == (0.0, 0.0)
    lo, hi = paired_bootstrap(roc_auc, ys, good, noise, n_boot=50)
    assert 0.1 < lo < hi


# ---------------------------------------------------------------------------------------------
# The protocol end to end (the same folds for every candidate), and the shuffled-label control


@pytest.fixture(scope="module")
def panel() -> Panel:
    torch.set_num_threads(1)
    return signal_panel()


def test_compare_same_folds_for_all_and_a_verdict(panel, tmp_path: Path):
    out = tmp_path / "c.json"
    res = compare(
        panel,
        TINY_MODEL,
        TINY_TRAIN,
        folds=3,
        candidates=["sequence", "logistic", "hist_gb"],
        n_boot=30,
        out_path=out,
    )
    assert json.loads(out.read_text())["candidates"] == ["sequence", "logistic", "hist_gb"]
    assert len(res["per_fold"]) == 3
    assert sum(r["n_test"] for r in res["per_fold"]) == res["n_labelled"] == len(panel) - 50
    for name in res["candidates"]:
        auc = res["summary"][name]["roc_auc"]["value"]
        assert auc > 0.75, (name, auc)  # the signal is learnable
    diff = res["paired"]["difference"]["logistic"]["roc_auc"]
    per_fold = [r["sequence"]["roc_auc"] - r["logistic"]["roc_auc"] for r in res["per_fold"]]
    assert diff["value"] == pytest.approx(np.mean(per_fold))
    assert diff["boot_lo"] <= diff["value"] + 0.01 and diff["boot_hi"] >= diff["value"] - 0.01
    best = res["best_baseline"]
    assert best["name"] in ("logistic", "hist_gb")
    text = comparison_markdown(res)
    assert best["name"] in text.splitlines()[-1]
    assert ("AHEAD" in verdict(res)) == (best["head_minus_best"]["value"] < 0)
    assert "corrected" not in text and "corrected" in comparison_markdown(res | {"repeats": 2})


def test_shuffled_labels_give_chance_auc(panel):
    """The control: labels permuted before the folds -> every candidate at AUC 0.5 +- 0.02."""
    big = signal_panel(n=12000, seed=1)
    res = compare(
        big,
        TINY_MODEL,
        TINY_TRAIN,
        folds=5,
        candidates=["sequence", "logistic"],
        n_boot=10,
        shuffle_labels=True,
    )
    assert res["shuffle_labels"] is True
    for name in ("sequence", "logistic"):
        assert abs(res["summary"][name]["roc_auc"]["value"] - 0.5) < 0.02, name


@xgb
def test_stack_blends_and_tuned_boosters_run(panel):
    res = compare(
        panel,
        TINY_MODEL,
        TINY_TRAIN,
        folds=2,
        candidates=["stack", "xgboost", "xgboost_seq", "logistic", "blend", "blend_baselines"],
        head="stack",
        trials=2,
        n_boot=10,
    )
    assert res["candidates"][0] == "stack"
    for name in res["candidates"]:
        assert res["summary"][name]["roc_auc"]["value"] > 0.75, name
    assert set(res["per_fold"][0]["xgboost"]["params"]) >= {"learning_rate", "max_depth"}
    # the blends weigh the other candidates' validation predictions; blend_baselines only the
    # feature baselines
    assert set(res["per_fold"][0]["blend"]["params"]) == {
        "stack",
        "xgboost",
        "xgboost_seq",
        "logistic",
    }
    assert set(res["per_fold"][0]["blend_baselines"]["params"]) == {"xgboost", "logistic"}
    assert res["best_baseline"]["name"] in ("xgboost", "logistic", "blend_baselines")


def test_auto_scores_with_the_part_best_on_validation(panel):
    """``auto`` is model.head: auto in K-fold: per fold, the proba of whichever of sequence and
    the boosters has the best validation ROC-AUC (the tie goes to the sequence model)."""
    res = compare(
        panel,
        TINY_MODEL,
        TINY_TRAIN,
        folds=2,
        candidates=["auto", "sequence", "xgboost", "logistic"],
        head="auto",
        trials=2,
        n_boot=10,
    )
    for rec in res["per_fold"]:
        p = rec["auto"]["params"]
        assert set(p) == {"chose", "sequence", "xgboost"}  # logistic is not a head
        assert p[p["chose"]] == max(p["sequence"], p["xgboost"])
        assert rec["auto"]["roc_auc"] == rec[p["chose"]]["roc_auc"]
    with pytest.raises(ConfigError, match="add sequence"):
        compare(
            panel, TINY_MODEL, TINY_TRAIN, candidates=["head_blend", "logistic"], head="head_blend"
        )
    with pytest.raises(ConfigError, match="add sequence"):
        compare(
            panel, TINY_MODEL, TINY_TRAIN, candidates=["auto", "xgboost", "logistic"], head="auto"
        )


def test_tabm_is_a_candidate_and_a_part_of_head_blend_tabm(panel):
    """``tabm`` runs on the boosters' features; ``head_blend_tabm`` weighs it next to the parts
    of ``head_blend`` (model.head: blend), which leaves it out, as ``blend_baselines`` does."""
    res = compare(
        panel,
        TINY_MODEL,
        TINY_TRAIN,
        folds=2,
        candidates=[
            "head_blend_tabm",
            "head_blend",
            "sequence",
            "tabm",
            "logistic",
            "blend_baselines",
            "hist_gb",
        ],
        head="head_blend_tabm",
        n_boot=10,
        tabm_spec=TabMSpec(k=4, d_block=32, d_embedding=4, n_bins=8),
        tabm_fit=TabMFit(max_epochs=15, patience=5),
    )
    assert res["summary"]["tabm"]["roc_auc"]["value"] > 0.75
    for rec in res["per_fold"]:
        assert set(rec["head_blend_tabm"]["params"]) == {"sequence", "tabm", "logistic", "hist_gb"}
        assert set(rec["head_blend"]["params"]) == {"sequence", "logistic", "hist_gb"}
        assert set(rec["blend_baselines"]["params"]) == {"logistic", "hist_gb"}
        assert 1 <= rec["tabm"]["params"]["best_epoch"] <= rec["tabm"]["params"]["epochs_run"]
    assert res["best_baseline"]["name"] != "tabm"  # a model candidate, not a baseline
    with pytest.raises(ConfigError, match="add tabm"):
        compare(
            panel,
            TINY_MODEL,
            TINY_TRAIN,
            candidates=["head_blend_tabm", "sequence", "logistic"],
            head="head_blend_tabm",
        )


def test_compare_refuses_unknown_candidates_and_heads(panel):
    with pytest.raises(ConfigError, match="unknown candidate"):
        compare(panel, TINY_MODEL, TINY_TRAIN, candidates=["sequence", "catboost"])
    with pytest.raises(ConfigError, match="head"):
        compare(panel, TINY_MODEL, TINY_TRAIN, candidates=["logistic"], head="sequence")
    with pytest.raises(ConfigError, match="seeds must be >= 1"):  # was an internal IndexError
        compare(panel, TINY_MODEL, TINY_TRAIN, candidates=["sequence", "logistic"], seeds=0)
    with pytest.raises(ConfigError, match="boot must be >= 0"):
        compare(panel, TINY_MODEL, TINY_TRAIN, candidates=["sequence", "logistic"], n_boot=-1)


def test_cli_compare_on_the_tiny_world(tmp_path: Path):
    root = Path(__file__).resolve().parents[1]
    r = CliRunner().invoke(
        app,
        [
            "compare",
            "-c",
            str(root / "configs" / "tiny.yaml"),
            "-s",
            f"out_dir={tmp_path / 'run'}",
            "--device",
            "cpu",
            "--folds",
            "2",
            "--candidates",
            "sequence,logistic",
            "--boot",
            "10",
            "--predictions",
            str(tmp_path / "pred.npz"),
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    assert "sequence minus" in r.output and "fold t interval" in r.output
    result = json.loads((tmp_path / "run" / "compare.json").read_text())
    # the saved probabilities are the ones the metrics were computed from, fold by fold
    pred = np.load(tmp_path / "pred.npz")
    labels = np.asarray(load_panel(tmp_path / "run" / "panel").churn)
    tested = []
    for f, record in enumerate(result["per_fold"]):
        rows, y = pred[f"fold{f}_test_rows"], pred[f"fold{f}_test_y"]
        np.testing.assert_array_equal(y, labels[rows])
        assert (
            len(pred[f"fold{f}_val_rows"]) == record["n_val"] == len(pred[f"fold{f}_logistic_val"])
        )
        for name in ("sequence", "logistic"):
            auc = roc_auc(y, pred[f"fold{f}_{name}_test"].astype(np.float64))
            assert auc == pytest.approx(record[name]["roc_auc"], abs=1e-6)
        tested.append(rows)
    assert len(np.intersect1d(*tested)) == 0
    bad = CliRunner().invoke(
        app,
        [
            "compare",
            "-c",
            str(root / "configs" / "tiny.yaml"),
            "-s",
            f"out_dir={tmp_path / 'r2'}",
            "--candidates",
            "nope",
        ],
    )
    assert bad.exit_code == 1 and "unknown candidate" in bad.output


def test_cli_compare_on_a_table_layout(tmp_path: Path):
    """One row per subscriber (IBM Telco, Cell2Cell): compare reads it through layout: table."""
    rng = np.random.default_rng(0)
    n = 1200
    minutes = rng.gamma(2.0, 100.0, n)
    plan = rng.choice(["prepaid", "postpaid"], n)
    logit = -1.0 - 0.01 * (minutes - 200) + 1.5 * (plan == "prepaid")
    table = pd.DataFrame(
        {
            "customer": [f"C{i:05d}" for i in range(n)],
            "revenue": rng.gamma(3.0, 10.0, n).round(2),
            "minutes": minutes.round(1),
            "plan": plan,
            "Churn": np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "Yes", "No"),
        }
    )
    csv = tmp_path / "table.csv"
    table.to_csv(csv, index=False)
    cfg = tmp_path / "table.yaml"
    cfg.write_text(
        f"out_dir: {tmp_path / 'run'}\n"
        f"data: {{usage: {csv}, labels: {csv}, layout: table, id_column: customer,\n"
        "  churn_column: Churn, revenue_metric: revenue, static_columns: [plan]}\n"
        "model: {encoder: static, hidden_size: 8, embedding_dim: 4, static_hidden: 4}\n"
        "train: {epochs: 3, batch_size: 256}\n"
    )
    r = CliRunner().invoke(
        app,
        ["compare", "-c", str(cfg), "--device", "cpu", "--folds", "2"]
        + ["--candidates", "sequence,logistic", "--boot", "10"],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert res["n_labelled"] == n and res["shape"]["periods"] == 1
    assert abs(res["churn_rate"] - (table["Churn"] == "Yes").mean()) < 1e-9
    assert res["summary"]["logistic"]["roc_auc"]["value"] > 0.7
    assert res["head"] == "sequence"  # model.head unset: the sequence model, as asked
    # model.head: blend and no --head / --candidates: the blend the run would score with is
    # what is reported, against every baseline and their blend
    cfg.write_text(cfg.read_text().replace("static_hidden: 4}", "static_hidden: 4, head: blend}"))
    r = CliRunner().invoke(
        app,
        ["compare", "-c", str(cfg), "--device", "cpu", "--folds", "2", "--trials", "1"]
        + ["--boot", "10", "--overwrite"],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "run" / "compare.json").read_text())
    assert res["head"] == "head_blend" and res["candidates"] == default_candidates("head_blend")
    assert {"sequence", "logistic", "hist_gb", "blend_baselines"} <= set(res["candidates"])


def test_the_reported_candidate_follows_model_head():
    assert scoring_candidate("blend") == "head_blend" and scoring_candidate("auto") == "auto"
    assert scoring_candidate("sequence") == "sequence" and scoring_candidate("xgboost") == "xgboost"
    assert scoring_candidate("auto", "migration") == "sequence"  # auto is a churn head
    assert scoring_candidate("blend", "migration") == "head_blend"
    assert default_candidates()[0] == "sequence" and "blend_baselines" not in default_candidates()
    assert default_candidates("auto")[0] == "auto"


# ---------------------------------------------------------------------------------------------
# Out of time: train and validation rows from the run's panel, test rows from a later one


def test_out_of_time_folds_test_every_later_labelled_row_once():
    churn = np.r_[np.zeros(700), np.ones(300), -np.ones(40)].astype(np.int8)
    later = np.r_[-np.ones(30), np.ones(250), np.zeros(750)].astype(np.int8)
    inner = stratified_folds(churn, folds=5, repeats=2, val_frac=0.15, seed=1)
    splits = out_of_time_splits(inner, later, len(churn), folds=5, seed=1)
    assert len(splits) == 10
    labelled = len(churn) + np.flatnonzero(later >= 0)
    for r in range(2):
        tests = np.concatenate([s.test for s in splits[5 * r : 5 * r + 5]])
        assert np.array_equal(np.sort(tests), labelled)  # disjoint parts covering every row
    for s, i in zip(splits, inner, strict=True):
        assert np.array_equal(s.train, i.train) and np.array_equal(s.val, i.val)
        assert s.test.min() >= len(churn)  # only the later panel's rows
        assert abs(later[s.test - len(churn)].mean() - 0.25) < 0.02  # stratified
    assert not np.array_equal(splits[0].test, splits[5].test)  # a repeat reshuffles
    with pytest.raises(DataError, match="the test panel has 3 and"):
        out_of_time_splits(inner, np.r_[np.zeros(50), np.ones(3)].astype(np.int8), 1040, 5)


def test_a_test_panel_of_another_layout_is_refused_in_one_line(panel):
    small = signal_panel(n=600, seed=3)
    check_test_panel(panel, small)  # same layout
    other_t = replace(small, usage=small.usage[:, :5], mask=small.mask[:, :5])
    other_m = replace(small, meta=dict(small.meta, metrics=["data_mb", "voice_min"]))
    other_s = replace(small, meta=dict(small.meta, static_features=["a", "c"]))
    for bad, what in ((other_t, "5 periods"), (other_m, "metrics"), (other_s, "static columns")):
        with pytest.raises(DataError, match=what) as exc:
            compare(panel, TINY_MODEL, TINY_TRAIN, folds=2, candidates=["logistic", "hist_gb"],
                    head="logistic", test_panel=bad, test_panel_name="feb/panel")  # fmt: skip
        assert "\n" not in str(exc.value) and str(exc.value).startswith("feb/panel: ")


def test_compare_out_of_time_tests_on_the_later_panel_and_fits_nothing_on_it(panel, tmp_path):
    """The test rows are the later panel's labelled rows; every fitted thing (the boosters'
    tuning, the blends' weights over the parts' validation predictions, hence the sequence
    model's normalisation, bins and calibration) is the same as in time and does not move when
    the later panel's labels are permuted; only the test metrics do."""
    later = signal_panel(n=3000, seed=2)
    names = ["head_blend", "sequence", "logistic", "hist_gb", "blend_baselines"]
    kw = dict(folds=2, candidates=names, head="head_blend", n_boot=20)
    in_time = compare(panel, TINY_MODEL, TINY_TRAIN, **kw)
    npz = tmp_path / "p.npz"
    oot = compare(
        panel, TINY_MODEL, TINY_TRAIN, **kw, test_panel=later, test_panel_name="feb",
        predictions_path=npz,
    )  # fmt: skip
    with np.load(npz) as saved:  # the fold's own test rows, then the later panel's
        for f, r in enumerate(oot["per_fold"]):
            rows = saved[f"fold{f}_test_rows"]
            assert len(rows) == r["n_test_in_time"] + r["n_test"]
            assert (rows[r["n_test_in_time"] :] >= len(panel)).all()
            assert (rows[: r["n_test_in_time"]] < len(panel)).all()
            assert len(saved[f"fold{f}_head_blend_test"]) == len(rows)
    churn = np.array(later.churn)
    labelled = churn >= 0
    churn[labelled] = np.random.default_rng(5).permutation(churn[labelled])
    permuted = compare(
        panel, TINY_MODEL, TINY_TRAIN, **kw, test_panel=replace(later, churn=churn),
        test_panel_name="feb",
    )  # fmt: skip
    assert oot["out_of_time"] is True and in_time["out_of_time"] is False
    assert oot["test_panel"] == dict(
        path="feb", subscribers=3000, n_labelled=2950, churn_rate=float(later.churn[50:].mean())
    )
    assert oot["n_labelled"] == in_time["n_labelled"] == len(panel) - 50
    assert sum(r["n_test"] for r in oot["per_fold"]) == 2950
    for a, b, c in zip(in_time["per_fold"], oot["per_fold"], permuted["per_fold"], strict=True):
        assert a["n_train"] == b["n_train"] and a["n_val"] == b["n_val"]
        for name in names:  # tuned parameters and blend weights: fitted on train / val only
            assert a[name]["params"] == b[name]["params"] == c[name]["params"], name
            # the same models also score the run panel's own fold test rows: the in-time figures
            assert b[name]["in_time"]["roc_auc"] == pytest.approx(a[name]["roc_auc"], abs=1e-9)
        assert b["n_test_in_time"] == a["n_test"]
    for name in names:
        assert oot["summary"][name]["roc_auc"]["value"] > 0.75, name  # the same signal
        assert abs(permuted["summary"][name]["roc_auc"]["value"] - 0.5) < 0.05, name
        assert oot["summary"][name]["roc_auc"] != in_time["summary"][name]["roc_auc"]
    cell = oot["in_time"]["difference"]["logistic"]["roc_auc"]
    assert cell["value"] == pytest.approx(
        in_time["paired"]["difference"]["logistic"]["roc_auc"]["value"]
    )
    assert in_time["in_time"] is None and oot["in_time"]["n_test"] == len(panel) - 50
    text = comparison_markdown(oot)
    assert "OUT OF TIME" in text and "later panel feb (2950 labelled" in text
    assert "| sequence | " in text.split("In time, for reference")[1]
    assert "OUT OF TIME" not in comparison_markdown(in_time)


def test_cli_compare_out_of_time_on_a_later_tiny_world(tmp_path: Path):
    """`gpuseg compare --test-panel`: a later, drifted world prepared with the same config; the
    churn and migration results name it; a panel of another window length is one line."""
    root = Path(__file__).resolve().parents[1]
    cfg = str(root / "configs" / "tiny.yaml")
    runner = CliRunner()
    for name, t in (("later", 12), ("short", 10)):
        world = tmp_path / name / "world"
        r = runner.invoke(app, ["synth", "--out", str(world), "-n", "1000", "-t", str(t),
                                "--seed", "1", "--set", "shift=8"])  # fmt: skip
        assert r.exit_code == 0, r.output
        data = [f"data.{k}={world / k}.parquet" for k in ("usage", "static", "labels")]
        r = runner.invoke(app, ["prepare", "-c", cfg, "--set", f"out_dir={tmp_path / name}"]
                          + [a for d in data for a in ("--set", d)])  # fmt: skip
        assert r.exit_code == 0, r.output
    base = ["compare", "-c", cfg, "-s", f"out_dir={tmp_path / 'run'}", "--device", "cpu"]
    base += ["--folds", "2", "--boot", "10", "--candidates", "head_blend,sequence,logistic"]
    base += ["--head", "head_blend"]
    later = str(tmp_path / "later" / "panel")
    for target, file in (
        ("churn", "compare_oot.json"),
        ("migration", "compare_migration_oot.json"),
    ):
        r = runner.invoke(app, [*base, "--target", target, "--test-panel", later],
                          catch_exceptions=False)  # fmt: skip
        assert r.exit_code == 0, r.output
        assert "OUT OF TIME" in r.output and later in r.output
        res = json.loads((tmp_path / "run" / file).read_text())
        assert res["out_of_time"] and res["test_panel"]["path"] == later
        n_later = res["test_panel"]["n_labelled"]
        assert sum(f["n_test"] for f in res["per_fold"]) == n_later > 0
    assert not (tmp_path / "run" / "compare.json").exists()
    r = runner.invoke(app, [*base, "--test-panel", str(tmp_path / "short" / "panel")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    line = [s for s in r.output.splitlines() if "periods" in s]
    assert len(line) == 1 and "10 periods, the run's panel has 12" in line[0], r.output


# ---------------------------------------------------------------------------------------------
# model.head: a run scores churn with the winner


@xgb
def run_with_head(tmp_path: Path, head: str) -> tuple[Path, list[str], dict, dict]:
    """The tiny world run with ``model.head=head``: (run dir, its run args, head.json, metrics)."""
    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    args = ["run", "-c", str(root / "configs" / "tiny.yaml"), "-s", f"out_dir={run}"]
    r = CliRunner().invoke(
        app, [*args, "-s", f"model.head={head}", "-s", "model.head_trials=2", "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    info = json.loads((run / HEAD_FILE).read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert info["kind"] == metrics["head"]["kind"] == head
    return run, args, info, metrics


def test_model_head_scores_the_run_with_a_saved_booster(tmp_path: Path):
    run, args, _, _ = run_with_head(tmp_path, "xgboost")
    assert (run / "head.xgb.json").is_file()  # the booster's own JSON, no pickle
    preds = pd.read_parquet(run / "predictions.parquet")
    assert preds["churn_prob"].between(0, 1).all()
    # the predictions are the head's, not the sequence model's calibrated logit
    panel = load_panel(run / "panel")
    head = load_head(run)
    X = head_features(panel.usage[:50], panel.mask[:50], panel.static[:50])
    np.testing.assert_allclose(preds["churn_prob"].to_numpy()[:50], head.predict(X), rtol=1e-5)
    # scoring new data goes through the head too
    world = run / "world"
    out = tmp_path / "scores.parquet"
    r = CliRunner().invoke(
        app,
        [
            "score",
            str(run),
            "--usage",
            str(world / "usage.parquet"),
            "--static",
            str(world / "static.parquet"),
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    scored = pd.read_parquet(out).set_index(panel.meta["id_column"])["churn_prob"]
    ids = preds[panel.meta["id_column"]]
    np.testing.assert_allclose(scored.loc[ids].to_numpy(), preds["churn_prob"], rtol=1e-5)
    # back to the sequence model: the stale head is removed
    r = CliRunner().invoke(app, [*args, "--overwrite", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert not (run / HEAD_FILE).exists() and not (run / "head.xgb.json").exists()


@pytest.fixture(scope="module")
def blend_run(tmp_path_factory) -> tuple[Path, list[str], dict, dict]:
    """The tiny world run once with model.head=blend (the tests below damage copies of it)."""
    return run_with_head(tmp_path_factory.mktemp("blend"), "blend")


def damaged_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("world", "report", "checkpoint"))
    return copy


@both_boosters
def test_blend_head_scores_the_blend_of_its_saved_parts(blend_run, tmp_path: Path):
    """model.head=blend: the logistic baseline and the boosters saved as JSON / their own
    formats, the weights in head.json; predictions are the blend of the parts' logits and the
    sequence model's, and a damaged head file is a one-line error."""
    run, _, info, metrics = blend_run
    assert info["parts"] == ["logistic", "hist_gb", "xgboost", "lightgbm"]  # no TabM (session 9)
    assert set(info["weights"]) == {"sequence", "logistic", "hist_gb", "xgboost", "lightgbm"}
    assert all(w >= 0 for w in info["weights"].values())  # a tiny validation split: held >= 0
    assert (run / "head.logistic.json").is_file() and (run / "head.lgb.txt").is_file()
    assert (run / "head.hist_gb.json").is_file()
    head = load_head(run)
    panel = load_panel(run / "panel")
    X = head_features(panel.usage[:50], panel.mask[:50], panel.static[:50])
    preds = pd.read_parquet(run / "predictions.parquet")
    model, ckpt = load_checkpoint(run, torch.device("cpu"))
    seq = sequence_proba(model, tuple(ckpt["platt"]), panel, np.arange(50))

    def logit(p):
        return np.log(p / (1 - p))

    z = info["intercept"] + info["weights"]["sequence"] * logit(seq)
    for name in info["parts"]:
        z = z + info["weights"][name] * logit(head.parts[name].predict(X))
    expected = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(preds["churn_prob"].to_numpy()[:50], expected, rtol=1e-4)
    assert abs(metrics["head"]["val_auc"] - 0.5) > 0.1  # a real score, not a constant
    # a blend head whose weights do not match its parts is refused in one line
    copy = damaged_copy(run, tmp_path)
    (copy / HEAD_FILE).write_text(json.dumps(info | dict(weights={"sequence": 1.0})))
    with pytest.raises(RunDirError, match="one weight per part"):
        load_head(copy)
    # the HistGradientBoosting part: missing, damaged or of another width, one line each
    copy = damaged_copy(run, tmp_path / "trees")
    trees = json.loads((copy / "head.hist_gb.json").read_text())
    (copy / "head.hist_gb.json").write_text(json.dumps(trees | dict(left=trees["left"][:-1])))
    with pytest.raises(RunDirError, match="head.hist_gb.json: the hist_gb trees' arrays disagree"):
        load_head(copy)
    wider = trees["n_features"] + 5
    (copy / "head.hist_gb.json").write_text(json.dumps(trees | dict(n_features=wider)))
    with pytest.raises(RunDirError, match=f"head.hist_gb.json: the trees read {wider} features"):
        load_head(copy)
    (copy / "head.hist_gb.json").unlink()
    with pytest.raises(RunDirError, match="head.hist_gb.json: missing"):
        load_head(copy)


MIGRATION_COLUMNS = [f"migration_{n}" for n in ("down", "stay", "up")]


@both_boosters
def test_blend_head_scores_migration_with_the_blend_of_its_saved_parts(blend_run, tmp_path):
    """With migration labels, model.head=blend also writes the migration probabilities: the
    multinomial blend (head.json's coefficients) of the log class probabilities of the sequence
    model's migration head and of the saved multiclass parts; score and evaluate use it too."""
    run, args, info, metrics = blend_run
    mig = info["migration"]
    assert mig["parts"] == ["logistic", "xgboost", "lightgbm"]
    for name in ("head.migration.logistic.json", "head.migration.xgb.json"):
        assert (run / name).is_file()
    assert (run / "head.migration.lgb.txt").is_file()
    blend = mig["blend"]
    assert blend["names"] == ["lightgbm", "logistic", "sequence", "xgboost"]
    head = load_head(run)
    panel = load_panel(run / "panel")
    rows = np.arange(60)
    X = head_features(panel.usage[rows], panel.mask[rows], panel.static[rows])
    model, ckpt = load_checkpoint(run, torch.device("cpu"))
    _, seq = sequence_scores(model, tuple(ckpt["platt"]), panel, rows)
    probas = {"sequence": seq} | {n: head.migration.parts[n].predict(X) for n in mig["parts"]}
    for n in mig["parts"]:
        assert probas[n].shape == (60, 3)
        np.testing.assert_allclose(probas[n].sum(1), 1.0, rtol=1e-5)
    V = np.column_stack([np.log(np.clip(probas[n], 1e-6, 1)) for n in blend["names"]])
    z = V @ np.asarray(blend["coef"]).T + np.asarray(blend["intercept"])
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    preds = pd.read_parquet(run / "predictions.parquet")
    got = preds[MIGRATION_COLUMNS].to_numpy()
    np.testing.assert_allclose(got[rows], expected, rtol=1e-4, atol=1e-7)
    assert np.abs(got[rows] - seq).max() > 1e-3  # the blend's, not the sequence model's
    # metrics.json says what migration scores with, on test next to the sequence model
    assert metrics["head"]["migration"]["kind"] == "blend"
    assert 0.5 < metrics["head"]["migration"]["val_macro_roc_auc"] <= 1
    # gpuseg score writes the same migration probabilities for the same subscribers
    world = run / "world"
    out = tmp_path / "scores.parquet"
    r = CliRunner().invoke(
        app,
        ["score", str(run), "--usage", str(world / "usage.parquet")]
        + ["--static", str(world / "static.parquet"), "-o", str(out), "--device", "cpu"],
    )
    assert r.exit_code == 0, r.output
    id_col = panel.meta["id_column"]
    scored = pd.read_parquet(out).set_index(id_col)[MIGRATION_COLUMNS]
    np.testing.assert_allclose(scored.loc[preds[id_col]].to_numpy(), got, rtol=1e-5, atol=1e-7)
    # evaluate's migration class is the blend's, with the blend's decision weights
    pred = model_predictions(run, panel, rows)
    np.testing.assert_allclose(pred["migration_proba"], expected, rtol=1e-4, atol=1e-7)
    weights = np.asarray(mig["decision_weights"])
    assert np.array_equal(pred["migration_pred"], np.argmax(pred["migration_proba"] * weights, 1))


@both_boosters
def test_a_damaged_migration_part_is_refused(blend_run, tmp_path: Path):
    run, _, info, _ = blend_run
    cases = {
        "head.migration.xgb.json": b"{not a model",
        "head.migration.lgb.txt": (run / "head.migration.lgb.txt").read_bytes()[:200],
    }
    for name, data in cases.items():
        copy = damaged_copy(run, tmp_path / name)
        (copy / name).write_bytes(data)
        with pytest.raises(RunDirError, match=name.replace(".", r"\.")):
            load_head(copy)
    copy = damaged_copy(run, tmp_path / "churn_booster")  # a churn booster where a 3-class one is
    shutil.copy(copy / "head.xgb.json", copy / "head.migration.xgb.json")
    with pytest.raises(RunDirError, match="not a migration booster"):
        load_head(copy)
    copy = damaged_copy(run, tmp_path / "logistic")
    part = json.loads((copy / "head.migration.logistic.json").read_text())
    (copy / "head.migration.logistic.json").write_text(
        json.dumps(part | dict(coef=part["coef"][0]))
    )
    with pytest.raises(RunDirError, match="migration logistic part"):
        load_head(copy)
    copy = damaged_copy(run, tmp_path / "blend")
    mig = info["migration"] | dict(blend=info["migration"]["blend"] | dict(coef=[[1.0]]))
    (copy / HEAD_FILE).write_text(json.dumps(info | dict(migration=mig)))
    with pytest.raises(RunDirError, match="migration blend"):
        load_head(copy)
    (copy / "head.migration.logistic.json").unlink()
    (copy / HEAD_FILE).write_text(json.dumps(info))
    with pytest.raises(RunDirError, match="missing"):
        load_head(copy)


def test_blend_head_without_migration_labels_covers_churn_only(tmp_path: Path):
    """A panel with one migration class (no labels to learn from): the blend fits churn only,
    saves no migration part, and scoring leaves the sequence model's migration unchanged."""
    torch.set_num_threads(1)
    p = signal_panel(1500, seed=4)
    rows = np.arange(1500)
    train, val = rows[100:1000], rows[1000:1400]
    rng = np.random.default_rng(0)
    seq_val = np.clip(rng.random(len(val)), 0.01, 0.99)
    mig_val = np.full((len(val), 3), 1 / 3)
    head = fit_head("blend", p, train, val, 0.5, 1, 0, seq_val, mig_val)
    assert isinstance(head, BlendHead) and head.migration is None
    head.save(tmp_path)
    assert "migration" not in json.loads((tmp_path / HEAD_FILE).read_text())
    assert not any((tmp_path / f).exists() for f in MIGRATION_FILES.values())
    loaded = load_head(tmp_path)
    assert loaded.migration is None
    seq_mig = softmax(rng.normal(size=(20, 3)))
    t = (
        torch.as_tensor(p.usage[:20]),
        torch.as_tensor(p.mask[:20]),
        torch.as_tensor(p.static[:20]),
    )
    churn, mig = block_scores(loaded, *t, np.full(20, 0.3), seq_mig)
    assert mig is seq_mig and churn.shape == (20,)
    # a tiny panel's test split of one class: the head's test AUC is NaN, as the sequence
    # model's is, not an internal error (was: "ROC-AUC needs both classes")
    one_class = rows[1400:][np.asarray(p.churn)[1400:] == 0][:9]
    assert np.isnan(head_val_auc(loaded, p, one_class, np.full(9, 0.3)))
    assert 0.5 < head_val_auc(loaded, p, rows[1400:], np.full(100, 0.3)) <= 1


def test_churn_blend_holds_weights_nonnegative_unless_free_ones_predict_better_out_of_fold():
    swung, held = 0, 0
    for seed in range(10):  # 800 validation rows of four noisy, correlated copies of one signal
        rng = np.random.default_rng(seed)
        s, common = rng.normal(size=800), rng.normal(size=800)
        y = (rng.random(800) < 1 / (1 + np.exp(-(1.5 * s - 1.5)))).astype(int)
        V = np.column_stack([s + 0.5 * common + rng.normal(0, 0.3, 800) for _ in range(4)])
        blend = fit_logit_blend(V, y)
        assert blend.coef_.shape == (1, 4) and roc_auc(y, blend.predict_proba(V)[:, 1]) > 0.7
        if LogisticRegression(C=1.0, max_iter=1000).fit(V, y).coef_.min() < -0.1:
            swung += 1  # free weights of opposite signs: noise, which the held blend leaves out
            held += blend.nonneg
        assert not blend.nonneg or (blend.coef_ >= 0).all()
    assert swung >= 3 and held >= 0.8 * swung
    # 20,000 rows where the third part removes the second's shared noise: a real negative weight
    rng = np.random.default_rng(0)
    s, shared = rng.normal(size=20000), rng.normal(size=20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(1.5 * s - 1.5)))).astype(int)
    V = np.column_stack([s + rng.normal(0, 0.7, 20000), s + shared, shared])
    chosen = fit_logit_blend(V, y)
    free = LogisticRegression(C=1.0, max_iter=1000).fit(V, y)
    assert not chosen.nonneg and chosen.coef_[0, 2] < -0.5
    # free weights are scikit-learn's LogisticRegression(C=1)
    np.testing.assert_allclose(chosen.coef_, free.coef_, atol=1e-3)
    np.testing.assert_allclose(chosen.predict_proba(V), free.predict_proba(V), atol=1e-3)
    with pytest.raises(DataError, match="one class"):
        fit_logit_blend(V, np.zeros(len(V)))


def test_class_blend_is_sklearns_multinomial_regression_and_refuses_bad_states(tmp_path: Path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    parts = {
        "b": softmax(rng.normal(size=(400, 3)) + 2.0 * np.eye(3)[y]),
        "a": softmax(rng.normal(size=(400, 3))),
    }
    blend = ClassBlend.fit(parts, y)
    V = np.column_stack([np.log(np.clip(parts[n], 1e-6, 1)) for n in ("a", "b")])
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(V, y)
    np.testing.assert_allclose(blend.predict(parts), lr.predict_proba(V), rtol=1e-9)
    assert blend.names == ["a", "b"] and set(blend.part_weights()) == {"a", "b"}
    assert macro_roc_auc(y, blend.predict(parts)) > 0.8
    again = ClassBlend.from_state(json.loads(json.dumps(blend.state())), tmp_path)
    np.testing.assert_array_equal(again.predict(parts), blend.predict(parts))
    two = ClassBlend.fit(parts, np.where(y == 2, 1, y))  # a class absent: probability 0
    p2 = two.predict(parts)
    assert p2.shape == (400, 3) and np.all(p2[:, 2] == 0)
    np.testing.assert_allclose(p2.sum(1), 1.0)
    # the decision weights' probabilities: out of fold, so not the in-sample blend's
    oof = cross_fitted_blend(parts, y, folds=4)
    assert oof.shape == (400, 3) and np.abs(oof - blend.predict(parts)).max() > 1e-4
    np.testing.assert_allclose(oof.sum(1), 1.0)
    assert macro_roc_auc(y, oof) <= macro_roc_auc(y, blend.predict(parts)) + 0.01
    for bad in (dict(coef=[[0.0]]), dict(names=["b", "a"]), dict(classes=[0, 5, 1])):
        with pytest.raises(RunDirError, match="migration blend"):
            ClassBlend.from_state(blend.state() | bad, tmp_path)


def test_unknown_head_is_refused():
    with pytest.raises(ConfigError, match="model.head"):
        load_config(None, ["model.head=catboost"])


# ---------------------------------------------------------------------------------------------
# --target migration: the same protocol on value-tier migration (down / stay / up)


def migration_panel(n: int = 3000, seed: int = 0) -> Panel:
    """signal_panel with a migration label: down after a revenue drop or churn, up at random."""
    p = signal_panel(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    fell = p.usage[:, -2:, 1].mean(1) < 0.7 * p.usage[:, :-2, 1].mean(1)
    mig = np.where(rng.random(n) < 0.2, 2, 1)
    mig[fell | (p.churn == 1)] = 0
    p.usage[mig == 2, -2:, 0] *= 3.0  # up follows more data use
    mig[10:20] = -1  # no migration label: left out of the folds
    return replace(p, migration=mig.astype(np.int8))


def test_stratified_folds_by_migration_class():
    y = np.r_[np.zeros(200), np.ones(600), np.full(100, 2), -np.ones(30)].astype(np.int8)
    splits = stratified_folds(y, folds=4, seed=2, class_names=("down", "stay", "up"))
    assert np.array_equal(np.sort(np.concatenate([s.test for s in splits])), np.flatnonzero(y >= 0))
    for s in splits:
        for part in (s.train, s.val, s.test):
            assert abs((y[part] == 2).mean() - 100 / 900) < 0.02  # every class stratified
    few = np.r_[np.zeros(50), np.ones(50), np.full(3, 2)].astype(np.int8)
    with pytest.raises(DataError, match="down 50, stay 50, up 3"):
        stratified_folds(few, folds=5, class_names=("down", "stay", "up"))


def test_compare_migration_scores_every_candidate_on_class_probabilities(tmp_path: Path):
    panel = migration_panel()
    names = ["sequence", "logistic", "hist_gb", "blend", "blend_baselines", "head_blend"]
    names += [k for k in ("xgboost", "lightgbm") if booster_available(k)]
    res = compare(
        panel,
        TINY_MODEL,
        TINY_TRAIN,
        folds=2,
        candidates=names,
        trials=2,
        n_boot=20,
        target="migration",
        out_path=tmp_path / "m.json",
    )
    assert res["target"] == "migration" and set(res["candidates"]) == set(names)
    usable = (panel.migration >= 0) & (panel.churn >= 0)
    assert res["n_labelled"] == int(usable.sum()) == sum(r["n_test"] for r in res["per_fold"])
    assert res["class_rates"]["down"] == pytest.approx((panel.migration[usable] == 0).mean())
    assert "churn_rate" not in res
    for name in names:
        cell = res["summary"][name]
        assert set(cell) >= {"macro_roc_auc", "down_roc_auc", "down_top_decile_lift"}
        assert 0.6 < cell["macro_roc_auc"]["value"] <= 1, name  # learnable, not a constant
        assert cell["down_roc_auc"]["value"] > 0.6, name
    diff = res["paired"]["difference"]["logistic"]
    per_fold = [
        r["sequence"]["down_roc_auc"] - r["logistic"]["down_roc_auc"] for r in res["per_fold"]
    ]
    assert diff["down_roc_auc"]["value"] == pytest.approx(np.mean(per_fold))
    assert {"boot_lo", "boot_hi"} <= set(diff["macro_roc_auc"])
    best = res["best_baseline"]
    assert best["macro_roc_auc"] == res["summary"][best["name"]]["macro_roc_auc"]["value"]
    derived = {"blend", "blend_baselines", "head_blend"}
    assert set(res["per_fold"][0]["blend"]["params"]) == set(names) - derived
    # head_blend: what model.head=blend scores a run's migration with, of only its parts
    head_parts = {"sequence", "logistic", "xgboost", "lightgbm"} & set(names)
    assert set(res["per_fold"][0]["head_blend"]["params"]) == head_parts
    text = comparison_markdown(res)
    assert "macro ROC-AUC" in text and "down Lift@10%" in text
    line = verdict(res)
    assert "macro ROC-AUC" in line
    assert ("model.head=blend" in line) == (res["best_baseline"]["head_minus_best"]["value"] < 0)
    assert json.loads((tmp_path / "m.json").read_text())["target"] == "migration"


def test_compare_migration_shuffled_labels_give_chance_auc():
    big = migration_panel(9000, seed=3)
    res = compare(
        big,
        TINY_MODEL,
        TINY_TRAIN,
        folds=3,
        candidates=["logistic"],
        head="logistic",
        n_boot=10,
        shuffle_labels=True,
        target="migration",
    )
    assert abs(res["summary"]["logistic"]["macro_roc_auc"]["value"] - 0.5) < 0.02


def test_compare_migration_refuses_churn_heads_and_panels_without_labels(panel):
    for name in ("stack", "auto", "tabm", "head_blend_tabm"):
        with pytest.raises(ConfigError, match="churn-only"):
            compare(
                panel, TINY_MODEL, TINY_TRAIN, candidates=["sequence", name], target="migration"
            )
    with pytest.raises(ConfigError, match="unknown target"):
        compare(
            panel, TINY_MODEL, TINY_TRAIN, candidates=["logistic"], head="logistic", target="value"
        )
    unlabelled = replace(panel, migration=np.full(len(panel), -1, dtype=np.int8))
    with pytest.raises(DataError, match="no migration labels.*migration column"):
        compare(
            unlabelled,
            TINY_MODEL,
            TINY_TRAIN,
            candidates=["logistic"],
            head="logistic",
            target="migration",
        )
    derived = replace(unlabelled, meta=unlabelled.meta | dict(labels=dict(definition="no_usage")))
    with pytest.raises(DataError, match="no revenue metric"):
        compare(
            derived,
            TINY_MODEL,
            TINY_TRAIN,
            candidates=["logistic"],
            head="logistic",
            target="migration",
        )


def test_cli_compare_migration_on_the_tiny_world(tmp_path: Path):
    """`gpuseg compare --target migration` on the tiny synthetic world: every candidate that
    scores migration, the table and compare_migration.json; the churn file is left alone."""
    root = Path(__file__).resolve().parents[1]
    names = ["sequence", "xgboost_seq", "blend", "logistic", "hist_gb"]
    names += ["xgboost", "lightgbm", "blend_baselines", "head_blend"]
    if not (booster_available("xgboost") and booster_available("lightgbm")):
        names = ["sequence", "blend", "logistic", "hist_gb", "blend_baselines"]
    r = CliRunner().invoke(
        app,
        [
            "compare",
            "-c",
            str(root / "configs" / "tiny.yaml"),
            "-s",
            f"out_dir={tmp_path / 'run'}",
            "--device",
            "cpu",
            "--folds",
            "2",
            "--trials",
            "2",
            "--target",
            "migration",
            "--candidates",
            ",".join(names),
            "--boot",
            "10",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    assert "macro ROC-AUC [fold t interval]" in r.output and "down Lift@10%" in r.output
    res = json.loads((tmp_path / "run" / "compare_migration.json").read_text())
    assert not (tmp_path / "run" / "compare.json").exists()
    assert res["candidates"] == names
    for name in names:
        assert np.isfinite(res["summary"][name]["macro_roc_auc"]["value"]), name
        assert f"| {name} |" in r.output


def test_cli_compare_migration_on_a_table_without_migration_is_one_line(tmp_path: Path):
    """A table (one row per subscriber, churn only) has no migration and no revenue series to
    derive it from: exit 1 with one line saying so."""
    rng = np.random.default_rng(0)
    n = 300
    table = pd.DataFrame(
        {
            "customer": [f"C{i:04d}" for i in range(n)],
            "revenue": rng.gamma(3.0, 10.0, n).round(2),
            "Churn": rng.choice(["Yes", "No"], n),
        }
    )
    csv = tmp_path / "table.csv"
    table.to_csv(csv, index=False)
    cfg = tmp_path / "table.yaml"
    cfg.write_text(
        f"out_dir: {tmp_path / 'run'}\n"
        f"data: {{usage: {csv}, labels: {csv}, layout: table, id_column: customer,\n"
        "  churn_column: Churn, revenue_metric: revenue}\n"
        "model: {encoder: static, hidden_size: 8, embedding_dim: 4, static_hidden: 4}\n"
    )
    r = CliRunner().invoke(
        app,
        ["compare", "-c", str(cfg), "--device", "cpu", "--folds", "2", "--target", "migration"],
    )
    assert r.exit_code == 1, r.output
    line = [s for s in r.output.splitlines() if "no migration labels" in s]
    assert len(line) == 1 and "Traceback" not in r.output, r.output
    assert "data.migration_column" in line[0]
