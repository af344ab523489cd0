"""Labels derived from the usage itself, for data that comes without a churn or migration column.

The last ``label_periods`` periods of the usage table form the **label window**; the periods before
it are the **observation window**, the only ones the model and the baselines see. From the label
window:

- churn, ``no_usage``: no activity at all in the label window;
- churn, ``inactivity``: a run of at least ``ceil(inactivity_days / period_days)`` consecutive
  inactive periods inside the label window (prepaid-style: no top-up or usage for N days);
- migration: the value tier (quantile cuts of the observation window's recent ARPU, fitted on the
  population) in the label window against the tier at the end of the observation window; churners
  count as ``down``, as in the synthetic world.

A period is *active* when it is present and any activity metric is above zero. With
``window_offset`` = s the last s periods are dropped first, so the same export gives an earlier
window (train) and a later one (test): the out-of-time protocol of
:func:`gpuseg.evaluate.evaluate_run`.

Everything here is a function over arrays of one block of subscribers (except the tier cuts,
which are population quantiles passed in), so it applies chunk by chunk and per partition.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from gpuseg.backend import Backend
from gpuseg.config import DataConfig
from gpuseg.data.ids import id_positions, require_overlap
from gpuseg.data.panel import MIGRATION_CODES
from gpuseg.data.privacy import pseudonymize_ids
from gpuseg.errors import ConfigError, DataError
from gpuseg.io.store import open_memmap_reserved, read_json, temp_path, write_json_atomic
from gpuseg.io.tables import read_table

BLOCK_ROWS = 65_536  # subscribers per block when rewriting a panel

DOWN, STAY, UP = 0, 1, 2


def check_windows(n_periods: int, label_periods: int, window_offset: int) -> int:
    """Number of observation periods left, or a ConfigError naming the key."""
    if label_periods <= 0:
        raise ConfigError("data.label_periods: must be > 0 when churn is derived from usage")
    if window_offset < 0:
        raise ConfigError("data.window_offset: must be >= 0")
    n_obs = n_periods - window_offset - label_periods
    if n_obs < 2:
        raise ConfigError(
            f"data.label_periods + data.window_offset = {label_periods + window_offset} leave "
            f"{n_obs} observation periods of {n_periods}; need at least 2"
        )
    return n_obs


def active_periods(usage: np.ndarray, mask: np.ndarray, metric_idx: list[int]) -> np.ndarray:
    """(B, T) bool: present and any of the activity metrics above zero."""
    return np.asarray(mask, dtype=bool) & (np.asarray(usage)[:, :, metric_idx] > 0).any(axis=2)


def longest_inactive_run(active: np.ndarray) -> np.ndarray:
    """(B,) length of the longest run of consecutive inactive periods in each row of (B, T)."""
    run = np.zeros(active.shape[0], dtype=np.int64)
    best = np.zeros_like(run)
    for t in range(active.shape[1]):
        run = np.where(active[:, t], 0, run + 1)
        best = np.maximum(best, run)
    return best


def inactivity_periods(
    definition: str, label_periods: int, days: int, period_days: float | None
) -> int:
    """Consecutive inactive periods in the label window that make a churner."""
    if definition == "no_usage":
        return label_periods
    k = math.ceil(days / period_days)
    if k > label_periods:
        raise ConfigError(
            f"data.inactivity_days: {days} days are {k} periods, more than the label window's "
            f"{label_periods} (data.label_periods)"
        )
    return max(k, 1)


def recent_arpu(revenue: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """(B,) mean revenue over the present periods among the last k of (B, T)."""
    r, m = np.asarray(revenue, dtype=np.float64)[:, -k:], np.asarray(mask, dtype=bool)[:, -k:]
    return (r * m).sum(1) / np.maximum(m.sum(1), 1)


def tier_cuts(arpu: np.ndarray, quantiles=(0.2, 0.4, 0.6, 0.8)) -> np.ndarray:
    """Population cut points of the value tiers (quintiles by default)."""
    return np.quantile(np.asarray(arpu, dtype=np.float64), quantiles)


def derive_block(
    usage: np.ndarray,
    mask: np.ndarray,
    *,
    n_obs: int,
    label_periods: int,
    min_inactive: int,
    activity_idx: list[int],
    revenue_idx: int | None,
    cuts: np.ndarray | None,
    arpu_periods: int = 4,
) -> dict[str, np.ndarray]:
    """One block of subscribers: usage (B, T_all, M), mask (B, T_all) -> observation window and
    labels. ``n_obs`` periods from the start are observed, the next ``label_periods`` are the
    label window (any later periods, the offset, are ignored). Migration is -1 without revenue."""
    lab = slice(n_obs, n_obs + label_periods)
    active = active_periods(usage[:, lab], mask[:, lab], activity_idx)  # (B, L)
    churn = (longest_inactive_run(active) >= min_inactive).astype(np.int8)
    migration = np.full(len(churn), -1, dtype=np.int8)
    if revenue_idx is not None and cuts is not None:
        now = recent_arpu(usage[:, :n_obs, revenue_idx], mask[:, :n_obs], arpu_periods)
        nxt = recent_arpu(usage[:, lab, revenue_idx], mask[:, lab], label_periods)
        tier_now = np.searchsorted(cuts, now, side="right")
        tier_next = np.where(churn == 1, -1, np.searchsorted(cuts, nxt, side="right"))
        migration = (np.sign(tier_next - tier_now) + 1).astype(np.int8)  # down 0, stay 1, up 2
    return dict(
        usage=usage[:, :n_obs],
        mask=mask[:, :n_obs],
        churn=churn,
        migration=migration,
    )


def period_days_of(periods: list[str], given: float | None) -> float:
    """Days per period: ``given``, else the median spacing of the period dates."""
    if given is not None:
        if given <= 0:
            raise ConfigError("data.period_days: must be > 0")
        return float(given)
    dates = pd.to_datetime(pd.Series(periods), errors="coerce")
    if dates.isna().any() or len(dates) < 2:
        raise ConfigError(
            "data.period_days: the periods are not dates, so set how many days a period holds"
        )
    return float(dates.diff().dt.days.iloc[1:].median())


def _metric_index(metrics: list[str], names: list[str], key: str) -> list[int]:
    for name in names:
        if name not in metrics:
            raise ConfigError(f"{key}: metric '{name}' is not in the panel ({', '.join(metrics)})")
    return [metrics.index(name) for name in names]


def derive_panel_labels(panel_dir: str | Path, cfg: DataConfig) -> dict:
    """Rewrite a prepared panel directory in place: the observation window (usage, mask) and
    churn/migration derived from the label window, block by block. Updates and returns meta."""
    panel_dir = Path(panel_dir)
    if cfg.labels:
        raise ConfigError(
            f"data.labels and data.churn_definition={cfg.churn_definition} both given; "
            "use one source of labels"
        )
    meta = read_json(panel_dir / "meta.json")
    usage = np.load(panel_dir / "usage.npy", mmap_mode="r", allow_pickle=False)
    mask = np.load(panel_dir / "mask.npy", mmap_mode="r", allow_pickle=False)
    n, t, _ = usage.shape
    n_obs = check_windows(t, cfg.label_periods, cfg.window_offset)
    metrics = list(meta["metrics"])
    activity = _metric_index(metrics, cfg.activity_metrics or metrics, "data.activity_metrics")
    revenue = metrics.index(cfg.revenue_metric) if cfg.revenue_metric in metrics else None
    days = None  # no_usage counts periods, not days: integer periods need no data.period_days
    if cfg.churn_definition != "no_usage" or cfg.period_days is not None:
        days = period_days_of(list(meta["periods"]), cfg.period_days)
    min_inactive = inactivity_periods(
        cfg.churn_definition, cfg.label_periods, cfg.inactivity_days, days
    )
    blocks = [slice(s, min(s + BLOCK_ROWS, n)) for s in range(0, n, BLOCK_ROWS)]
    cuts = None
    if revenue is not None:
        arpu = (
            np.concatenate(
                [recent_arpu(usage[b, :n_obs, revenue], mask[b, :n_obs], 4) for b in blocks]
            )
            if n
            else np.zeros(0)
        )
        cuts = tier_cuts(arpu) if n else None

    tmp = {k: temp_path(panel_dir / f"{k}.npy") for k in ("usage", "mask", "churn", "migration")}
    out = dict(
        usage=open_memmap_reserved(tmp["usage"], np.float32, (n, n_obs, usage.shape[2])),
        mask=open_memmap_reserved(tmp["mask"], bool, (n, n_obs)),
        churn=open_memmap_reserved(tmp["churn"], np.int8, (n,)),
        migration=open_memmap_reserved(tmp["migration"], np.int8, (n,)),
    )
    for b in blocks:
        part = derive_block(
            np.asarray(usage[b]),
            np.asarray(mask[b]),
            n_obs=n_obs,
            label_periods=cfg.label_periods,
            min_inactive=min_inactive,
            activity_idx=activity,
            revenue_idx=revenue,
            cuts=cuts,
        )
        for key, arr in out.items():
            arr[b] = part[key]
    for arr in out.values():
        arr.flush()
    del out, usage, mask
    for key, path in tmp.items():
        path.replace(panel_dir / f"{key}.npy")

    periods = list(meta["periods"])
    meta["periods"] = periods[:n_obs]
    churn = np.load(panel_dir / "churn.npy", allow_pickle=False)
    meta["labels"] = dict(
        definition=cfg.churn_definition,
        label_window=[periods[n_obs], periods[n_obs + cfg.label_periods - 1]],
        window_offset=cfg.window_offset,
        min_inactive_periods=min_inactive,
        period_days=days,
        tier_cuts=None if cuts is None else [float(c) for c in cuts],
        churn_rate=float(churn.mean()) if n else None,
    )
    meta["labelled"] = dict(churn=n, migration=n if cuts is not None else 0)
    write_json_atomic(panel_dir / "meta.json", meta)
    return meta


__all__ = [
    "derive_panel_labels",
    "period_days_of",
    "check_windows",
    "active_periods",
    "longest_inactive_run",
    "inactivity_periods",
    "recent_arpu",
    "tier_cuts",
    "derive_block",
]


def _label_text(value) -> str | None:
    """A label cell as lower-case text (1, 1.0, True -> '1', '1', 'true'); None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else str(float(value))
    return str(value).strip().lower()


