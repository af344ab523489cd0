"""Drift between two scoring runs (say, last month and this month): is the segmentation stale?

Inputs are two outputs of ``gpuseg score`` (or a run's ``predictions.parquet`` joined with its
``segments.parquet``): an id column, ``churn_prob``, ``migration_*`` and ``segment``.

- **Population stability index** per score column: the old run's values are cut into ``bins``
  quantile bins (edges from the old run), and PSI = sum over bins of (new% - old%) x ln(new% /
  old%), with shares floored at ``eps``. The same sum over segment shares gives the segment PSI.
  Usual reading: below 0.1 stable, 0.1-0.25 moderate shift (watch), above 0.25 major shift
  (refresh the segmentation).
- **Transition matrix** over subscribers present in both runs: counts and row shares of old
  segment -> new segment, and the share that stayed.
- **Verdict**: the worse of the PSI reading and the transition reading. Subscribers scored by
  the same run keep their segment unless their behaviour moved, so the share that stayed reads:
  at least 90 % stable, 70-90 % moderate, below 70 % major (segment shares can balance out while
  most subscribers change segment, which PSI alone does not see).
- Optionally, per usage metric: PSI of the per-subscriber means of two panels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuseg.data.panel import load_panel
from gpuseg.errors import ConfigError, DataError
from gpuseg.features.aggregates import subscriber_means
from gpuseg.io.formats import table_format
from gpuseg.io.store import write_json_atomic, write_text_atomic

STABLE, MODERATE = 0.1, 0.25
STAYED_STABLE, STAYED_MODERATE = 0.9, 0.7  # share of subscribers who kept their segment
VERDICTS = (
    "stable: keep the segmentation",
    "moderate shift: watch, refresh if it persists",
    "major shift: refresh the segmentation",
)


def reading(value: float) -> str:
    """stable (< 0.1), moderate (0.1-0.25) or major (> 0.25)."""
    if not np.isfinite(value):
        return "n/a"
    return "stable" if value < STABLE else "moderate" if value <= MODERATE else "major"


def psi_from_shares(old: np.ndarray, new: np.ndarray, eps: float = 1e-4) -> float:
    """PSI of two share vectors over the same bins (each floored at ``eps``)."""
    o = np.maximum(np.asarray(old, dtype=np.float64), eps)
    n = np.maximum(np.asarray(new, dtype=np.float64), eps)
    return float(((n - o) * np.log(n / o)).sum())


def psi(old: np.ndarray, new: np.ndarray, bins: int = 10, eps: float = 1e-4) -> dict[str, Any]:
    """PSI of a continuous column: quantile bins of ``old``; missing values are dropped.

    Returns ``psi``, ``reading``, the bin ``edges`` (inner) and the ``old``/``new`` shares.
    """
    if bins < 2:
        raise ConfigError(f"drift bins: need at least 2, got {bins}")
    o = np.asarray(old, dtype=np.float64)
    n = np.asarray(new, dtype=np.float64)
    o, n = o[np.isfinite(o)], n[np.isfinite(n)]
    if len(o) == 0 or len(n) == 0:
        raise DataError("psi: a column has no finite values in one of the runs")
    edges = np.unique(np.quantile(o, np.linspace(0, 1, bins + 1)[1:-1]))
    so = np.bincount(np.searchsorted(edges, o, side="right"), minlength=len(edges) + 1) / len(o)
    sn = np.bincount(np.searchsorted(edges, n, side="right"), minlength=len(edges) + 1) / len(n)
    value = psi_from_shares(so, sn, eps)
    return dict(
        psi=value, reading=reading(value), edges=edges.tolist(), old=so.tolist(), new=sn.tolist()
    )


def category_psi(old: np.ndarray, new: np.ndarray, eps: float = 1e-4) -> dict[str, Any]:
    """PSI of a categorical column (e.g. segment) over the union of categories."""
    so = pd.Series(np.asarray(old)).value_counts(normalize=True)
    sn = pd.Series(np.asarray(new)).value_counts(normalize=True)
    cats = sorted(set(so.index) | set(sn.index), key=lambda v: (str(type(v)), v))
    a, b = so.reindex(cats, fill_value=0.0), sn.reindex(cats, fill_value=0.0)
    value = psi_from_shares(a.to_numpy(), b.to_numpy(), eps)
    return dict(
        psi=value,
        reading=reading(value),
        categories=[_plain(c) for c in cats],
        old=a.tolist(),
        new=b.tolist(),
    )


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def transition_matrix(
    old: pd.DataFrame, new: pd.DataFrame, id_column: str, column: str = "segment"
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(counts, row shares, subscribers in both): old segment (rows) -> new segment (columns)."""
    both = old[[id_column, column]].merge(
        new[[id_column, column]], on=id_column, suffixes=("_old", "_new")
    )
    a, b = f"{column}_old", f"{column}_new"
    rows = sorted(set(old[column].tolist()))
    cols = sorted(set(new[column].tolist()))
    counts = pd.crosstab(both[a], both[b]).reindex(index=rows, columns=cols, fill_value=0)
    counts.index.name, counts.columns.name = "old", "new"
    shares = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0)
    return counts, shares, len(both)


