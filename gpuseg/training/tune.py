"""Hyperparameter search: an Optuna study over the model and training settings.

Each trial trains the subscriber model on the prepared panel with sampled settings and is scored by
its best **validation** churn AUC (maximised); test metrics are never looked at. Trials report the
validation AUC after every epoch, so a median or Hyperband pruner stops unpromising ones early.

Storage (``storage=``), resolved by :func:`resolve_storage`:

- nothing: a SQLite file in the run directory, ``sqlite:///RUN/optuna.db``;
- ``journal:PATH``, or a path ending in ``.log`` / ``.journal``: an Optuna journal file, which
  several processes on one machine (or on a shared file system) can append to at once;
- any database URL (``postgresql://user@host/db``, ``mysql+pymysql://...``, ``sqlite:///x.db``):
  passed to Optuna as is, for workers on many machines.

Studies resume: running again with the same storage and study name adds trials to the same study.
To parallelise, start the same command in several processes against a journal file or a database,
each with its own ``sampler_seed`` (workers with equal seeds would start from the same proposals).

Outputs in the run directory, rewritten at the end of every call from the whole study:

- ``best.yaml``: the input config with the best trial's settings applied; train it with
  ``gpuseg train --config RUN/best.yaml``;
- ``tune.json``: every trial (number, state, value, params) and the best one.

Watch a study live with optuna-dashboard (``pip install optuna-dashboard``)::

    optuna-dashboard sqlite:///RUN/optuna.db        # the default storage
    optuna-dashboard RUN/study.log                  # a journal file
    optuna-dashboard postgresql://user@host/db      # a shared database
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import torch
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from gpuseg.config import RunConfig, from_dict, save_config, to_dict
from gpuseg.data.panel import Panel, load_panel
from gpuseg.errors import ConfigError
from gpuseg.io.store import write_json_atomic
from gpuseg.training.loop import train_model

PrunerName = Literal["median", "hyperband", "none"]
ENCODERS = ("gru", "lstm", "transformer", "tcn")
JOURNAL_SUFFIXES = (".log", ".journal")
OBJECTIVE_ATTR = "gpuseg_fixed_settings"  # study user attribute: settings every trial shares
SEARCHED = (  # config keys every trial samples (plus model.encoder with search_encoder=True)
    "model.hidden_size",
    "model.num_layers",
    "model.embedding_dim",
    "model.dropout",
    "train.lr",
    "train.weight_decay",
    "train.batch_size",
    "train.profile_weight",
    "train.migration_weight",
)


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of the search. Integer sizes are multiples of 8; ``lr`` and weight decay are log."""

    encoders: tuple[str, ...] = ENCODERS  # searched only with search_encoder=True
    hidden_size: tuple[int, int] = (16, 128)
    num_layers: tuple[int, int] = (1, 3)
    embedding_dim: tuple[int, int] = (8, 64)
    dropout: tuple[float, float] = (0.0, 0.4)
    lr: tuple[float, float] = (1e-4, 1e-2)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    batch_size: tuple[int, ...] = (128, 256, 512, 1024)
    profile_weight: tuple[float, float] = (0.0, 1.0)
    migration_weight: tuple[float, float] = (0.0, 1.0)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bound that cannot be searched."""
        unknown = sorted(set(self.encoders) - set(ENCODERS))
        if not self.encoders or unknown:
            raise ConfigError(f"search space encoders: {unknown or 'none'} (known: {ENCODERS})")
        for name in ("hidden_size", "embedding_dim"):
            low, high = getattr(self, name)
            if low % 8 or high % 8 or not 8 <= low <= high:
                raise ConfigError(
                    f"search space {name}: need multiples of 8 with low <= high, got {low}..{high}"
                )
        if not 1 <= self.num_layers[0] <= self.num_layers[1]:
            raise ConfigError(
                f"search space num_layers: need 1 <= low <= high, got {self.num_layers}"
            )
        for name in ("lr", "weight_decay"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(
                    f"search space {name}: log-uniform needs 0 < low <= high, got {low}..{high}"
                )
        for name in ("dropout", "profile_weight", "migration_weight"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ConfigError(f"search space {name}: need 0 <= low <= high, got {low}..{high}")
        if not self.batch_size or any(b <= 0 or b % 8 for b in self.batch_size):
            raise ConfigError(
                f"search space batch_size: need multiples of 8, got {self.batch_size}"
            )


# ---------------------------------------------------------------------------------------------
# Storage


def _redact(spec: str) -> str:
    """The spec with any database password hidden, for messages and tune.json."""

    try:
        return make_url(spec).render_as_string(hide_password=True)
    except Exception:  # not a URL: nothing to hide
        return spec


def resolve_storage(spec: str | None, run_dir: str | Path) -> str | BaseStorage:
    """Turn a ``--storage`` value into what :func:`optuna.create_study` accepts.

    ``None`` or ``""`` -> ``sqlite:///RUN/optuna.db`` (absolute); ``journal:PATH`` or a path ending
    in ``.log``/``.journal`` -> a :class:`JournalStorage` on that file (relative to the working
    directory); a database URL -> the URL unchanged. Anything else raises :class:`ConfigError`.
    """

    if not spec:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(run_dir / 'optuna.db').resolve()}"
    spec = spec.strip()
    if spec.startswith("journal:") or (
        "://" not in spec and spec.lower().endswith(JOURNAL_SUFFIXES)
    ):
        path = Path(spec.removeprefix("journal:"))
        if not str(path).strip() or str(path) == ".":
            raise ConfigError(f"storage {spec!r}: journal:PATH names no file")
        if path.is_dir():
            raise ConfigError(f"storage {spec!r}: {path} is a directory, not a journal file")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    hint = (
        "expected journal:PATH, a .log/.journal file "
        "or a database URL (sqlite:///..., postgresql://...)"
    )
    if "://" not in spec:
        raise ConfigError(f"storage {spec!r}: {hint}")
    try:
        make_url(spec).get_dialect()  # loads the dialect, not the driver: no connection is made
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(f"storage {_redact(spec)!r}: {hint} ({exc})") from None
    return spec


def _open_study(
    spec: str | None,
    storage: str | BaseStorage,
    study_name: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study, or load it when it exists; storage failures name the storage."""

    try:
        return optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            study_name=study_name,
            direction="maximize",
            load_if_exists=True,
        )
    except (ImportError, SQLAlchemyError, OSError) as exc:
        shown = _redact(spec) if spec else str(storage)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"storage {shown!r}: cannot open it ({first})") from None


