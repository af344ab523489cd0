"""Run-directory integrity and the remaining bad inputs (issue 17): one writer per run directory,
fingerprinted inputs, every run-directory file checked, write failures named, bounded reads, ids
never in model or meta files. Each test is a case that failed before (exit 2, a silent wrong
result, a leak, SIGBUS) and is one error line (exit 1) or a correct result now."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.errors import WriteError
from gpuseg.io.store import reserve, temp_path

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
FAST = [
    "-s", "train.epochs=1", "-s", "cluster.k=3", "-s", "cluster.stability_repeats=0",
    "-s", "report.html=false", "-s", "report.map_sample=0", "--device", "cpu",
]  # fmt: skip


def one_line(r, *parts: str) -> str:
    """The one error line of a failed CLI call (exit 1, no traceback, no internal error)."""
    out = r.output
    assert r.exit_code == 1, out
    assert "Traceback" not in out and "internal error" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out
    for p in parts:
        assert p in errors[0], (p, errors[0])
    return errors[0]


def data_sets(world, usage=None, static=None, labels=None) -> list[str]:
    return [
        "-s", f"data.usage={usage or world.usage}",
        "-s", f"data.static={static or world.static}",
        "-s", f"data.labels={labels or world.labels}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tiny_world, tmp_path_factory) -> Path:
    """A finished run (tiny world, one epoch), copied by each test that damages it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    r = runner.invoke(app, ["run", "-s", f"out_dir={run}", *data_sets(tiny_world), *FAST])
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    cfg = (run / "config.yaml").read_text().replace(str(finished), str(run))
    (run / "config.yaml").write_text(cfg)
    return run


def stage(name: str, run: Path, *extra: str):
    return runner.invoke(app, [name, "-c", str(run / "config.yaml"), *extra, "--device", "cpu"])


# ---------------------------------------------------------------------------------------------
# 1. One writer per run directory


