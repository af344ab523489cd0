"""``gpuseg check``: a run config against its files, in seconds, before any training.

Reads each file's header, the id columns in full (ids only, as text) and a bounded sample of the
metric and label columns (:data:`VALUE_ROWS` rows), and returns one line per problem, each naming
the file, the column and (for values) the row: columns that are missing, a revenue metric that is
not a metric, label values that no churn spelling reads, metric cells that prepare would refuse,
and ids that do not join between the files. Problems stop ``prepare`` later; notes do not (they
say what prepare will do, e.g. reject subscribers without static attributes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gpuseg.config import DataConfig, RunConfig
from gpuseg.data.static import check_magnitude
from gpuseg.errors import DataError
from gpuseg.io.tables import table_columns

VALUE_ROWS = 200_000  # rows of each file whose metric and label values are checked

# issue-14 data keys (README "Your data") and their defaults, for configs that leave them out
DEFAULTS = dict(
    missing_markers=["", "?", "NA", "N/A", "n/a", "na", "null", "NULL", "-", "none", "None"],
    churn_values=dict(
        positive=[1, True, "yes", "y", "churned", "churn"],
        negative=[0, False, "no", "n", "active", "stayed", "retained"],
    ),
    allow_negative=None,
    negative_pattern=r"(arpu|rev|revenue|charge|bill|amount|spend|balance|adjust)",
    fill=dict(default="error"),
)
MIGRATION_TEXT = {"down", "stay", "up", "-1", "0", "1", "-1.0", "0.0", "1.0"}


def data_key(cfg: DataConfig, key: str):
    """``cfg.<key>``, or its documented default where this DataConfig has no such field."""
    return getattr(cfg, key, DEFAULTS[key])


@dataclass
class CheckResult:
    problems: list[str] = field(default_factory=list)  # each stops prepare: exit 1
    notes: list[str] = field(default_factory=list)  # what prepare will do: exit 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip().lower()


def churn_spellings(cfg: DataConfig) -> tuple[set[str], set[str]]:
    values = data_key(cfg, "churn_values")
    if isinstance(values, dict):
        pos, neg = values.get("positive", []), values.get("negative", [])
    else:  # a dataclass section
        pos, neg = values.positive, values.negative
    return {_text(v) for v in pos}, {_text(v) for v in neg}


def read_columns(path: Path, columns: list[str], rows: int | None = None) -> pd.DataFrame:
    """``columns`` of a file as stored (Parquet) or as written (CSV text); ``rows``: the first."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            pf = pq.ParquetFile(path)
            if rows is None:
                return pf.read(columns=columns).to_pandas()
            return next(pf.iter_batches(batch_size=rows, columns=columns)).to_pandas()
        if rows is None:  # a whole column (the ids): Arrow's multithreaded reader, as text
            opts = pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
            )
            return pacsv.read_csv(path, convert_options=opts).to_pandas()
        return pd.read_csv(
            path, usecols=columns, dtype=str, keep_default_na=False, nrows=rows, low_memory=False
        )
    except Exception as exc:  # parser errors differ between pandas and pyarrow
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read columns {', '.join(columns[:3])}: {msg}") from None


def _as_ids(series: pd.Series) -> pd.Series:
    return series.astype(str)


def _columns(path: str | None, what: str, res: CheckResult) -> list[str] | None:
    if not path:
        return None
    try:
        return table_columns(Path(path), what)
    except DataError as exc:
        res.problems.append(str(exc))
        return None


def _missing_column(res: CheckResult, path, col: str, key: str, columns: list[str]) -> bool:
    if col in columns:
        return False
    res.problems.append(
        f"{path}: column '{col}' ({key}) not found; columns: {', '.join(columns[:12])}"
        + (" ..." if len(columns) > 12 else "")
    )
    return True


def metric_map(cfg: DataConfig, columns: list[str], res: CheckResult) -> dict[str, list[str]]:
    """gpuseg metric name -> the usage columns holding it (one for long/table, one per period
    for wide); missing columns are problems."""
    path = cfg.usage
    id_col, layout = cfg.id_column, cfg.layout
    if layout == "wide":
        try:
            pattern = re.compile(cfg.wide_pattern)
        except re.error as exc:
            res.problems.append(f"data.wide_pattern: invalid regex ({exc})")
            return {}
        groups: dict[str, list[str]] = {}
        for c in columns:
            m = pattern.match(c)
            if m and c != id_col and "metric" in pattern.groupindex:
                groups.setdefault(m.group("metric"), []).append(c)
        if cfg.metrics:
            out = {}
            for name, prefix in cfg.metrics.items():
                if prefix not in groups:
                    res.problems.append(
                        f"{path}: no columns match metric '{prefix}' (data.metrics.{name}) with "
                        "data.wide_pattern"
                    )
                else:
                    out[name] = groups[prefix]
            return out
        if not groups:
            res.problems.append(f"{path}: no column matches data.wide_pattern")
        return groups
    if cfg.metrics:
        out = {}
        for name, col in cfg.metrics.items():
            if not _missing_column(res, path, col, f"data.metrics.{name}", columns):
                out[name] = [col]
        return out
    skip = {id_col, getattr(cfg, "period_column", None) if layout == "long" else None}
    if layout == "table" or cfg.labels == cfg.usage:
        skip |= {cfg.churn_column, cfg.migration_column}
    if cfg.static == cfg.usage:
        skip |= set(cfg.static_columns or [])
    return {c: [c] for c in columns if c not in skip}


