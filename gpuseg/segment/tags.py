"""Rule-based subscriber tags and key-moment flags.

Tags are declared in YAML (``configs/tags.yaml`` is the shipped default) and evaluated on a
per-subscriber feature frame: the :func:`gpuseg.segment.classic.classic_segments` columns, the
key-moment
flags of :func:`key_moments`, the raw static attributes and, when given, a churn probability
(:func:`build_tag_frame` joins them). The rule language is data, never code: nothing is evaluated
with ``eval`` or ``exec``.

A rule file::

    tags:
      vip:                                   # the tag's column name
        kind: static                         # static (slow-moving) or dynamic (event-driven)
        description: Top value level         # optional
        when: {column: value_level, op: in, value: [vip]}
      churn_warning:
        kind: dynamic
        when:
          any:
            - {column: churn_prob, op: ge, value: 0.5, optional: true}
            - {column: usage_change, op: le, value: -0.3}
      retain_now:
        when:
          all:
            - {tag: vip}                     # a tag declared above
            - not: {column: stability_band, op: eq, value: high}

A condition is one of:

- ``{column, op, value}``: compare one column; ``optional: true`` makes the condition false (with
  a note) when the frame has no such column, otherwise a missing column raises ConfigError;
- ``{tag: name}``: the result of a tag declared earlier in the file;
- ``{all: [conditions]}``, ``{any: [conditions]}``, ``{not: condition}``.

Ops: ``eq ne lt le gt ge`` (or ``== != < <= > >=``), ``in`` / ``not_in`` (a list), ``between``
([low, high], inclusive), ``is_true`` / ``is_false`` / ``is_null`` / ``not_null`` (no value).
Ordered categories (value_level, stability_band) compare by their order, so
``{column: value_level, op: ge, value: premium}`` is premium or above. Missing values never match
(``ne`` and ``not_in`` included). Unknown keys, unknown ops and values of the wrong shape raise
:class:`~gpuseg.errors.ConfigError` naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuseg.config import KeyMomentConfig, SegmentsConfig, TagsConfig, read_yaml_file
from gpuseg.data.panel import Panel
from gpuseg.errors import ConfigError, DataError
from gpuseg.segment import classic as seg

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "configs" / "tags.yaml"

OP_ALIASES = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")
LIST_OPS = ("in", "not_in")
UNARY_OPS = ("is_true", "is_false", "is_null", "not_null")
OPS = COMPARE_OPS + LIST_OPS + ("between",) + UNARY_OPS
KINDS = ("static", "dynamic")
TAG_KEYS = ("kind", "description", "when")
LEAF_KEYS = ("column", "op", "value", "optional")


# ---------------------------------------------------------------------------------------------
# Rules: parsing and validation


@dataclass(frozen=True)
class Condition:
    """A validated condition node: ``kind`` is column, tag, all, any or not."""

    kind: str
    where: str  # the node's key path in the rule file, for error messages
    column: str = ""
    op: str = ""
    value: Any = None
    optional: bool = False
    children: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class TagRule:
    name: str
    when: Condition
    kind: str = "static"
    description: str = ""


@dataclass(frozen=True)
class TagRules:
    """A validated rule set, in file order."""

    rules: tuple[TagRule, ...]
    source: str = "<dict>"
    names: tuple[str, ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(r.name for r in self.rules))


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def _parse_condition(node: Any, where: str, earlier: set[str]) -> Condition:
    if not isinstance(node, dict) or not node:
        raise ConfigError(
            f"{where}: a condition must be a mapping (column/op/value, tag, all, any, not)"
        )
    combinators = [k for k in ("all", "any", "not") if k in node]
    if combinators:
        key = combinators[0]
        extra = sorted(set(node) - {key})
        if extra:
            raise ConfigError(
                f"unknown key '{where}.{extra[0]}' next to '{key}' (one combinator per mapping)"
            )
        if key == "not":
            return Condition(
                "not", where, children=(_parse_condition(node["not"], f"{where}.not", earlier),)
            )
        items = node[key]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}.{key}: expected a non-empty list of conditions")
        children = tuple(
            _parse_condition(c, f"{where}.{key}[{i}]", earlier) for i, c in enumerate(items)
        )
        return Condition(key, where, children=children)
    if "tag" in node:
        extra = sorted(set(node) - {"tag"})
        if extra:
            raise ConfigError(f"unknown key '{where}.{extra[0]}' (a tag reference has only 'tag')")
        name = node["tag"]
        if not isinstance(name, str) or name not in earlier:
            raise ConfigError(f"{where}.tag: '{name}' is not a tag declared above this one")
        return Condition("tag", where, column=name)
    unknown = sorted(set(node) - set(LEAF_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key '{where}.{unknown[0]}' "
            f"(known: {', '.join(LEAF_KEYS)}, tag, all, any, not)"
        )
    for key in ("column", "op"):
        if key not in node:
            raise ConfigError(f"{where}: missing key '{key}'")
    column, op = node["column"], node["op"]
    if not isinstance(column, str) or not column:
        raise ConfigError(f"{where}.column: expected a column name, got {column!r}")
    if not isinstance(op, str) or OP_ALIASES.get(op, op) not in OPS:
        raise ConfigError(f"{where}.op: unknown op {op!r} (known: {', '.join(OPS)})")
    op = OP_ALIASES.get(op, op)
    optional = node.get("optional", False)
    if not isinstance(optional, bool):
        raise ConfigError(f"{where}.optional: expected true or false, got {optional!r}")
    has_value = "value" in node
    value = node.get("value")
    if op in UNARY_OPS:
        if has_value:
            raise ConfigError(f"{where}.value: op '{op}' takes no value")
    elif not has_value:
        raise ConfigError(f"{where}: op '{op}' needs a 'value'")
    elif op in LIST_OPS:
        if not isinstance(value, list) or not value or not all(_is_scalar(v) for v in value):
            raise ConfigError(
                f"{where}.value: op '{op}' needs a non-empty list of scalars, got {value!r}"
            )
    elif op == "between":
        ok = isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
        if not ok or value[0] > value[1]:
            raise ConfigError(
                f"{where}.value: op 'between' needs [low, high] numbers, got {value!r}"
            )
    elif not _is_scalar(value):
        raise ConfigError(f"{where}.value: op '{op}' needs a single value, got {value!r}")
    return Condition("column", where, column=column, op=op, value=value, optional=optional)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_tag_rules(data: Any, source: str = "<dict>") -> TagRules:
    """Validate a rule mapping (the parsed YAML) into :class:`TagRules`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping with a 'tags' section")
    unknown = sorted(set(data) - {"tags"})
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (known: tags)")
    tags = data.get("tags")
    if not isinstance(tags, dict) or not tags:
        raise ConfigError(f"{source}: 'tags' must be a non-empty mapping of tag name -> rule")
    rules: list[TagRule] = []
    seen: set[str] = set()
    for name, spec in tags.items():
        where = f"tags.{name}"
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{source}: tag names must be non-empty strings, got {name!r}")
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: {where}: expected a mapping with 'when'")
        bad = sorted(set(spec) - set(TAG_KEYS))
        if bad:
            raise ConfigError(
                f"{source}: unknown key '{where}.{bad[0]}' (known: {', '.join(TAG_KEYS)})"
            )
        if "when" not in spec:
            raise ConfigError(f"{source}: {where}: missing key 'when'")
        kind = spec.get("kind", "static")
        if kind not in KINDS:
            raise ConfigError(f"{source}: {where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{source}: {where}.description: expected a string")
        try:
            when = _parse_condition(spec["when"], f"{where}.when", seen)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        rules.append(TagRule(name, when, kind, description))
        seen.add(name)
    return TagRules(tuple(rules), source)


