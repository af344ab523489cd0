"""Crash safety: a training subprocess killed mid-run resumes and ends with the same metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SETS = ["-s", "train.epochs=8", "-s", "train.patience=8", "-s", "device=cpu"]


def train(run_dir: Path, env: dict) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(ROOT / "train" / "train.py"),
        "-c",
        str(TINY),
        "-s",
        f"out_dir={run_dir}",
        *SETS,
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def prepare(run_dir: Path, env: dict) -> None:
    from typer.testing import CliRunner

    from gpuseg.cli import app

    r = CliRunner().invoke(
        app, ["run", "-c", str(TINY), "-s", f"out_dir={run_dir}", *SETS, "-s", "train.epochs=8"]
    )
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")


def metrics(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: m[k] for k in ("churn", "migration", "best_epoch", "epochs_run", "val_auc")}


def test_killed_training_resumes_to_the_same_metrics(tmp_path: Path, env: dict):
    # the uninterrupted reference: the whole pipeline, then training again from scratch
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for d in (ref, killed):
        prepare(d, env)
    for d in (ref, killed):
        import shutil

        shutil.rmtree(d / "checkpoint")
        (d / "metrics.json").unlink()
    p = train(ref, env)
    assert p.wait(timeout=300) == 0, p.stderr.read()

    # kill -9 the second run once it has finished at least two epochs (and before the last)
    p = train(killed, env)
    state = killed / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if state.is_file():
            try:
                if json.loads(state.read_text())["epoch"] >= 2:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        if p.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {p.stderr.read()}")
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    saved = json.loads(state.read_text())
    assert 2 <= saved["epoch"] < 8 and not saved["done"]
    assert not (killed / "metrics.json").exists()

    p = train(killed, env)  # resumes from the checkpoint
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert metrics(killed) == metrics(ref)


def test_rerunning_a_finished_training_is_idempotent(tmp_path: Path, env: dict):
    run = tmp_path / "run"
    prepare(run, env)
    first = metrics(run)
    weights = (run / "model.safetensors").read_bytes()
    p = train(run, env)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert metrics(run) == first
    assert (run / "model.safetensors").read_bytes() == weights