def check_metric_values(
    cfg: DataConfig, metrics: dict[str, list[str]], rows: int, res: CheckResult
) -> None:
    """Text in a metric, negatives where not allowed, missing cells without a fill policy."""
    path = Path(cfg.usage)
    cols = sorted({c for cs in metrics.values() for c in cs})
    if not cols:
        return
    frame = read_columns(path, cols, rows)
    markers = {str(m) for m in data_key(cfg, "missing_markers")}
    allowed = data_key(cfg, "allow_negative")
    negative_re = re.compile(data_key(cfg, "negative_pattern"), re.IGNORECASE)
    fill = data_key(cfg, "fill") or {}
    for name, columns in metrics.items():
        if allowed is not None:
            may_be_negative = name in allowed
        else:  # unset: revenue-like names; in a table (attributes, percent changes) every metric
            may_be_negative = cfg.layout == "table" or bool(negative_re.search(name))
        policy = fill.get(name, fill.get("default", "error"))
        for col in columns:
            s = frame[col]
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                v, missing = s.to_numpy(dtype="float64", na_value=np.nan), s.isna().to_numpy()
            else:
                text = s.astype("string").str.strip()
                missing = (text.isna() | text.isin(markers)).to_numpy()
                num = pd.to_numeric(text.mask(missing), errors="coerce")
                bad = num.isna().to_numpy() & ~missing
                if bad.any():
                    row = int(np.flatnonzero(bad)[0]) + 1
                    res.problems.append(
                        f"{path}: column '{col}' row {row}: non-numeric value in metric '{name}' "
                        "(add it to data.missing_markers if it means missing)"
                    )
                    continue
                v = num.to_numpy(dtype="float64")
            if missing.any() and policy == "error":
                row = int(np.flatnonzero(missing)[0]) + 1
                res.problems.append(
                    f"{path}: column '{col}' row {row}: missing value in metric '{name}' "
                    f"({int(missing.sum()):,} such cells); set data.fill (zero or ffill)"
                )
            try:
                check_magnitude(v, path, col)
            except DataError as exc:
                res.problems.append(f"{exc} (metric '{name}')")
            if (v[~missing] < 0).any() and not may_be_negative:
                row = int(np.flatnonzero(np.nan_to_num(v) < 0)[0]) + 1
                res.problems.append(
                    f"{path}: column '{col}' row {row}: negative value in metric '{name}'; "
                    "add it to data.allow_negative if that is normal"
                )


def check_labels(cfg: DataConfig, columns: list[str], rows: int, res: CheckResult) -> None:
    path = Path(cfg.labels)
    label = cfg.churn_definition == "label"
    if label and _missing_column(res, path, cfg.churn_column, "data.churn_column", columns):
        return
    want = [c for c in (cfg.churn_column, cfg.migration_column) if c in columns]
    if cfg.migration_column not in columns:
        res.notes.append(
            f"{path}: no migration column '{cfg.migration_column}': migration is not trained "
            "or reported"
        )
    if not want:
        return
    frame = read_columns(path, want, rows)
    markers = {str(m) for m in data_key(cfg, "missing_markers")}
    if cfg.churn_column in frame.columns:
        pos, neg = churn_spellings(cfg)
        text = frame[cfg.churn_column].map(_text, na_action="ignore")
        missing = text.isna() | frame[cfg.churn_column].astype("string").str.strip().isin(markers)
        bad = ~missing & ~text.isin(pos | neg)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            value = str(frame[cfg.churn_column].iloc[row - 1]).strip()[:40]
            res.problems.append(
                f"{path}: column '{cfg.churn_column}' row {row}: churn value {value!r} is neither "
                "positive nor negative in data.churn_values"
            )
        else:
            n_pos = int(text.isin(pos).sum())
            n = int((~missing).sum())
            res.notes.append(
                f"{path}: churn '{cfg.churn_column}': {n_pos:,} positive of {n:,} labelled"
                + (f", {int(missing.sum()):,} unlabelled" if missing.any() else "")
                + (" (first rows)" if rows and len(frame) == rows else "")
            )
    if cfg.migration_column in frame.columns:
        text = frame[cfg.migration_column].map(_text, na_action="ignore")
        missing = text.isna() | text.isin({m.lower() for m in markers})
        bad = ~missing & ~text.isin(MIGRATION_TEXT)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            res.problems.append(
                f"{path}: column '{cfg.migration_column}' row {row}: migration must be "
                "down/stay/up or -1/0/1"
            )


