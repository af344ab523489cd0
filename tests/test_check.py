"""gpuseg.data.check and ``gpuseg check``: a config against its files, one line per problem."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.config import load_config
from gpuseg.data.check import check_config

runner = CliRunner()


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    """A long export under its own column names, churn-only labels, as an operator writes it."""
    ids = ["007", "7", "00001"]
    pd.DataFrame(
        {
            "msisdn": [i for i in ids for _ in range(3)],
            "month": ["2026-01", "2026-02", "2026-03"] * 3,
            "voice_min": [1, 2, 3, 4, 5, 6, 7, 8, 9],
            "arpu": [10, -2.5, 8, 9, 9, 9, 1, 1, 1],
        }
    ).to_csv(tmp_path / "usage.csv", index=False)
    pd.DataFrame({"msisdn": ids, "plan": ["a", "b", "a"]}).to_csv(
        tmp_path / "static.csv", index=False
    )
    pd.DataFrame({"msisdn": ids, "is_churned": ["Yes", "no", ""]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    return tmp_path


def config(d: Path, **data) -> Path:
    section = dict(
        usage=str(d / "usage.csv"),
        static=str(d / "static.csv"),
        labels=str(d / "labels.csv"),
        id_column="msisdn",
        period_column="month",
        churn_column="is_churned",
        revenue_metric="arpu",
    )
    path = d / "my.yaml"
    path.write_text(yaml.safe_dump({"out_dir": str(d / "run"), "data": section | data}))
    return path


def problems(path: Path) -> list[str]:
    return check_config(load_config(path)).problems


def test_a_good_export_passes_with_notes(export):
    res = check_config(load_config(config(export)))
    assert res.ok, res.problems
    notes = "\n".join(res.notes)
    assert "long layout, 2 metrics; revenue metric 'arpu'" in notes
    assert "churn 'is_churned': 1 positive of 2 labelled, 1 unlabelled" in notes
    assert "no migration column 'migration'" in notes


def test_missing_columns_are_named_with_their_key(export):
    (p,) = problems(config(export, period_column="week"))
    assert "usage.csv: column 'week' (data.period_column) not found" in p
    (p,) = problems(config(export, churn_column="churn"))
    assert "labels.csv: column 'churn' (data.churn_column) not found" in p
    (p,) = problems(config(export, static_columns=["plan", "contract"]))
    assert "static.csv: column 'contract' (data.static_columns) not found" in p


def test_revenue_metric_is_checked_before_training(export):
    (p,) = problems(config(export, revenue_metric="revenue"))
    assert "revenue metric 'revenue' (data.revenue_metric) is not a metric" in p
    assert "metrics: voice_min, arpu" in p


def test_unreadable_churn_value_names_column_row_and_value(export):
    pd.DataFrame({"msisdn": ["007", "7"], "is_churned": ["yes", "maybe"]}).to_csv(
        export / "labels.csv", index=False
    )
    (p,) = problems(config(export))
    assert "labels.csv: column 'is_churned' row 2: churn value 'maybe'" in p


def test_metric_values_text_negative_and_missing(export):
    frame = pd.read_csv(export / "usage.csv", dtype=str)
    frame.loc[4, "voice_min"] = "lots"
    frame.loc[5, "arpu"] = "?"
    frame.to_csv(export / "usage.csv", index=False)
    found = problems(config(export))
    assert any("column 'voice_min' row 5: non-numeric value" in p for p in found)
    assert any("column 'arpu' row 6: missing value" in p and "data.fill" in p for p in found)
    frame.loc[4, "voice_min"] = "-1"
    frame.to_csv(export / "usage.csv", index=False)
    found = problems(config(export))
    assert any("column 'voice_min' row 5: negative value" in p for p in found)
    assert not any("'arpu'" in p and "negative" in p for p in found)  # revenue-like: allowed
    frame.loc[4, "voice_min"], frame.loc[7, "arpu"] = "1e300", "-inf"
    frame.to_csv(export / "usage.csv", index=False)
    found = problems(config(export))
    assert any("column 'voice_min' row 5: value 1e+300 is beyond" in p for p in found)
    assert any("column 'arpu' row 8: infinite value" in p for p in found)


def test_ids_that_do_not_join_are_counted_not_shown(export):
    pd.DataFrame({"msisdn": ["007", "8"], "is_churned": ["1", "0"]}).to_csv(
        export / "labels.csv", index=False
    )
    (p,) = problems(config(export))
    assert "labels.csv: 1 labelled ids are not in the usage file" in p
    assert "'8'" not in p


def test_ids_as_floats_against_integers_in_parquet_say_why(export):
    usage = pd.read_csv(export / "usage.csv")
    usage["msisdn"] = usage["msisdn"].astype(int)  # 7, 7, 1: integers in Parquet
    usage = usage.drop_duplicates(["msisdn", "month"])
    pq.write_table(pa.Table.from_pandas(usage, preserve_index=False), export / "usage.parquet")
    pd.DataFrame({"msisdn": ["7.0", "1.0"], "plan": ["a", "b"]}).to_csv(
        export / "static.csv", index=False
    )
    found = problems(config(export, usage=str(export / "usage.parquet"), labels=None))
    assert any(
        "static.csv: none of its 2 ids is in the usage file" in p and "7 and 7.0" in p
        for p in found
    ), found


def test_check_command_exit_codes(export):
    ok = runner.invoke(app, ["check", "-c", str(config(export))])
    assert ok.exit_code == 0, ok.output
    assert "ok:" in ok.output
    bad = runner.invoke(app, ["check", "-c", str(config(export)), "-s", "data.id_column=id"])
    assert bad.exit_code == 1
    assert "problem: " in bad.output and "column 'id' (data.id_column) not found" in bad.output
    assert "problem(s)" in bad.output
    assert not (export / "run").exists()  # check writes nothing


def test_synthetic_world_config_is_not_a_problem():
    root = Path(__file__).resolve().parents[1]
    res = check_config(load_config(root / "configs" / "tiny.yaml"))
    assert res.ok and "synthetic world" in res.notes[0]