def churn_codes(column: pd.Series, cfg: DataConfig, path: Path) -> np.ndarray:
    """A churn column -> int8 codes (1 churned, 0 stayed, -1 missing) by ``data.churn_values``;
    any other value raises DataError naming the file, column, value and row."""
    positive = {_label_text(v) for v in cfg.churn_values.positive}
    negative = {_label_text(v) for v in cfg.churn_values.negative}
    both = sorted(positive & negative - {None})
    if both:
        raise ConfigError(f"data.churn_values: {both[0]!r} is both positive and negative")
    # map the distinct values (a handful), not every row
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    lut = np.full(len(uniques) + 1, -1, dtype=np.int8)  # last entry: missing (code -1)
    for k, v in enumerate(uniques):
        text = _label_text(v)
        if text is None or text == "":
            continue
        if text in positive:
            lut[k] = 1
        elif text in negative:
            lut[k] = 0
        else:
            row = int(np.flatnonzero(codes == k)[0]) + 1
            raise DataError(
                f"{path}: column '{column.name}' row {row}: churn value {str(v)!r} is neither "
                f"churned ({', '.join(sorted(positive))}) nor stayed "
                f"({', '.join(sorted(negative))}); set data.churn_values"
            )
    return lut[codes]


def migration_codes(column: pd.Series, path: Path) -> np.ndarray:
    """A migration column -> int8 codes (0 down, 1 stay, 2 up, -1 missing)."""
    # map the distinct labels (a handful), not every row: 10M rows stay fast and small
    codes, uniques = pd.factorize(column)  # missing: code -1
    lut = []
    for v in uniques:
        if isinstance(v, str):
            v = v.strip().lower()
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        lut.append(MIGRATION_CODES.get(v))
    bad = np.isin(codes, [i for i, v in enumerate(lut) if v is None])
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise DataError(
            f"{path}: column '{column.name}' row {row}: migration must be down/stay/up or -1/0/1"
        )
    return np.array([-1 if v is None else v for v in lut] + [-1], dtype=np.int8)[codes]


