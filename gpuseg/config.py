"""Typed run configuration: dataclasses loaded from YAML, overridable with ``a.b=value`` strings.

Unknown keys and wrong types are rejected with a :class:`ConfigError` naming the key. Every stage
reads only its own section, so a stage can run on its own (or on another machine) given the config.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from gpuseg.errors import ConfigError
from gpuseg.io.store import write_text_atomic


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
    shift: int = 0  # a later window: starts this many periods later, with market drift
    seed: int = 0
    # past randomised campaigns with true effects, per-channel consent, future revenue
    # (see gpuseg.data.campaigns); off: the world's files are exactly as without these keys
    campaigns: bool = False
    campaign_frac: float = 0.8  # share of subscribers in a past test
    campaign_waves: int = 2  # past campaign waves, 8 periods apart, one test each
    ltv_months: int = 12  # horizon of the true future revenue
    out_dir: str = ""  # where the world's files go; empty: <run out_dir>/world


@dataclass
class ChurnValuesConfig:
    """Which churn-column values mean churned and which stayed (case-insensitive, compared as text:
    YAML ``1`` and ``true`` match ``1``, ``1.0``, ``True``, ``TRUE``). A blank or missing-marker
    cell is an unknown label; any other value is an error naming the file, column, value and row."""

    positive: list[str | int | bool] = field(
        default_factory=lambda: ["1", "true", "yes", "y", "churned", "churn"]
    )
    negative: list[str | int | bool] = field(
        default_factory=lambda: ["0", "false", "no", "n", "active", "stayed", "retained"]
    )


FILL_POLICIES = ("error", "zero", "ffill")
DEFAULT_MISSING_MARKERS = ["", "?", "NA", "N/A", "n/a", "na", "null", "NULL", "-", "none", "None"]


@dataclass
class DataConfig:
    """Where the input tables are and how their columns map onto gpuseg's names."""

    usage: str = ""  # Parquet or CSV, long, wide or table layout
    static: str | None = None  # optional per-subscriber attributes
    labels: str | None = None  # optional per-subscriber labels (table layout: may be data.usage)
    # long: one row per (subscriber, period); wide: one column per metric and period; table: one
    # row per subscriber and no period (numeric columns -> metrics of one period, the others and
    # numeric columns with missing cells -> static attributes; see gpuseg.data.layouts)
    layout: Literal["long", "wide", "table"] = "long"
    # None (YAML null): the ids are the row numbers as text, "1", "2", ... (table layout only)
    id_column: str | None = "subscriber_id"
    period_column: str = "period"  # long layout only
    # gpuseg metric name -> column in the usage table (long) or metric prefix (wide).
    # Empty means: every numeric column except id and period, under its own name.
    metrics: dict[str, str] = field(default_factory=dict)
    # Wide layout: regex with named groups ``metric`` and ``period`` matched against column names;
    # metric names may hold digits (vol_2g_mb_6 -> vol_2g_mb, period 6); columns whose values are
    # dates (date_of_last_rech_6) are left out of the metrics and reported
    wide_pattern: str = r"^(?P<metric>[A-Za-z][A-Za-z0-9_]*?)_(?P<period>\d+)$"
    static_columns: list[str] | None = None  # None: every column of the static table but the id
    churn_column: str = "churn"
    migration_column: str = "migration"  # values down/stay/up or -1/0/1; optional
    churn_values: ChurnValuesConfig = field(default_factory=ChurnValuesConfig)
    # cells holding one of these (after trimming spaces) are missing, in every column but the id
    missing_markers: list[str] = field(default_factory=lambda: list(DEFAULT_MISSING_MARKERS))
    # metrics that may be negative (refunds, adjustments); None: those whose name matches
    # negative_pattern (case-insensitive search); any other metric below zero is an error
    allow_negative: list[str] | None = None
    negative_pattern: str = "(arpu|rev|revenue|charge|bill|amount|spend|balance|adjust)"
    # missing metric cells in a present period: error (stop, naming the cell), zero, or ffill
    # (the subscriber's previous period's value; 0 before the first). Key default plus per-metric
    # overrides, e.g. {default: zero, arpu: ffill}; the prepare summary counts cells filled
    fill: dict[str, str] = field(default_factory=lambda: {"default": "error"})
    revenue_metric: str = "revenue"  # the metric that ARPU and value tiers are computed from
    max_missing_frac: float = 1.0  # subscribers with more missing periods than this are rejected
    # Churn from an explicit label column, or derived from the usage (see gpuseg.labels): the last
    # label_periods periods become the label window and leave the observation window.
    churn_definition: Literal["label", "no_usage", "inactivity"] = "label"
    label_periods: int = 0
    inactivity_days: int = 30  # churn_definition=inactivity: this many days without activity
    period_days: float | None = None  # None: from the period dates (weekly 7, monthly ~30.4)
    activity_metrics: list[str] | None = None  # None: every metric counts as activity
    window_offset: int = 0  # drop the latest periods first: an earlier window, for out-of-time
    # Privacy (see gpuseg.privacy): subscriber IDs -> keyed-hash pseudonyms as they are read.
    # The config names where the key is (env var name or file path), never the key itself.
    pseudonymize: bool = False
    id_key_env: str = "GPUSEG_ID_KEY"
    id_key_file: str | None = None  # read instead of the environment variable when given
    pseudonym_chars: int = 0  # hex characters kept (0: all 64); fewer risks collisions

    def __post_init__(self) -> None:
        for key, policy in self.fill.items():
            if policy not in FILL_POLICIES:
                raise ConfigError(
                    f"data.fill.{key}: {policy!r} is not one of {', '.join(FILL_POLICIES)}"
                )
        if "default" not in self.fill:
            self.fill = {"default": "error", **self.fill}
        if self.id_column is None and self.layout != "table":
            raise ConfigError("data.id_column: null (row numbers as ids) needs data.layout: table")
        for key in ("wide_pattern", "negative_pattern"):
            try:
                re.compile(getattr(self, key))
            except re.error as exc:
                raise ConfigError(f"data.{key}: invalid regex ({exc})") from None

    @property
    def id_name(self) -> str:
        """The id column's name in every output: data.id_column, or ``row`` when ids are row
        numbers."""
        return self.id_column if self.id_column is not None else "row"


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
    window_summary: bool = True  # fuse fixed window aggregates (means, trend, last, std)
    head_hidden: int = 0  # hidden width of the churn and migration heads; 0: linear heads
    # churn and migration heads also read the window aggregates and standardised static attributes
    # directly (a wide path next to the embedding), each as a linear term plus the MLP above
    wide_heads: bool = False
    # with wide_heads: also a piecewise-linear encoding of each wide input over this many quantile
    # bins fitted on the training split (Gorishniy et al. 2022), so thresholds are linear; 0: none
    wide_bins: int = 0
    # which binned inputs the churn head reads too: True all, "static" only the static
    # attributes' (thresholds such as a contract-end window), False none (only the migration head)
    wide_bins_churn: bool | Literal["static"] = True
    # static attributes enter as sign(x) log1p(|x|) before standardisation (tenure, contract
    # months and weeks to contract end act on churn roughly in log scale, like the logistic
    # baseline's features); False: standardised raw values (checkpoints before this option)
    static_log: bool = False
    # > 0: the window aggregates also hold each metric's level over the last this many periods;
    # with weekly data 4 is the last month, the ARPU window value tiers are cut on
    # (:func:`gpuseg.labels.recent_arpu`), so the migration heads see it exactly; 0: not added
    last_level_periods: int = 0
    # with wide_heads: the wide path also reads the feature baselines' window aggregates
    # (features.window.window_stats: raw-scale mean, last value, last-quarter mean, slope, drop,
    # std), signed log1p then standardised on training rows, so the heads hold what the
    # logistic baseline holds; False: not added (checkpoints before this option)
    wide_window_stats: bool = False
    # where churn_prob comes from (gpuseg.training.heads): the sequence model, a tuned XGBoost or
    # LightGBM head over the window aggregates (when `gpuseg compare` shows it ahead), "auto":
    # the best of those on validation, or "blend": a logistic regression over the logits of the
    # sequence model, the logistic baseline, HistGradientBoosting and the boosters, fitted on
    # validation, and with migration labels the multinomial blend of their migration
    # probabilities too (the shipped configs and `gpuseg init` choose blend); embeddings,
    # segments (and migration under every other head) stay the sequence model's
    head: Literal["sequence", "xgboost", "lightgbm", "auto", "blend"] = "sequence"
    head_trials: int = 15  # Optuna trials per booster head

    def __post_init__(self) -> None:
        if self.head_trials < 1:
            raise ConfigError(f"model.head_trials: must be >= 1, got {self.head_trials}")
        for key in ("wide_bins", "last_level_periods"):
            if getattr(self, key) < 0:
                raise ConfigError(f"model.{key}: must be >= 0, got {getattr(self, key)}")