def check_ids(cfg: DataConfig, files: dict[str, list[str]], res: CheckResult) -> None:
    """Every file's ids, as text: duplicates where one row per subscriber, and the overlap."""
    if cfg.id_column is None:
        if len({cfg.usage, cfg.static or cfg.usage, cfg.labels or cfg.usage}) > 1:
            res.problems.append(
                "data.id_column: null (row numbers as ids) needs the static and labels columns "
                f"in the usage file {cfg.usage}; name the id column that joins the files"
            )
        return
    ids: dict[str, pd.Series] = {}
    read: dict[str, pd.Series] = {}  # path -> its distinct ids (a file used twice is read once)
    for role, path in (("usage", cfg.usage), ("static", cfg.static), ("labels", cfg.labels)):
        if not path or role not in files or cfg.id_column not in files[role]:
            continue
        if path not in read:
            s = _as_ids(read_columns(Path(path), [cfg.id_column])[cfg.id_column])
            one_row = path != cfg.usage or cfg.layout != "long"
            if one_row and s.duplicated().any():
                row = int(np.flatnonzero(s.duplicated().to_numpy())[0]) + 1
                res.problems.append(f"{path}: column '{cfg.id_column}' row {row}: duplicate id")
            read[path] = pd.Series(s.unique())
        ids[role] = read[path]
    if "usage" not in ids:
        return
    usage = set(ids["usage"])
    for role in ("static", "labels"):
        if role not in ids:
            continue
        other = set(ids[role])
        both = len(usage & other)
        path = getattr(cfg, role)
        if both == 0:
            hint = ""
            if {_number_text(i) for i in usage} & {_number_text(i) for i in other}:
                hint = " (they differ only in how numbers are written, e.g. 7 and 7.0)"
            res.problems.append(
                f"{path}: none of its {len(other):,} ids is in the usage file {cfg.usage}{hint}"
            )
            continue
        only_other = len(other - usage)
        only_usage = len(usage - other)
        if role == "labels" and only_other:
            res.problems.append(
                f"{path}: {only_other:,} labelled ids are not in the usage file {cfg.usage}"
            )
        if role == "static" and only_other:
            res.notes.append(f"{path}: {only_other:,} ids have no usage rows (rejected)")
        if only_usage:
            res.notes.append(
                f"{cfg.usage}: {only_usage:,} of {len(usage):,} ids have no row in {path}"
                + (" (rejected)" if role == "static" else " (unlabelled)")
            )


def _number_text(value: str) -> str:
    try:
        f = float(value)
    except ValueError:
        return value
    return str(int(f)) if f.is_integer() else str(f)


def check_config(cfg: RunConfig, rows: int = VALUE_ROWS) -> CheckResult:
    """Every check above on ``cfg.data``; a synthetic world is generated by ``gpuseg run``."""
    res = CheckResult()
    d = cfg.data
    if cfg.synth is not None and not d.usage:
        res.notes.append(
            "data: the synthetic world (synth section); `gpuseg run` or `gpuseg synth` writes it"
        )
        return res
    if not d.usage:
        res.problems.append("data.usage: no usage file given")
        return res
    files: dict[str, list[str]] = {}
    for role, path in (("usage", d.usage), ("static", d.static), ("labels", d.labels)):
        cols = _columns(path, role, res)
        if cols is not None:
            files[role] = cols
    if "usage" in files:
        cols = files["usage"]
        if d.id_column is not None:
            _missing_column(res, d.usage, d.id_column, "data.id_column", cols)
        if d.layout == "long":
            _missing_column(res, d.usage, d.period_column, "data.period_column", cols)
        metrics = metric_map(d, cols, res)
        if metrics and d.revenue_metric not in metrics:
            res.problems.append(
                f"{d.usage}: revenue metric '{d.revenue_metric}' (data.revenue_metric) is not a "
                f"metric; metrics: {', '.join(list(metrics)[:12])}"
            )
        if metrics and not res.problems:  # values only once the columns are right
            check_metric_values(d, metrics, rows, res)
            n_periods = max(len(v) for v in metrics.values())
            res.notes.append(
                f"{d.usage}: {d.layout} layout, {len(metrics)} metrics"
                + (f" x {n_periods} periods" if d.layout == "wide" else "")
                + f"; revenue metric '{d.revenue_metric}'"
            )
    if d.layout == "table" and "usage" in files:
        if d.static:
            res.problems.append(
                f"data.static: the table layout reads static attributes from {d.usage} itself; "
                "remove data.static"
            )
        for c in d.static_columns or []:
            _missing_column(res, d.usage, c, "data.static_columns", files["usage"])
    if "static" in files and d.layout != "table":
        cols = files["static"]
        if d.id_column is not None:
            _missing_column(res, d.static, d.id_column, "data.id_column", cols)
        for c in d.static_columns or []:
            _missing_column(res, d.static, c, "data.static_columns", cols)
    if "labels" in files:
        check_labels(d, files["labels"], rows, res)
    elif d.churn_definition == "label" and not d.labels:
        res.problems.append(
            "data.labels: no labels file and data.churn_definition is 'label'; give a labels "
            "file or derive churn from usage (no_usage or inactivity with data.label_periods)"
        )
    check_ids(d, files, res)
    return res


__all__ = ["CheckResult", "check_config", "VALUE_ROWS"]
