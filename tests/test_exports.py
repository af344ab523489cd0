"""Real operator exports (issue 14): exact ids, churn-only labels, raw panels, tables.

Each case names what broke before: ids merged or lost across file types, churn labels under another
name or spelled Yes/No, negative ARPU and NaN cells refused, digits in metric names, tables without
a series, the revenue metric checked only after training.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpuseg.backend import resolve_backend
from gpuseg.cli import app
from gpuseg.config import DataConfig, load_config
from gpuseg.data.panel import load_attributes, load_panel
from gpuseg.data.prepare import build_panel, build_panel_whole, prepare, summary_lines
from gpuseg.errors import ConfigError, DataError
from gpuseg.evaluate.metrics import migration_metrics

CPU = resolve_backend("cpu")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TELCO = SHARED / "ibm_telco" / "WA_Fn-UseC_-Telco-Customer-Churn.csv"
CELL2CELL = SHARED / "cell2cell_6k" / "cell2celltrain_Small_6k.csv"
runner = CliRunner()


def long_usage(ids: list[str], periods=(1, 2, 3), id_col: str = "subscriber_id") -> pd.DataFrame:
    rows = [
        {id_col: sid, "period": p, "revenue": 10.0 + i + p, "data_mb": 100.0 * (i + 1) + p}
        for i, sid in enumerate(ids)
        for p in periods
    ]
    return pd.DataFrame(rows)


def write_csv_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_line_error(cfg: DataConfig, *parts: str, error=DataError) -> str:
    with pytest.raises(error) as info:
        build_panel(cfg, CPU)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


# ---------------------------------------------------------------------------------------------
# ids exactly as written


@pytest.mark.parametrize("streamed", [False, True])
def test_csv_ids_keep_leading_zeros_and_stay_distinct(tmp_path, streamed):
    # before: '007' and '7' merged into one subscriber, '00001' became '1'
    usage = long_usage(["007", "7", "00001"])
    path = tmp_path / "usage.csv"
    usage.to_csv(path, index=False)
    cfg = DataConfig(usage=str(path))
    if streamed:  # the long layout on the host backend streams, here in chunks of 2 rows
        panel, _, _ = build_panel(cfg, CPU, chunk_rows=2)
    else:  # the whole table in one frame (the cuDF path)
        panel, _, _ = build_panel_whole(cfg, CPU)
    assert sorted(panel.ids.tolist()) == ["00001", "007", "7"]
    assert panel.meta["counts"] == dict(input=3, output=3, rejected=0)
    i7, i007 = panel.ids.tolist().index("7"), panel.ids.tolist().index("007")
    assert panel.usage[i7, 0, 1] == 201.0 and panel.usage[i007, 0, 1] == 101.0


def test_parquet_string_ids_join_csv_static(tmp_path):
    # before: string ids in a Parquet usage file and the same ids in a static CSV joined to
    # nothing: input 2,000 = output 0 + rejected 2,000, exit 0
    ids = [f"{i:05d}" for i in range(1, 41)]
    long_usage(ids).to_parquet(tmp_path / "usage.parquet", index=False)
    pd.DataFrame({"subscriber_id": ids, "plan": ["a", "b"] * 20}).to_csv(
        tmp_path / "static.csv", index=False
    )
    cfg = DataConfig(usage=str(tmp_path / "usage.parquet"), static=str(tmp_path / "static.csv"))
    panel, attributes, rejects = build_panel(cfg, CPU)
    assert len(panel) == 40 and len(rejects) == 0
    assert panel.ids.tolist() == ids and attributes["subscriber_id"].tolist() == ids


def test_float_looking_csv_ids_against_integer_parquet_stop(tmp_path):
    # before: '1.0' in a CSV against integer ids in Parquet: every subscriber lost, exit 0
    long_usage([str(i) for i in range(1, 31)]).assign(
        subscriber_id=lambda f: f["subscriber_id"].astype(int)
    ).to_parquet(tmp_path / "usage.parquet", index=False)
    static = pd.DataFrame({"subscriber_id": [f"{i}.0" for i in range(1, 31)], "x": 1.0})
    static.to_csv(tmp_path / "static.csv", index=False)
    cfg = DataConfig(usage=str(tmp_path / "usage.parquet"), static=str(tmp_path / "static.csv"))
    msg = one_line_error(cfg, "static.csv", "usage.parquet", "30 unmatched", "as numbers")
    assert "1.0" not in msg.replace("e.g. 1.0 and 1", "")  # counts, never the ids themselves


def test_labels_ids_not_in_usage_name_both_files(tmp_path):
    long_usage(["a", "b"]).to_csv(tmp_path / "usage.csv", index=False)
    pd.DataFrame({"subscriber_id": ["x", "y", "z"], "churn": [0, 1, 0]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    cfg = DataConfig(usage=str(tmp_path / "usage.csv"), labels=str(tmp_path / "labels.csv"))
    one_line_error(cfg, "labels.csv", "usage.csv", "3 unmatched")


def test_outputs_carry_the_exact_ids(tmp_path):
    """prepare -> train -> embed -> cluster -> report -> score -> targets on ids that differ only
    in zeros, with churn-only labels under another name spelled Yes/No (each broke before)."""
    rng = np.random.default_rng(0)
    ids = [f"{i:03d}" for i in range(100)] + [str(i) for i in range(100)]  # "007" and "7"
    rows = []
    for k, sid in enumerate(ids):
        level = 5 + (k % 7)
        for p in range(1, 7):
            rows.append(
                dict(msisdn=sid, period=p, revenue=level + rng.random(), calls=rng.poisson(level))
            )
    pd.DataFrame(rows).to_csv(tmp_path / "usage.csv", index=False)
    churned = rng.random(len(ids)) < 0.3
    pd.DataFrame({"msisdn": ids, "Churned": np.where(churned, "Yes", "No")}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        f"""
