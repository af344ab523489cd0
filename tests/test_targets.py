"""Retention targets: exact contact-policy exclusions, ranking, filters, errors, output files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gpuseg.backend import resolve_backend
from gpuseg.config import load_config
from gpuseg.errors import ConfigError, RunDirError
from gpuseg.pipeline.stages import run_pipeline
from gpuseg.segment.targets import counts_line, select_targets, write_targets

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("targets") / "run"
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"out_dir={out}", "device=cpu"])
    run_pipeline(cfg, resolve_backend("cpu"))
    return out


@pytest.fixture(scope="module")
def policy_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the run where everyone is contactable except known subscribers."""
    out = tmp_path_factory.mktemp("policy") / "run"
    shutil.copytree(tiny_run, out)
    path = out / "panel" / "attributes.parquet"
    attrs = pd.read_parquet(path)
    ids = attrs["subscriber_id"].astype(str).to_numpy()
    consent = pd.Series(True, index=attrs.index, dtype="boolean")
    dnd = pd.Series(False, index=attrs.index, dtype="boolean")
    no_consent = set(ids[[3, 10, 20]])
    dnd_only = set(ids[[4, 11]])
    both = set(ids[[5]])  # no consent and DND: counted once, as no consent
    consent_missing = set(ids[[6]])  # missing consent -> no consent
    dnd_missing = set(ids[[7]])  # missing DND -> DND
    for i, sid in enumerate(ids):
        if sid in no_consent | both:
            consent[i] = False
        if sid in dnd_only | both:
            dnd[i] = True
        if sid in consent_missing:
            consent[i] = pd.NA
        if sid in dnd_missing:
            dnd[i] = pd.NA
    attrs["marketing_consent"] = consent
    attrs["do_not_disturb"] = dnd
    attrs.to_parquet(path, index=False)
    return dict(
        dir=out,
        ids=ids,
        no_consent=no_consent | both | consent_missing,
        dnd=dnd_only | dnd_missing,
    )


def _invariant(counts: dict) -> None:
    assert counts["excluded"] == counts["excluded_no_consent"] + counts["excluded_dnd"]
    assert counts["candidates"] == (
        counts["selected"] + counts["excluded"] + counts["below_min_risk"] + counts["cut_by_top"]
    )


def test_exclusions_are_exact(policy_run):
    f = select_targets(policy_run["dir"])
    c = f.attrs["counts"]
    excluded = policy_run["no_consent"] | policy_run["dnd"]
    assert set(f["subscriber_id"]) == set(policy_run["ids"]) - excluded
    assert c["candidates"] == len(policy_run["ids"])
    assert c["excluded_no_consent"] == len(policy_run["no_consent"]) == 5
    assert c["excluded_dnd"] == len(policy_run["dnd"]) == 3
    assert c["candidates"] == c["selected"] + c["excluded"]
    assert c["below_min_risk"] == 0 and c["cut_by_top"] == 0
    _invariant(c)
    assert "excluded 8" in counts_line(c)


def test_exclusions_within_segment_filter(policy_run):
    seg = pd.read_parquet(policy_run["dir"] / "segments.parquet")
    seg["subscriber_id"] = seg["subscriber_id"].astype(str)
    target = int(seg.loc[seg["subscriber_id"] == policy_run["ids"][3], "segment"].iloc[0])
    members = set(seg.loc[seg["segment"] == target, "subscriber_id"])
    f = select_targets(policy_run["dir"], segments=[target])
    c = f.attrs["counts"]
    assert c["candidates"] == len(members)
    assert set(f["subscriber_id"]) == members - policy_run["no_consent"] - policy_run["dnd"]
    assert c["excluded_no_consent"] == len(members & policy_run["no_consent"]) >= 1
    assert c["excluded_dnd"] == len(members & policy_run["dnd"])
    assert set(f["segment"]) == {target}
    _invariant(c)