def load_tag_rules(path: str | Path | None = None) -> TagRules:
    """Read and validate a YAML rule file (None: the shipped ``configs/tags.yaml``)."""
    p = Path(path) if path is not None else DEFAULT_RULES
    data = read_yaml_file(p, "tag rule")
    return parse_tag_rules(data, str(p))


# ---------------------------------------------------------------------------------------------
# Rules: evaluation


def _truthy(s: pd.Series, cond: Condition, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(true, false) masks of a boolean-like column; missing values are neither."""
    null = s.isna().to_numpy()
    if s.dtype == bool or str(s.dtype) == "boolean":
        v = s.fillna(False).to_numpy(dtype=bool)
    elif pd.api.types.is_numeric_dtype(s):
        v = s.fillna(0).to_numpy() != 0
    else:
        raise ConfigError(
            f"{source}: {cond.where}: op '{cond.op}' needs a boolean column, "
            f"'{cond.column}' is {s.dtype}"
        )
    return v & ~null, ~v & ~null


def _compare(s: pd.Series, cond: Condition, source: str) -> np.ndarray:
    op, value = cond.op, cond.value
    null = s.isna().to_numpy()
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = list(s.cat.categories)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v not in cats:
                raise ConfigError(
                    f"{source}: {cond.where}.value: {v!r} is not a value of '{cond.column}' "
                    f"(values: {', '.join(map(str, cats))})"
                )
        if op in ("lt", "le", "gt", "ge", "between"):
            if not s.cat.ordered:
                raise ConfigError(
                    f"{source}: {cond.where}: '{cond.column}' has no order; use eq or in"
                )
            codes = s.cat.codes.to_numpy().astype(float)
            codes[null] = np.nan
            s = pd.Series(codes, index=s.index)
            value = [cats.index(v) for v in value] if op == "between" else cats.index(value)
    if op in ("lt", "le", "gt", "ge", "between") and not pd.api.types.is_numeric_dtype(s):
        raise ConfigError(
            f"{source}: {cond.where}: op '{op}' needs a numeric or ordered column, "
            f"'{cond.column}' is {s.dtype}"
        )
    if op in ("lt", "le", "gt", "ge", "between") and not (
        _is_number(value) or (op == "between" and all(_is_number(v) for v in value))
    ):
        raise ConfigError(f"{source}: {cond.where}.value: op '{op}' needs a number, got {value!r}")
    if op == "in":
        hit = s.isin(value).to_numpy()
    elif op == "not_in":
        hit = ~s.isin(value).to_numpy()
    elif op == "between":
        x = s.to_numpy(dtype=float, na_value=np.nan)
        hit = (x >= value[0]) & (x <= value[1])
    else:
        if op in ("eq", "ne"):
            hit = (s == value).fillna(False).to_numpy(dtype=bool)
            hit = ~hit if op == "ne" else hit
        else:
            x = s.to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                hit = {"lt": x < value, "le": x <= value, "gt": x > value, "ge": x >= value}[op]
    return np.asarray(hit, dtype=bool) & ~null


def _evaluate(
    cond: Condition, frame: pd.DataFrame, done: dict[str, np.ndarray], notes: list[str], source: str
) -> np.ndarray:
    if cond.kind == "tag":
        return done[cond.column]
    if cond.kind == "not":
        return ~_evaluate(cond.children[0], frame, done, notes, source)
    if cond.kind in ("all", "any"):
        parts = [_evaluate(c, frame, done, notes, source) for c in cond.children]
        return np.logical_and.reduce(parts) if cond.kind == "all" else np.logical_or.reduce(parts)
    if cond.column not in frame.columns:
        if cond.optional:
            notes.append(f"{cond.where}: column '{cond.column}' absent; condition is false")
            return np.zeros(len(frame), dtype=bool)
        raise ConfigError(
            f"{source}: {cond.where}.column: '{cond.column}' not in the tag frame "
            "(add optional: true if the column may be absent)"
        )
    s = frame[cond.column]
    if cond.op in UNARY_OPS:
        if cond.op == "is_null":
            return s.isna().to_numpy()
        if cond.op == "not_null":
            return s.notna().to_numpy()
        true, false = _truthy(s, cond, source)
        return true if cond.op == "is_true" else false
    return _compare(s, cond, source)


def apply_tags(
    frame: pd.DataFrame, rules: TagRules | dict | str | Path | None = None
) -> pd.DataFrame:
    """Evaluate the rules on ``frame``; one bool column per tag, in rule order, same index.

    ``rules`` is a :class:`TagRules`, a raw rule mapping, a YAML path, or None for the shipped
    default. ``result.attrs`` holds ``notes`` (optional conditions on absent columns), ``kinds``
    and ``descriptions`` per tag.
    """
    if rules is None or isinstance(rules, (str, Path)):
        rules = load_tag_rules(rules)
    elif isinstance(rules, dict):
        rules = parse_tag_rules(rules)
    notes: list[str] = []
    done: dict[str, np.ndarray] = {}
    for rule in rules.rules:
        done[rule.name] = _evaluate(rule.when, frame, done, notes, rules.source)
    out = pd.DataFrame(done, index=frame.index, columns=list(rules.names)).astype(bool)
    out.attrs["notes"] = notes
    out.attrs["kinds"] = {r.name: r.kind for r in rules.rules}
    out.attrs["descriptions"] = {r.name: r.description for r in rules.rules}
    return out


# ---------------------------------------------------------------------------------------------
# Key moments


def recent_split(mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(recent, earlier) (N, T) masks: the last k present periods and the present ones before."""
    mask = np.asarray(mask, dtype=bool)
    rank = np.cumsum(mask, axis=1)
    count = rank[:, -1:]
    recent = mask & (rank > count - k)
    return recent, mask & ~recent


def spike(
    values: np.ndarray, mask: np.ndarray, k: int, factor: float, min_events: float
) -> np.ndarray:
    """Events in the last k present periods: at least ``min_events`` of them, and their mean per
    period above ``factor`` x the mean over the earlier present periods (0 when there are none)."""
    recent, earlier = recent_split(mask, k)
    r_sum = np.where(recent, values, 0.0).sum(1)
    r_mean = r_sum / np.maximum(recent.sum(1), 1)
    e_mean = np.where(earlier, values, 0.0).sum(1) / np.maximum(earlier.sum(1), 1)
    return (r_sum >= min_events) & (r_mean > factor * e_mean)


def first_use(values: np.ndarray, mask: np.ndarray, min_zero: int) -> np.ndarray:
    """The metric is 0 in at least ``min_zero`` present periods and then > 0 in a later one."""
    mask = np.asarray(mask, dtype=bool)
    used = mask & (np.asarray(values) > 0)
    ever = used.any(axis=1)
    first = np.argmax(used, axis=1)
    zeros_before = np.cumsum(mask, axis=1)[np.arange(len(mask)), first] - 1
    return ever & (zeros_before >= max(min_zero, 1))


def key_moments(
    panel: Panel,
    attributes: pd.DataFrame | None = None,
    cfg: KeyMomentConfig | None = None,
    segments_cfg: SegmentsConfig | None = None,
) -> pd.DataFrame:
    """Per-subscriber key-moment flags (bool columns, indexed by subscriber id).

    - ``first_use_<metric>`` for each configured metric the panel has, and ``first_use`` (any);
    - ``usage_drop``: usage of the last ``recent_periods`` present periods over the first as many,
      minus 1, below -usage_drop_pct (the lifecycle trend index, over its trend metrics);
    - ``failure_spike`` (dropped calls) and ``complaint_spike`` (support contacts), see
      :func:`spike`;
    - ``abnormal_moment``: usage_drop or either spike;
    - ``contract_end_approaching``: 0 <= weeks_to_contract_end <= lifecycle.contract_end_periods;
    - ``do_not_disturb``, ``no_marketing_consent`` and ``contactable`` (consent and no DND); a
      missing value counts as do-not-disturb / no consent.

    Flags whose inputs are absent are left out, each with a line in ``attrs["notes"]``.
    """
    cfg = cfg or KeyMomentConfig()
    scfg = segments_cfg or SegmentsConfig()
    if cfg.recent_periods < 1:
        raise ConfigError(f"tags.moments.recent_periods: must be >= 1, got {cfg.recent_periods}")
    attributes = seg.check_attributes(panel, attributes)
    mask = np.asarray(panel.mask, dtype=bool)
    notes: list[str] = []
    out: dict[str, np.ndarray] = {}

    firsts = []
    for name in cfg.first_use_metrics:
        values = seg.metric(panel, name)
        if values is None:
            notes.append(f"first_use_{name}: metric '{name}' not in the panel")
            continue
        out[f"first_use_{name}"] = first_use(values, mask, cfg.first_use_min_zero_periods)
        firsts.append(out[f"first_use_{name}"])
    out["first_use"] = np.logical_or.reduce(firsts) if firsts else np.zeros(len(panel), bool)

    trend_cfg = replace(scfg.lifecycle, trend_periods=cfg.recent_periods)
    change = seg.trend_usage(panel, trend_cfg, notes)
    out["usage_drop"] = change < -cfg.usage_drop_pct
    abnormal = [out["usage_drop"]]
    for flag, name in (
        ("failure_spike", cfg.failure_metric),
        ("complaint_spike", cfg.complaint_metric),
    ):
        values = seg.metric(panel, name)
        if values is None:
            notes.append(f"{flag}: metric '{name}' not in the panel")
            continue
        out[flag] = spike(values, mask, cfg.recent_periods, cfg.spike_factor, cfg.spike_min_events)
        abnormal.append(out[flag])
    out["abnormal_moment"] = np.logical_or.reduce(abnormal)

    weeks_left = seg.attribute_number(attributes, "weeks_to_contract_end")
    if weeks_left is None:
        notes.append("contract_end_approaching: no weeks_to_contract_end attribute")
    else:
        horizon = scfg.lifecycle.contract_end_periods
        out["contract_end_approaching"] = (
            np.isfinite(weeks_left) & (weeks_left >= 0) & (weeks_left <= horizon)
        )
    dnd = seg.attribute_number(attributes, "do_not_disturb")
    consent = seg.attribute_number(attributes, "marketing_consent")
    if dnd is None:
        notes.append("do_not_disturb: no do_not_disturb attribute")
    else:
        out["do_not_disturb"] = ~(np.nan_to_num(dnd, nan=1.0) == 0)
    if consent is None:
        notes.append("no_marketing_consent: no marketing_consent attribute")
    else:
        out["no_marketing_consent"] = np.nan_to_num(consent, nan=0.0) == 0
    if dnd is not None and consent is not None:
        out["contactable"] = ~out["do_not_disturb"] & ~out["no_marketing_consent"]

    index = pd.Index(
        np.asarray(panel.ids).astype(str), name=panel.meta.get("id_column", "subscriber_id")
    )
    frame = pd.DataFrame({k: np.asarray(v, dtype=bool) for k, v in out.items()}, index=index)
    frame.attrs["notes"] = notes
    return frame


# ---------------------------------------------------------------------------------------------
# Everything together


def build_tag_frame(
    panel: Panel,
    attributes: pd.DataFrame | None,
    segments: pd.DataFrame | None = None,
    churn_prob: np.ndarray | None = None,
    segments_cfg: SegmentsConfig | None = None,
    tags_cfg: TagsConfig | None = None,
) -> pd.DataFrame:
    """The frame tags are evaluated on: classic segments, key moments, churn_prob and the raw
    attributes (columns not already present), one row per subscriber indexed by id."""
    segments_cfg = segments_cfg or SegmentsConfig()
    tags_cfg = tags_cfg or TagsConfig()
    if segments is None:
        segments = seg.classic_segments(panel, attributes, segments_cfg, churn_prob=churn_prob)
    if len(segments) != len(panel):
        raise DataError(f"segments have {len(segments)} rows, the panel {len(panel)}")
    moments = key_moments(panel, attributes, tags_cfg.moments, segments_cfg)
    frame = segments.copy()
    frame.index = moments.index
    # columns already in ``segments`` are replaced in place, new ones appended in this order with
    # one concat: one insert per column fragments the frame (a PerformanceWarning per column on
    # wide panels)
    new: dict[str, np.ndarray] = {}

    def put(col: str, values: np.ndarray) -> None:
        if col in frame.columns:
            frame[col] = values
        else:
            new[col] = values

    for col in moments.columns:
        put(col, moments[col].to_numpy())
    if churn_prob is not None:
        if len(churn_prob) != len(panel):
            raise DataError(f"churn_prob has {len(churn_prob)} values for {len(panel)} subscribers")
        put("churn_prob", np.asarray(churn_prob, dtype=np.float64))
    attributes = seg.check_attributes(panel, attributes)
    if attributes is not None:
        id_col = panel.meta.get("id_column", "subscriber_id")
        for col in attributes.columns:
            if col != id_col and col not in frame.columns and col not in new:
                new[col] = attributes[col].to_numpy()
    if new:
        attrs = dict(frame.attrs)
        frame = pd.concat([frame, pd.DataFrame(new, index=frame.index)], axis=1)
        frame.attrs.update(attrs)
    frame.attrs["notes"] = list(segments.attrs.get("notes", [])) + moments.attrs["notes"]
    return frame


def tag_subscribers(
    panel: Panel,
    attributes: pd.DataFrame | None,
    churn_prob: np.ndarray | None = None,
    segments_cfg: SegmentsConfig | None = None,
    tags_cfg: TagsConfig | None = None,
) -> pd.DataFrame:
    """Convenience: :func:`build_tag_frame` then :func:`apply_tags` with ``tags_cfg.rules``."""
    tags_cfg = tags_cfg or TagsConfig()
    frame = build_tag_frame(panel, attributes, None, churn_prob, segments_cfg, tags_cfg)
    tags = apply_tags(frame, load_tag_rules(tags_cfg.rules))
    tags.attrs["notes"] = frame.attrs["notes"] + tags.attrs["notes"]
    return tags