def test_second_writer_stops_naming_the_holders_pid(tiny_world, tmp_path):
    """Two prepare runs into one out_dir used to mix their panels; now the second one stops."""
    run = tmp_path / "run"
    code = (
        "import sys, time\nfrom gpuseg.io.lock import RunDirLock\n"
        f"with RunDirLock({str(run)!r}):\n    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = runner.invoke(app, ["prepare", "-s", f"out_dir={run}", *data_sets(tiny_world)])
        one_line(r, str(run), "in use by another gpuseg process", f"pid {holder.pid}")
        assert not (run / "panel").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    r = runner.invoke(app, ["prepare", "-s", f"out_dir={run}", *data_sets(tiny_world), *FAST])
    assert r.exit_code == 0, r.output  # the kernel released the lock with the holder


def test_temp_names_are_unique(tmp_path):
    a, b = temp_path(tmp_path / "usage.npy"), temp_path(tmp_path / "usage.npy")
    assert a != b and a.name.startswith(".usage.npy.") and a.exists() and b.exists()


# ---------------------------------------------------------------------------------------------
# 2. Fingerprinted inputs


def test_changed_data_retrains_instead_of_reusing_the_model(tiny_world, tmp_path):
    """Re-running `gpuseg run` after the input files were replaced at the same paths used to reuse
    the finished checkpoint (byte-identical weights, no message)."""
    data = tmp_path / "data"
    shutil.copytree(tiny_world.dir, data)
    run = tmp_path / "run"
    sets = ["run", "-s", f"out_dir={run}", *FAST]
    sets += data_sets(tiny_world, data / "usage.parquet", data / "static.parquet")
    sets += ["-s", f"data.labels={data / 'labels.parquet'}"]
    assert runner.invoke(app, sets).exit_code == 0
    weights = (run / "model.safetensors").read_bytes()
    r = runner.invoke(app, sets)  # same data: the finished model is reused, silently and rightly
    assert r.exit_code == 0 and "changed since" not in r.output
    assert (run / "model.safetensors").read_bytes() == weights
    usage = pd.read_parquet(data / "usage.parquet")
    usage["data_mb"] = usage["data_mb"] * 2 + 1
    usage.to_parquet(data / "usage.parquet", index=False)
    r = runner.invoke(app, sets)
    assert r.exit_code == 0, r.output
    assert "changed since the checkpoint was made; training from scratch" in r.output
    assert (run / "model.safetensors").read_bytes() != weights


def _edit_config(run: Path, old: str, new: str) -> None:
    cfg = run / "config.yaml"
    assert old in cfg.read_text()
    cfg.write_text(cfg.read_text().replace(old, new))


def test_a_later_stage_refuses_changed_inputs(run_copy, tiny_world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_world.dir, data)
    usage = pd.read_parquet(data / "usage.parquet")
    usage["data_mb"] = usage["data_mb"] + 1
    usage.to_parquet(data / "usage.parquet", index=False)
    _edit_config(run_copy, str(tiny_world.usage), str(data / "usage.parquet"))
    assert stage("prepare", run_copy).exit_code == 0
    # the panel changed under the trained model: embed, cluster and report refuse
    one_line(stage("embed", run_copy), "panel/", "changed since train", "gpuseg train")
    one_line(stage("cluster", run_copy), "changed since embed", "gpuseg embed")
    one_line(stage("report", run_copy), "changed since embed", "gpuseg embed")
    # an input table replaced after prepare: train refuses
    usage.iloc[: len(usage) // 2].to_parquet(data / "usage.parquet", index=False)
    one_line(stage("train", run_copy), "data.usage", "changed since prepare")


def test_fast_and_full_fingerprints_see_a_change(tmp_path):
    from gpuseg.io.fingerprint import changed, fingerprint

    p = tmp_path / "x.bin"
    data = bytearray(np.random.default_rng(0).bytes(20 << 20))
    p.write_bytes(data)
    fast, full = fingerprint(p), fingerprint(p, full=True)
    data[len(data) // 2 + 12345] ^= 1  # a byte in the middle, outside the fast hash's samples
    p.write_bytes(data)
    assert changed({"x": full}, {"x": fingerprint(p, full=True)}) == ["x"]
    data[-5] ^= 1  # the last MiB: the fast hash sees it
    p.write_bytes(data)
    assert changed({"x": fast}, {"x": fingerprint(p)}) == ["x"]


# ---------------------------------------------------------------------------------------------
# 4. Damaged run directories: one line naming the file


def _json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(edit(data)))


def _parquet(path: Path, edit) -> None:
    edit(pd.read_parquet(path)).to_parquet(path, index=False)


def _set(d: dict, keys: list[str], value) -> dict:
    node = d
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return d


DAMAGE = {
    "metrics.json list": ("metrics.json", lambda p: p.write_text("[1, 2]"), "report", "html"),
    "metrics.json string": (
        "metrics.json",
        lambda p: _json(p, lambda d: _set(d, ["churn", "roc_auc"], "high")),
        "report",
        "html",
    ),
    "cluster.json list": ("cluster.json", lambda p: p.write_text("[]"), "report", ""),
    "cluster.json string": (
        "cluster.json", lambda p: _json(p, lambda d: _set(d, ["k"], "three")), "report", "",
    ),
    "segments truncated": (
        "segments.parquet", lambda p: p.write_bytes(p.read_bytes()[:200]), "report", "",
    ),
    "split out of range": (
        "split.npz",
        lambda p: np.savez(p.with_suffix(""), train=np.arange(5), val=np.arange(5) + 10**6,
                           test=np.arange(5)),
        "report",
        "html",
    ),
    "embeddings NaN": (
        "embeddings.parquet",
        lambda p: _parquet(p, lambda t: t.assign(e1=t["e1"].where(t.index != 7))),
        "cluster",
        "",
    ),
    "predictions text": (
        "predictions.parquet",
        lambda p: _parquet(p, lambda t: t.assign(churn_prob=t["churn_prob"].astype(str))),
        "report",
        "",
    ),
    "meta.json list": ("panel/meta.json", lambda p: p.write_text("[1]"), "train", ""),
    "meta.json no metrics": (
        "panel/meta.json", lambda p: _json(p, lambda d: {**d, "metrics": None}), "train", "",
    ),
    "usage.npy shape": (
        "panel/usage.npy", lambda p: np.save(p, np.zeros((3, 2), np.float32)), "train", "",
    ),
    "mask.npy rows": ("panel/mask.npy", lambda p: np.save(p, np.zeros((3, 12), bool)), "train", ""),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_run_file_is_named(run_copy, case):
    """These used to end in `internal error` (exit 2) or a silent wrong result."""
    name, damage, command, html = DAMAGE[case]
    damage(run_copy / name)
    if html:  # the run was made without the HTML page, which reads these files
        _edit_config(run_copy, "html: false", "html: true")
    one_line(stage(command, run_copy), str(run_copy / name))


def test_score_needs_the_static_table_and_its_columns(run_copy, tiny_world, tmp_path):
    out = tmp_path / "s.parquet"
    base = ["score", str(run_copy), "--usage", str(tiny_world.usage), "-o", str(out)]
    one_line(runner.invoke(app, base), "trained with", "--static")
    static = pd.read_parquet(tiny_world.static).drop(columns=["tenure_months"])
    static.to_parquet(tmp_path / "st.parquet", index=False)
    r = runner.invoke(app, [*base, "--static", str(tmp_path / "st.parquet")])
    one_line(r, "st.parquet", "static column 'tenure_months' used in training not found")


def test_unseen_category_at_score_is_said(run_copy, tiny_world, tmp_path):
    static = pd.read_parquet(tiny_world.static)
    static.loc[:9, "plan_type"] = "brand-new-plan"
    static.to_parquet(tmp_path / "st.parquet", index=False)
    args = ["score", str(run_copy), "--usage", str(tiny_world.usage), "--static"]
    r = runner.invoke(app, [*args, str(tmp_path / "st.parquet"), "-o", str(tmp_path / "s.pq")])
    assert r.exit_code == 0, r.output
    assert (
        "static column 'plan_type': 10 subscribers hold a category unseen in training" in r.output
    )


# ---------------------------------------------------------------------------------------------
# Write failures: named, temporary files removed, a full disk never SIGBUS


def _no_temp_files(d: Path) -> None:
    left = [p for p in d.rglob("*.tmp")] if d.exists() else []
    assert left == [], left


def test_output_under_a_file_is_one_line(tiny_world, run_copy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = runner.invoke(app, ["prepare", "-s", f"out_dir={blocker / 'run'}", *data_sets(tiny_world)])
    one_line(r, str(blocker / "run"))
    out = blocker / "scores.parquet"
    r = runner.invoke(app, ["score", str(run_copy), "--usage", str(tiny_world.usage), "--static",
                            str(tiny_world.static), "-o", str(out)])  # fmt: skip
    one_line(r, str(blocker))
    r = runner.invoke(app, ["targets", str(run_copy), "-o", str(blocker / "t.csv")])
    one_line(r, str(blocker))


def test_file_size_limit_is_an_error_not_a_crash(tiny_world, tmp_path):
    """A disk that fills up mid-write (here: RLIMIT_FSIZE, which fails writes the same way ENOSPC
    does) used to kill prepare with SIGBUS (exit 135) through a sparse memory map, leaving a
    temporary file behind; now the write fails with one line and no temp file."""
    run = tmp_path / "run"
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "from gpuseg.cli import app\n"
        f"sys.argv = ['gpuseg', 'prepare', '-s', 'out_dir={run}', '--device', 'cpu', "
        f"'-s', 'data.usage={tiny_world.usage}', '-s', 'data.static={tiny_world.static}', "
        f"'-s', 'data.labels={tiny_world.labels}']\n"
        "app()\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 1, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "cannot write" in lines[0] and str(run) in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    _no_temp_files(run)


def test_reserve_turns_no_space_into_a_write_error(tmp_path, monkeypatch):
    import errno

    p = tmp_path / "big.npy"
    p.write_bytes(b"\0" * 10)

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(WriteError, match="big.npy: cannot write .No space left on device"):
        reserve(p)


# ---------------------------------------------------------------------------------------------
# 5. Bounded reads, files of the wrong kind named by kind


def _prepare(tmp_path: Path, usage: Path, *sets: str):
    args = ["prepare", "-s", f"out_dir={tmp_path / 'r'}", "-s", f"data.usage={usage}", *sets]
    return runner.invoke(app, [*args, "--device", "cpu"])


def test_a_big_file_without_newlines_is_refused_after_a_bounded_read(tmp_path):
    """A 2 GB file without newlines took 15 GB of memory, then said "no rows"."""
    from gpuseg.io.sniff import MAX_HEADER_BYTES

    p = tmp_path / "usage.csv"
    with open(p, "wb") as fh:
        for _ in range(MAX_HEADER_BYTES // (1 << 20) + 2):
            fh.write(b"a" * (1 << 20))
    one_line(_prepare(tmp_path, p), "usage.csv", "no line break in its first 4 MiB")


@pytest.mark.parametrize(
    "name, make, expected",
    [
        ("json.csv", lambda p: p.write_text('{"subscriber_id": 1}\n'), "looks like JSON"),
        ("pq.csv", lambda p: pd.DataFrame({"a": [1]}).to_parquet(p), "holds a Parquet file"),
        ("x.csv", lambda p: p.write_bytes(b"PK\x03\x04rest"), "zip archive"),
        ("text.parquet", lambda p: p.write_text("a,b\n1,2\n"), "not Parquet: it holds text"),
        ("dir.csv", lambda p: p.mkdir(), "is a directory"),
        ("loop.csv", lambda p: p.symlink_to(p), "symlink loop"),
        ("dup.csv", lambda p: p.write_text("subscriber_id,period,x,x\nA,2026-01-05,1,2\n"),
         "column 'x' appears twice in the header (columns 3 and 4)"),
    ],
)  # fmt: skip
def test_files_of_the_wrong_kind_are_named_by_kind(tmp_path, name, make, expected):
    p = tmp_path / name
    make(p)
    one_line(_prepare(tmp_path, p), name, expected)


def test_stray_old_period_is_refused(tmp_path):
    """One stray 1900-01-01 row used to add a period next to 2026."""
    p = tmp_path / "usage.csv"
    rows = [f"A,2026-01-{d:02d},1" for d in (5, 12, 19, 26)] + ["B,1900-01-01,2", "B,2026-01-05,2"]
    p.write_text("subscriber_id,period,x\n" + "\n".join(rows) + "\n")
    one_line(_prepare(tmp_path, p), "column 'period'", "1900-01-01", "stray row")
    p.write_text("subscriber_id,period,x\nA,202611,1\nA,202612,1\nA,202701,1\nA,202703,1\n")
    assert _prepare(tmp_path / "m", p, "-s", "data.revenue_metric=x").exit_code == 0  # YYYYMM


def test_wide_layout_on_long_data_says_so(tiny_world, tmp_path):
    r = _prepare(tmp_path, tiny_world.usage, "-s", "data.layout=wide")
    one_line(r, "duplicate subscriber row", "set data.layout=long")


def test_non_utf8_ids_are_one_line(tmp_path):
    p = tmp_path / "u.parquet"
    ids = pa.array([b"A\xff", b"B"], pa.binary())
    pq.write_table(pa.table({"subscriber_id": ids, "period": ["2026-01-05"] * 2, "x": [1.0, 2]}), p)
    one_line(_prepare(tmp_path, p), "column 'subscriber_id' row 1", "not UTF-8")
    wide = _prepare(tmp_path / "w", p, "-s", "data.layout=wide")
    one_line(wide, "column 'subscriber_id' row 1")
    c = tmp_path / "u.csv"
    c.write_bytes(b"subscriber_id,period,x\nA\xff,2026-01-05,1\n")
    one_line(_prepare(tmp_path / "c", c), "u.csv")


def test_cluster_k_above_the_subscribers_names_the_key(run_copy):
    _parquet(run_copy / "embeddings.parquet", lambda t: t.iloc[:50])
    _edit_config(run_copy, "k: 3", "k: 100")
    r = stage("cluster", run_copy)
    one_line(r, "cluster.k=100: needs more subscribers than segments; there are 50")


# ---------------------------------------------------------------------------------------------
# 6. Ids never in model.json or panel/meta.json


def test_static_columns_holding_ids_are_left_out(tiny_world, tmp_path):
    static = pd.read_parquet(tiny_world.static)
    n = len(static)
    static["msisdn"] = [f"4479{10**8 + i}" for i in range(n)]
    static["copy_of_id"] = static["subscriber_id"]
    static["token"] = [f"tok{i * 7919:09d}" for i in range(n)]
    static["customer_email"] = [f"c{i}@example.com" for i in range(n)]
    static["consent_email"] = np.arange(n) % 3 == 0  # a consent flag, not an address
    static.to_parquet(tmp_path / "st.parquet", index=False)
    run = tmp_path / "run"
    sets = ["-s", f"out_dir={run}", *data_sets(tiny_world, static=tmp_path / "st.parquet")]
    r = runner.invoke(app, ["run", *sets, *FAST])
    assert r.exit_code == 0, r.output
    for col in ("msisdn", "copy_of_id", "token", "customer_email"):
        assert f"static column '{col}' left out of the model" in r.output
    assert "'consent_email' left out" not in r.output
    ids = set(static["subscriber_id"].astype(str)) | set(static["msisdn"]) | set(static["token"])
    for name in ("model.json", "panel/meta.json"):
        text = (run / name).read_text()
        strings = _strings(text)
        assert not (strings & ids), (name, sorted(strings & ids)[:3])
        assert "msisdn" not in json.loads((run / name).read_text())["static_features"]


def _strings(text: str) -> set[str]:
    out: set[str] = set()

    def walk(v):
        if isinstance(v, str):
            out.add(v.split("=", 1)[-1])
            out.add(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(json.loads(text))
    return out


def test_static_columns_naming_the_id_column_leave_it_out(tiny_world, tmp_path):
    sets = ["-s", "data.static_columns=[subscriber_id, plan_type]"]
    r = _prepare(tmp_path, tiny_world.usage, "-s", f"data.static={tiny_world.static}", *sets)
    assert r.exit_code == 0, r.output
    assert "static column 'subscriber_id' left out of the model" in r.output
    meta = json.loads((tmp_path / "r" / "panel" / "meta.json").read_text())
    assert [e["column"] for e in meta["static_encoding"]] == ["plan_type"]


def test_headerless_csv_error_shows_no_values(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text("447900123456,2026-01-05,3.5\n447900654321,2026-01-05,1.0\n")
    line = one_line(_prepare(tmp_path, p), "column 'subscriber_id'", "does the file have a header")
    assert "447900123456" not in line and "2026-01-05" not in line


def test_lock_is_released_on_errors(tiny_world, tmp_path):
    """A failed command releases its lock: the next one starts at once."""
    run = tmp_path / "run"
    r = runner.invoke(app, ["prepare", "-s", f"out_dir={run}", "-s", "data.usage=nope.csv"])
    one_line(r, "nope.csv")
    t0 = time.time()
    r = runner.invoke(app, ["prepare", "-s", f"out_dir={run}", "-s", "data.usage=nope.csv"])
    one_line(r, "nope.csv")
    assert time.time() - t0 < 30