def test_missing_policy_columns_exclude_everyone(policy_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(policy_run["dir"], run)
    path = run / "panel" / "attributes.parquet"
    attrs = pd.read_parquet(path).drop(columns=["marketing_consent", "do_not_disturb"])
    attrs.to_parquet(path, index=False)
    f = select_targets(run)
    assert len(f) == 0
    c = f.attrs["counts"]
    assert c["excluded_no_consent"] == c["candidates"] == len(policy_run["ids"])


def test_ranking_and_values(tiny_run):
    f = select_targets(tiny_run, horizon_months=6)
    assert len(f) > 0
    saved = f["expected_value_saved"].to_numpy()
    assert np.all(np.diff(saved) <= 0)
    assert f["rank"].tolist() == list(range(1, len(f) + 1))
    np.testing.assert_allclose(saved, f["churn_prob"] * f["value"])
    base = select_targets(tiny_run).set_index("subscriber_id")
    np.testing.assert_allclose(
        f.set_index("subscriber_id")["value"], base.loc[f["subscriber_id"], "value"] * 6
    )
    preds = pd.read_parquet(tiny_run / "predictions.parquet").set_index("subscriber_id")
    np.testing.assert_allclose(
        f["churn_prob"], preds.loc[f["subscriber_id"], "churn_prob"], rtol=1e-6
    )
    row = f.iloc[0]
    assert row["reason"].startswith(f"segment {row['segment']} ({row['segment_name']}); ")
    assert f"expected value saved {row['expected_value_saved']:.1f}" in row["reason"]
    assert "x 6 months" in row["reason"]
    assert set(f.columns) >= {
        "subscriber_id",
        "segment",
        "segment_name",
        "churn_prob",
        "value",
        "expected_value_saved",
        "tags",
        "reason",
    }


def test_min_risk_and_top(tiny_run):
    full = select_targets(tiny_run)
    cut = float(full["churn_prob"].median())
    f = select_targets(tiny_run, min_risk=cut, top=5)
    assert len(f) == 5
    assert (f["churn_prob"] >= cut).all()
    expected = full[full["churn_prob"] >= cut].head(5)["subscriber_id"].tolist()
    assert f["subscriber_id"].tolist() == expected
    c = f.attrs["counts"]
    assert c["below_min_risk"] == int((full["churn_prob"] < cut).sum())
    assert c["selected"] == 5
    _invariant(c)
    assert f"churn risk {f['churn_prob'].iloc[0]:.2f} >= {cut:.2f}" in f["reason"].iloc[0]


def test_tag_filters(tiny_run):
    any_ = select_targets(tiny_run, tags=["high_value", "churn_warning"])
    all_ = select_targets(tiny_run, tags=["high_value", "churn_warning"], tag_mode="all")
    hv = select_targets(tiny_run, tags=["high_value"])
    assert len(hv) > 0
    assert (hv["tags"] == "high_value").all()
    assert all("tags high_value" in r for r in hv["reason"])
    assert set(all_["subscriber_id"]) <= set(hv["subscriber_id"]) <= set(any_["subscriber_id"])
    assert all(t == "high_value,churn_warning" for t in all_["tags"])
    assert all(t for t in any_["tags"])
    _invariant(any_.attrs["counts"])


def test_unknown_names_raise(tiny_run):
    with pytest.raises(ConfigError, match="no_such_tag"):
        select_targets(tiny_run, tags=["vip", "no_such_tag"])
    with pytest.raises(ConfigError, match="99"):
        select_targets(tiny_run, segments=[0, 99])
    with pytest.raises(ConfigError, match="nope"):
        select_targets(tiny_run, value_column="nope")
    with pytest.raises(ConfigError, match="tag mode"):
        select_targets(tiny_run, tag_mode="some")
    with pytest.raises(ConfigError, match="min_risk"):
        select_targets(tiny_run, min_risk=1.5)


def test_run_dir_without_predictions(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "predictions.parquet").unlink()
    with pytest.raises(RunDirError, match="predictions"):
        select_targets(run)
    with pytest.raises(RunDirError):
        select_targets(tmp_path / "absent")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_targets(tiny_run, tmp_path, suffix):
    f = select_targets(tiny_run, top=20)
    path = write_targets(f, tmp_path / "sub" / f"targets{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert back["subscriber_id"].astype(str).tolist() == f["subscriber_id"].tolist()
    assert back["reason"].tolist() == f["reason"].tolist()
    # rounded on the way out (no 16-digit floats), and each segment named as in the report
    assert (back["churn_prob"] == back["churn_prob"].round(4)).all()
    assert (back["expected_value_saved"] == back["expected_value_saved"].round(2)).all()
    names = pd.read_csv(tiny_run / "report" / "segments.csv").set_index("segment")["name"]
    assert back["segment_name"].tolist() == names.loc[back["segment"]].tolist()
    assert all(n for n in back["segment_name"])
    assert f"({back['segment_name'].iloc[0]})" in back["reason"].iloc[0]
    if suffix == ".csv":
        longest = max(len(x) for x in path.read_text().split(",") if "." in x and x[0].isdigit())
        assert longest <= 12
    with pytest.raises(ConfigError):
        write_targets(f, tmp_path / "targets.xlsx")
