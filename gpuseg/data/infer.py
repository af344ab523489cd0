"""A first config for an operator's export, guessed from a bounded sample of its files.

``gpuseg init DATA...`` reads up to :data:`SAMPLE_ROWS` rows of each file (never the whole file),
profiles each column (:func:`profile_frame`), assigns each file a role (usage, static, labels),
guesses the layout (long, wide or table), the id, period and label columns, which columns are
metrics and which static attributes, the revenue metric and the churn values
(:func:`infer_config`), and writes a commented YAML config (:func:`render_config`) that
``gpuseg check`` validates and ``gpuseg run`` runs.

Everything below :func:`read_sample` is a pure function over sample frames and file names, so it
is tested without files. Each guess carries its reason, written into the config as a comment, so a
user sees what to edit.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from gpuseg.errors import DataError
from gpuseg.io.tables import table_columns

SAMPLE_ROWS = 20_000  # rows read from each file

# the keys of issue 14 (see README "Your data"); the defaults of DataConfig
MISSING_MARKERS = ("", "?", "NA", "N/A", "n/a", "na", "null", "NULL", "-", "none", "None")
CHURN_POSITIVE = ("1", "true", "yes", "y", "churned", "churn")
CHURN_NEGATIVE = ("0", "false", "no", "n", "active", "stayed", "retained")
NEGATIVE_PATTERN = r"(arpu|rev|revenue|charge|bill|amount|spend|balance|adjust)"
MIGRATION_VALUES = ("down", "stay", "up", "-1", "0", "1")

ID_NAME = re.compile(
    r"^(id|key|uid)$|(^|_)(id|key)$|^id_|customer.?id|cust.?id|subscriber|msisdn|imsi|"
    r"account.?(id|no|num)|user.?id|client.?id|(phone|mobile).?(number|no)$",
    re.IGNORECASE,
)
PERIOD_NAME = re.compile(
    r"^(period|week|month|date|day|yyyymm|yearmonth|ym|cycle|snapshot|as_?of)$|"
    r"(^|_)(period|week|month|date|yyyymm|cycle)(_?(id|start|key|no))?$|bill.?(month|date|period)",
    re.IGNORECASE,
)
CHURN_NAME = re.compile(r"churn|attrition|exited|^left$|^is_?lost$|disconnect|cancel", re.I)
MIGRATION_NAME = re.compile(r"migration|tier_?(move|change)|value_?(move|change)", re.I)
# revenue-like names, most specific first: the first that a metric matches is the revenue metric
REVENUE_NAMES = (
    r"^revenue$",
    r"^arpu$",
    r"monthly.?revenue",
    r"monthly.?charge",
    r"arpu",
    r"revenue",
    r"charge",
    r"bill",
    r"spend",
    r"amount",
    r"rev",
)
# table layout: numeric columns with a usage-like name are metrics, other numbers static
USAGE_NAME = re.compile(
    r"min(ute)?s?|mou|call|sms|msg|data|_mb|mb_|gb|vol|usage|revenue|arpu|charge|bill|rech|"
    r"top.?up|overage|roam|drop|block|care|complaint|contact|spend|amount|traffic|session",
    re.IGNORECASE,
)
WIDE_COLUMN = re.compile(r"^(?P<metric>[A-Za-z][A-Za-z0-9_]*?)_(?P<period>\d+)$")
DATE_TEXT = re.compile(r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T].*)?$|^\d{4}-W\d{2}$|^\d{4}-\d{2}$")


# ---------------------------------------------------------------------------------------------
# Reading: the only part that touches files


def read_sample(path: str | Path, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """Up to ``rows`` rows of a Parquet or CSV file; CSV cells as the text written (ids keep
    their zeros, ``?`` stays ``?``), Parquet columns as stored. DataError names the file."""
    p = Path(path)
    table_columns(p, "data")  # file exists, is readable, has rows: one line naming it otherwise
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            batches = pq.ParquetFile(p).iter_batches(batch_size=rows)
            return next(batches).to_pandas()
        return pd.read_csv(p, nrows=rows, dtype=str, keep_default_na=False, low_memory=False)
    except Exception as exc:  # parser errors differ between pandas and pyarrow
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: cannot read a sample: {msg}") from None


# ---------------------------------------------------------------------------------------------
# Profiles of columns


@dataclass
class Column:
    """What a sample says about one column."""

    name: str
    kind: str  # number | bool | date | text
    n: int  # sample rows
    missing: int  # cells empty or holding a missing marker
    unique: int  # distinct non-missing values
    negative: bool = False  # numbers: any value below zero
    integer: bool = False  # numbers: every value whole
    values: list[str] = field(default_factory=list)  # up to 8 distinct values, most frequent first
    markers: list[str] = field(default_factory=list)  # missing markers seen

    @property
    def lowered(self) -> set[str]:
        return {v.strip().lower() for v in self.values}


@dataclass
class FileProfile:
    path: str
    rows: int  # rows in the sample
    columns: list[Column]
    frame: pd.DataFrame | None = field(default=None, repr=False)  # the sample itself

    def unique_pairs(self, a: str, b: str) -> bool:
        """Whether (a, b) identifies each sample row (a long table's subscriber and period)."""
        return self.frame is None or not self.frame.duplicated([a, b]).any()

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def profile_column(name: str, series: pd.Series) -> Column:
    """Kind, missing cells, distinct values and sign of one sample column."""
    n = len(series)
    if pd.api.types.is_bool_dtype(series):
        vals = series.dropna().astype(str)
        return Column(name, "bool", n, int(series.isna().sum()), int(vals.nunique()),
                      values=_top(vals))  # fmt: skip
    if pd.api.types.is_datetime64_any_dtype(series):
        return Column(name, "date", n, int(series.isna().sum()), int(series.nunique()))
    if pd.api.types.is_numeric_dtype(series):
        v = series.to_numpy(dtype="float64", na_value=np.nan)
        ok = v[np.isfinite(v)]
        return Column(
            name,
            "number",
            n,
            int(np.isnan(v).sum()),
            int(len(np.unique(ok))),
            negative=bool((ok < 0).any()),
            integer=bool(len(ok) and (ok == np.round(ok)).all()),
            values=_top(series.dropna().astype(str)),
        )
    text = series.astype("string").str.strip()
    is_marker = text.isna() | text.isin(MISSING_MARKERS)
    markers = sorted({m for m in text[is_marker].dropna().unique()})
    present = text[~is_marker]
    values = _top(present)
    col = Column(name, "text", n, int(is_marker.sum()), int(present.nunique()), values=values,
                 markers=markers)  # fmt: skip
    if not len(present):
        return col
    num = pd.to_numeric(present, errors="coerce")
    if num.notna().all():
        v = num.to_numpy(dtype="float64")
        col.kind, col.negative = "number", bool((v < 0).any())
        col.integer = bool((v == np.round(v)).all())
    elif col.lowered <= {"true", "false"}:
        col.kind = "bool"
    elif present.head(200).str.match(DATE_TEXT).all():
        col.kind = "date"
    return col


def _top(values: pd.Series, k: int = 8) -> list[str]:
    return [str(v) for v in values.value_counts().index[:k]]


def profile_frame(frame: pd.DataFrame, path: str) -> FileProfile:
    return FileProfile(
        str(path), len(frame), [profile_column(str(c), frame[c]) for c in frame.columns], frame
    )


# ---------------------------------------------------------------------------------------------
# Guesses


@dataclass
class Guess:
    """The config guessed for some files: the ``data:`` section, other sections, and notes."""

    data: dict
    notes: dict[str, str]  # data key -> why it was guessed (a comment in the YAML)
    model: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the user must look at
    name: str = "mydata"


def is_churn_values(col: Column) -> bool:
    """Two distinct values, both usual churn spellings (or a bool column)."""
    known = set(CHURN_POSITIVE) | set(CHURN_NEGATIVE)
    return col.kind == "bool" or (0 < col.unique <= 2 and col.lowered <= known)


def is_migration_values(col: Column) -> bool:
    return 0 < col.unique <= 3 and col.lowered <= set(MIGRATION_VALUES)


def id_candidates(p: FileProfile, repeated: bool) -> list[str]:
    """Columns that look like subscriber ids, best first: named like an id, no missing cell, and
    unique in the sample (``repeated``: long layout, where an id repeats once per period)."""
    out = []
    for c in p.columns:
        if c.missing or c.kind in ("date", "bool") or not ID_NAME.search(c.name):
            continue
        if c.kind == "number" and not c.integer:
            continue
        unique = c.unique == p.rows
        if (repeated and not unique and c.unique >= 2) or (not repeated and unique):
            out.append((0 if c.kind == "text" else 1, -c.unique, c.name))
    return [name for *_, name in sorted(out)]


def period_column(p: FileProfile, exclude: set[str]) -> str | None:
    """A column named like a period (or holding dates) with few distinct values."""
    by_name = [c for c in p.columns if c.name not in exclude and PERIOD_NAME.search(c.name)]
    dates = [c for c in p.columns if c.name not in exclude and c.kind == "date"]
    for c in by_name + dates:
        whole = c.kind != "number" or c.integer
        if c.missing == 0 and c.kind in ("date", "number", "text") and c.unique < p.rows and whole:
            return c.name
    return None


def wide_groups(names: list[str]) -> dict[str, list[int]]:
    """Metric -> periods of columns named ``<metric>_<digits>`` (``vol_2g_mb_6``)."""
    groups: dict[str, list[int]] = {}
    for n in names:
        m = WIDE_COLUMN.match(n)
        if m:
            groups.setdefault(m.group("metric"), []).append(int(m.group("period")))
    return groups


def revenue_metric(metrics: list[str]) -> str | None:
    for pattern in REVENUE_NAMES:
        for m in metrics:
            if re.search(pattern, m, re.IGNORECASE):
                return m
    return None


def label_columns(p: FileProfile, exclude: set[str]) -> tuple[str | None, str | None]:
    churn = next(
        (c.name for c in p.columns if c.name not in exclude and CHURN_NAME.search(c.name)), None
    )
    migration = next(
        (
            c.name
            for c in p.columns
            if c.name not in exclude and c.name != churn and MIGRATION_NAME.search(c.name)
        ),
        None,
    )
    return churn, migration


def _file_role(p: FileProfile, id_col: str | None) -> str:
    """labels: only id and label columns; else static."""
    rest = [c for c in p.names if c != id_col]
    churn, migration = label_columns(p, {id_col} if id_col else set())
    if rest and set(rest) <= {churn, migration}:
        return "labels"
    return "static"


PANEL_HEAD_TRIALS = 4  # model.head_trials of a panel's blend: the trials of the 200k measurement


def infer_config(profiles: list[FileProfile]) -> Guess:
    """The data section (and notes) for the profiled files; one of them holds the usage.

    The usage file is the one with a period column (long), or with ``<metric>_<period>`` columns
    (wide); failing both, the file with the most numeric columns is a table (one row per
    subscriber). The others are the labels file (id and label columns only) and the static file.
    """
    if not profiles:
        raise DataError("gpuseg init: give at least one data file")
    notes: dict[str, str] = {}
    warnings: list[str] = []
    data: dict = {}
    model: dict = {}

    # usage file and layout
    usage, layout, id_col, period = None, "table", None, None
    for p in profiles:  # wide first: its <metric>_<period> columns are unmistakable
        groups = {m: ps for m, ps in wide_groups(p.names).items() if len(set(ps)) >= 2}
        if len(groups) >= 2 or (groups and len(next(iter(groups.values()))) >= 3):
            usage, layout = p, "wide"
            break
    for p in profiles if usage is None else []:
        for cand in id_candidates(p, repeated=True):
            per = period_column(p, {cand})
            if per is not None and p.unique_pairs(cand, per):
                usage, layout, id_col, period = p, "long", cand, per
                break
        if usage is not None:
            break
    if usage is None:
        usage = max(profiles, key=lambda p: sum(c.kind == "number" for c in p.columns))
    data["usage"] = usage.path
    data["layout"] = layout
    if layout == "long":
        why = f"'{id_col}' repeats and '{period}' looks like a period: one row per subscriber "
        why += "and period"
    elif layout == "wide":
        example = next(n for n in usage.names if WIDE_COLUMN.match(n))
        why = f"columns named <metric>_<period> (e.g. {example}): one row per subscriber"
    else:
        why = "no period column and no <metric>_<period> columns: one row per subscriber"
    notes["layout"] = why

    # the id column (a table or wide file: unique values)
    if id_col is None:
        cands = id_candidates(usage, repeated=False)
        others = [p for p in profiles if p is not usage]
        shared = [c for c in cands if all(c in p.names for p in others)]
        id_col = (shared or cands or [None])[0]
    if id_col is None:
        if len(profiles) > 1:
            warnings.append(
                "no id column found; with several files set data.id_column to the column "
                "that joins them"
            )
        notes["id_column"] = 'no id column: the row number becomes the id ("1", "2", ...)'
    else:
        notes["id_column"] = "named like an id, no missing value" + (
            "" if layout == "long" else ", unique in the sample"
        )
    data["id_column"] = id_col
    if period is not None:
        data["period_column"] = period
        notes["period_column"] = f"sample values: {', '.join(usage.column(period).values[:3])}"

    # labels and static files, and the label columns
    exclude = {id_col, period} - {None}
    static_file = labels_file = None
    for p in profiles:
        if p is usage:
            continue
        if id_col is not None and id_col not in p.names:
            warnings.append(f"{p.path}: no column '{id_col}' to join on; file left out")
            continue
        role = _file_role(p, id_col)
        if role == "labels" and labels_file is None:
            labels_file = p
        elif static_file is None:
            static_file = p
        else:
            warnings.append(f"{p.path}: a second static table; join it with {static_file.path}")
    churn = migration = None
    for p in [labels_file, usage, static_file]:
        if p is None:
            continue
        churn, migration = label_columns(p, exclude)
        if churn or migration:
            labels_file = p
            break
    label_cols = {churn, migration} - {None}

    # metrics
    metric_cols: list[str]
    static_cols: list[str] | None = None
    skipped_dates: list[str] = []
    if layout == "wide":
        groups = wide_groups(usage.names)
        metric_cols, wide_cols = [], set()
        for m, ps in groups.items():
            cols = [f"{m}_{q}" for q in ps]
            kinds = {usage.column(c).kind for c in cols}
            if kinds == {"date"} or re.search(r"date", m, re.I):
                skipped_dates.extend(cols)
            elif len(set(ps)) >= 2 and kinds <= {"number"}:
                metric_cols.append(m)
                wide_cols.update(cols)
        left = [c for c in usage.names if c not in wide_cols and c not in exclude | label_cols]
        left = [c for c in left if c not in skipped_dates]
        if left and static_file is None:  # attributes in the same file: static from it
            static_file, static_cols = usage, left
        notes["metrics"] = (
            f"{len(metric_cols)} metrics x {len({q for ps in groups.values() for q in ps})} "
            "periods; wide_pattern splits <metric>_<period>"
        )
        if skipped_dates:
            notes["metrics"] += f"; {len(skipped_dates)} date columns left out"
    else:
        numeric = [
            c.name
            for c in usage.columns
            if c.kind == "number" and c.name not in exclude | label_cols
        ]
        if layout == "long":
            metric_cols = numeric
            left = [c for c in usage.names if c not in exclude | label_cols | set(numeric)]
            if left:
                warnings.append(
                    f"{usage.path}: non-numeric columns {', '.join(left[:5])} are not metrics; "
                    "move them to a static table"
                )
            notes["metrics"] = "every numeric column but id and period"
        else:
            metric_cols = [c for c in numeric if USAGE_NAME.search(c)]
            rest = [c for c in usage.names if c not in exclude | label_cols | set(metric_cols)]
            if not metric_cols and numeric:
                metric_cols, rest = numeric[:1], [c for c in rest if c != numeric[0]]
            if static_file is None:
                static_file, static_cols = usage, rest
            notes["metrics"] = "numeric columns named like usage or revenue (one period)"
            model["encoder"] = "static"
            model["head"] = "blend"
    data["metrics"] = {m: m for m in metric_cols}
    if not metric_cols:
        warnings.append(f"{usage.path}: no numeric metric column found; set data.metrics")

    if static_file is not None:
        if not (layout == "table" and static_file is usage):  # a table holds its own attributes
            data["static"] = static_file.path
        if static_cols is None:
            static_cols = [c for c in static_file.names if c not in exclude | label_cols]
        if static_file is usage or static_file is labels_file:
            data["static_columns"] = static_cols
        key = "static_columns" if layout == "table" and static_file is usage else "static"
        notes[key] = (
            "static attributes: the columns that are not metrics (numbers, categories)"
            if static_file is usage
            else "joined on the id column"
        )
    if labels_file is not None and churn is not None:
        data["labels"] = labels_file.path
        data["churn_column"] = churn
        col = labels_file.column(churn)
        notes["churn_column"] = f"values {', '.join(col.values[:4])}"
        if not is_churn_values(col):
            warnings.append(
                f"{labels_file.path}: column '{churn}' holds {', '.join(col.values[:4])}: set "
                "data.churn_values {positive: [...], negative: [...]}"
            )
            data["churn_values"] = {"positive": [], "negative": []}
        if col.missing:
            notes["churn_column"] += f"; {col.missing} of {col.n} sample rows unlabelled"
    if migration is not None and labels_file is not None:
        data["migration_column"] = migration
        if not is_migration_values(labels_file.column(migration)):
            warnings.append(
                f"{labels_file.path}: column '{migration}' is not down/stay/up or -1/0/1"
            )
    if churn is None:
        warnings.append(
            "no churn column found: set data.labels and data.churn_column, or derive churn from "
            "usage (data.churn_definition: no_usage or inactivity, data.label_periods)"
        )
        if layout == "long":
            data["churn_definition"] = "inactivity"
            data["label_periods"] = 4
            notes["churn_definition"] = "no labels: churn derived from the last 4 periods"
    else:
        notes["labels"] = "churn" + (" and migration" if migration else " only (no migration)")

    # revenue and signs
    rev = revenue_metric(metric_cols)
    if rev is not None:
        data["revenue_metric"] = rev
        notes["revenue_metric"] = "the metric ARPU and value tiers are computed from"
    elif metric_cols:
        warnings.append("no revenue-like metric (arpu, revenue, charge, ...): set "
                        "data.revenue_metric")  # fmt: skip
        data["revenue_metric"] = metric_cols[0]
        notes["revenue_metric"] = "a guess: no metric is named like revenue; edit"
    negative = []
    for m in metric_cols if layout != "table" else []:  # a table's metrics may all be negative
        cols = [m] if layout != "wide" else [c for c in usage.names if c.startswith(m + "_")]
        if any(usage.column(c).negative for c in cols if c in usage.names) and not re.search(
            NEGATIVE_PATTERN, m, re.IGNORECASE
        ):
            negative.append(m)
    if negative:
        data["allow_negative"] = sorted(
            set(negative) | {m for m in metric_cols if re.search(NEGATIVE_PATTERN, m, re.I)}
        )
        notes["allow_negative"] = "negative values seen in the sample (revenue-like ones too)"
    missing_metrics = [
        m
        for m in metric_cols
        if any(
            usage.column(c).missing
            for c in (
                [m] if layout != "wide" else [x for x in usage.names if x.startswith(m + "_")]
            )
            if c in usage.names
        )
    ]
    if missing_metrics:
        data["fill"] = {"default": "zero"}
        notes["fill"] = (
            f"missing cells in {', '.join(missing_metrics[:4])}"
            + (" ..." if len(missing_metrics) > 4 else "")
            + ": filled with 0 and counted in the prepare summary (error: stop instead)"
        )
    markers = sorted({m for p in profiles for c in p.columns for m in c.markers} - {""})
    if markers:
        notes["missing_markers"] = f"read as missing: {', '.join(repr(m) for m in markers)}"
    if layout != "table":  # a panel: score with the blend too, its boosters tuned as measured
        model["head"] = "blend"
        model["head_trials"] = PANEL_HEAD_TRIALS
    name = re.sub(r"[^a-z0-9]+", "_", Path(usage.path).stem.lower()).strip("_")[:32] or "mydata"
    return Guess(data=data, notes=notes, model=model, warnings=warnings, name=name)


# ---------------------------------------------------------------------------------------------
# Writing


_KEY_ORDER = (
    "usage",
    "layout",
    "id_column",
    "period_column",
    "metrics",
    "revenue_metric",
    "allow_negative",
    "fill",
    "static",
    "static_columns",
    "labels",
    "churn_column",
    "churn_values",
    "migration_column",
    "churn_definition",
    "label_periods",
)


def _flow(value) -> str:
    """One YAML value on one line (no document-end marker)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()


def _entry(key: str, value) -> list[str]:
    """``key: value`` at indent 2; long lists and mappings one item a line."""
    line = f"  {key}: {_flow(value)}"
    if len(line) <= 100 or not isinstance(value, (list, dict)):
        return [line]
    if isinstance(value, list):
        return [f"  {key}:"] + [f"    - {_flow(v)}" for v in value]
    return [f"  {key}:"] + [f"    {_flow(k)}: {_flow(v)}" for k, v in value.items()]


def render_config(guess: Guess, sources: list[str], sample_rows: int = SAMPLE_ROWS) -> str:
    """The guessed config as commented YAML; it loads with :func:`gpuseg.config.load_config`."""
    head = f"Written by gpuseg init from {', '.join(sources)}"
    lines = textwrap.wrap(head, 98, initial_indent="# ", subsequent_indent="#   ")
    lines += [
        f"# (guessed from the first {sample_rows:,} rows of each file). Edit, then:",
        "#   gpuseg check -c THIS.yaml    # the files against this config, in seconds",
        "#   gpuseg run -c THIS.yaml      # prepare -> train -> embed -> cluster -> report",
    ]
    for w in guess.warnings:
        lines.extend(textwrap.wrap(f"CHECK: {w}", 98, initial_indent="# ", subsequent_indent="# "))
    lines += [f"name: {guess.name}", f"out_dir: {_flow('runs/' + guess.name)}", "device: auto"]
    lines.append("data:")
    for key in _KEY_ORDER:
        if key not in guess.data:
            continue
        note = guess.notes.get(key)
        if note:
            lines.extend(textwrap.wrap(note, 98, initial_indent="  # ", subsequent_indent="  # "))
        lines.extend(_entry(key, guess.data[key]))
    for key in ("labels", "missing_markers"):
        if key in guess.notes and key not in guess.data:
            lines.append(f"  # {key}: {guess.notes[key]}")
    lines += [
        "  # other keys (README 'Your data'): churn_values, missing_markers, allow_negative,",
        "  # fill {default: error|zero|ffill, <metric>: ...}, max_missing_frac, pseudonymize",
    ]
    if guess.model:
        lines.append("model:")
        if guess.model.get("encoder") == "static":
            lines.append("  # one period per subscriber: no sequence to read")
        if guess.model.get("head") == "blend" and guess.data.get("layout") == "table":
            lines += [
                "  # head: blend: churn scores from a blend of this model, the logistic baseline,",
                "  # HistGradientBoosting and tuned XGBoost/LightGBM (the boost extra), level with",
                "  # the best tuned baseline on the public tables (README 'Scoring with the",
                "  # winner'); the model alone (head: sequence) is 0.003-0.047 ROC-AUC behind",
                "  # them there",
            ]
        elif guess.model.get("head") == "blend":
            lines += [
                "  # head: blend: churn scores from a blend of the sequence model, the logistic",
                "  # baseline, HistGradientBoosting and XGBoost/LightGBM tuned with head_trials",
                "  # Optuna trials each, a real win over the best tuned baseline on the 200k",
                "  # worlds (README 'Scoring with the winner'); head: sequence trains faster",
            ]
        for k, v in guess.model.items():
            lines.append(f"  {k}: {_flow(v)}")
    lines += [
        "train:",
        "  epochs: 20",
        "cluster:",
        "  k_min: 3",
        "  k_max: 6",
    ]
    return "\n".join(lines) + "\n"


def init_config(
    paths: list[str], rows: int = SAMPLE_ROWS, name: str | None = None
) -> tuple[str, Guess]:
    """Sample each file, guess, render: (YAML text, guess). ``name``: the run's name (its
    out_dir is runs/<name>); None: from the usage file's name."""
    profiles = [profile_frame(read_sample(p, rows), p) for p in paths]
    guess = infer_config(profiles)
    if name:
        guess.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return render_config(guess, list(paths), rows), guess


__all__ = [
    "Column",
    "FileProfile",
    "Guess",
    "SAMPLE_ROWS",
    "read_sample",
    "profile_column",
    "profile_frame",
    "infer_config",
    "render_config",
    "init_config",
]