@dataclass
class TrainConfig:
    """The training loop (see :mod:`gpuseg.train`)."""

    epochs: int = 20
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 4  # epochs without a gain in the selection score before stopping
    # the epoch kept: best validation churn ROC-AUC, or best sum of it and the validation
    # migration macro-F1 (argmax classes)
    select: Literal["churn_auc", "churn_auc+migration_f1"] = "churn_auc"
    val_frac: float = 0.15
    test_frac: float = 0.15
    pos_weight: float | None = None  # None: sqrt(negatives / positives)
    churn_weight: float = 1.0
    migration_weight: float = 0.5
    profile_weight: float = 0.5  # auxiliary head: reconstruct the usage profile
    amp: bool = True  # bf16 autocast on CUDA
    compile: bool = False  # torch.compile the training forward (minutes to build on CPU)
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
    stability_repeats: int = 5  # re-fits on bootstrap samples for the stability ARI (0: none)


@dataclass
class ReportConfig:
    """Segment profiles and reports (see :mod:`gpuseg.report`)."""

    usage_metrics: list[str] | None = None  # None: every metric
    tree_max_depth: int = 4  # decision-tree rules that recognise each segment from plain columns
    tree_sample: int = 200_000  # subscribers the tree is fitted on (it is scored on all)
    chunk_size: int = 100_000  # subscribers per chunk when computing per-subscriber tables
    seed: int = 0  # the tree's sample and fit
    html: bool = True  # also write report/report.html (see gpuseg.html)
    map_sample: int = 5000  # subscribers in the HTML report's 2-D embedding map (0: no map)