def labels_from_frame(
    cfg: DataConfig,
    frame: pd.DataFrame,
    path: Path,
    ids: np.ndarray,
    rejected: np.ndarray | None = None,
    hashed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Churn and migration codes of ``frame`` (a labels table with the id column) aligned with
    ``ids``. Migration is optional; a churn column named in the config but absent is an error.
    ``hashed``: the frame's ids are pseudonymised already (labels read with the usage table)."""
    n = len(ids)
    churn = np.full(n, -1, dtype=np.int8)
    migration = np.full(n, -1, dtype=np.int8)
    id_col = cfg.id_name
    if id_col not in frame.columns:
        raise DataError(f"{path}: column '{id_col}' (data.id_column) not found")
    has_churn = cfg.churn_column in frame.columns
    has_migration = cfg.migration_column in frame.columns
    if not has_churn and (not has_migration or cfg.churn_column != "churn"):
        cols = ", ".join(str(c) for c in list(frame.columns)[:20])
        raise DataError(
            f"{path}: column '{cfg.churn_column}' (data.churn_column) not found; columns: {cols}"
        )
    if not has_migration and cfg.migration_column != "migration":
        raise DataError(
            f"{path}: column '{cfg.migration_column}' (data.migration_column) not found"
        )
    # a pandas string column, not a Python string object per row (10M rows: GBs)
    raw_ids = frame[id_col]
    lab_ids = pd.Series(raw_ids if hashed else pseudonymize_ids(raw_ids, cfg, path), copy=False)
    pos = id_positions(ids, lab_ids)
    found = pos >= 0
    rejected = np.asarray(rejected if rejected is not None else [], dtype=str)
    skip = np.zeros(len(found), dtype=bool)
    if not found.all():
        skip[~found] = np.isin(lab_ids[~found].to_numpy().astype(str), rejected)
    require_overlap(found | skip, lab_ids, ids, str(path), str(cfg.usage), "label")
    unknown = ~found & ~skip  # labels of subscribers only in the static table: already rejected
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0]) + 1
        raise DataError(
            f"{path}: row {row}: label for a subscriber not in the usage table "
            f"({int(unknown.sum())} such rows)"
        )
    dup = lab_ids.duplicated().to_numpy()
    if dup.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate subscriber")
    if has_churn:
        churn[pos[found]] = churn_codes(frame[cfg.churn_column], cfg, path)[found]
    if has_migration:
        migration[pos[found]] = migration_codes(frame[cfg.migration_column], path)[found]
    return churn, migration


def align_labels(
    cfg: DataConfig, ids: np.ndarray, backend: Backend, rejected: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Churn and migration codes aligned with ``ids``; labels of ``rejected`` ids are ignored."""
    if not cfg.labels:
        n = len(ids)
        return np.full(n, -1, dtype=np.int8), np.full(n, -1, dtype=np.int8)
    path = Path(cfg.labels)
    frame = read_table(path, backend, "labels", cfg.id_column, cfg.missing_markers)
    frame = frame.to_pandas() if hasattr(frame, "to_pandas") else frame
    return labels_from_frame(cfg, frame, path, ids, rejected)
