"""evaluate_run on a tiny trained run: model vs oracle vs baselines, written as JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gpuseg.backend import resolve_backend
from gpuseg.config import DataConfig, ModelConfig, SynthConfig, TrainConfig
from gpuseg.data.panel import load_panel
from gpuseg.data.prepare import prepare
from gpuseg.data.synth import generate
from gpuseg.errors import ConfigError, DataError, RunDirError
from gpuseg.evaluate.baselines import default_models
from gpuseg.evaluate.metrics import roc_auc
from gpuseg.pipeline.evaluate import COLUMNS, comparison_markdown, evaluate_run, load_split
from gpuseg.training.checkpoint import save_checkpoint
from gpuseg.training.loop import train_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    world = root / "world"
    generate(SynthConfig(n_subscribers=3000), world)
    cfg = DataConfig(
        usage=str(world / "usage.parquet"),
        static=str(world / "static.parquet"),
        labels=str(world / "labels.parquet"),
    )
    prepare(cfg, resolve_backend("cpu"), root / "panel")
    panel = load_panel(root / "panel")
    model_cfg = ModelConfig(hidden_size=16, embedding_dim=8)
    result = train_model(panel, model_cfg, TrainConfig(epochs=2), torch.device("cpu"))
    run = root / "run"
    run.mkdir()
    save_checkpoint(result, panel.meta, model_cfg, run)
    return dict(root=root, run=run, panel=root / "panel", truth=world / "truth.parquet")


@pytest.fixture(scope="module")
def evaluation(trained) -> dict:
    return evaluate_run(trained["run"], trained["panel"], trained["truth"], n_boot=50, seed=0)


def test_evaluate_writes_json_with_all_rows(trained, evaluation):
    path = trained["run"] / "evaluation.json"
    assert path.is_file()
    on_disk = json.loads(path.read_text())  # strict JSON: NaN would have been written as null
    assert on_disk == evaluation
    names = [row["model"] for row in on_disk["rows"]]
    assert names == ["model", "oracle", *default_models()]
    assert on_disk["columns"] == list(COLUMNS)
    split = load_split(trained["run"], len(load_panel(trained["panel"])))
    assert on_disk["test"]["n"] == len(split.test)
    for row in on_disk["rows"]:
        for col in COLUMNS:
            cell = row[col]
            if row["model"] == "oracle" and col == "migration_macro_f1":
                assert cell is None  # the truth table has no migration probabilities
                continue
            assert set(cell) == {"value", "lo", "hi"}, (row["model"], col)
            assert cell["lo"] <= cell["hi"]
            if col in ("roc_auc", "pr_auc", "brier"):  # unbiased enough to sit inside the CI
                assert cell["lo"] <= cell["value"] <= cell["hi"], (row["model"], col)
    assert set(on_disk["paired"]["difference"]) == set(names[1:])
    confusion = np.asarray(on_disk["details"]["model"]["migration_confusion"])
    mig = np.asarray(load_panel(trained["panel"]).migration)[split.test]
    assert confusion.shape == (3, 3) and confusion.sum() == (mig >= 0).sum()
    assert (confusion.sum(1) == np.bincount(mig[mig >= 0], minlength=3)).all()  # rows: truth


def test_evaluate_numbers_are_consistent(trained, evaluation):
    rows = {row["model"]: row for row in evaluation["rows"]}
    # the oracle row is the truth's churn_prob on the test rows, recomputed here independently
    panel = load_panel(trained["panel"])
    test = load_split(trained["run"], len(panel)).test
    truth = pd.read_parquet(trained["truth"]).set_index("subscriber_id")["churn_prob"]
    p_true = truth.loc[panel.ids[test]].to_numpy()
    y = np.asarray(panel.churn)[test]
    assert rows["oracle"]["roc_auc"]["value"] == pytest.approx(roc_auc(y, p_true))
    assert rows["oracle"]["roc_auc"]["value"] > 0.7
    for name in default_models():
        assert rows[name]["roc_auc"]["value"] > 0.65, name
    for name, row in rows.items():
        diff = evaluation["paired"]["difference"].get(name)
        if diff is not None:
            expected = rows["model"]["roc_auc"]["value"] - row["roc_auc"]["value"]
            assert diff["value"] == pytest.approx(expected)
    assert evaluation["test"]["positives"] == int(y.sum())


def test_comparison_markdown(evaluation):
    text = comparison_markdown(evaluation)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Model"))
    assert "ROC-AUC" in header and "Precision@5%" in header and "Migration macro-F1" in header
    for row in evaluation["rows"]:
        assert any(line.startswith(f"| {row['model']} |") for line in lines)
    auc = evaluation["rows"][0]["roc_auc"]
    assert f"{auc['value']:.3f} [{auc['lo']:.3f}, {auc['hi']:.3f}]" in text
    assert "–" in text  # the oracle's missing migration cell
    # where the model loses, say so: the best baseline by name, ahead or behind, by how much
    base = [r for r in evaluation["rows"] if r["model"] not in ("model", "oracle")]
    best = max(base, key=lambda r: r["roc_auc"]["value"])["model"]
    d = evaluation["paired"]["difference"][best]["value"]
    last = lines[-1]
    assert f"best baseline, {best}," in last and f"{abs(d):.4f}" in last
    assert ("AHEAD of the model" in last) == (d < 0)


def test_evaluate_without_truth_and_custom_output(trained, tmp_path):
    out = tmp_path / "eval.json"
    result = evaluate_run(
        trained["run"],
        trained["panel"],
        n_boot=0,
        seed=1,
        k=20,
        baselines=["logistic"],
        out_path=out,
    )
    assert [row["model"] for row in result["rows"]] == ["model", "logistic"]
    assert json.loads(out.read_text())["k"] == 20
    assert result["rows"][0]["roc_auc"]["lo"] is None  # n_boot=0: no interval
    assert "Precision@20" in comparison_markdown(result)


def test_evaluate_errors(trained, tmp_path):
    with pytest.raises(RunDirError):
        evaluate_run(tmp_path / "nope", trained["panel"])
    with pytest.raises(ConfigError, match="boot must be >= 0"):  # was taken silently
        evaluate_run(trained["run"], trained["panel"], n_boot=-1)
    broken = tmp_path / "run"
    shutil.copytree(trained["run"], broken)
    (broken / "split.npz").unlink()
    with pytest.raises(RunDirError, match="split.npz"):
        evaluate_run(broken, trained["panel"])
    split = np.load(trained["run"] / "split.npz")
    np.savez(
        broken / "split.npz",
        train=split["train"],
        val=split["val"],
        test=np.append(split["test"], 10**6),
    )
    with pytest.raises(DataError, match="panel"):
        evaluate_run(broken, trained["panel"])
    partial = tmp_path / "truth.parquet"
    pd.read_parquet(trained["truth"]).iloc[:100].to_parquet(partial)
    with pytest.raises(DataError, match="no true churn probability"):
        evaluate_run(trained["run"], trained["panel"], partial, n_boot=0, baselines=["logistic"])


def test_evaluate_out_of_time(trained, tmp_path):
    """A later, drifted window of new subscribers: every labelled one is a test row, the baselines
    still train on the run's own training rows, and the oracle is the later world's."""
    later = tmp_path / "later"
    summary = generate(SynthConfig(n_subscribers=1500, seed=1, shift=8), later / "world")
    assert summary["periods"][0] == "2026-03-02"  # 8 weeks after the default start
    cfg = DataConfig(
        usage=str(later / "world" / "usage.parquet"),
        static=str(later / "world" / "static.parquet"),
        labels=str(later / "world" / "labels.parquet"),
    )
    prepare(cfg, resolve_backend("cpu"), later / "panel")
    out = tmp_path / "oot.json"
    result = evaluate_run(
        trained["run"],
        trained["panel"],
        later / "world" / "truth.parquet",
        n_boot=20,
        test_panel_dir=later / "panel",
        out_path=out,
    )
    later_panel = load_panel(later / "panel")
    assert result["test"]["n"] == int((np.asarray(later_panel.churn) >= 0).sum()) == 1500
    assert result["test_panel_dir"] == str(later / "panel")
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"model", "oracle", *default_models()}
    for row in rows.values():
        assert 0.5 < row["roc_auc"]["value"] <= 1.0
    # the oracle row is the later world's truth on the later subscribers
    truth = pd.read_parquet(later / "world" / "truth.parquet")
    assert rows["oracle"]["roc_auc"]["value"] == pytest.approx(
        roc_auc(truth["churn"].to_numpy(), truth["churn_prob"].to_numpy()), abs=1e-9
    )
    # a later panel whose static columns are another's (same count) is refused in one line
    meta_path = later / "panel" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["static_features"] = meta["static_features"][::-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="static columns differ") as exc:
        evaluate_run(trained["run"], trained["panel"], n_boot=0, test_panel_dir=later / "panel")
    assert "\n" not in str(exc.value)
    assert json.loads(out.read_text())["test"]["n"] == 1500
    assert (trained["run"] / "evaluation.json").read_text() != out.read_text()