@dataclass
class StabilityConfig:
    """The stability score (see :func:`gpuseg.segment.classic.stability_score`).

    Each component is scaled to [0, 1] with a fixed saturation point (so the score does not depend
    on who else is in the data); the score is the weighted mean over the components a subscriber
    has data for.
    """

    tenure_weight: float = 0.35
    social_weight: float = 0.15  # distinct_contacts metric
    services_weight: float = 0.25  # family_plan, broadband, n_bundles
    contract_weight: float = 0.25  # contract_months
    tenure_full_months: float = 60.0  # tenure at which the tenure component reaches 1
    contacts_full: float = 40.0  # distinct contacts per period at which the social component is 1
    bundles_full: float = 3.0  # bundles at which the bundle part of sticky services is 1
    contract_full_months: float = 24.0  # contract length at which the contract component is 1
    bands: list[float] = field(default_factory=lambda: [0.35, 0.6])  # low | mid | high cut points


@dataclass
class LifecycleConfig:
    """Lifecycle stages (see :func:`gpuseg.segment.classic.lifecycle_stage`)."""

    new_months: float = 3.0  # new: tenure below this
    decline_pct: float = 0.3  # declining: late usage below early usage by more than this share
    growth_pct: float = 0.2  # growing: late usage above early usage by more than this share
    contract_end_periods: float = 8.0  # near contract end: weeks_to_contract_end in [0, this]
    trend_periods: int = 4  # present periods averaged at each end of the window
    trend_metrics: list[str] = field(default_factory=lambda: ["data_mb", "voice_min", "sms"])


@dataclass
class SegmentsConfig:
    """Classic operator segmentations (see :mod:`gpuseg.segments`)."""

    periods_per_month: float | None = None  # None: from the period dates (weekly 52/12, monthly 1)
    value_quantiles: list[float] = field(default_factory=lambda: [0.4, 0.7, 0.9, 0.98])
    value_levels: list[str] = field(
        default_factory=lambda: ["low", "mid", "high", "premium", "vip"]
    )  # one more name than value_quantiles, 3 to 5 levels
    # usage profile: typical monthly level per metric; the profile is the metric with the highest
    # level / reference, or "light" when every one is below light_fraction of its reference
    usage_reference: dict[str, float] = field(
        default_factory=lambda: {"data_mb": 5000.0, "voice_min": 300.0, "sms": 100.0}
    )
    light_fraction: float = 0.25
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)


