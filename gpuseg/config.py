"""Typed run configuration: dataclasses loaded from YAML, overridable with ``a.b=value`` strings.

Unknown keys and wrong types are rejected with a :class:`ConfigError` naming the key. Every stage
reads only its own section, so a stage can run on its own (or on another machine) given the config.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from gpuseg.errors import ConfigError


@dataclass
class SynthConfig:
    """The built-in synthetic telecom world (see :mod:`gpuseg.synth`)."""

    n_subscribers: int = 50_000
    n_periods: int = 26  # observation window, in periods
    horizon: int = 8  # label window after the observation window, in periods
    freq: Literal["W", "M"] = "W"
    start: str = "2026-01-05"
    preset: Literal["default", "hard"] = "default"
    late_joiner_frac: float = 0.0  # share of subscribers who join during the window
    missing_frac: float = 0.0  # share of (subscriber, period) rows dropped at random
    noise: float = 1.0  # multiplier on observation noise
    seed: int = 0
    out_dir: str = "data/synth"  # relative paths resolve against the run directory's parent


@dataclass
class DataConfig:
    """Where the input tables are and how their columns map onto gpuseg's names."""

    usage: str = ""  # Parquet or CSV, long or wide layout
    static: str | None = None  # optional per-subscriber attributes
    labels: str | None = None  # optional per-subscriber labels
    layout: Literal["long", "wide"] = "long"
    id_column: str = "subscriber_id"
    period_column: str = "period"  # long layout only
    # gpuseg metric name -> column in the usage table (long) or metric prefix (wide).
    # Empty means: every numeric column except id and period, under its own name.
    metrics: dict[str, str] = field(default_factory=dict)
    # Wide layout: regex with named groups ``metric`` and ``period`` matched against column names.
    wide_pattern: str = r"^(?P<metric>[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z][A-Za-z0-9]*)*)_(?P<period>\d+)$"
    static_columns: list[str] | None = None  # None: every column of the static table but the id
    churn_column: str = "churn"
    migration_column: str = "migration"  # values down/stay/up or -1/0/1
    revenue_metric: str = "revenue"  # the metric that ARPU and value tiers are computed from
    max_missing_frac: float = 1.0  # subscribers with more missing periods than this are rejected


@dataclass
class ModelConfig:
    """The sequence encoder and its heads (see :mod:`gpuseg.model`)."""

    encoder: Literal["gru", "lstm", "transformer", "tcn", "static"] = "gru"
    hidden_size: int = 64
    num_layers: int = 1
    embedding_dim: int = 32
    static_hidden: int = 32
    dropout: float = 0.1
    n_heads: int = 4  # transformer only


@dataclass
class TrainConfig:
    """The training loop (see :mod:`gpuseg.train`)."""

    epochs: int = 20
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 4  # epochs without validation AUC gain before stopping
    val_frac: float = 0.15
    test_frac: float = 0.15
    pos_weight: float | None = None  # None: sqrt(negatives / positives)
    churn_weight: float = 1.0
    migration_weight: float = 0.5
    profile_weight: float = 0.5  # auxiliary head: reconstruct the usage profile
    amp: bool = True  # bf16 autocast on CUDA
    compile: bool = False  # torch.compile the non-recurrent parts
    seed: int = 0


@dataclass
class ClusterConfig:
    """Segmentation of the embeddings (see :mod:`gpuseg.cluster`)."""

    algorithm: Literal["kmeans", "hdbscan"] = "kmeans"
    k: int | None = None  # None: choose over [k_min, k_max] by silhouette
    k_min: int = 3
    k_max: int = 8
    sample_size: int = 20_000  # rows used for silhouette / HDBSCAN fitting
    min_cluster_size: int = 200  # HDBSCAN only
    n_init: int = 4
    seed: int = 0


@dataclass
class ReportConfig:
    """Segment profiles and reports (see :mod:`gpuseg.report`)."""

    usage_metrics: list[str] | None = None  # None: every metric
    periods_per_month: float = 52.0 / 12.0  # weekly data: ARPU is revenue per 52/12 periods


@dataclass
class RunConfig:
    """One pipeline run: every stage's section plus where the run directory is."""

    name: str = "run"
    out_dir: str = "runs/run"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    synth: SynthConfig | None = None  # set: generate the synthetic world and use it as data
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {
            _coerce(k, args[0], f"{key}.<key>"): _coerce(v, args[1], f"{key}.{k}")
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        known = ", ".join(sorted(names))
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known: {known})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """The config as plain data, ready for YAML."""
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.epochs=5'`` -> (['train', 'epochs'], 5). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override '{text}' names no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc})") from None
    return keys, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides to a raw config mapping (validated later by from_dict)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
            node = child
        node[keys[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}:{where} invalid YAML") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        data = loaded
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(RunConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from gpuseg.store import write_text_atomic

    write_text_atomic(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
