"""``prepare``: raw tables -> panel, in memory or streamed.

The reading, validation and group/pivot work run on the frame module the backend names (cuDF on
GPU, pandas otherwise) and produce the same arrays.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from gpuseg.backend import Backend
from gpuseg.config import DataConfig
from gpuseg.data.labels import derive_panel_labels
from gpuseg.data.layouts import load_long, load_table, load_wide, negative_cells
from gpuseg.data.panel import Panel, load_panel, save_panel
from gpuseg.data.select import build_meta, reference_metrics, reference_window, select_subscribers
from gpuseg.data.stream import prepare_stream
from gpuseg.errors import ConfigError, DataError


def streams(cfg: DataConfig, backend: Backend) -> bool:
    """Whether ``prepare`` streams the usage table: long layout on the pandas (host) backend.

    cuDF reads the whole table into GPU memory; the wide and table layouts hold one row per
    subscriber.
    """
    return cfg.layout == "long" and backend.frames == "pandas"


def build_panel(
    cfg: DataConfig, backend: Backend, reference: dict | None = None, chunk_rows: int = 0
) -> tuple[Panel, pd.DataFrame, pd.DataFrame]:
    """Read and validate the tables; return (panel in memory, raw static attributes, rejects).

    ``reference`` is a trained run's panel meta: scoring data then gets the same metrics, static
    encoding and periods count as training. Where :func:`prepare` streams, this streams too (into a
    temporary directory, then loads the arrays), so both give the same panel.
    """
    if not cfg.usage:
        raise DataError("data.usage: no usage file given")
    if not streams(cfg, backend):
        return build_panel_whole(cfg, backend, reference)
    with tempfile.TemporaryDirectory(prefix="gpuseg-panel-") as tmp:
        meta, attributes, rejects = prepare_stream(cfg, backend, tmp, reference, chunk_rows)
        panel = load_panel(tmp, mmap=False)
    panel.meta = meta
    return panel, attributes, rejects


def build_panel_whole(
    cfg: DataConfig, backend: Backend, reference: dict | None = None
) -> tuple[Panel, pd.DataFrame, pd.DataFrame]:
    """:func:`build_panel` with the whole usage table in one frame (pandas or cuDF)."""
    if not cfg.usage:
        raise DataError("data.usage: no usage file given")
    if reference is not None and cfg.layout == "table" and not cfg.metrics:
        # scoring a table: its columns split into metrics and static as in training, not by
        # which of them happen to have missing cells in this file
        static_cols = [e["column"] for e in reference.get("static_encoding", [])]
        metrics_map = {m: m for m in reference["metrics"]}
        cfg = replace(cfg, metrics=metrics_map, static_columns=static_cols)
    loader = {"wide": load_wide, "table": load_table}.get(cfg.layout, load_long)
    ids, usage, mask, metrics, periods, info = loader(cfg, backend)
    info["report"]["negative"] = negative_cells(usage, mask, metrics)
    if reference is not None:
        metrics_map = reference_metrics(cfg, {m: m for m in metrics}, reference)
        usage = usage[:, :, [metrics.index(m) for m in metrics_map]]
        metrics = list(metrics_map)
        shift, periods = reference_window(usage.shape[1], periods, reference)
        if shift <= 0:
            usage, mask = usage[:, -shift:], mask[:, -shift:]
        else:
            usage = np.concatenate(
                [np.zeros((len(ids), shift, usage.shape[2]), np.float32), usage], axis=1
            )
            mask = np.concatenate([np.zeros((len(ids), shift), bool), mask], axis=1)
    sel = select_subscribers(cfg, backend, ids, mask, periods, reference, info.get("inline"))
    keep = sel["keep"]
    panel = Panel(
        usage=usage[keep],
        mask=mask[keep],
        static=sel["static"],
        churn=sel["churn"],
        migration=sel["migration"],
        ids=ids[keep],
        meta=build_meta(cfg, metrics, periods, sel, info["report"]),
    )
    return panel, sel["attributes"], sel["rejects"]


def prepare(
    cfg: DataConfig,
    backend: Backend,
    out_dir: str | Path,
    reference: dict | None = None,
    chunk_rows: int = 0,
    require_revenue: bool = False,
) -> dict:
    """The ``prepare`` stage: tables -> panel directory. Returns the panel's meta (with counts).

    ``require_revenue``: ``data.revenue_metric`` must be one of the panel's metrics (else a
    ConfigError naming the key and the metrics, and the panel is left incomplete: no meta.json).

    A long usage table on the host backend is streamed in chunks of ``chunk_rows`` rows
    (default :data:`CHUNK_ROWS`), so memory stays bounded at any number of rows; otherwise the
    table is read whole (see :func:`streams`).
    """
    if cfg.window_offset and cfg.churn_definition == "label":
        raise ConfigError(
            "data.window_offset: needs labels derived from usage (data.churn_definition)"
        )
    if streams(cfg, backend):
        meta = prepare_stream(cfg, backend, out_dir, reference, chunk_rows)[0]
    else:
        panel, attributes, rejects = build_panel_whole(cfg, backend, reference)
        save_panel(panel, attributes, rejects, out_dir)
        meta = panel.meta
    if require_revenue and cfg.revenue_metric not in meta["metrics"]:
        (Path(out_dir) / "meta.json").unlink(missing_ok=True)
        shown = ", ".join(meta["metrics"][:30]) + (", ..." if len(meta["metrics"]) > 30 else "")
        raise ConfigError(
            f"data.revenue_metric: '{cfg.revenue_metric}' is not a metric of {cfg.usage} "
            f"(metrics: {shown}); set data.revenue_metric to the revenue/ARPU metric"
        )
    if cfg.churn_definition != "label" and reference is None:  # scoring data has no label window
        meta = derive_panel_labels(out_dir, cfg)
    return meta


def summary_lines(meta: dict) -> list[str]:
    """What prepare did to the data, one line each, for the CLI: labels found (migration absence
    stated), where ids came from, cells filled per metric, metrics allowed to be negative, date
    columns left out, static columns kept with a missing flag."""
    report = meta.get("data_report", {})
    lab = meta.get("labelled", {})
    lines = [
        f"labelled: churn {lab.get('churn', 0):,}, migration "
        + (f"{lab['migration']:,}" if lab.get("migration") else "no labels")
    ]
    if report.get("ids"):
        lines.append(f"ids: {report['ids']}")
    if report.get("filled"):
        cells = ", ".join(f"{m} {n:,}" for m, n in report["filled"].items())
        lines.append(f"missing cells filled (data.fill): {cells}")
    if report.get("negative"):
        cells = ", ".join(f"{m} {n:,}" for m, n in report["negative"].items())
        lines.append(f"negative cells kept (data.allow_negative): {cells}")
    if report.get("date_columns_left_out"):
        cols = report["date_columns_left_out"]
        lines.append(f"date columns left out of the metrics ({len(cols)}): {', '.join(cols)}")
    if report.get("static_with_missing"):
        cols = report["static_with_missing"]
        lines.append(f"numeric with missing cells -> static with a missing flag: {', '.join(cols)}")
    return lines