@dataclass
class KeyMomentConfig:
    """Key-moment flags computed from the usage window (see :func:`gpuseg.tags.key_moments`)."""

    first_use_metrics: list[str] = field(
        default_factory=lambda: ["data_mb", "voice_min", "sms", "roaming_mb"]
    )
    first_use_min_zero_periods: int = 4  # present zero periods needed before a first use counts
    recent_periods: int = 4  # present periods at the end of the window compared to the rest
    usage_drop_pct: float = 0.3  # usage_drop: usage change below -this (see lifecycle trend)
    spike_factor: float = 2.0  # spike: recent mean above this times the earlier mean ...
    spike_min_events: float = 3.0  # ... and at least this many events in the recent periods
    failure_metric: str = "dropped_calls"
    complaint_metric: str = "support_contacts"


@dataclass
class TagsConfig:
    """Rule-based tags (see :mod:`gpuseg.tags`)."""

    rules: str | None = None  # YAML rule file; None: the shipped configs/tags.yaml
    moments: KeyMomentConfig = field(default_factory=KeyMomentConfig)


@dataclass
class RunConfig:
    """One pipeline run: every stage's section plus where the run directory is."""

    name: str = "run"
    out_dir: str = "runs/run"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    # how inputs are fingerprinted (gpuseg.io.fingerprint): fast (size, first/last MiB and samples
    # between) or full (every byte)
    fingerprint: Literal["fast", "full"] = "fast"
    synth: SynthConfig | None = None  # set: generate the synthetic world and use it as data
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    tags: TagsConfig = field(default_factory=TagsConfig)


# ---------------------------------------------------------------------------------------------
# Loading and validation


MAX_SHOWN = 80  # characters of a value an error message shows at most
MAX_CONFIG_BYTES = 4 << 20  # a config file larger than this is refused unread

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 6, 6, 60, 60


def clip(text: str) -> str:
    """``text`` on one line (control characters escaped), cut to :data:`MAX_SHOWN` characters,
    for an error message."""
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def short(value: Any) -> str:
    """``repr(value)`` for an error message: at most :data:`MAX_SHOWN` characters, computed in
    bounded time however deep or large the value is (a YAML bomb's expansion included)."""
    text = _REPR.repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


class NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader with anchors and aliases refused: an alias is how a few hundred bytes
    expand into gigabytes (the "billion laughs" bomb), and no gpuseg config needs one."""

    def compose_node(self, parent, index):  # noqa: D102 (PyYAML's Composer hook)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(
                f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are "
                "not allowed in gpuseg configs; write the values out"
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """YAML text -> Python data with :class:`NoAliasLoader` (tags beyond plain data refused)."""
    loader = NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


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
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: bad value {short(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {short(value)} is not one of {', '.join(map(repr, args))}")
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
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads 1e-3 as a string, not a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {short(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {short(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {short(value)}")
        return value
    if tp is str:
        if isinstance(value, datetime.date):  # YAML reads an unquoted 2026-01-05 as a date
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {short(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)  # YAML keys may be ints or booleans (on:, 1:)
    if unknown:
        known = ", ".join(sorted(names))
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}' (known: {known})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    validate(obj, prefix)
    return obj


def to_dict(cfg: Any) -> dict:
    """The config as plain data, ready for YAML."""
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.epochs=5'`` -> (['train', 'epochs'], 5). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override '{clip(text)}' must look like section.key=value")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override '{clip(text)}' names no key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except ConfigError as exc:
        raise ConfigError(f"override '{clip(text)}': {exc}") from None
    except yaml.YAMLError as exc:
        why = getattr(exc, "problem", None) or str(exc).splitlines()[0]  # one line, not YAML's four
        raise ConfigError(f"override '{clip(text)}': value is not valid YAML ({why})") from None
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
                raise ConfigError(f"override '{clip(text)}': '{k}' is not a section")
            node = child
        node[keys[-1]] = value
    return data


def read_yaml_file(p: Path, what: str) -> Any:
    """The data of the YAML file ``p`` (a ``what`` file: config, tag rule, offers), read with
    :func:`load_yaml`; a missing, oversized, non-UTF-8 or invalid file, or one with anchors, is a
    ConfigError naming it."""
    if not p.is_file():
        raise ConfigError(f"{p}: {what} file {'is a directory' if p.is_dir() else 'not found'}")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: {what} file larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        return load_yaml(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: {what} file is not UTF-8 text") from None
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where} invalid YAML") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        loaded = read_yaml_file(p, "config")
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

    write_text_atomic(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# Values: ranges, choices and relations (checked by from_dict, so at load, before any work)


@dataclass(frozen=True)
class Rule:
    """An allowed range: ``lo``/``hi`` bounds (``None``: open), inclusive unless ``strict``."""

    lo: float | None = None
    hi: float | None = None
    lo_strict: bool = False
    hi_strict: bool = False

    def ok(self, v: float) -> bool:
        if v != v:  # NaN
            return False
        if self.lo is not None and (v <= self.lo if self.lo_strict else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_strict else v > self.hi))

    def text(self) -> str:
        lo = None if self.lo is None else f"{'>' if self.lo_strict else '>='} {self.lo:g}"
        hi = None if self.hi is None else f"{'<' if self.hi_strict else '<='} {self.hi:g}"
        return " and ".join(x for x in (lo, hi) if x)


def _at_least(n: float) -> Rule:
    return Rule(lo=n)


POSITIVE = Rule(lo=0, lo_strict=True)
NON_NEGATIVE = Rule(lo=0)
FRACTION = Rule(lo=0, hi=1)
OPEN_FRACTION = Rule(lo=0, hi=1, lo_strict=True, hi_strict=True)
COUNT = _at_least(1)
MAX_K = 1000

# dataclass -> field -> allowed range (None values of optional fields are always allowed)
RULES: dict[type, dict[str, Rule]] = {
    SynthConfig: dict(
        n_subscribers=COUNT, n_periods=COUNT, horizon=COUNT, late_joiner_frac=FRACTION,
        missing_frac=Rule(0, 1, hi_strict=True), noise=NON_NEGATIVE, shift=NON_NEGATIVE,
        seed=NON_NEGATIVE,
    ),
    DataConfig: dict(
        max_missing_frac=FRACTION, label_periods=NON_NEGATIVE, inactivity_days=COUNT,
        period_days=POSITIVE, window_offset=NON_NEGATIVE, pseudonym_chars=Rule(0, 64),
    ),
    ModelConfig: dict(
        hidden_size=COUNT, num_layers=COUNT, embedding_dim=COUNT, static_hidden=COUNT,
        dropout=Rule(0, 1, hi_strict=True), n_heads=COUNT, head_hidden=NON_NEGATIVE,
        wide_bins=NON_NEGATIVE, last_level_periods=NON_NEGATIVE,
    ),
    TrainConfig: dict(
        epochs=COUNT, batch_size=COUNT, lr=POSITIVE, weight_decay=NON_NEGATIVE,
        patience=NON_NEGATIVE, val_frac=OPEN_FRACTION, test_frac=OPEN_FRACTION,
        pos_weight=POSITIVE, churn_weight=NON_NEGATIVE, migration_weight=NON_NEGATIVE,
        profile_weight=NON_NEGATIVE, seed=NON_NEGATIVE,
    ),
    ClusterConfig: dict(
        k=Rule(2, MAX_K), k_min=Rule(2, MAX_K), k_max=Rule(2, MAX_K), sample_size=_at_least(2),
        min_cluster_size=_at_least(2), n_init=COUNT, seed=NON_NEGATIVE,
        stability_repeats=NON_NEGATIVE,
    ),
    ReportConfig: dict(
        tree_max_depth=Rule(1, 32), tree_sample=COUNT, chunk_size=COUNT, seed=NON_NEGATIVE,
        map_sample=NON_NEGATIVE,
    ),
    StabilityConfig: dict(
        tenure_weight=NON_NEGATIVE, social_weight=NON_NEGATIVE, services_weight=NON_NEGATIVE,
        contract_weight=NON_NEGATIVE, tenure_full_months=POSITIVE, contacts_full=POSITIVE,
        bundles_full=POSITIVE, contract_full_months=POSITIVE,
    ),
    LifecycleConfig: dict(
        new_months=NON_NEGATIVE, decline_pct=FRACTION, growth_pct=NON_NEGATIVE,
        contract_end_periods=NON_NEGATIVE, trend_periods=COUNT,
    ),
    SegmentsConfig: dict(periods_per_month=POSITIVE, light_fraction=FRACTION),
    KeyMomentConfig: dict(
        first_use_min_zero_periods=NON_NEGATIVE, recent_periods=COUNT, usage_drop_pct=FRACTION,
        spike_factor=POSITIVE, spike_min_events=NON_NEGATIVE,
    ),
    RunConfig: dict(seed=NON_NEGATIVE),
}  # fmt: skip

NON_EMPTY: dict[type, tuple[str, ...]] = {
    RunConfig: ("out_dir",),
    DataConfig: ("id_column", "period_column"),
}


def _increasing_in_unit(values: list[float]) -> bool:
    pairs = zip(values[:-1], values[1:], strict=True)
    return all(0 < v < 1 for v in values) and all(a < b for a, b in pairs)


def _relations(cfg: Any) -> list[tuple[str, str]]:
    """(key, what is wrong) for every broken relation between values of one section."""
    bad: list[tuple[str, str]] = []
    if isinstance(cfg, DataConfig) and cfg.period_column == cfg.id_column:
        bad.append(("period_column", f"must differ from data.id_column ('{clip(cfg.id_column)}')"))
    if isinstance(cfg, ClusterConfig) and cfg.k_min > cfg.k_max:
        bad.append(("k_max", f"must be >= cluster.k_min ({cfg.k_min}), got {cfg.k_max}"))
    if isinstance(cfg, TrainConfig) and cfg.val_frac + cfg.test_frac >= 1:
        bad.append(("test_frac", f"val_frac + test_frac must be < 1, got {cfg.test_frac:g}"))
    if (
        isinstance(cfg, ModelConfig)
        and cfg.encoder == "transformer"
        and cfg.hidden_size % cfg.n_heads
    ):
        bad.append(("n_heads", f"must divide model.hidden_size ({cfg.hidden_size})"))
    if isinstance(cfg, StabilityConfig):
        weights = (cfg.tenure_weight, cfg.social_weight, cfg.services_weight, cfg.contract_weight)
        if not any(w > 0 for w in weights):
            bad.append(("tenure_weight", "at least one component weight must be > 0"))
        if not _increasing_in_unit(cfg.bands):
            bad.append(("bands", "must increase strictly within (0, 1)"))
    if isinstance(cfg, SegmentsConfig):
        if not _increasing_in_unit(cfg.value_quantiles):
            bad.append(("value_quantiles", "must increase strictly within (0, 1)"))
        if not 3 <= len(cfg.value_levels) <= 5:
            bad.append(("value_levels", f"need 3 to 5 names, got {len(cfg.value_levels)}"))
        elif len(cfg.value_quantiles) != len(cfg.value_levels) - 1:
            bad.append(
                (
                    "value_quantiles",
                    f"need {len(cfg.value_levels) - 1} cut points for "
                    f"{len(cfg.value_levels)} value_levels, got {len(cfg.value_quantiles)}",
                )
            )
        for name, ref in cfg.usage_reference.items():
            if not ref > 0:
                bad.append((f"usage_reference.{clip(str(name))}", f"must be > 0, got {ref:g}"))
                break
    return bad


def validate(cfg: Any, prefix: str = "") -> None:
    """ConfigError naming the first value of section ``cfg`` (not its subsections, which
    :func:`from_dict` checks as it builds them) outside its allowed range or relation."""
    for name, rule in RULES.get(type(cfg), {}).items():
        value = getattr(cfg, name)
        if value is None or isinstance(value, bool):
            continue
        if not rule.ok(value):
            raise ConfigError(f"{prefix}{name}: must be {rule.text()}, got {short(value)}")
    for name in NON_EMPTY.get(type(cfg), ()):
        if not str(getattr(cfg, name)).strip():
            raise ConfigError(f"{prefix}{name}: must not be empty")
    for name, why in _relations(cfg):
        raise ConfigError(f"{prefix}{name}: {why}")
