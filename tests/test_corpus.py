"""Bad-input corpus (issue 6): every file in ``tests/corpus/`` through the real CLI.

Each bad case must end with exit code 1 and exactly one error line naming the file, the column or
key, and the row where one applies, with no traceback (``--debug`` shows it). Cases that are not
errors (unsorted periods, odd IDs) must be accepted and give the right panel. Binary cases
(truncated or corrupt Parquet) are generated here. Property tests (hypothesis) fuzz the long-table
loader, the period parser and the config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpuseg.backend import resolve_backend
from gpuseg.cli import app
from gpuseg.config import DataConfig, RunConfig, load_config
from gpuseg.data.panel import load_panel
from gpuseg.data.periods import parse_periods
from gpuseg.data.prepare import build_panel
from gpuseg.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
CPU = resolve_backend("cpu")
runner = CliRunner()

# file -> (extra overrides, substrings the one error line must hold)
USAGE_CASES = {
    "bad_quoting.csv": ([], ["cannot read usage table", "EOF inside string", "row 1"]),
    "ragged_long_row.csv": ([], ["cannot read usage table", "Expected 3 fields in line 3"]),
    "ragged_short_row.csv": ([], ["column 'data_mb' row 2", "missing value"]),
    "wrong_type.csv": ([], ["column 'data_mb' row 2", "non-numeric"]),
    "nan_value.csv": ([], ["column 'data_mb' row 3", "NaN"]),
    "inf_value.csv": ([], ["column 'data_mb' row 2", "infinite"]),
    # finite in float64, inf in the float32 panel and its window statistics
    "huge_value.csv": ([], ["column 'data_mb' row 3", "1e+300 is beyond the 1e+18"]),
    "negative_usage.csv": ([], ["column 'data_mb' row 3", "negative"]),
    "duplicate_rows.csv": ([], ["row 3", "duplicate (subscriber, period)"]),
    "empty.csv": ([], ["usage file is empty"]),
    "header_only.csv": ([], ["usage table has no rows"]),
    "mixed_periods.csv": ([], ["column 'period' row 2", "period format differs"]),
    "missing_period.csv": ([], ["column 'period' row 2", "missing period"]),
    "missing_id.csv": ([], ["column 'subscriber_id' row 2", "missing subscriber id"]),
    "no_id_column.csv": ([], ["column 'subscriber_id'", "data.id_column", "not found"]),
    "usage_ok.csv": (
        ["data.labels=" + str(CORPUS / "labels_unknown.csv")],
        ["labels_unknown.csv", "row 3", "label for a subscriber not in the usage table"],
    ),
}
CONFIG_CASES = {
    "config_unknown_key.yaml": ["config_unknown_key.yaml", "unknown key 'train.epoch'"],
    "config_mistyped.yaml": ["config_mistyped.yaml", "train.epochs", "expected an integer"],
    "config_bad_choice.yaml": ["config_bad_choice.yaml", "model.encoder", "'rnn'"],
    "config_bad_yaml.yaml": ["config_bad_yaml.yaml", "line 3", "invalid YAML"],
}


def one_error_line(output: str, exit_code: int, strict: bool = True) -> str:
    """The single ``error:`` line of a failed command (exit code 1, no traceback).

    ``strict``: besides the error only the backend's one-line device note may appear (``train``
    also shows its progress bar on stdout before failing).
    """
    assert exit_code == 1, output
    assert "Traceback" not in output, output
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, output
    if strict:
        assert all(ln.startswith("error:") or ln == "device cpu requested" for ln in lines), output
    return errors[0]


def prepare_args(usage: Path, out: Path, *sets: str) -> list[str]:
    args = ["prepare", "-s", f"out_dir={out}", "-s", f"data.usage={usage}", "--device", "cpu"]
    args += ["-s", "data.revenue_metric=data_mb"]  # the corpus files hold one metric
    for s in sets:
        args += ["-s", s]
    return args


def test_every_corpus_file_is_used():
    cases = set(USAGE_CASES) | set(CONFIG_CASES) | {"labels_unknown.csv"}
    cases |= {"unsorted_periods.csv", "odd_ids.csv"}
    assert {p.name for p in CORPUS.iterdir()} == cases


@pytest.mark.parametrize("name", sorted(USAGE_CASES))
def test_bad_usage_file_gives_one_line(name, tmp_path):
    sets, expected = USAGE_CASES[name]
    r = runner.invoke(app, prepare_args(CORPUS / name, tmp_path / "r", *sets))
    line = one_error_line(r.output, r.exit_code)
    for part in [name if not sets else "", *expected]:
        assert part in line, (part, line)
    assert not (tmp_path / "r" / "panel" / "meta.json").exists()  # nothing half-made


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_bad_config_gives_one_line(name):
    r = runner.invoke(app, ["prepare", "-c", str(CORPUS / name)])
    line = one_error_line(r.output, r.exit_code)
    for part in CONFIG_CASES[name]:
        assert part in line, (part, line)


@pytest.mark.parametrize("how", ["truncated", "garbage", "magic-only"])
def test_corrupt_parquet_gives_one_line(how, tmp_path):
    good = tmp_path / "good.parquet"
    pd.read_csv(CORPUS / "usage_ok.csv").to_parquet(good, index=False)
    data = good.read_bytes()
    bad = tmp_path / "usage.parquet"
    bad.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"\x00junk" * 40, "magic-only": b"PAR1"}[
            how
        ]
    )
    r = runner.invoke(app, prepare_args(bad, tmp_path / "r"))
    line = one_error_line(r.output, r.exit_code)
    assert "usage.parquet" in line
    assert "cannot read usage table" in line or "usage file is not Parquet" in line


def test_unsorted_periods_are_accepted_and_sorted(tmp_path):
    r = runner.invoke(app, prepare_args(CORPUS / "unsorted_periods.csv", tmp_path / "r"))
    assert r.exit_code == 0, r.output
    panel = load_panel(tmp_path / "r" / "panel", mmap=False)
    assert panel.meta["periods"] == ["2026-01-05", "2026-02-02", "2026-03-02"]
    assert panel.ids.tolist() == ["A", "B"]
    assert panel.usage[:, :, 0].tolist() == [[1, 2, 3], [10, 20, 30]]
    assert panel.mask.all()


def test_non_ascii_and_very_long_ids_round_trip_exactly(tmp_path):
    """No length limit on IDs: a 5,000-character ID, non-ASCII IDs and an ID holding a comma and
    quotes are accepted and come out of the panel exactly as they went in."""
    raw = pd.read_csv(CORPUS / "odd_ids.csv", dtype={"subscriber_id": str})
    r = runner.invoke(app, prepare_args(CORPUS / "odd_ids.csv", tmp_path / "r"))
    assert r.exit_code == 0, r.output
    panel = load_panel(tmp_path / "r" / "panel", mmap=False)
    assert panel.ids.tolist() == sorted(raw["subscriber_id"].unique())
    assert max(len(i) for i in panel.ids) == 5000 and "日本語-42" in panel.ids
    for i, sid in enumerate(panel.ids):
        want = raw[raw["subscriber_id"] == sid].sort_values("period")["data_mb"].tolist()
        assert panel.usage[i, :, 0].tolist() == want


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="80")  # a narrow terminal must not wrap the error line
    return subprocess.run(
        [sys.executable, "-m", "gpuseg", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_real_subprocess_one_line_and_debug_traceback(tmp_path):
    args = prepare_args(CORPUS / "ragged_long_row.csv", tmp_path / "r")
    p = _cli(*args)
    assert p.stdout.strip() == "", p.stdout
    line = one_error_line(p.stderr, p.returncode)
    assert "ragged_long_row.csv" in line and "line 3" in line
    p = _cli(*args, "--debug")
    assert p.returncode != 0 and "Traceback" in p.stderr and "DataError" in p.stderr


# ---------------------------------------------------------------------------------------------
# Property tests


LONG_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "é", "10", "9"]),
        st.integers(min_value=1, max_value=6),
        st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False, width=32),
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda r: (r[0], r[1]),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=LONG_ROWS,
    suffix=st.sampled_from([".csv", ".parquet"]),
    frac=st.sampled_from([1.0, 0.5]),
)
def test_long_tables_round_trip_into_the_panel(rows, suffix, frac):
    """Random long tables: values and mask land in the right cell; input = output + rejected."""
    frame = pd.DataFrame(rows, columns=["subscriber_id", "period", "x"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"usage{suffix}"
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        cfg = DataConfig(usage=str(path), max_missing_frac=frac)
        panel, _, rejects = build_panel(cfg, CPU)
    ids = sorted(frame["subscriber_id"].astype(str).unique())
    periods = sorted(frame["period"].unique())
    c = panel.meta["counts"]
    assert c["input"] == len(ids) == c["output"] + c["rejected"] == len(panel) + len(rejects)
    assert sorted([*panel.ids, *rejects["subscriber_id"].astype(str)]) == ids
    assert panel.meta["periods"] == [str(p) for p in periods]
    cells = {(str(s), p): v for s, p, v in rows}
    for i, sid in enumerate(panel.ids):
        for j, p in enumerate(periods):
            assert panel.mask[i, j] == ((sid, p) in cells)
            assert panel.usage[i, j, 0] == np.float32(cells.get((sid, p), 0.0))
    for sid in rejects["subscriber_id"].astype(str):  # rejected only for too many missing periods
        present = sum((sid, p) in cells for p in periods)
        assert 1 - present / len(periods) > frac


def _fmt(day: np.datetime64, fmt: str) -> str:
    d = pd.Timestamp(day)
    return {
        "iso": d.strftime("%Y-%m-%d"),
        "month": d.strftime("%Y-%m"),
        "week": f"{d.isocalendar()[0]}-W{d.isocalendar()[1]:02d}",
        "compact": d.strftime("%Y%m%d"),
        "int": str(d.toordinal()),
    }[fmt]


PERIOD_VALUES = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=20000),
        st.sampled_from(["iso", "month", "week", "compact", "int"]),
    ),
    min_size=1,
    max_size=12,
).map(lambda xs: [_fmt(np.datetime64("1990-01-01") + np.timedelta64(d, "D"), f) for d, f in xs])
JUNK = st.lists(st.text(max_size=8), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(values=PERIOD_VALUES | JUNK | st.lists(st.sampled_from(["", " ", "2026-13", "2026-W54"])))
def test_period_parser_is_consistent_or_a_data_error(values):
    """Any mix of period labels parses consistently (same keys, any order) or raises DataError."""
    arr = np.asarray(values, dtype=object)
    try:
        keys = parse_periods(arr, Path("u.csv"), "period")
    except DataError as exc:
        assert "\n" not in str(exc) and "u.csv" in str(exc) and "'period'" in str(exc)
        return
    assert keys.dtype == np.int64 and len(keys) == len(values)
    order = np.random.default_rng(0).permutation(len(values))
    assert parse_periods(arr[order], Path("u.csv"), "period").tolist() == keys[order].tolist()
    same = {v: k for v, k in zip(values, keys.tolist(), strict=True)}
    assert [same[v] for v in values] == keys.tolist()  # one label, one key


SECTION_KEYS = [
    "seed",
    "device",
    "out_dir",
    "train.epochs",
    "train.lr",
    "train.amp",
    "train.pos_weight",
    "model.encoder",
    "data.metrics",
    "data.static_columns",
    "data.pseudonymize",
    "data.id_key_file",
    "cluster.k",
    "synth.n_subscribers",
    "segments.stability.bands",
    "train.epochs.deeper",
    "nosuch",
    "model.nosuch",
    "data",
]
YAML_TEXT = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(["true", "no", "null", "~", "[1, 2]", "{a: 1}", "gru", "'3'", "1e-3", "[1,"]),
    st.text(max_size=10),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SECTION_KEYS), YAML_TEXT), max_size=4))
def test_random_overrides_load_or_raise_config_error(pairs):
    try:
        cfg = load_config(None, [f"{k}={v}" for k, v in pairs])
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(cfg, RunConfig)


# ---------------------------------------------------------------------------------------------
# Safe loading: run directories handed to gpuseg are validated, pickles are never executed


class _Payload:
    """Unpickling this creates ``marker``: the proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def run_with_panel(tiny_panel_dir, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_panel_dir, run / "panel")
    return run


