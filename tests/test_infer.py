"""gpuseg.data.infer: layout, id, period, labels, metrics and revenue guessed from sample frames;
``gpuseg init`` through the CLI."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.config import load_config
from gpuseg.data.infer import infer_config, profile_column, profile_frame, render_config

runner = CliRunner()


def long_files():
    ids = ["007", "7", "00001"]
    usage = pd.DataFrame(
        {
            "msisdn": [i for i in ids for _ in range(4)],
            "month": ["2026-01", "2026-02", "2026-03", "2026-04"] * 3,
            "moc_minutes": [str(v) for v in range(12)],
            "data_volume": ["1.5"] * 12,
            "arpu": ["10", "-2.5", "8", "9"] * 3,
        }
    )
    static = pd.DataFrame(
        {"msisdn": ids, "plan": ["a", "b", "a"], "tenure_months": ["3", "4", "5"]}
    )
    labels = pd.DataFrame({"msisdn": ids, "is_churned": ["Yes", "No", "No"]})
    return [
        profile_frame(usage, "exports/usage.csv"),
        profile_frame(static, "exports/subscribers.csv"),
        profile_frame(labels, "exports/churn.csv"),
    ]


def test_profile_column_reads_text_as_written():
    col = profile_column("TotalCharges", pd.Series(["29.85", " ", "-1", "?"]))
    assert (col.kind, col.missing, col.negative) == ("number", 2, True)
    assert col.markers == ["", "?"]
    assert profile_column("id", pd.Series(["007", "7"])).kind == "number"  # digits, but...
    assert profile_column("when", pd.Series(["2026-01-05", "2026-01-12"])).kind == "date"
    assert profile_column("plan", pd.Series(["Yes", "No", "No"])).values == ["No", "Yes"]


def test_long_export_with_churn_only_labels_under_its_own_names():
    guess = infer_config(long_files())
    d = guess.data
    assert d["layout"] == "long"
    assert (d["id_column"], d["period_column"]) == ("msisdn", "month")
    assert d["usage"] == "exports/usage.csv"
    assert d["static"] == "exports/subscribers.csv" and "static_columns" not in d
    assert (d["labels"], d["churn_column"]) == ("exports/churn.csv", "is_churned")
    assert "migration_column" not in d
    assert d["metrics"] == {m: m for m in ("moc_minutes", "data_volume", "arpu")}
    assert d["revenue_metric"] == "arpu"
    assert "allow_negative" not in d  # arpu is negative, and revenue-like: allowed by default
    assert "churn values" not in " ".join(guess.warnings)
    # a panel scores with the blend, its boosters tuned as in the 200k measurement (RESULTS.md)
    assert guess.model == {"head": "blend", "head_trials": 4}


def test_the_files_may_come_in_any_order():
    files = long_files()
    assert infer_config(files[::-1]).data == infer_config(files).data


def test_raw_wide_panel_metrics_with_digits_dates_left_out_negatives_allowed():
    frame = pd.DataFrame(
        {
            "mobile_number": ["7000842753", "7001865778", "7001625959"],
            "circle_id": ["109", "109", "109"],
            "arpu_6": ["197.385", "-34.047", "0"],
            "arpu_7": ["214.816", "355.074", ""],
            "vol_2g_mb_6": ["30.13", "0", "0"],
            "vol_2g_mb_7": ["1.32", "0", "12.5"],
            "onnet_mou_6": ["5.2", "-1", "0"],
            "onnet_mou_7": ["3", "2", "1"],
            "date_of_last_rech_6": ["6/21/2014", "6/29/2014", "6/17/2014"],
            "date_of_last_rech_7": ["7/16/2014", "7/31/2014", "7/24/2014"],
            "churn": ["0", "1", "0"],
        }
    )
    guess = infer_config([profile_frame(frame, "telecom_churn_data.csv")])
    d = guess.data
    assert d["layout"] == "wide" and d["id_column"] == "mobile_number"
    assert d["metrics"] == {m: m for m in ("arpu", "vol_2g_mb", "onnet_mou")}
    assert "date_of_last_rech" not in d["metrics"]
    assert "2 date columns left out" in guess.notes["metrics"]
    assert d["allow_negative"] == ["arpu", "onnet_mou"]  # seen negative, and revenue-like
    assert d["fill"] == {"default": "zero"}  # a blank arpu_7
    assert d["static"] == "telecom_churn_data.csv" and d["static_columns"] == ["circle_id"]
    assert (d["labels"], d["churn_column"]) == ("telecom_churn_data.csv", "churn")


def test_table_without_a_time_series_and_without_ids():
    frame = pd.DataFrame(
        {
            "MonthlyRevenue": ["30.88", "?", "44.8"],
            "MonthlyMinutes": ["436", "172", "0"],
            "PercChangeMinutes": ["-112", "-12", "3"],
            "MonthsInService": ["20", "22", "7"],
            "CreditRating": ["2-High", "3-Good", "2-High"],
            "Churn": ["Yes", "No", "No"],
        }
    )
    guess = infer_config([profile_frame(frame, "cell2cell.csv")])
    d = guess.data
    assert d["layout"] == "table" and d["id_column"] is None
    assert set(d["metrics"]) == {"MonthlyRevenue", "MonthlyMinutes", "PercChangeMinutes"}
    assert d["static_columns"] == ["MonthsInService", "CreditRating"]
    assert "static" not in d  # the table layout reads its attributes from the table itself
    assert d["revenue_metric"] == "MonthlyRevenue"
    assert "allow_negative" not in d  # a table's metrics may be negative (percent changes)
    assert guess.model == {"encoder": "static", "head": "blend"}  # README: Scoring with the winner
    assert "row number" in guess.notes["id_column"]


def test_unreadable_churn_values_and_missing_labels_are_warned():
    frame = pd.DataFrame(
        {"cust_id": ["a", "b"], "voice_min": ["1", "2"], "churn_status": ["gone", "here"]}
    )
    guess = infer_config([profile_frame(frame, "t.csv")])
    assert any("churn_values" in w for w in guess.warnings)
    no_labels = infer_config([profile_frame(frame.drop(columns="churn_status"), "t.csv")])
    assert any("no churn column" in w for w in no_labels.warnings)
    assert "labels" not in no_labels.data


def test_rendered_long_config_is_commented_and_loads(tmp_path):
    guess = infer_config(long_files())
    text = render_config(guess, ["exports/usage.csv"])
    assert "# 'msisdn' repeats and 'month' looks like a period" in text
    assert yaml.safe_load(text)["data"] == guess.data
    path = tmp_path / "my.yaml"
    path.write_text(text)
    cfg = load_config(path)  # every key is a DataConfig key
    assert (cfg.data.id_column, cfg.data.churn_column) == ("msisdn", "is_churned")
    assert (cfg.model.head, cfg.model.head_trials) == ("blend", 4)
    assert "# head: blend: churn scores from a blend of the sequence model" in text


def test_rendered_table_config_loads(tmp_path):
    """Waits for issue 14 part A: layout table, id_column null, fill, allow_negative keys."""
    frame = pd.DataFrame({"MonthlyRevenue": ["1", "?", "-2"], "Churn": ["Yes", "No", "No"]})
    path = tmp_path / "t.yaml"
    path.write_text(render_config(infer_config([profile_frame(frame, "t.csv")]), ["t.csv"]))
    cfg = load_config(path)
    assert (cfg.data.layout, cfg.data.id_column, cfg.model.encoder) == ("table", None, "static")


def test_init_command_writes_and_refuses_to_overwrite(tmp_path):
    usage = tmp_path / "usage.csv"
    pd.DataFrame(
        {
            "subscriber_id": ["1", "1", "2", "2"],
            "week": ["2026-W01", "2026-W02"] * 2,
            "revenue": ["1", "2", "3", "4"],
        }  # fmt: skip
    ).to_csv(usage, index=False)
    out = tmp_path / "my.yaml"
    r = runner.invoke(app, ["init", str(usage), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "layout long, id column subscriber_id, period column week" in r.output
    assert "no churn column found" in r.output
    assert yaml.safe_load(out.read_text())["data"]["churn_definition"] == "inactivity"
    again = runner.invoke(app, ["init", str(usage), "-o", str(out)])
    assert again.exit_code == 1 and "--force" in again.output
    missing = runner.invoke(app, ["init", str(tmp_path / "nope.csv"), "-o", str(out), "--force"])
    assert missing.exit_code == 1 and "nope.csv: data file not found" in missing.output


@pytest.mark.parametrize("rows", [1, 3])
def test_init_reads_a_bounded_sample(tmp_path, rows):
    usage = tmp_path / "usage.csv"
    pd.DataFrame({"customer_id": ["a", "b", "c"], "voice_min": ["1", "2", "x"]}).to_csv(
        usage, index=False
    )
    out = tmp_path / "my.yaml"
    r = runner.invoke(app, ["init", str(usage), "-o", str(out), "--rows", str(rows)])
    assert r.exit_code == 0, r.output
    metrics = yaml.safe_load(out.read_text())["data"]["metrics"]
    # the third row ('x') is text: only a sample of one row sees voice_min as a number
    assert ("voice_min" in metrics) == (rows == 1)


def test_wide_panel_with_a_constant_id_like_column_and_repeated_dates_is_wide():
    """A constant ``circle_id`` repeats and recharge dates repeat: not a long table."""
    n = 8
    frame = pd.DataFrame(
        {
            "mobile_number": [str(7000000000 + i) for i in range(n)],
            "circle_id": ["109"] * n,
            "arpu_1": [str(i) for i in range(n)],
            "arpu_2": [str(i + 1) for i in range(n)],
            "date_of_last_rech_1": ["06/21/2014", "06/22/2014"] * (n // 2),
            "date_of_last_rech_2": ["07/21/2014", "07/22/2014"] * (n // 2),
            "churn": ["0", "1"] * (n // 2),
        }
    )
    d = infer_config([profile_frame(frame, "panel.csv")]).data
    assert (d["layout"], d["id_column"]) == ("wide", "mobile_number")
    assert d["metrics"] == {"arpu": "arpu"}


def test_long_needs_one_row_per_subscriber_and_period():
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b"],
            "month": ["2026-01", "2026-01", "2026-01", "2026-02"],
            "voice_min": ["1", "2", "3", "4"],
        }  # fmt: skip
    )
    assert infer_config([profile_frame(frame, "u.csv")]).data["layout"] == "table"
    frame.loc[1, "month"] = "2026-02"
    assert infer_config([profile_frame(frame, "u.csv")]).data["layout"] == "long"
