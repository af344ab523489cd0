"""Panel preparation: bad inputs give one-line DataErrors naming the file and the column or row;
wide and long layouts agree; rejects are accounted for; period formats parse and sort."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuseg.backend import resolve_backend
from gpuseg.config import DataConfig
from gpuseg.data.panel import PANEL_FILES, load_attributes, load_panel
from gpuseg.data.periods import parse_periods
from gpuseg.data.prepare import build_panel, prepare
from gpuseg.data.synth import METRICS
from gpuseg.errors import DataError

CPU = resolve_backend("cpu")


def long_frame() -> pd.DataFrame:
    """3 subscribers x 3 integer periods, two metrics; subscriber b has no row for period 7."""
    rows = []
    for sid in ("a", "b", "c"):
        for period in (6, 7, 8):
            if sid == "b" and period == 7:
                continue
            base = {"a": 10.0, "b": 20.0, "c": 30.0}[sid]
            rows.append(
                dict(subscriber_id=sid, period=period, arpu=base + period, data=100 * base + period)
            )
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def data_error(cfg: DataConfig, *expected: str) -> str:
    """build_panel must raise DataError with a one-line message containing every ``expected``."""
    with pytest.raises(DataError) as info:
        build_panel(cfg, CPU)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------
# Bad input


def test_missing_file(tmp_path):
    data_error(DataConfig(usage=str(tmp_path / "nope.csv")), "nope.csv", "not found")


def test_no_usage_file_configured():
    data_error(DataConfig(usage=""), "data.usage")


def test_empty_file(tmp_path):
    (tmp_path / "usage.csv").write_bytes(b"")
    data_error(DataConfig(usage=str(tmp_path / "usage.csv")), "usage.csv", "empty")


def test_header_only_csv(tmp_path):
    (tmp_path / "usage.csv").write_text("subscriber_id,period,arpu\n")
    data_error(DataConfig(usage=str(tmp_path / "usage.csv")), "usage.csv", "no rows")


def test_unknown_file_type(tmp_path):
    (tmp_path / "usage.xlsx").write_text("x")
    data_error(DataConfig(usage=str(tmp_path / "usage.xlsx")), "usage.xlsx", ".xlsx")


def test_metric_mapped_to_absent_column(tmp_path):
    path = write(long_frame(), tmp_path / "usage.csv")
    data_error(
        DataConfig(usage=str(path), metrics={"revenue": "revenue_eur"}),
        "usage.csv",
        "'revenue_eur'",
        "revenue",
    )


def test_id_column_absent(tmp_path):
    path = write(long_frame(), tmp_path / "usage.csv")
    data_error(
        DataConfig(usage=str(path), id_column="msisdn"), "usage.csv", "'msisdn'", "data.id_column"
    )


def test_period_column_absent(tmp_path):
    path = write(long_frame(), tmp_path / "usage.csv")
    data_error(DataConfig(usage=str(path), period_column="week"), "usage.csv", "'week'")


def test_non_numeric_metric_value_names_row(tmp_path):
    frame = long_frame().astype({"arpu": object})
    frame.loc[4, "arpu"] = "12,5"  # the 5th data row
    path = write(frame, tmp_path / "usage.csv")
    data_error(DataConfig(usage=str(path)), "usage.csv", "'arpu'", "row 5", "non-numeric")


def test_negative_usage(tmp_path):
    frame = long_frame()
    frame.loc[2, "data"] = -1.0
    path = write(frame, tmp_path / "usage.csv")
    data_error(DataConfig(usage=str(path)), "usage.csv", "'data'", "row 3", "negative")


def test_nan_in_csv(tmp_path):
    frame = long_frame()
    frame.loc[6, "arpu"] = np.nan  # written as an empty cell
    path = write(frame, tmp_path / "usage.csv")
    data_error(DataConfig(usage=str(path)), "usage.csv", "'arpu'", "row 7", "NaN")


def test_nan_in_parquet(tmp_path):
    frame = long_frame()
    frame.loc[0, "data"] = np.nan
    path = write(frame, tmp_path / "usage.parquet")
    data_error(DataConfig(usage=str(path)), "usage.parquet", "'data'", "row 1", "NaN")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_inf(tmp_path, suffix):
    frame = long_frame()
    frame.loc[3, "arpu"] = np.inf
    path = write(frame, tmp_path / f"usage{suffix}")
    data_error(DataConfig(usage=str(path)), path.name, "'arpu'", "row 4", "infinite")


def test_duplicate_subscriber_period(tmp_path):
    frame = long_frame()
    frame = pd.concat([frame, frame.iloc[[1]]], ignore_index=True)  # row 9 repeats row 2
    path = write(frame, tmp_path / "usage.csv")
    data_error(DataConfig(usage=str(path)), "usage.csv", f"row {len(frame)}", "duplicate")


def test_missing_subscriber_id(tmp_path):
    frame = long_frame()
    frame.loc[3, "subscriber_id"] = None
    path = write(frame, tmp_path / "usage.csv")
    data_error(DataConfig(usage=str(path)), "usage.csv", "'subscriber_id'", "row 4")


@pytest.mark.parametrize(
    "periods, row",
    [
        (["2026-01-05", "2026-01-12", "2026-01", "2026-01-19"], 3),  # ISO date, then a month
        (["2026-01", "2026-01-05", "2026-02", "2026-03"], 2),  # month first, then an ISO date
        (["2026-W01", "2026-W02", "2026-01-19", "2026-W04"], 3),
        (["1", "2", "2026-01-19", "4"], 3),
    ],
)
def test_mixed_period_formats(tmp_path, periods, row):
    frame = pd.DataFrame(dict(subscriber_id=["a"] * 4, period=periods, x=[1.0] * 4))
    path = write(frame, tmp_path / "usage.csv")
    data_error(DataConfig(usage=str(path)), "usage.csv", "'period'", f"row {row}", "format")


def test_unreadable_period(tmp_path):
    frame = pd.DataFrame(dict(subscriber_id=["a", "a"], period=["spring", "summer"], x=[1.0, 2.0]))
    path = write(frame, tmp_path / "usage.csv")
    data_error(DataConfig(usage=str(path)), "usage.csv", "'period'", "row 1")


def test_labels_for_unknown_subscriber(tmp_path):
    usage = write(long_frame(), tmp_path / "usage.csv")
    labels = write(
        pd.DataFrame(dict(subscriber_id=["a", "b", "zz", "c"], churn=[0, 1, 0, 0])),
        tmp_path / "labels.csv",
    )
    data_error(
        DataConfig(usage=str(usage), labels=str(labels)),
        "labels.csv",
        "row 3",
        "not in the usage table",
    )


def test_labels_duplicate_subscriber(tmp_path):
    usage = write(long_frame(), tmp_path / "usage.csv")
    labels = write(
        pd.DataFrame(dict(subscriber_id=["a", "b", "a"], churn=[0, 1, 0])), tmp_path / "labels.csv"
    )
    data_error(DataConfig(usage=str(usage), labels=str(labels)), "labels.csv", "row 3", "duplicate")


@pytest.mark.parametrize("bad", [2, -1, 0.5, "maybe"])
def test_churn_label_not_binary(tmp_path, bad):
    usage = write(long_frame(), tmp_path / "usage.csv")
    labels = write(
        pd.DataFrame(dict(subscriber_id=["a", "b", "c"], churn=[0, bad, 1])),
        tmp_path / "labels.csv",
    )
    data_error(
        DataConfig(usage=str(usage), labels=str(labels)),
        *("labels.csv", "'churn'", "row 2", f"churn value '{bad}'", "data.churn_values"),
    )


def test_bad_migration_label(tmp_path):
    usage = write(long_frame(), tmp_path / "usage.csv")
    labels = write(
        pd.DataFrame(dict(subscriber_id=["a", "b", "c"], migration=["up", "stay", "sideways"])),
        tmp_path / "labels.csv",
    )
    data_error(
        DataConfig(usage=str(usage), labels=str(labels)), "labels.csv", "'migration'", "row 3"
    )


def test_labels_missing_values_are_unknown(tmp_path):
    usage = write(long_frame(), tmp_path / "usage.csv")
    labels = write(
        pd.DataFrame(dict(subscriber_id=["c", "a"], churn=[1.0, np.nan], migration=["DOWN", None])),
        tmp_path / "labels.csv",
    )
    panel, _, _ = build_panel(DataConfig(usage=str(usage), labels=str(labels)), CPU)
    assert panel.ids.tolist() == ["a", "b", "c"]
    assert panel.churn.tolist() == [-1, -1, 1]
    assert panel.migration.tolist() == [-1, -1, 0]


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty-body"])
def test_corrupt_parquet(tmp_path, how):
    good = write(long_frame(), tmp_path / "good.parquet").read_bytes()
    path = tmp_path / "usage.parquet"
    if how == "garbage":
        path.write_bytes(b"this is not parquet\x00\x01\x02" * 10)
    elif how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        path.write_bytes(b"PAR1")
    expected = "usage file is not Parquet" if how == "garbage" else "cannot read"  # sniffed
    data_error(DataConfig(usage=str(path)), "usage.parquet", expected)


def test_static_missing_id_and_columns(tmp_path):
    usage = write(long_frame(), tmp_path / "usage.csv")
    static = write(
        pd.DataFrame(dict(msisdn=["a", "b", "c"], age=[30, 40, 50])), tmp_path / "static.csv"
    )
    data_error(DataConfig(usage=str(usage), static=str(static)), "static.csv", "'subscriber_id'")
    static = write(
        pd.DataFrame(dict(subscriber_id=["a", "b", "c"], age=[30, 40, 50])), tmp_path / "static.csv"
    )
    data_error(
        DataConfig(usage=str(usage), static=str(static), static_columns=["age", "income"]),
        "static.csv",
        "'income'",
    )


def test_static_duplicate_and_non_numeric(tmp_path):
    usage = write(long_frame(), tmp_path / "usage.csv")
    static = write(
        pd.DataFrame(dict(subscriber_id=["a", "b", "b"], age=[1, 2, 3])), tmp_path / "static.csv"
    )
    data_error(DataConfig(usage=str(usage), static=str(static)), "static.csv", "row 3", "duplicate")


def test_static_value_beyond_what_the_panel_holds(tmp_path):
    """1e300 is finite in float64 but inf in the float32 static matrix: named, not kept."""
    usage = write(long_frame(), tmp_path / "usage.csv")
    ids = sorted(long_frame()["subscriber_id"].unique())
    income = [1e300] + [1.0] * (len(ids) - 1)
    static = write(pd.DataFrame(dict(subscriber_id=ids, income=income)), tmp_path / "static.csv")
    data_error(
        DataConfig(usage=str(usage), static=str(static)), "static.csv", "'income'", "row 1", "1e+18"
    )


def test_static_dates_need_date_periods(tmp_path):
    """Integer periods are not days: a date attribute cannot be made relative to them."""
    usage = write(long_frame(), tmp_path / "usage.csv")
    static = pd.DataFrame(
        dict(
            subscriber_id=["a", "b", "c"],
            contract_end=pd.to_datetime(["2026-03-01", "2026-04-01", None]),
        )
    )
    spath = write(static, tmp_path / "static.parquet")
    data_error(
        DataConfig(usage=str(usage), static=str(spath)), "static.parquet", "'contract_end'", "dates"
    )


# ---------------------------------------------------------------------------------------------
# Layouts and encoding


def test_long_panel_values(tmp_path):
    path = write(
        long_frame().sample(frac=1.0, random_state=1), tmp_path / "usage.csv"
    )  # row order must not matter
    panel, _, rejects = build_panel(DataConfig(usage=str(path)), CPU)
    assert panel.ids.tolist() == ["a", "b", "c"]
    assert panel.metrics == ["arpu", "data"]
    assert panel.meta["periods"] == ["6", "7", "8"]
    assert panel.usage.shape == (3, 3, 2) and panel.usage.dtype == np.float32
    assert panel.mask.tolist() == [[True] * 3, [True, False, True], [True] * 3]
    assert panel.usage[1, 1].tolist() == [0.0, 0.0]  # missing period is zero
    np.testing.assert_array_equal(panel.usage[2, :, 0], [36.0, 37.0, 38.0])
    np.testing.assert_array_equal(panel.usage[0, :, 1], [1006.0, 1007.0, 1008.0])
    assert panel.meta["counts"] == dict(input=3, output=3, rejected=0) and len(rejects) == 0


def test_metric_mapping_renames_and_selects(tmp_path):
    path = write(long_frame(), tmp_path / "usage.csv")
    panel, _, _ = build_panel(DataConfig(usage=str(path), metrics={"revenue": "arpu"}), CPU)
    assert panel.metrics == ["revenue"]
    np.testing.assert_array_equal(panel.usage[0, :, 0], [16.0, 17.0, 18.0])


def test_wide_layout_equals_long(tmp_path):
    long = long_frame()
    wide = long.pivot(index="subscriber_id", columns="period", values=["arpu", "data"])
    wide.columns = [f"{metric}_{period}" for metric, period in wide.columns]
    wide = wide.reset_index().iloc[::-1]  # reversed row order: the panel is sorted by id anyway
    assert {"arpu_6", "arpu_7", "data_6", "data_8"} <= set(wide.columns)
    assert wide.isna().to_numpy().sum() == 2  # b has no period 7 (both metrics)

    p_long, _, _ = build_panel(DataConfig(usage=str(write(long, tmp_path / "long.csv"))), CPU)
    p_wide, _, _ = build_panel(
        DataConfig(usage=str(write(wide, tmp_path / "wide.csv")), layout="wide"), CPU
    )
    assert p_wide.ids.tolist() == p_long.ids.tolist()
    assert p_wide.metrics == p_long.metrics
    assert p_wide.meta["periods"] == p_long.meta["periods"]
    np.testing.assert_array_equal(p_wide.mask, p_long.mask)
    np.testing.assert_array_equal(p_wide.usage, p_long.usage)


def test_wide_layout_on_synthetic_world(tiny_world, tiny_panel, tmp_path):
    """The tiny world pivoted wide (metric_<period index>) gives the arrays of its long table."""
    long = pd.read_parquet(tiny_world.usage)
    periods = sorted(long["period"].unique())
    long["k"] = long["period"].map({p: i for i, p in enumerate(periods)})
    wide = long.pivot(index="subscriber_id", columns="k", values=list(METRICS))
    wide.columns = [f"{metric}_{k}" for metric, k in wide.columns]
    path = write(wide.reset_index(), tmp_path / "wide.parquet")
    metrics = {m: m for m in METRICS}  # the long table's column order
    panel, _, _ = build_panel(DataConfig(usage=str(path), layout="wide", metrics=metrics), CPU)
    assert panel.ids.tolist() == tiny_panel.ids.tolist()
    assert panel.metrics == tiny_panel.metrics
    np.testing.assert_array_equal(panel.mask, tiny_panel.mask)
    np.testing.assert_array_equal(panel.usage, tiny_panel.usage)


def test_wide_partial_period_is_an_error(tmp_path):
    wide = pd.DataFrame(dict(subscriber_id=["a", "b"], arpu_1=[1.0, 2.0], data_1=[1.0, np.nan]))
    path = write(wide, tmp_path / "wide.csv")
    data_error(DataConfig(usage=str(path), layout="wide"), "wide.csv", "row 2", "period 1")


def test_wide_unknown_metric_prefix(tmp_path):
    wide = pd.DataFrame(dict(subscriber_id=["a"], arpu_1=[1.0]))
    path = write(wide, tmp_path / "wide.csv")
    data_error(
        DataConfig(usage=str(path), layout="wide", metrics={"data": "data_mb"}),
        "wide.csv",
        "'data_mb'",
    )


def test_string_integer_periods_are_not_dates(tmp_path):
    """Periods stored as text '1', '2', ... keep integer labels (they were shown as 1970 dates)."""
    frame = long_frame().astype({"period": str})
    path = write(frame, tmp_path / "usage.parquet")
    panel, _, _ = build_panel(DataConfig(usage=str(path)), CPU)
    assert panel.meta["periods"] == ["6", "7", "8"]


def test_date_periods_labels(tmp_path):
    frame = long_frame()
    frame["period"] = frame["period"].map({6: "2026-01-05", 7: "2026-01-12", 8: "2026-01-19"})
    panel, _, _ = build_panel(DataConfig(usage=str(write(frame, tmp_path / "usage.csv"))), CPU)
    assert panel.meta["periods"] == ["2026-01-05", "2026-01-12", "2026-01-19"]


def test_static_encoding(tmp_path):
    frame = long_frame()
    frame["period"] = frame["period"].map({6: "2026-01-05", 7: "2026-01-12", 8: "2026-01-19"})
    usage = write(frame, tmp_path / "usage.csv")
    static = pd.DataFrame(
        dict(
            subscriber_id=["c", "a", "b"],
            age=[50.0, np.nan, 40.0],
            family=[True, False, True],
            plan=["pre", "post", "pre"],
            contract_end=pd.to_datetime(["2026-01-29", "2026-01-19", "2026-01-09"]),
        )
    )
    spath = write(static, tmp_path / "static.parquet")
    panel, attrs, _ = build_panel(DataConfig(usage=str(usage), static=str(spath)), CPU)
    names = panel.meta["static_features"]
    assert names == ["age", "age_missing", "family", "plan=post", "plan=pre", "contract_end"]
    col = {n: panel.static[:, i].tolist() for i, n in enumerate(names)}  # rows a, b, c
    assert col["age"] == [0.0, 40.0, 50.0] and col["age_missing"] == [1.0, 0.0, 0.0]
    assert col["family"] == [0.0, 1.0, 1.0]
    assert col["plan=pre"] == [0.0, 1.0, 1.0] and col["plan=post"] == [1.0, 0.0, 0.0]
    assert col["contract_end"] == [0.0, -10.0, 10.0]  # days from the last period
    assert attrs["subscriber_id"].tolist() == ["a", "b", "c"]


def test_scoring_reuses_reference_encoding_and_periods(tiny_world, tiny_panel_dir, tmp_path):
    """Scoring data with fewer periods is padded at the start and encoded like training."""
    ref = load_panel(tiny_panel_dir).meta
    long = pd.read_parquet(tiny_world.usage)
    last = sorted(long["period"].unique())[-8:]
    usage = write(long[long["period"].isin(last)], tmp_path / "usage.parquet")
    panel, _, _ = build_panel(
        DataConfig(usage=str(usage), static=str(tiny_world.static)), CPU, reference=ref
    )
    train = load_panel(tiny_panel_dir)
    assert panel.usage.shape == train.usage.shape
    assert not panel.mask[:, :4].any()
    np.testing.assert_array_equal(panel.usage[:, 4:], train.usage[:, 4:])
    np.testing.assert_array_equal(panel.static, train.static)
    assert panel.meta["static_features"] == ref["static_features"]


# ---------------------------------------------------------------------------------------------
# Rejects and counts


def test_rejects_and_counts(tiny_world, tmp_path):
    usage = pd.read_parquet(tiny_world.usage)
    static = pd.read_parquet(tiny_world.static)
    no_usage, no_static = "S00000003", "S00000005"
    usage = usage[usage["subscriber_id"] != no_usage]
    static = static[static["subscriber_id"] != no_static]
    cfg = tiny_world.data_config(
        usage=str(write(usage, tmp_path / "usage.parquet")),
        static=str(write(static, tmp_path / "static.parquet")),
    )  # labels still list both: the static-only one is a reject, not an error
    meta = prepare(cfg, CPU, tmp_path / "panel")

    rejects = pd.read_csv(tmp_path / "panel" / "rejects.csv")
    reasons = dict(zip(rejects["subscriber_id"], rejects["reason"], strict=True))
    assert reasons == {no_usage: "no usage rows", no_static: "no static attributes"}
    counts = meta["counts"]
    assert counts == dict(input=1500, output=1498, rejected=2)
    assert counts["input"] == counts["output"] + counts["rejected"]

    panel = load_panel(tmp_path / "panel")
    assert len(panel) == 1498 and no_usage not in panel.ids and no_static not in panel.ids
    for name in PANEL_FILES:
        assert (tmp_path / "panel" / name).is_file()
    assert len(load_attributes(tmp_path / "panel")) == 1498
    # a reject must not change how the kept rows are encoded (booleans stay one 0/1 column)
    assert (
        "family_plan" in meta["static_features"]
        and "family_plan=True" not in meta["static_features"]
    )
    labels = pd.read_parquet(tiny_world.labels).set_index("subscriber_id")
    np.testing.assert_array_equal(panel.churn, labels.loc[panel.ids, "churn"].to_numpy())


def test_too_sparse_subscribers_rejected(tmp_path):
    frame = long_frame()
    frame = frame[~((frame["subscriber_id"] == "c") & (frame["period"] != 8))]  # c: 1 of 3 periods
    path = write(frame, tmp_path / "usage.csv")
    panel, _, rejects = build_panel(DataConfig(usage=str(path), max_missing_frac=0.5), CPU)
    assert panel.ids.tolist() == ["a", "b"]
    assert rejects.values.tolist() == [["c", "too many missing periods"]]
    assert panel.meta["counts"] == dict(input=3, output=2, rejected=1)


def test_tiny_panel_matches_truth(tiny_world, tiny_panel):
    truth = pd.read_parquet(tiny_world.truth)
    assert len(tiny_panel) == 1500 and tiny_panel.meta["counts"]["rejected"] == 0
    assert tiny_panel.metrics == list(METRICS)
    assert tiny_panel.usage.shape == (1500, 12, len(METRICS))
    assert tiny_panel.mask.all()
    assert (tiny_panel.ids == np.sort(truth["subscriber_id"].to_numpy().astype(str))).all()
    np.testing.assert_array_equal(
        tiny_panel.churn, truth.set_index("subscriber_id").loc[tiny_panel.ids, "churn"]
    )


# ---------------------------------------------------------------------------------------------
# Periods


def keys(values) -> list[int]:
    return parse_periods(np.asarray(values, dtype=object), Path("usage.csv"), "period").tolist()


def day(text: str) -> int:
    return int(np.datetime64(text, "D").astype(np.int64))


def test_period_formats():
    assert keys(["2026-01-12", "2026-01-05"]) == [day("2026-01-12"), day("2026-01-05")]
    assert keys(["2026-02", "2025-12"]) == [day("2026-02-01"), day("2025-12-01")]
    assert keys(["2026-W02", "2026-W01", "2025-W52"]) == [
        day("2026-01-05"),
        day("2025-12-29"),
        day("2025-12-22"),
    ]
    assert keys(["20260105", "20251231"]) == [day("2026-01-05"), day("2025-12-31")]
    assert keys(["10", "9", "-1"]) == [10, 9, -1]
    assert keys(["202612", "202601", "202611"]) == [202612, 202601, 202611]  # YYYYMM text: integers
    assert keys([datetime.date(2026, 1, 5), datetime.date(2026, 1, 12)]) == [
        day("2026-01-05"),
        day("2026-01-12"),
    ]
    assert parse_periods(np.array([3, 1, 2]), Path("u"), "p").tolist() == [3, 1, 2]
    assert parse_periods(np.array([3.0, 1.0]), Path("u"), "p").tolist() == [3, 1]
    dates = np.array(["2026-01-05", "2026-01-12"], dtype="datetime64[ns]")
    assert parse_periods(dates, Path("u"), "p").tolist() == [day("2026-01-05"), day("2026-01-12")]


def test_period_errors():
    with pytest.raises(DataError, match="row 2: missing period"):
        keys(["2026-01-05", None])
    with pytest.raises(DataError, match="whole numbers"):
        parse_periods(np.array([1.0, 1.5]), Path("u.csv"), "period")


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DATES = st.dates(min_value=datetime.date(1990, 1, 1), max_value=datetime.date(2060, 12, 31))


@settings(max_examples=60, deadline=None)
@given(st.lists(DATES, min_size=1, max_size=30))
def test_parse_iso_dates_round_trip(dates):
    parsed = keys([d.isoformat() for d in dates])
    assert parsed == [(d - datetime.date(1970, 1, 1)).days for d in dates]
    assert np.argsort(parsed, kind="stable").tolist() == sorted(
        range(len(dates)), key=lambda i: dates[i]
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(DATES, min_size=1, max_size=30))
def test_parse_months_and_weeks_preserve_order(dates):
    months = keys([f"{d.year:04d}-{d.month:02d}" for d in dates])
    assert months == [day(f"{d.year:04d}-{d.month:02d}-01") for d in dates]
    iso = [d.isocalendar() for d in dates]
    weeks = keys([f"{y:04d}-W{w:02d}" for y, w, _ in iso])
    mondays = [d - datetime.timedelta(days=d.isoweekday() - 1) for d in dates]
    assert weeks == [(m - datetime.date(1970, 1, 1)).days for m in mondays]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-(10**6), max_value=10**6), min_size=1, max_size=30))
def test_parse_integers_round_trip(values):
    assert parse_periods(np.array(values), Path("u"), "p").tolist() == values
    if all(0 <= v < 10**6 for v in values):  # text integers of up to 6 digits stay integers
        assert keys([str(v) for v in values]) == values  # (106711 was read as the date 1067-1-1)


def test_prepared_world_is_reproducible(tiny_world, tiny_panel_dir, tmp_path):
    """Preparing the same inputs twice gives identical arrays (the panel is a pure function)."""
    shutil.copytree(tiny_panel_dir, tmp_path / "copy")
    prepare(tiny_world.data_config(), CPU, tmp_path / "again")
    a, b = load_panel(tmp_path / "copy"), load_panel(tmp_path / "again")
    for name in ("usage", "mask", "static", "churn", "migration"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_read_ids_fixed_width_by_blocks(tmp_path):
    """The panel's ids come back as one fixed-width str array, block by block, equal to the
    text pandas reads (any lengths, non-ASCII); a numeric id column as its text."""
    from gpuseg.data.panel import read_ids

    ids = [f"id{'x' * (i % 4)}{i}" + ("ü" if i % 5 == 0 else "") for i in range(50)]
    pd.DataFrame({"subscriber_id": ids}).to_parquet(tmp_path / "a.parquet", index=False)
    for block in (1, 3, 50, 1000):
        got = read_ids(tmp_path / "a.parquet", block=block)
        assert got.dtype.kind == "U" and got.tolist() == ids
    pd.DataFrame({"n": [3, 10, 200]}).to_parquet(tmp_path / "b.parquet", index=False)
    got = read_ids(tmp_path / "b.parquet")
    assert got.dtype.kind == "U" and got.tolist() == ["3", "10", "200"]
    # one very long id would make every row that wide: Python strings then, values exact
    ids = ["a ", " b", "x" * 5000]
    pd.DataFrame({"subscriber_id": ids}).to_parquet(tmp_path / "c.parquet", index=False)
    got = read_ids(tmp_path / "c.parquet")
    assert got.dtype == object and got.tolist() == ids


def test_index_in_blocks_equals_one_lookup():
    """Hashing the value set a block at a time finds what one ``pc.index_in`` finds: the first
    occurrence of each value (duplicates across blocks), -1 for absent ones and nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from gpuseg.data.ids import index_in_blocks

    rng = np.random.default_rng(0)
    table = np.array([f"k{i}" for i in rng.integers(0, 40, 60)])  # with duplicates
    values = pa.chunked_array(
        [pa.array([f"k{i}" for i in rng.integers(0, 50, 30)]), pa.array(["k1", None, "zz"])]
    )
    want = pc.index_in(values, value_set=pa.array(table)).fill_null(-1).to_numpy()
    for block in (1, 7, 60, 1000):
        np.testing.assert_array_equal(index_in_blocks(values, table, block), want)
        arrow_table = pa.array(table, pa.large_string())  # cast to the values' type
        np.testing.assert_array_equal(index_in_blocks(values, arrow_table, block), want)
    assert (want == -1).any() and (want >= 0).any()
