"""Report tables: contract files, figures checked against direct computation, chunking, rules,
and the issue-3 acceptance test (purity of learned segments against the synthetic truth)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuseg.backend import resolve_backend
from gpuseg.config import ReportConfig, SegmentsConfig, load_config
from gpuseg.data.panel import load_attributes, load_panel
from gpuseg.features.aggregates import subscriber_means
from gpuseg.io.store import write_json_atomic, write_parquet_atomic
from gpuseg.pipeline.stages import report_stage, run_pipeline
from gpuseg.report.tables import (
    build_report,
    effect_sizes,
    mean_ci,
    per_subscriber_tables,
    segment_rules,
    wilson,
)
from gpuseg.segment import classic as seg
from gpuseg.segment.cluster import Segmenter
from gpuseg.segment.tags import tag_subscribers

CPU = resolve_backend("cpu")
ROOT = Path(__file__).resolve().parent.parent


def top_share_direct(revenue: np.ndarray, f: float) -> float:
    x = np.sort(revenue)[::-1]
    k = int(math.ceil(f * len(x) - 1e-9))
    return float(x[:k].sum() / x.sum())


# ---------------------------------------------------------------------------------------------
# A run directory without training: truth segments as labels, the true churn probability


@pytest.fixture(scope="module")
def report_run(tiny_world, tiny_panel_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("report_run")
    shutil.copytree(tiny_panel_dir, run / "panel")
    panel = load_panel(run / "panel")
    truth = pd.read_parquet(tiny_world.truth).set_index("subscriber_id").loc[panel.ids]
    ids = pd.Series(panel.ids, name="subscriber_id")
    # predictions and segments written in reverse order: report_stage aligns them by id
    preds = pd.DataFrame({"subscriber_id": ids, "churn_prob": truth["churn_prob"].to_numpy()})
    write_parquet_atomic(run / "predictions.parquet", preds.iloc[::-1])
    segs = pd.DataFrame({"subscriber_id": ids, "segment": truth["segment"].to_numpy()})
    write_parquet_atomic(run / "segments.parquet", segs.iloc[::-1])
    fitted = Segmenter(k=None, k_min=3, k_max=5, n_init=2, stability_repeats=3, backend=CPU)
    fitted.fit(np.log1p(subscriber_means(panel)))
    write_json_atomic(run / "cluster.json", fitted.state())
    cfg = load_config(None, [f"out_dir={run}", "report.chunk_size=500"])  # 3 chunks of 1500
    report_stage(cfg, run)
    return run


def test_report_directory_follows_the_contract(report_run: Path):
    r = report_run / "report"
    need = {
        "segments.csv": [
            "segment", "name", "size", "share", "revenue_share", "arpu", "churn_rate",
            "churn_pred", "migration_down", "migration_stay", "migration_up", "churn_rate_lo",
            "churn_rate_hi", "arpu_lo", "arpu_hi", "tenure_median",
        ],
        "effects.csv": ["segment", "feature", "effect"],
        "rules.csv": ["segment", "rule", "precision", "recall", "fidelity"],
        "value_stability.csv": [
            "value_level", "stability_band", "subscribers", "revenue", "revenue_share",
            "mean_churn_prob", "priority", "action",
        ],
        "tags.csv": ["tag", "kind", "subscribers", "share"],
    }  # fmt: skip
    for name, cols in need.items():
        frame = pd.read_csv(r / name)
        assert set(cols) <= set(frame.columns), (name, set(cols) - set(frame.columns))
    classic = pd.read_parquet(r / "classic.parquet")
    for col in (
        "subscriber_id", "value_decile", "value_level", "rfm_group", "stability_band",
        "lifecycle_stage", "contract_group", "bundling_profile", "usage_profile", "priority",
    ):  # fmt: skip
        assert col in classic.columns, col
    q = json.loads((r / "quality.json").read_text())
    assert [s["k"] for s in q["k_scores"]] == [3, 4, 5]
    assert all(s["silhouette"] is not None and s["davies_bouldin"] > 0 for s in q["k_scores"])
    assert q["chosen_k"] in (3, 4, 5) and "silhouette" in q["reason"]
    assert len(q["stability_ari"]["values"]) == 3
    values = q["stability_ari"]["values"]
    assert q["stability_ari"]["min"] == min(values) and q["stability_ari"]["mean"] == (
        pytest.approx(sum(values) / len(values))
    )
    assert q["stability_ari"]["min"] > 0.3  # tiny world: re-fits find much the same segments
    c = json.loads((r / "concentration.json").read_text())
    assert set(c["top_share"]) == {"0.01", "0.05", "0.1", "0.2"}
    assert len(c["lorenz"]["x"]) == len(c["lorenz"]["y"]) <= 201
    md = (r / "report.md").read_text()
    for title in ("Learned segments", "Rules a CRM", "Value x stability", "Tags", "quality"):
        assert title in md


def test_concentration_matches_the_raw_usage_file(report_run: Path, tiny_world):
    usage = pd.read_parquet(tiny_world.usage)
    revenue = usage.groupby("subscriber_id")["revenue"].sum()
    c = json.loads((report_run / "report" / "concentration.json").read_text())
    assert c["subscribers"] == len(revenue)  # every subscriber of the world is in the panel
    for f in (0.01, 0.05, 0.1, 0.2):
        assert c["top_share"][str(f)] == pytest.approx(
            top_share_direct(revenue.to_numpy(), f), 1e-5
        )
    x = np.sort(revenue.to_numpy())
    n = len(x)
    direct_gini = 1 - 2 * np.sum((n - np.arange(n) - 0.5) * x) / (n * x.sum())
    assert c["gini"] == pytest.approx(direct_gini, abs=1e-4)
    assert c["lorenz"]["y"][0] == 0 and c["lorenz"]["y"][-1] == pytest.approx(1.0)
    assert np.all(np.diff(c["lorenz"]["y"]) >= -1e-12)


def test_profiles_agree_with_direct_figures(report_run: Path, tiny_world):
    prof = pd.read_csv(report_run / "report" / "segments.csv")
    truth = pd.read_parquet(tiny_world.truth)
    labels = pd.read_parquet(tiny_world.labels).set_index("subscriber_id")
    t = truth.merge(labels.reset_index(), on="subscriber_id", suffixes=("", "_label"))
    assert prof["size"].sum() == len(t) and prof["share"].sum() == pytest.approx(1)
    assert prof["revenue_share"].sum() == pytest.approx(1)
    direct = t.groupby("segment")["churn_label"].mean()
    np.testing.assert_allclose(prof.set_index("segment")["churn_rate"], direct, rtol=1e-9)
    pred = t.groupby("segment")["churn_prob"].mean()
    np.testing.assert_allclose(prof.set_index("segment")["churn_pred"], pred, rtol=1e-6)
    assert (prof["churn_rate_lo"] <= prof["churn_rate"]).all()
    assert (prof["churn_rate"] <= prof["churn_rate_hi"]).all()
    assert (prof["arpu_lo"] < prof["arpu"]).all() and (prof["arpu"] < prof["arpu_hi"]).all()
    mig = prof[["migration_down", "migration_stay", "migration_up"]].sum(axis=1)
    np.testing.assert_allclose(mig, 1.0)
    assert prof["name"].str.len().gt(0).all() and prof["name"].nunique() == len(prof)


def test_tables_are_consistent(report_run: Path, tiny_world):
    r = report_run / "report"
    n = 1500
    vs = pd.read_csv(r / "value_stability.csv")
    assert len(vs) == 15 and vs["subscribers"].sum() == n
    assert vs["revenue_share"].sum() == pytest.approx(1)
    assert vs.loc[vs["priority"] == 1, "action"].eq("retain now").all()
    prof = pd.read_csv(r / "segments.csv").set_index("segment")
    for name in ("crosstab_value.csv", "crosstab_lifecycle.csv"):
        tab = pd.read_csv(r / name).set_index("segment")
        np.testing.assert_array_equal(tab.sum(axis=1).to_numpy(), prof["size"].to_numpy())
    assert list(pd.read_csv(r / "crosstab_value.csv").columns[1:]) == SegmentsConfig().value_levels
    tags = pd.read_csv(r / "tags.csv").set_index("tag")
    flags = pd.read_parquet(r / "tags.parquet")
    assert set(tags["kind"]) == {"static", "dynamic", "moment"}
    for tag in tags.index:
        assert tags.loc[tag, "subscribers"] == flags[tag].sum()
    static = pd.read_parquet(tiny_world.static)
    no_contact = static["do_not_disturb"].astype(bool) | ~static["marketing_consent"].astype(bool)
    assert tags.loc["do_not_contact", "subscribers"] == no_contact.sum()
    rules = pd.read_csv(r / "rules.csv")
    assert rules["fidelity"].nunique() == 1 and 0.5 < rules["fidelity"].iloc[0] <= 1
    assert rules["recall"].between(0, 1).all()


def test_chunks_give_the_same_tables_as_one_pass(tiny_panel_dir: Path):
    panel = load_panel(tiny_panel_dir)
    attrs = load_attributes(tiny_panel_dir)
    p = np.linspace(0, 1, len(panel))
    cfg = SegmentsConfig()
    from gpuseg.config import TagsConfig

    classic, tags, kinds, _ = per_subscriber_tables(panel, attrs, p, cfg, TagsConfig(), chunk=333)
    whole = seg.classic_segments(panel, attrs, cfg, churn_prob=p)
    for col in ("value_decile", "value_level", "rfm_group", "stability_band", "lifecycle_stage",
                "usage_profile", "priority", "arpu", "stability"):  # fmt: skip
        pd.testing.assert_series_equal(
            classic[col].reset_index(drop=True).astype(str),
            whole[col].reset_index(drop=True).astype(str),
            check_names=False,
        )
    one = tag_subscribers(panel, attrs, p)
    for col in one.columns:
        np.testing.assert_array_equal(tags[col].to_numpy(), one[col].to_numpy(), err_msg=col)
    assert kinds["vip"] == "static" and kinds["usage_drop"] == "moment"


# ---------------------------------------------------------------------------------------------
# Building blocks


def test_effect_sizes_match_the_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=(500, 3))
    labels = rng.integers(0, 4, 500)
    x[labels == 2, 1] *= 5
    got = effect_sizes(x, labels, 4)
    lx = np.log1p(x)
    for c in range(4):
        a, b = lx[labels == c], lx[labels != c]
        want = (a.mean(0) - b.mean(0)) / (np.sqrt((a.var(0) + b.var(0)) / 2) + 1e-9)
        np.testing.assert_allclose(got[c], want, rtol=1e-8)
    assert got[2, 1] > 1


def test_intervals():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson(0, 20)[0] == 0 and wilson(0, 20)[1] > 0
    assert all(math.isnan(v) for v in wilson(0, 0))
    m, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and hi - m == pytest.approx(1.959964 * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_rules_recover_a_known_partition():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 100, size=(3000, 3)).astype(np.float32)
    labels = np.where(x[:, 1] <= 30, 0, np.where(x[:, 2] > 50, 2, 1))
    rules, info = segment_rules(
        lambda s, e: x[s:e], labels, ["noise", "tenure", "data"], 3, 3, 1000, seed=0
    )
    assert info["fidelity"] > 0.98 and info["fitted_on"] == 1000 and info["scored_on"] == 3000
    assert (rules["precision"] > 0.95).all() and (rules["recall"] > 0.95).all()
    assert re.fullmatch(r"\(tenure <= (29|30)\.\d+\)", rules.loc[0, "rule"]), rules.loc[0, "rule"]
    assert re.search(r"data > (49|50)\.\d+", rules.loc[2, "rule"]), rules.loc[2, "rule"]
    assert "noise" not in " ".join(rules["rule"])


def test_build_report_without_attributes(tiny_panel):
    labels = np.arange(len(tiny_panel)) % 3
    t = build_report(tiny_panel, None, labels, None, ReportConfig(chunk_size=700))
    assert t.profiles["size"].sum() == len(tiny_panel)
    assert t.profiles["churn_pred"].isna().all()
    assert t.value_stability["mean_churn_prob"].isna().all()
    assert any("no attributes" in n for n in t.notes)
    assert "tenure_median" not in t.profiles.columns


# ---------------------------------------------------------------------------------------------
# Acceptance (issue 3): learned segments recover the true ones; the report's top-20% share


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_run")
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            f"out_dir={out}",
            "device=cpu",
            "synth.n_subscribers=4000",
            "synth.n_periods=16",
            "train.epochs=6",
            "cluster.k_min=4",
            "cluster.k_max=8",
            "cluster.sample_size=4000",
            "cluster.stability_repeats=2",
        ],
    )
    run_pipeline(cfg, CPU)
    return out


def test_every_true_segment_maps_to_one_learned_segment(small_run: Path):
    truth = pd.read_parquet(small_run / "world" / "truth.parquet").set_index("subscriber_id")
    learned = pd.read_parquet(small_run / "segments.parquet").set_index("subscriber_id")
    tab = pd.crosstab(truth.loc[learned.index, "segment_name"], learned["segment"].to_numpy())
    purity = tab.max(axis=1) / tab.sum(axis=1)
    assert len(purity) == 6
    assert (purity >= 0.8).all(), purity.round(3).to_dict()


def test_report_top20_share_matches_the_data_files(small_run: Path):
    usage = pd.read_parquet(small_run / "world" / "usage.parquet")
    revenue = usage.groupby("subscriber_id")["revenue"].sum().to_numpy()
    c = json.loads((small_run / "report" / "concentration.json").read_text())
    assert c["top_share"]["0.2"] == pytest.approx(top_share_direct(revenue, 0.2), rel=1e-5)


def test_profiles_without_classic_use_the_panel_revenue(tiny_panel, tiny_panel_dir):
    """The light path (gpuseg bench calls it) agrees with the full one on value figures."""
    from gpuseg.report.tables import segment_profiles

    labels = np.arange(len(tiny_panel)) % 4
    light = segment_profiles(tiny_panel, labels)
    classic = seg.classic_segments(tiny_panel, load_attributes(tiny_panel_dir))
    full = segment_profiles(tiny_panel, labels, classic=classic)
    for col in ("size", "arpu", "revenue_share", "churn_rate", "arpu_lo"):
        np.testing.assert_allclose(light[col], full[col], rtol=1e-9, err_msg=col)
    assert "contract_prepaid" in full.columns and "contract_prepaid" not in light.columns


def test_bad_settings_are_typed_errors(tiny_panel):
    from gpuseg.errors import ConfigError, DataError

    labels = np.zeros(len(tiny_panel), dtype=int)
    with pytest.raises(DataError, match="segment labels"):
        build_report(tiny_panel, None, labels[:10], None)
    with pytest.raises(ConfigError, match="chunk_size"):
        build_report(tiny_panel, None, labels, None, ReportConfig(chunk_size=0))
    with pytest.raises(ConfigError, match="tree_max_depth"):
        build_report(tiny_panel, None, labels, None, ReportConfig(tree_max_depth=0))


def test_rule_paths_agree_with_the_tree():
    """Every row matches exactly one path, and the path's segment is the tree's prediction."""
    from sklearn.tree import DecisionTreeClassifier

    from gpuseg.report.tables import tree_leaf_rules

    rng = np.random.default_rng(3)
    x = rng.integers(0, 10, size=(2000, 3)).astype(np.float32)  # thresholds at .5: exact text
    y = (x[:, 0] > 5).astype(int) + 2 * (x[:, 1] > 7)
    y = np.where(rng.random(len(y)) < 0.15, rng.integers(0, 4, len(y)), y)  # noisy labels
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    rules = tree_leaf_rules(tree, ["a", "b", "c"])
    pred = tree.predict(x)
    hits = np.zeros(len(x), dtype=int)
    for _, path, cls in rules:
        ok = np.ones(len(x), dtype=bool)
        for cond in path.split(" AND "):
            m = re.fullmatch(r"(?:(\S+) < )?(\w) (<=|>) (\S+)", cond)
            if m.group(1):  # lo < name <= hi
                ok &= x[:, "abc".index(m.group(2))] > float(m.group(1))
            col = x[:, "abc".index(m.group(2))]
            ok &= col <= float(m.group(4)) if m.group(3) == "<=" else col > float(m.group(4))
        hits += ok
        assert (pred[ok] == cls).all(), path
    assert (hits == 1).all()
    assert len(rules) < tree.get_n_leaves()  # same-class siblings merged
