"""Fuzzing the CLI (issue 17): random CSV and Parquet usage tables, raw byte damage and random
config dicts through ``gpuseg prepare``. Every input ends in exit 0 with input = output +
rejected (and the panel and rejects.csv agree), or in exit 1 with exactly one error line; never
exit 2 (``internal error``) and never a traceback. A last test runs every file of ``tests/corpus/``
through the CLI and greps the output for "internal error".

Budget: about 40 s on a 2-core CPU (the example counts below), so it runs in CI.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpuseg.cli import app

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
runner = CliRunner()
COUNTS = re.compile(r"input ([\d,]+) = output ([\d,]+) \+ rejected ([\d,]+)")
OK_CSV = "subscriber_id,period,data_mb\nA,2026-01-05,1\nA,2026-01-12,2\nB,2026-01-05,3\n"


def check_outcome(r, out: Path) -> str:
    """Exit 0 with consistent counts, or exit 1 with one error line; 'ok' or 'error'."""
    text = r.output
    assert "internal error" not in text, text
    assert "Traceback" not in text, text
    assert r.exit_code in (0, 1), (r.exit_code, text)
    if r.exit_code == 1:
        errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, text
        return "error"
    m = COUNTS.search(text)
    assert m, text
    n_in, n_out, n_rej = (int(g.replace(",", "")) for g in m.groups())
    assert n_in == n_out + n_rej, text
    panel = out / "panel"
    assert pq.read_metadata(panel / "index.parquet").num_rows == n_out
    assert len(pd.read_csv(panel / "rejects.csv")) == n_rej
    return "ok"


def prepare(out: Path, usage: Path, *sets: str):
    args = ["prepare", "-s", f"out_dir={out}", "-s", f"data.usage={usage}", "--device", "cpu"]
    args += ["-s", "data.revenue_metric=data_mb"]
    for s in sets:
        args += ["-s", s]
    return runner.invoke(app, args)


ID = st.sampled_from(["A", "B", "c", "10", "010", "é", "日本", "a,b", 'q"x', "", " ", "-1", "1e3"])
PERIOD = st.sampled_from(
    [
        "2026-01-05",
        "2026-01-12",
        "2026-01-19",
        "2026-W03",
        "2026-02",
        "3",
        "4",
        "",
        "x",
        "1900-01-01",
    ]
)
VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.integers(-5, 10**6).map(str),
    st.sampled_from(["", "abc", "1,5", "true", " 7 "]),
)
HEADER = st.lists(
    st.sampled_from(["subscriber_id", "period", "data_mb", "voice_min", "x", "", "data_mb"]),
    min_size=1,
    max_size=5,
)


@st.composite
def tables(draw):
    header = draw(HEADER)
    n = draw(st.integers(0, 12))
    rows = []
    for _ in range(n):
        width = len(header) + draw(st.sampled_from([0, 0, 0, 0, -1, 1]))
        row = []
        for j in range(max(width, 0)):
            name = header[j] if j < len(header) else "extra"
            strat = ID if name == "subscriber_id" else PERIOD if name == "period" else VALUE
            row.append(draw(strat))
        rows.append(row)
    return header, rows


def csv_bytes(header, rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    table=tables(),
    kind=st.sampled_from(["csv", "csv", "parquet", "damaged"]),
    cut=st.floats(0, 1),
    junk=st.binary(max_size=8),
    frac=st.sampled_from([1.0, 0.5, 0.0]),
)
def test_random_tables_are_a_panel_or_one_error_line(table, kind, cut, junk, frac):
    header, rows = table
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if kind == "parquet":
            cols = list(dict.fromkeys(h or "unnamed" for h in header))
            frame = pd.DataFrame([dict(zip(cols, r, strict=False)) for r in rows], columns=cols)
            for c in frame.columns:  # numbers where every value reads as one, text otherwise
                num = pd.to_numeric(frame[c], errors="coerce")
                frame[c] = num if num.notna().all() and c != "subscriber_id" else frame[c]
            usage = tmp / "usage.parquet"
            frame.to_parquet(usage, index=False)
        else:
            data = csv_bytes(header, rows)
            if kind == "damaged":  # cut somewhere and splice in random bytes
                at = int(len(data) * cut)
                data = data[:at] + junk + data[at:]
            usage = tmp / "usage.csv"
            usage.write_bytes(data)
        r = prepare(tmp / "run", usage, f"data.max_missing_frac={frac}")
        check_outcome(r, tmp / "run")


SECTION_VALUES = {
    "train.epochs": st.integers(-2, 3),
    "train.batch_size": st.integers(-1, 4),
    "train.lr": st.floats(-1, 1, allow_nan=False),
    "train.val_frac": st.floats(-0.5, 1.5, allow_nan=False),
    "cluster.k": st.one_of(st.none(), st.integers(-1, 2000)),
    "cluster.k_min": st.integers(-1, 12),
    "cluster.k_max": st.integers(-1, 12),
    "cluster.sample_size": st.integers(-1, 10),
    "data.max_missing_frac": st.floats(-1, 2, allow_nan=False),
    "data.id_column": st.sampled_from(["subscriber_id", "", "period", "nope", "data_mb"]),
    "data.period_column": st.sampled_from(["period", "", "subscriber_id", "data_mb"]),
    "data.metrics": st.sampled_from([{}, {"revenue": "data_mb"}, {"a": "nope"}, {"a": 1}]),
    "data.layout": st.sampled_from(["long", "wide", "table", 3]),
    "data.churn_definition": st.sampled_from(["label", "no_usage", "inactivity", "x"]),
    "data.label_periods": st.integers(-1, 3),
    "data.window_offset": st.integers(-1, 2),
    "data.pseudonymize": st.booleans(),
    "data.pseudonym_chars": st.integers(-1, 70),
    "model.encoder": st.sampled_from(["gru", "transformer", "rnn"]),
    "model.hidden_size": st.integers(-1, 8),
    "model.n_heads": st.integers(0, 3),
    "out_dir": st.sampled_from(["", " "]),
    "segments.value_quantiles": st.lists(st.floats(-0.5, 1.5, allow_nan=False), max_size=5),
    "segments.stability.bands": st.lists(st.floats(-1, 2, allow_nan=False), max_size=3),
    "nosuch": st.integers(),
}


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(SECTION_VALUES)), st.none(), max_size=5).flatmap(
        lambda keys: st.fixed_dictionaries({k: SECTION_VALUES[k] for k in keys})
    )
)
def test_random_config_dicts_run_or_give_one_error_line(values):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        usage = tmp / "usage.csv"
        usage.write_text(OK_CSV)
        data: dict = {}
        for key, value in values.items():
            node = data
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        data.setdefault("data", {})["usage"] = str(usage)
        data["data"].setdefault("revenue_metric", "data_mb")
        if "out_dir" not in data:
            data["out_dir"] = str(tmp / "run")
        path = tmp / "run.yaml"
        path.write_text(yaml.safe_dump(data))
        r = runner.invoke(app, ["prepare", "-c", str(path), "--device", "cpu"])
        outcome = check_outcome(r, Path(data["out_dir"]))
        if not data["out_dir"].strip():  # never the current directory
            assert outcome == "error", r.output


def test_no_internal_error_over_the_corpus(tmp_path):
    """Every corpus file as usage, static and labels table, and as config: no internal error."""
    for i, f in enumerate(sorted(CORPUS.iterdir())):
        if f.suffix == ".yaml":
            r = runner.invoke(app, ["prepare", "-c", str(f), "-s", f"out_dir={tmp_path / 'c'}"])
            assert check_outcome(r, tmp_path / "c") == "error", r.output
            continue
        ok = tmp_path / f"ok{i}.csv"
        ok.write_text(OK_CSV)
        for role in ("usage", "static", "labels"):
            out = tmp_path / f"{role}{i}"
            sets = [f"data.{role}={f}"] if role != "usage" else []
            r = prepare(out, f if role == "usage" else ok, *sets)
            check_outcome(r, out)