name: exact
out_dir: {tmp_path / "run"}
device: cpu
data:
  usage: {tmp_path / "usage.csv"}
  labels: {tmp_path / "labels.csv"}
  id_column: msisdn
  churn_column: Churned
model: {{hidden_size: 8, embedding_dim: 4, static_hidden: 4}}
train: {{epochs: 1, batch_size: 64}}
cluster: {{k: 3, sample_size: 300, n_init: 1, stability_repeats: 0}}
report: {{html: false}}
"""
    )
    r = runner.invoke(app, ["run", "-c", str(cfg_path)])
    assert r.exit_code == 0, r.output
    assert "migration no labels" in r.output and "no labels" in r.output
    run = tmp_path / "run"
    want = sorted(ids)
    for name in ("embeddings.parquet", "predictions.parquet", "segments.parquet"):
        got = pd.read_parquet(run / name)["msisdn"]
        assert got.dtype != np.int64 and sorted(got.tolist()) == want, name
    metrics = load_config(run / "config.yaml")  # the resolved config is readable again
    assert metrics.data.churn_column == "Churned"
    r = runner.invoke(
        app,
        [
            "score",
            str(run),
            "--usage",
            str(tmp_path / "usage.csv"),
            "-o",
            str(tmp_path / "s.parquet"),
        ],
    )
    assert r.exit_code == 0, r.output
    score = pd.read_parquet(tmp_path / "s.parquet")
    assert sorted(score["msisdn"].tolist()) == want
    r = runner.invoke(app, ["targets", str(run), "-o", str(tmp_path / "t.parquet")])
    assert r.exit_code == 0, r.output
    targets = pd.read_parquet(tmp_path / "t.parquet")
    assert set(targets["msisdn"]) <= set(ids) and targets["msisdn"].dtype != np.int64
    r = runner.invoke(app, ["evaluate", str(run), "--boot", "5"])
    assert r.exit_code == 0, r.output
    assert "migration: no labels" in r.output


# ---------------------------------------------------------------------------------------------
# labels


def test_migration_metrics_without_labels_state_it():
    # before: train crashed at the end (sklearn: Found empty input array)
    m = migration_metrics(np.array([], dtype=int), np.array([], dtype=int))
    assert m["macro_f1"] is None and m["labels"] == "no labels" and m["n"] == 0


@pytest.mark.parametrize(
    "values, want",
    [
        (["Yes", "no", "YES", "No"], [1, 0, 1, 0]),
        (["True", "False", "true", ""], [1, 0, 1, -1]),
        (["y", "n", "churned", "active"], [1, 0, 1, 0]),
        (["1", "0", "", "0"], [1, 0, -1, 0]),
    ],
)
def test_churn_values_in_the_usual_spellings(tmp_path, values, want):
    long_usage(list("abcd")).to_csv(tmp_path / "usage.csv", index=False)
    pd.DataFrame({"subscriber_id": list("abcd"), "Exited": values}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    cfg = DataConfig(
        usage=str(tmp_path / "usage.csv"),
        labels=str(tmp_path / "labels.csv"),
        churn_column="Exited",
    )
    panel, _, _ = build_panel(cfg, CPU)
    assert panel.churn.tolist() == want
    assert panel.migration.tolist() == [-1] * 4
    assert panel.meta["labelled"]["migration"] == 0


def test_churn_values_configurable_and_bad_value_named(tmp_path):
    long_usage(list("abc")).to_csv(tmp_path / "usage.csv", index=False)
    labels = pd.DataFrame({"subscriber_id": list("abc"), "status": ["gone", "here", "maybe"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    cfg = load_config(
        None,
        [
            f"data.usage={tmp_path / 'usage.csv'}",
            f"data.labels={tmp_path / 'labels.csv'}",
            "data.churn_column=status",
        ],
    ).data
    one_line_error(cfg, "labels.csv", "'status'", "row 1", "'gone'", "data.churn_values")
    cfg.churn_values.positive, cfg.churn_values.negative = ["Gone"], ["here"]
    one_line_error(cfg, "labels.csv", "'status'", "row 3", "'maybe'", "data.churn_values")
    cfg.churn_values.negative = ["here", "maybe"]
    panel, _, _ = build_panel(cfg, CPU)
    assert panel.churn.tolist() == [1, 0, 0]


def test_labels_column_named_but_absent_stops_prepare(tmp_path):
    # before: a churn column not named churn was dropped silently (labelled churn: 0)
    long_usage(list("ab")).to_csv(tmp_path / "usage.csv", index=False)
    pd.DataFrame({"subscriber_id": list("ab"), "Churn": [0, 1]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    cfg = DataConfig(usage=str(tmp_path / "usage.csv"), labels=str(tmp_path / "labels.csv"))
    one_line_error(cfg, "labels.csv", "column 'churn' (data.churn_column) not found", "Churn")
    cfg = DataConfig(
        usage=str(tmp_path / "usage.csv"),
        labels=str(tmp_path / "labels.csv"),
        churn_column="Churn",
        migration_column="tier_move",
    )
    one_line_error(cfg, "'tier_move' (data.migration_column) not found")


# ---------------------------------------------------------------------------------------------
# raw panels


def wide_panel() -> pd.DataFrame:
    """A raw wide export: negative ARPU, a NaN cell meaning 'not used', digits in metric names,
    date columns that match the pattern."""
    return pd.DataFrame(
        {
            "mobile_number": ["001", "002", "003"],
            "arpu_6": [10.0, -3.5, 7.0],
            "arpu_7": [12.0, 4.0, 8.0],
            "vol_2g_mb_6": [1.0, np.nan, 3.0],
            "vol_2g_mb_7": [2.0, 5.0, np.nan],
            "arpu_3g_6": [0.5, 0.0, 1.0],
            "arpu_3g_7": [0.5, 0.2, 1.0],
            "date_of_last_rech_6": ["6/27/2014", "6/25/2014", "6/30/2014"],
            "date_of_last_rech_7": ["7/25/2014", "7/31/2014", "7/30/2014"],
        }
    )


def test_wide_default_pattern_takes_digits_and_leaves_dates_out(tmp_path):
    wide_panel().to_csv(tmp_path / "wide.csv", index=False)
    cfg = DataConfig(
        usage=str(tmp_path / "wide.csv"), layout="wide", id_column="mobile_number",
        fill={"default": "zero"},
    )  # fmt: skip
    panel, _, _ = build_panel(cfg, CPU)
    assert panel.metrics == ["arpu", "arpu_3g", "vol_2g_mb"]  # before: vol_2g_mb, arpu_3g lost
    assert panel.meta["periods"] == ["6", "7"]
    report = panel.meta["data_report"]
    assert report["date_columns_left_out"] == ["date_of_last_rech_6", "date_of_last_rech_7"]
    assert report["filled"] == {"vol_2g_mb": 2}
    assert report["negative"] == {"arpu": 1}  # revenue-like: allowed by default
    assert panel.ids.tolist() == ["001", "002", "003"]
    assert panel.usage[1, 0].tolist() == [-3.5, 0.0, 0.0]
    lines = "\n".join(summary_lines(panel.meta))
    assert "vol_2g_mb 2" in lines and "arpu 1" in lines and "date_of_last_rech_6" in lines


def test_wide_fill_policies(tmp_path):
    wide_panel().to_csv(tmp_path / "wide.csv", index=False)
    base = dict(usage=str(tmp_path / "wide.csv"), layout="wide", id_column="mobile_number")
    # default error: names the cell and the key that fixes it (before: no fill policy at all)
    one_line_error(DataConfig(**base), "row 2", "period 6", "vol_2g_mb", "data.fill")
    panel, _, _ = build_panel(
        DataConfig(**base, fill={"default": "error", "vol_2g_mb": "ffill"}), CPU
    )
    j = panel.metrics.index("vol_2g_mb")
    assert panel.usage[:, :, j].tolist() == [[1.0, 2.0], [0.0, 5.0], [3.0, 3.0]]  # 0 before first
    with pytest.raises(ConfigError, match="data.fill.vol_2g_mb"):
        DataConfig(**base, fill={"vol_2g_mb": "mean"})


def test_negative_policy(tmp_path):
    frame = long_usage(list("ab"))
    frame.loc[1, "data_mb"] = -5.0
    frame.loc[2, "revenue"] = -2.0
    frame.to_csv(tmp_path / "usage.csv", index=False)
    # before: "negative usage value" for any metric, ARPU included
    one_line_error(
        DataConfig(usage=str(tmp_path / "usage.csv")), "'data_mb' row 2", "data.allow_negative"
    )
    cfg = DataConfig(usage=str(tmp_path / "usage.csv"), allow_negative=["data_mb", "revenue"])
    panel, _, _ = build_panel(cfg, CPU)
    assert panel.meta["data_report"]["negative"] == {"revenue": 1, "data_mb": 1}
    cfg = DataConfig(usage=str(tmp_path / "usage.csv"), allow_negative=["data_mb"])
    one_line_error(cfg, "'revenue' row 3", "negative")


@pytest.mark.parametrize("streamed", [False, True])
def test_long_fill_and_missing_markers(tmp_path, streamed):
    text = "id,period,revenue,calls\na,1,5,?\na,2,6,3\na,3,n/a,4\nb,1,1,1\nb,2,2,\nb,3,3,NA\n"
    path = write_csv_text(tmp_path / "usage.csv", text)
    cfg = DataConfig(usage=str(path), id_column="id", fill={"default": "ffill"})
    panel, _, _ = build_panel(cfg, CPU, chunk_rows=2 if streamed else 0)
    assert panel.usage[:, :, 0].tolist() == [[5, 6, 6], [1, 2, 3]]
    assert panel.usage[:, :, 1].tolist() == [[0, 3, 4], [1, 1, 1]]
    assert panel.meta["data_report"]["filled"] == {"revenue": 1, "calls": 3}


def test_revenue_metric_checked_at_prepare(tmp_path):
    # before: "revenue metric 'revenue' not in the panel" only after training
    long_usage(list("ab")).rename(columns={"revenue": "arpu"}).to_csv(
        tmp_path / "usage.csv", index=False
    )
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"out_dir: {tmp_path / 'run'}\ndata:\n  usage: {tmp_path / 'usage.csv'}\n")
    r = runner.invoke(app, ["prepare", "-c", str(cfg_path)])
    assert r.exit_code == 1, r.output
    assert "data.revenue_metric" in r.output and "arpu" in r.output
    assert not (tmp_path / "run" / "panel" / "meta.json").exists()


def test_no_usage_with_integer_periods_needs_no_period_days(tmp_path):
    # before: "data.period_days: the periods are not dates" for churn counted in periods
    frame = long_usage(list("abc"), periods=range(1, 9))
    frame.loc[(frame["subscriber_id"] == "b") & (frame["period"] > 6), ["revenue", "data_mb"]] = 0
    frame.to_csv(tmp_path / "usage.csv", index=False)
    cfg = DataConfig(
        usage=str(tmp_path / "usage.csv"), churn_definition="no_usage", label_periods=2
    )
    meta = prepare(cfg, CPU, tmp_path / "panel")
    assert load_panel(tmp_path / "panel").churn.tolist() == [0, 1, 0]
    assert meta["labels"]["period_days"] is None


# ---------------------------------------------------------------------------------------------
# tables without a series


def test_static_numeric_text_with_one_na_is_a_number(tmp_path):
    # before: a numeric column stored as text with one 'n/a' became a 50-value category
    ids = [f"s{i}" for i in range(60)]
    long_usage(ids).to_csv(tmp_path / "usage.csv", index=False)
    tenure = [str(i * 1.5) for i in range(60)]
    tenure[7] = "n/a"
    static = pd.DataFrame({"subscriber_id": ids, "tenure": tenure})
    static.to_parquet(tmp_path / "static.parquet", index=False)  # text as stored
    tenure[7] = "?"
    static.assign(tenure=tenure).to_csv(tmp_path / "static.csv", index=False)
    for name in ("static.parquet", "static.csv"):
        cfg = DataConfig(usage=str(tmp_path / "usage.csv"), static=str(tmp_path / name))
        panel, _, _ = build_panel(cfg, CPU)
        assert panel.meta["static_features"] == ["tenure", "tenure_missing"], name
        i = panel.ids.tolist().index("s7")
        assert panel.static[i].tolist() == [0.0, 1.0]
        assert panel.static[panel.ids.tolist().index("s2"), 0] == 3.0


def test_table_layout_with_row_number_ids_and_inline_labels(tmp_path):
    text = (
        "MonthlyRevenue,Minutes,Plan,Score,Churn\n"
        "30.5,100,gold,?,Yes\n"
        "-2.0,50,silver,3,No\n"
        " ,20,gold,4,no\n"
        "12,0,,5,YES\n"
    )
    path = write_csv_text(tmp_path / "table.csv", text)
    cfg = DataConfig(
        usage=str(path), layout="table", id_column=None, churn_column="Churn",
        revenue_metric="MonthlyRevenue", fill={"MonthlyRevenue": "zero"},
    )  # fmt: skip
    panel, attributes, rejects = build_panel(cfg, CPU)
    assert panel.ids.tolist() == ["1", "2", "3", "4"] and len(rejects) == 0
    assert panel.metrics == ["MonthlyRevenue", "Minutes"] and panel.usage.shape == (4, 1, 2)
    assert panel.usage[:, 0, 0].tolist() == [30.5, -2.0, 0.0, 12.0]
    assert panel.churn.tolist() == [1, 0, 0, 1]
    assert panel.meta["id_column"] == "row" and attributes.columns[0] == "row"
    feats = panel.meta["static_features"]
    assert "Churn" not in " ".join(feats)  # the label is never a feature
    assert {"Score", "Score_missing", "Plan=gold", "Plan=silver"} <= set(feats)
    assert panel.meta["data_report"]["ids"].startswith("row numbers")
    with pytest.raises(ConfigError, match="data.id_column"):
        DataConfig(usage=str(path), id_column=None)  # row-number ids need the table layout


@pytest.mark.skipif(not TELCO.is_file(), reason="../shared/data/ibm_telco not present")
def test_ibm_telco_as_downloaded():
    cfg = DataConfig(
        usage=str(TELCO), layout="table", id_column="customerID", churn_column="Churn",
        revenue_metric="MonthlyCharges",
    )  # fmt: skip
    panel, attributes, rejects = build_panel(cfg, CPU)
    raw = pd.read_csv(TELCO, dtype=str)
    assert len(panel) == 7043 and len(rejects) == 0
    assert sorted(panel.ids.tolist()) == sorted(raw["customerID"].tolist())
    assert abs(panel.churn.mean() - 0.2654) < 1e-3  # 1,869 Yes of 7,043
    assert panel.metrics == ["SeniorCitizen", "tenure", "MonthlyCharges"]
    feats = panel.meta["static_features"]
    assert "TotalCharges" in feats and "TotalCharges_missing" in feats  # 11 blank strings
    j = feats.index("TotalCharges_missing")
    assert int(panel.static[:, j].sum()) == 11
    assert "Contract=Month-to-month" in feats and "customerID" not in attributes.columns[1:]


@pytest.mark.skipif(not CELL2CELL.is_file(), reason="../shared/data/cell2cell_6k not present")
def test_cell2cell_as_downloaded():
    cfg = DataConfig(
        usage=str(CELL2CELL), layout="table", id_column=None, churn_column="Churn",
        revenue_metric="MonthlyRevenue", fill={"MonthlyRevenue": "zero"},
    )  # fmt: skip
    panel, _, rejects = build_panel(cfg, CPU)
    assert len(panel) == 6380 and len(rejects) == 0
    assert abs(panel.churn.mean() - 0.284) < 2e-3
    assert "MonthlyRevenue" in panel.metrics
    assert panel.meta["data_report"]["filled"] == {"MonthlyRevenue": 21}  # its '?' cells
    feats = panel.meta["static_features"]
    assert "AgeHH1_missing" in feats and "HandsetPrice_missing" in feats
    assert "Homeownership=Known" in feats and "Homeownership=?" not in feats


# ---------------------------------------------------------------------------------------------
# tags on a wide panel, evaluate --truth


def test_tag_frame_on_many_metrics_has_no_performance_warning(tiny_panel, tmp_path):
    from gpuseg.segment.tags import build_tag_frame

    attributes = pd.DataFrame(
        {"subscriber_id": tiny_panel.ids}
        | {f"attr_{i}": np.arange(len(tiny_panel)) for i in range(150)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        frame = build_tag_frame(tiny_panel, attributes)
    assert "attr_149" in frame.columns


def test_oracle_reads_csv_truth_with_its_own_id_column(tmp_path):
    from gpuseg.pipeline.evaluate import oracle_probabilities

    pd.DataFrame({"cust": ["007", "7"], "churn_prob": [0.1, 0.9]}).to_csv(
        tmp_path / "truth.csv", index=False
    )
    got = oracle_probabilities(
        tmp_path / "truth.csv", np.array(["7", "007"]), "msisdn", None, "cust"
    )
    assert got.tolist() == [0.9, 0.1]
    with pytest.raises(DataError, match="'nope'"):
        oracle_probabilities(tmp_path / "truth.csv", np.array(["7"]), "msisdn", None, "nope")


def test_attributes_keep_id_text(tmp_path):
    long_usage(["0010", "10"]).to_csv(tmp_path / "usage.csv", index=False)
    pd.DataFrame({"subscriber_id": ["0010", "10"], "plan": ["a", "b"]}).to_csv(
        tmp_path / "static.csv", index=False
    )
    cfg = DataConfig(usage=str(tmp_path / "usage.csv"), static=str(tmp_path / "static.csv"))
    prepare(cfg, CPU, tmp_path / "panel")
    attrs = load_attributes(tmp_path / "panel")
    assert attrs["subscriber_id"].tolist() == ["0010", "10"]
    assert attrs["plan"].tolist() == ["a", "b"]


def test_model_sees_the_sign_of_negative_metrics():
    """A refund (negative ARPU, allowed by data.allow_negative) is below zero usage for the model,
    not clamped onto it; on values >= 0 the input is log1p exactly, as before."""
    import torch

    from gpuseg.config import ModelConfig
    from gpuseg.model.sequence import SubscriberModel

    model = SubscriberModel(1, 0, 3, ModelConfig(hidden_size=4, embedding_dim=2))
    usage = torch.tensor([[[-5.0], [0.0], [3.0]]])  # (B=1, T=3, M=1)
    x = model.normalize(usage, torch.ones(1, 3, dtype=torch.bool))[0, :, 0]
    assert x[0] < x[1] < x[2]
    assert torch.equal(x[1:], torch.log1p(usage[0, 1:, 0]))  # mean 0, std 1 before fitting


def test_scoring_a_table_splits_columns_as_training(tmp_path):
    """A column complete in training (a metric) but with a missing cell in the scoring file stays
    a metric there (filled by data.fill, or named in the error), and the static encoding is
    training's."""
    train = "id,revenue,tenure,plan,churn\na,10,5,x,1\nb,20,7,y,0\nc,30,?,x,0\nd,40,9,y,1\n"
    score = "id,revenue,tenure,plan\ne,15,?,x\nf,25,3,z\n"
    cfg = DataConfig(
        usage=str(write_csv_text(tmp_path / "t.csv", train)), layout="table", id_column="id"
    )
    panel, _, _ = build_panel(cfg, CPU)
    assert panel.metrics == ["revenue"] and "tenure_missing" in panel.meta["static_features"]
    new = DataConfig(
        usage=str(write_csv_text(tmp_path / "s.csv", score)), layout="table", id_column="id"
    )
    scored, _, _ = build_panel(new, CPU, reference=panel.meta)
    assert scored.metrics == ["revenue"]
    assert scored.meta["static_features"] == panel.meta["static_features"]
    assert scored.static.shape == (2, panel.static.shape[1])