def _train(run: Path):
    sets = ["-s", f"out_dir={run}", "-s", "train.epochs=1", "--device", "cpu"]
    return runner.invoke(app, ["train", *sets])


def _train_error(run: Path) -> str:
    r = _train(run)
    return one_error_line(r.output, r.exit_code, strict=False)


@pytest.mark.parametrize("name", ["churn.npy", "usage.npy"])
def test_pickled_npy_in_a_panel_is_refused_unexecuted(run_with_panel, tmp_path, name):
    marker = tmp_path / "pwned"
    evil = np.empty(3, dtype=object)
    evil[:] = [_Payload(marker)] * 3
    np.save(run_with_panel / "panel" / name, evil, allow_pickle=True)
    r = _train(run_with_panel)
    line = one_error_line(r.output, r.exit_code, strict=False)
    assert name in line and "not a plain numeric array" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        ("meta.json", b"{not json", "not valid JSON"),
        ("mask.npy", None, "missing"),
        ("usage.npy", b"\x93NUMPY garbage", "not a plain numeric array"),
        ("index.parquet", b"PAR1 garbage PAR1", "index.parquet"),
    ],
)
def test_damaged_panel_is_refused_with_a_clear_message(run_with_panel, name, damage, expected):
    path = run_with_panel / "panel" / name
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage)
    line = _train_error(run_with_panel)
    assert name in line and expected in line, line