def _frame(frame: pd.DataFrame | str | Path, what: str, id_column: str | None) -> pd.DataFrame:
    """A scoring output; from CSV the id column (``id_column``, else the first) is read as text,
    so ids such as ``007`` and ``7`` stay two subscribers."""
    if isinstance(frame, pd.DataFrame):
        return frame
    path = Path(frame)
    if not path.is_file():
        raise DataError(f"{path}: {what} scoring output not found")
    if table_format(path) != "csv":
        return pd.read_parquet(path)
    key = id_column or str(pd.read_csv(path, nrows=0).columns[0])
    return pd.read_csv(path, dtype={key: str})


def drift(
    old: pd.DataFrame | str | Path,
    new: pd.DataFrame | str | Path,
    id_column: str | None = None,
    bins: int = 10,
    old_means: pd.DataFrame | None = None,
    new_means: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Drift between two scoring outputs (frames or Parquet/CSV paths); see the module docstring.

    ``id_column`` defaults to the first column of ``old``. ``old_means``/``new_means``: optional
    per-subscriber metric means (one column per metric) for a PSI per usage metric.
    Returns a JSON-ready dict: ``features`` (PSI per score column), ``segments`` (PSI of segment
    shares), ``metrics`` (when means are given), ``transition`` and ``verdict``.
    """
    a, b = _frame(old, "old", id_column), _frame(new, "new", id_column)
    id_column = id_column or str(a.columns[0])
    for name, f in (("old", a), ("new", b)):
        for col in (id_column, "segment"):
            if col not in f.columns:
                raise DataError(f"{name} scoring output: no '{col}' column")
        if f[id_column].duplicated().any():
            raise DataError(f"{name} scoring output: duplicate {id_column} values")
    scores = [
        c
        for c in a.columns
        if (c == "churn_prob" or c.startswith("migration_"))
        and c in b.columns
        and pd.api.types.is_numeric_dtype(a[c])
    ]
    features = {c: psi(a[c].to_numpy(), b[c].to_numpy(), bins) for c in scores}
    segments = category_psi(a["segment"].to_numpy(), b["segment"].to_numpy())
    metrics = {}
    if old_means is not None and new_means is not None:
        for c in old_means.columns:
            if c in new_means.columns and pd.api.types.is_numeric_dtype(old_means[c]):
                metrics[c] = psi(old_means[c].to_numpy(), new_means[c].to_numpy(), bins)
    counts, shares, common = transition_matrix(a, b, id_column)
    stayed = (
        float(sum(counts.loc[s, s] for s in counts.index if s in counts.columns) / common)
        if common
        else None
    )
    worst = max(
        [segments["psi"]]
        + [f["psi"] for f in features.values()]
        + [m["psi"] for m in metrics.values()]
    )
    level = 0 if worst < STABLE else 1 if worst <= MODERATE else 2
    moved = 0
    if stayed is not None:
        moved = 0 if stayed >= STAYED_STABLE else 1 if stayed >= STAYED_MODERATE else 2
    verdict = VERDICTS[max(level, moved)]
    if stayed is not None and moved > level:
        verdict += f" (only {stayed:.1%} kept their segment)"
    return dict(
        id_column=id_column,
        subscribers=dict(old=len(a), new=len(b), both=common),
        features=features,
        segments=segments,
        metrics=metrics,
        transition=dict(
            old=[_plain(v) for v in counts.index],
            new=[_plain(v) for v in counts.columns],
            counts=counts.to_numpy().tolist(),
            shares=np.nan_to_num(shares.to_numpy(dtype=float), nan=0.0).tolist(),
            stayed=stayed,
        ),
        max_psi=float(worst),
        verdict=verdict,
    )


def drift_markdown(result: dict[str, Any]) -> str:
    """The drift result as Markdown: PSI tables and the transition matrix (row shares)."""
    s = result["subscribers"]
    lines = [
        "# Drift between two scoring runs\n",
        f"Subscribers: old {s['old']:,}, new {s['new']:,}, in both {s['both']:,}.",
        f"Verdict: **{result['verdict']}** (largest PSI {result['max_psi']:.3f}; below 0.1"
        " stable, 0.1-0.25 moderate, above 0.25 major; kept their segment: at least 90 % stable,"
        " 70-90 % moderate, below 70 % major).\n",
        "## Population stability index\n",
        "| column | PSI | reading |",
        "| --- | --- | --- |",
    ]
    rows = [("segment shares", result["segments"])] + list(result["features"].items())
    rows += [(f"usage: {k}", v) for k, v in result["metrics"].items()]
    lines += [f"| {name} | {v['psi']:.4f} | {v['reading']} |" for name, v in rows]
    t = result["transition"]
    lines += [
        "\n## Segment transitions (row shares: old segment -> new segment)\n",
        "Share of subscribers in both runs who kept their segment: "
        + (f"{t['stayed']:.1%}.\n" if t["stayed"] is not None else "none in both.\n"),
        "| old \\ new | " + " | ".join(map(str, t["new"])) + " |",
        "| --- | " + " | ".join("---" for _ in t["new"]) + " |",
    ]
    for name, row, cnt in zip(t["old"], t["shares"], t["counts"], strict=True):
        cells = [f"{v:.1%} ({c:,})" for v, c in zip(row, cnt, strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_drift(result: dict[str, Any], out_dir: str | Path) -> Path:
    """drift.json and drift.md into ``out_dir`` (atomic)."""
    out = Path(out_dir)
    write_json_atomic(out / "drift.json", result)
    write_text_atomic(out / "drift.md", drift_markdown(result))
    return out


def panel_means(panel_dir: str | Path) -> pd.DataFrame:
    """Per-subscriber means of every metric of a prepared panel (one column per metric)."""

    panel = load_panel(panel_dir)
    return pd.DataFrame(subscriber_means(panel), columns=panel.metrics)


def drift_runs(
    old: str | Path,
    new: str | Path,
    out_dir: str | Path,
    bins: int = 10,
    old_panel: str | Path | None = None,
    new_panel: str | Path | None = None,
) -> dict[str, Any]:
    """:func:`drift` of two scoring files (plus usage metrics when both panels are given), written
    to ``out_dir`` as drift.json and drift.md."""
    if (old_panel is None) != (new_panel is None):
        raise ConfigError("drift: give both panels (old and new) or neither")
    means = (
        (panel_means(old_panel), panel_means(new_panel)) if old_panel is not None else (None, None)
    )
    result = drift(old, new, bins=bins, old_means=means[0], new_means=means[1])
    write_drift(result, out_dir)
    return result


__all__ = [
    "drift_runs",
    "panel_means",
    "psi",
    "category_psi",
    "transition_matrix",
    "drift",
    "drift_markdown",
    "write_drift",
    "reading",
]