def test_table_layout_with_pseudonymised_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUSEG_ID_KEY", "k" * 32)
    text = "id,revenue,plan,churn\n007,10,x,yes\n7,20,y,no\n"
    cfg = DataConfig(
        usage=str(write_csv_text(tmp_path / "t.csv", text)), layout="table", id_column="id",
        pseudonymize=True,
    )  # fmt: skip
    panel, attributes, _ = build_panel(cfg, CPU)
    from gpuseg.data.privacy import pseudonymize

    want = pseudonymize(np.array(["007", "7"]), b"k" * 32)
    assert sorted(panel.ids.tolist()) == sorted(want.tolist())
    assert panel.churn[panel.ids.tolist().index(want[0])] == 1
    assert not set(attributes["id"]) & {"007", "7"}


def test_drift_reads_csv_ids_as_text(tmp_path):
    from gpuseg.evaluate.drift import drift

    old = pd.DataFrame({"msisdn": ["007", "7"], "segment": [0, 1], "churn_prob": [0.1, 0.2]})
    old.to_csv(tmp_path / "old.csv", index=False)
    old.assign(segment=[1, 0]).to_csv(tmp_path / "new.csv", index=False)
    result = drift(tmp_path / "old.csv", tmp_path / "new.csv")
    assert result["subscribers"]["both"] == 2  # before: "007" and "7" read as one id, 7