# ---------------------------------------------------------------------------------------------
# Search space and trials


def _size_range(low: int, high: int, step: int, what: str) -> tuple[int, int]:
    """``low..high`` shrunk to multiples of ``step``; ConfigError when none is left."""
    lo, hi = math.ceil(low / step) * step, (high // step) * step
    if lo > hi:
        raise ConfigError(f"search space {what}: no multiple of {step} in {low}..{high}")
    return lo, hi


def suggest(
    trial: optuna.Trial, cfg: RunConfig, space: SearchSpace, search_encoder: bool
) -> dict[str, Any]:
    """Sample one trial's settings as ``{"section.key": value}``.

    Hidden sizes step by 8, or by lcm(8, model.n_heads) when the transformer can be picked, so
    every sampled size splits evenly over the attention heads.
    """
    encoders = space.encoders if search_encoder else (cfg.model.encoder,)
    step = math.lcm(8, cfg.model.n_heads) if "transformer" in encoders else 8
    hidden = _size_range(*space.hidden_size, step, "hidden_size")
    params: dict[str, Any] = {}
    if search_encoder:
        params["model.encoder"] = trial.suggest_categorical("model.encoder", list(encoders))
    params["model.hidden_size"] = trial.suggest_int("model.hidden_size", *hidden, step=step)
    params["model.num_layers"] = trial.suggest_int("model.num_layers", *space.num_layers)
    params["model.embedding_dim"] = trial.suggest_int(
        "model.embedding_dim", *space.embedding_dim, step=8
    )
    params["model.dropout"] = trial.suggest_float("model.dropout", *space.dropout)
    params["train.lr"] = trial.suggest_float("train.lr", *space.lr, log=True)
    params["train.weight_decay"] = trial.suggest_float(
        "train.weight_decay", *space.weight_decay, log=True
    )
    params["train.batch_size"] = trial.suggest_categorical(
        "train.batch_size", list(space.batch_size)
    )
    params["train.profile_weight"] = trial.suggest_float(
        "train.profile_weight", *space.profile_weight
    )
    params["train.migration_weight"] = trial.suggest_float(
        "train.migration_weight", *space.migration_weight
    )
    return params


def apply_params(cfg: RunConfig, params: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with ``{"section.key": value}`` settings applied (validated as config)."""
    data = to_dict(cfg)
    for dotted, value in params.items():
        section, _, key = dotted.partition(".")
        if not isinstance(data.get(section), dict) or key not in data[section]:
            raise ConfigError(f"tuned parameter {dotted!r} is not a config key")
        data[section][key] = value
    return from_dict(RunConfig, data)


def _fixed_settings(cfg: RunConfig, searched: set[str]) -> dict[str, Any]:
    """The model and train settings every trial shares (the ones not searched)."""
    flat = {f"{s}.{k}": v for s in ("model", "train") for k, v in to_dict(getattr(cfg, s)).items()}
    return {k: v for k, v in flat.items() if k not in searched}


def _searched_keys(search_encoder: bool) -> set[str]:
    return set(SEARCHED) | ({"model.encoder"} if search_encoder else set())


def _check_same_objective(study: optuna.Study, fixed: dict[str, Any]) -> None:
    """Refuse to resume a study whose trials were trained under other fixed settings."""
    stored = study.user_attrs.get(OBJECTIVE_ATTR)
    if stored is None:
        study.set_user_attr(OBJECTIVE_ATTR, fixed)
        return
    for key in sorted(set(stored) & set(fixed)):
        if stored[key] != fixed[key]:
            raise ConfigError(
                f"study {study.study_name!r} was run with {key}={stored[key]!r}, this config has "
                f"{fixed[key]!r}; use another study name to tune under new settings"
            )


def _make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":  # prune below the median of earlier trials, from epoch 2 on
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner must be median, hyperband or none, not {name!r}")


def _objective(
    cfg: RunConfig,
    panel: Panel,
    space: SearchSpace,
    search_encoder: bool,
    device: torch.device,
):
    """The function Optuna calls per trial: train with sampled settings, return validation AUC."""

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = apply_params(cfg, suggest(trial, cfg, space, search_encoder))

        def on_epoch(record: dict) -> None:
            trial.report(record["val_auc"], record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(
                    f"val_auc {record['val_auc']:.4f} at epoch {record['epoch']}"
                )

        try:
            result = train_model(panel, trial_cfg.model, trial_cfg.train, device, on_epoch=on_epoch)
        except torch.cuda.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        trial.set_user_attr("best_epoch", int(result.metrics["best_epoch"]))
        trial.set_user_attr("epochs_run", int(result.metrics["epochs_run"]))
        return float(result.metrics["val_auc"])  # validation only; test metrics stay unread

    return objective


# ---------------------------------------------------------------------------------------------
# Summary


def _trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return dict(
        number=t.number,
        state=t.state.name,
        value=t.value,
        params=t.params,
        epochs_reported=len(t.intermediate_values),
        seconds=t.duration.total_seconds() if t.duration is not None else None,
    )


def summarize(study: optuna.Study, storage_shown: str) -> dict[str, Any]:
    """Trials and the best one, as plain data (what ``tune.json`` holds)."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = None
    if complete:
        b = study.best_trial
        best = dict(number=b.number, value=b.value, params=b.params, user_attrs=b.user_attrs)
    return dict(
        study_name=study.study_name,
        storage=storage_shown,
        direction="maximize",
        objective="validation churn AUC",
        counts=counts,
        best=best,
        trials=[_trial_row(t) for t in trials],
    )


# ---------------------------------------------------------------------------------------------
# Entry point


def tune(
    cfg: RunConfig,
    panel_dir: str | Path,
    run_dir: str | Path,
    n_trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    sampler_seed: int | None = None,
    timeout: float | None = None,
    pruner: PrunerName = "median",
    device: torch.device = torch.device("cpu"),
    search_encoder: bool = False,
    space: SearchSpace | None = None,
) -> dict[str, Any]:
    """Run (or resume) a study of ``n_trials`` more trials; write best.yaml and tune.json.

    ``cfg`` supplies every fixed setting (``train.epochs`` caps each trial) and the base of
    ``best.yaml``. The TPE sampler's seed is ``sampler_seed`` (default ``cfg.seed``) mixed with the
    number of trials already in the study, so a resumed study does not replay its first proposals.
    ``study_name`` defaults to ``cfg.name``. Returns the summary written to ``tune.json``, plus
    ``best_config``: the path of ``best.yaml`` (None while no trial has completed).
    """
    if n_trials < 1:
        raise ConfigError(f"n_trials must be at least 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout must be positive seconds, got {timeout}")
    pruner_obj = _make_pruner(pruner, cfg.train.epochs)
    space = space or SearchSpace()
    space.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve_storage(storage, run_dir)
    shown = _redact(storage) if storage else str(resolved)
    name = study_name or cfg.name
    panel = load_panel(panel_dir)

    base_seed = cfg.seed if sampler_seed is None else sampler_seed
    study = _open_study(storage, resolved, name, optuna.samplers.RandomSampler(), pruner_obj)
    _check_same_objective(study, _fixed_settings(cfg, _searched_keys(search_encoder)))
    n_before = len(study.get_trials(deepcopy=False))
    seed = int(np.random.SeedSequence([base_seed, n_before]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)

    study.optimize(
        _objective(cfg, panel, space, search_encoder, device),
        n_trials=n_trials,
        timeout=timeout,
        catch=(torch.cuda.OutOfMemoryError,),  # a too-large trial fails alone; the study goes on
    )

    summary = summarize(study, shown)
    summary["best_config"] = None
    if summary["best"] is not None:
        best_path = run_dir / "best.yaml"
        save_config(apply_params(cfg, summary["best"]["params"]), best_path)
        summary["best_config"] = str(best_path)
    write_json_atomic(run_dir / "tune.json", summary)
    return summary
