"""Hyperparameter search: real Optuna studies with tiny models on a tiny synthetic world (CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage

from gpuseg.backend import resolve_backend
from gpuseg.config import DataConfig, RunConfig, SynthConfig, load_config, save_config
from gpuseg.data.prepare import prepare
from gpuseg.data.synth import generate
from gpuseg.errors import ConfigError
from gpuseg.io.store import read_json
from gpuseg.training.tune import SearchSpace, resolve_storage, tune

# Tiny models, so that a trial takes about a second on one CPU thread.
TINY = SearchSpace(
    hidden_size=(8, 16), num_layers=(1, 1), embedding_dim=(8, 8), batch_size=(64, 128)
)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors train fastest on one thread (and stay fast on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def panel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate(SynthConfig(n_subscribers=600, n_periods=12, horizon=4), root / "synth")
    data = DataConfig(
        usage=str(root / "synth" / "usage.parquet"),
        static=str(root / "synth" / "static.parquet"),
        labels=str(root / "synth" / "labels.parquet"),
    )
    prepare(data, resolve_backend("cpu"), root / "panel")
    return root / "panel"


def tiny_config(name: str = "tiny") -> RunConfig:
    cfg = RunConfig(name=name, seed=3)
    cfg.train.epochs = 2
    return cfg


def test_study_writes_best_config_that_loads(panel_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = tune(tiny_config(), panel_dir, run, n_trials=3, space=TINY)

    assert (run / "optuna.db").is_file()  # the default storage: SQLite in the run directory
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'optuna.db'}")
    assert len(study.trials) == 3
    assert all(t.state in FINISHED for t in study.trials)

    best = load_config(run / "best.yaml")  # what `gpuseg train --config RUN/best.yaml` reads
    assert summary["best_config"] == str(run / "best.yaml")
    assert summary["best"]["number"] == study.best_trial.number
    assert summary["best"]["params"] == study.best_params
    for dotted, value in study.best_params.items():
        section, key = dotted.split(".")
        assert getattr(getattr(best, section), key) == value, dotted
    assert best.train.epochs == 2 and best.seed == 3  # fixed settings carried over

    # the objective is the best validation AUC reported during training, never a test metric
    reported = study.best_trial.intermediate_values.values()
    assert study.best_value == pytest.approx(max(reported), abs=1e-4)

    written = read_json(run / "tune.json")
    assert [t["number"] for t in written["trials"]] == [0, 1, 2]
    assert written["best"]["value"] == pytest.approx(study.best_value)


def test_resume_adds_trials_to_the_same_study(panel_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = tune(tiny_config(), panel_dir, run, n_trials=2, space=TINY)
    again = tune(tiny_config(), panel_dir, run, n_trials=2, space=TINY, pruner="hyperband")

    assert sum(first["counts"].values()) == 2
    assert sum(again["counts"].values()) == 4
    assert [t["number"] for t in again["trials"]] == [0, 1, 2, 3]
    # reseeded on resume: the new trials are not replays of the first ones
    assert again["trials"][2]["params"] != again["trials"][0]["params"]
    assert load_config(run / "best.yaml").name == "tiny"


def test_resume_under_other_fixed_settings_is_refused(panel_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    tune(tiny_config(), panel_dir, run, n_trials=1, space=TINY)
    changed = tiny_config()
    changed.train.epochs = 3
    with pytest.raises(ConfigError, match="train.epochs"):
        tune(changed, panel_dir, run, n_trials=1, space=TINY)


WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from gpuseg.config import load_config
    from gpuseg.training.tune import SearchSpace, tune

    torch.set_num_threads(1)
    cfg_path, panel_dir, run_dir, journal, seed = sys.argv[1:]
    space = SearchSpace(hidden_size=(8, 16), num_layers=(1, 1), embedding_dim=(8, 8),
                        batch_size=(64, 128))
    tune(load_config(cfg_path), panel_dir, run_dir, n_trials=2, storage="journal:" + journal,
         study_name="shared", sampler_seed=int(seed), space=space)
    """
)


def test_two_processes_share_one_journal_study(panel_dir: Path, tmp_path: Path) -> None:
    cfg_path, journal = tmp_path / "tiny.yaml", tmp_path / "study.log"
    save_config(tiny_config(), cfg_path)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(cfg_path),
                str(panel_dir),
                str(tmp_path / f"run{i}"),
                str(journal),
                str(i),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for w in workers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0, out

    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 4
    assert all(t.state in FINISHED for t in study.trials)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    for i in range(2):  # each worker summarised the shared study and wrote a loadable best config
        assert load_config(tmp_path / f"run{i}" / "best.yaml").name == "tiny"


def test_resolve_storage(tmp_path: Path) -> None:
    assert (
        resolve_storage(None, tmp_path / "run")
        == f"sqlite:///{(tmp_path / 'run').resolve()}/optuna.db"
    )
    assert isinstance(
        resolve_storage(f"journal:{tmp_path / 'a' / 's.txt'}", tmp_path), JournalStorage
    )
    assert isinstance(resolve_storage(str(tmp_path / "study.log"), tmp_path), JournalStorage)
    assert isinstance(resolve_storage(str(tmp_path / "study.journal"), tmp_path), JournalStorage)
    url = "postgresql://tuner@db.example:5432/studies"  # passed through, no connection made
    assert resolve_storage(url, tmp_path) == url
    for bad in ("optuna.db", "nosuchdb://host/x", "journal:"):
        with pytest.raises(ConfigError, match="storage"):
            resolve_storage(bad, tmp_path)


def test_bad_arguments_are_config_errors(panel_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pruner"):
        tune(tiny_config(), panel_dir, tmp_path, n_trials=1, pruner="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_trials"):
        tune(tiny_config(), panel_dir, tmp_path, n_trials=0)
    with pytest.raises(ConfigError, match="batch_size"):
        tune(tiny_config(), panel_dir, tmp_path, n_trials=1, space=SearchSpace(batch_size=(100,)))