@pytest.mark.parametrize(
    "text", ["data: [unclosed\n", "train:\n  epochz: 3\n"], ids=["garbled", "older-version"]
)
def test_unreadable_run_config_is_refused(run_with_panel, text):
    (run_with_panel / "config.yaml").write_text(text)
    line = _train_error(run_with_panel)
    assert "config.yaml" in line and "unreadable config" in line


@pytest.mark.parametrize("name", ["checkpoint/state.safetensors", "model.safetensors"])
def test_pickle_checkpoint_is_refused_unexecuted(run_with_panel, tmp_path, name):
    """A torch.save (pickle) file where gpuseg expects safetensors is refused, never unpickled."""
    marker = tmp_path / "pwned"
    path = run_with_panel / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"w": _Payload(marker)}, path)
    if name.startswith("checkpoint"):
        (path.parent / "state.json").write_text("{}")
        line = _train_error(run_with_panel)
    else:
        (run_with_panel / "model.json").write_text(
            json.dumps(dict(n_metrics=1, n_static=0, n_periods=2, model={}, platt=[1, 0]))
        )
        r = runner.invoke(app, ["embed", "-s", f"out_dir={run_with_panel}", "--device", "cpu"])
        line = one_error_line(r.output, r.exit_code)
    assert Path(name).name in line and "safetensors" in line, line
    assert not marker.exists()


def test_no_unsafe_loader_in_the_library():
    """No pickle-based loading anywhere in gpuseg: torch.load only with weights_only=True, no
    pickle/joblib/dill loads, YAML only through safe_load, numpy never with allow_pickle=True."""
    import re

    unsafe = re.compile(
        r"pickle\.loads?\(|joblib\.load\(|dill\.load|read_pickle\(|yaml\.load\(|yaml\.unsafe_load"
        r"|allow_pickle\s*=\s*True|torch\.load\((?![^)]*weights_only\s*=\s*True)"
    )
    hits = [
        f"{p.name}:{i}: {line.strip()}"
        for p in sorted((ROOT / "gpuseg").glob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if unsafe.search(line)
    ]
    assert hits == []
