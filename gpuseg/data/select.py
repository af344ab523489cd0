"""Which subscribers a panel keeps: the reference window of a scoring run, label-window selection,
rejects with reasons, and the panel's meta record."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gpuseg.backend import Backend
from gpuseg.config import DataConfig
from gpuseg.data.id_columns import id_like_columns
from gpuseg.data.ids import id_positions, require_overlap
from gpuseg.data.labels import align_labels, labels_from_frame
from gpuseg.data.privacy import pseudonymize_ids
from gpuseg.data.static import encode_static
from gpuseg.errors import DataError
from gpuseg.io.tables import read_table


def reference_window(
    usage_periods: int, periods: list[str], reference: dict | None
) -> tuple[int, list[str]]:
    """(shift, labels): output period = input period + shift, for scoring against ``reference``.

    More periods than in training keeps the latest ones; fewer pads at the start (missing).
    """
    if reference is None:
        return 0, list(periods)
    t_ref = len(reference["periods"])
    if usage_periods >= t_ref:
        return t_ref - usage_periods, list(periods[-t_ref:])
    pad = t_ref - usage_periods
    return pad, [f"pad{i}" for i in range(pad)] + list(periods)


def reference_metrics(cfg: DataConfig, metrics: dict[str, str], reference: dict | None):
    """The metric map restricted to (and ordered like) the reference's metrics."""
    if reference is None:
        return metrics
    want = reference["metrics"]
    missing = [m for m in want if m not in metrics]
    if missing:
        raise DataError(f"{cfg.usage}: metric '{missing[0]}' used in training is missing")
    return {m: metrics[m] for m in want}


def select_subscribers(
    cfg: DataConfig,
    backend: Backend,
    ids: np.ndarray,
    mask: np.ndarray,
    periods: list[str],
    reference: dict | None,
    inline: dict[str, pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """Rejects, static attributes and labels of the usage subscribers ``ids`` (sorted).

    Returns ``keep`` (bool per id) and, for the kept rows only, the encoded static matrix, raw
    attributes, churn and migration codes; plus the rejects frame and the input count.
    ``inline``: the static attributes (``"static"``) and labels (``"labels"``) read from the usage
    table itself (table layout), each a frame with the id column, used instead of the files.
    """
    inline = inline or {}
    id_col = cfg.id_name
    rejects: list[tuple[str, str]] = []
    keep = np.ones(len(ids), dtype=bool)
    present = mask.any(axis=1)
    missing_frac = 1.0 - mask.mean(axis=1)
    too_sparse = (missing_frac > cfg.max_missing_frac) | ~present
    for i in np.flatnonzero(too_sparse):
        rejects.append((ids[i], "too many missing periods" if present[i] else "no usage rows"))
    keep &= ~too_sparse
    del present, missing_frac, too_sparse  # per-id temporaries (10M ids: ~100 MB)

    end_day = None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(periods[-1])):  # date labels (integers are not days)
        end_day = int(np.datetime64(periods[-1], "D").astype(np.int64))

    static_names: list[str] = []
    notes: list[str] = []
    encoding: list[dict] = []
    static_only = np.array([], dtype=str)
    if cfg.static or "static" in inline:
        if "static" in inline:
            spath, sframe = Path(cfg.usage), inline["static"]
            columns = [c for c in sframe.columns if c != id_col]
        else:
            spath = Path(cfg.static)
            sframe = read_table(spath, backend, "static", cfg.id_column, cfg.missing_markers)
            sframe = sframe.to_pandas() if hasattr(sframe, "to_pandas") else sframe
            if id_col not in sframe.columns:
                raise DataError(f"{spath}: column '{id_col}' (data.id_column) not found")
            if sframe[id_col].isna().any():
                row = int(np.flatnonzero(sframe[id_col].isna().to_numpy())[0]) + 1
                raise DataError(f"{spath}: column '{id_col}' row {row}: missing subscriber id")
            sframe[id_col] = pseudonymize_ids(sframe[id_col], cfg, spath)
            columns = (
                cfg.static_columns
                if cfg.static_columns is not None
                else [c for c in sframe.columns if c != id_col]
            )
        sids = pa.array(sframe[id_col], type=pa.string(), from_pandas=True)
        if pc.count_distinct(sids).as_py() != len(sids):  # pandas only to name the row
            dup = sframe[id_col].duplicated()
            raise DataError(f"{spath}: row {int(np.flatnonzero(dup)[0]) + 1}: duplicate subscriber")
        del sids
        for c in columns:
            if c not in sframe.columns:
                raise DataError(f"{spath}: column '{c}' (data.static_columns) not found")
        if reference is None:  # ids never become model inputs (nor categories in meta.json)
            leaks = id_like_columns(sframe, columns, id_col)
            columns = [c for c in columns if c not in leaks]
            notes.extend(leaks.values())
        # align static rows with the usage ids by one hash lookup (no merge copy)
        pos = id_positions(ids, sframe[id_col])
        in_usage = pos >= 0
        require_overlap(in_usage, sframe[id_col], ids, str(spath), str(cfg.usage), "static")
        static_only = np.asarray(sframe[id_col][~in_usage]).astype(str)
        rejects.extend((sid, "no usage rows") for sid in static_only)
        srow = np.full(len(ids), -1, dtype=np.int64)
        srow[pos[in_usage]] = np.flatnonzero(in_usage)
        no_static = srow < 0
        for i in np.flatnonzero(no_static & keep):
            rejects.append((ids[i], "no static attributes"))
        keep &= ~no_static
        order = [id_col] + [c for c in sframe.columns if c != id_col]
        rows = srow[keep]
        if len(rows) == len(sframe) and (rows[1:] > rows[:-1]).all():  # already aligned
            attributes = sframe[order].reset_index(drop=True)  # no copy (copy-on-write)
        else:
            attributes = sframe[order].iloc[rows].reset_index(drop=True)
        # index arrays (10M ids: ~300 MB) freed before the static matrix is filled (score's peak)
        del sframe, pos, in_usage, srow, no_static, rows
        ref_enc = reference["static_encoding"] if reference is not None else None
        enc_columns = columns if ref_enc is None else [e["column"] for e in ref_enc]
        for c in enc_columns:
            if c not in attributes.columns:
                raise DataError(f"{spath}: static column '{c}' used in training not found")
        kept = attributes[enc_columns].infer_objects()
        static, static_names, encoding = encode_static(kept, enc_columns, spath, ref_enc, end_day)
        for enc in ref_enc or []:  # scoring: a category unseen in training is said, not hidden
            if enc["kind"] == "category":
                col = kept[enc["column"]]
                unseen = int((col.notna() & ~col.astype(str).isin(enc["categories"])).sum())
                if unseen:
                    notes.append(
                        f"static column '{enc['column']}': {unseen:,} subscribers hold a category "
                        "unseen in training (encoded as none of the known ones)"
                    )
    else:
        if reference is not None and reference.get("static_encoding"):
            used = ", ".join(e["column"] for e in reference["static_encoding"][:5])
            raise DataError(
                f"{cfg.usage}: the model was trained with static attributes ({used}, ...): give "
                "the static table too (--static)"
            )
        attributes = pd.DataFrame({id_col: ids[keep]})
        static = np.zeros((int(keep.sum()), 0), dtype=np.float32)

    if "labels" in inline:
        churn, migration = labels_from_frame(
            cfg, inline["labels"], Path(cfg.usage), ids, hashed=True
        )
    else:  # static-only ids are rejects
        churn, migration = align_labels(cfg, ids, backend, static_only)
    return dict(
        keep=keep,
        static=static,
        attributes=attributes,
        churn=churn[keep],
        migration=migration[keep],
        static_names=static_names,
        encoding=encoding,
        rejects=pd.DataFrame(rejects, columns=[id_col, "reason"]),
        n_input=len(ids) + len(static_only),
        notes=notes,
    )


def build_meta(
    cfg: DataConfig, metrics: list[str], periods: list[str], sel: dict, report: dict | None = None
) -> dict[str, Any]:
    """The panel's meta record. ``report``: what the loader did to the data, for the prepare
    summary (cells filled and negative cells kept per metric, date columns left out, where the
    ids came from)."""
    report = dict(report or {})
    return dict(
        layout=cfg.layout,
        data_report=report,
        metrics=metrics,
        periods=periods,
        static_features=sel["static_names"],
        static_encoding=sel["encoding"],
        id_column=cfg.id_name,
        revenue_metric=cfg.revenue_metric,
        counts=dict(
            input=int(sel["n_input"]), output=int(sel["keep"].sum()), rejected=len(sel["rejects"])
        ),
        sources=dict(usage=str(cfg.usage), static=cfg.static, labels=cfg.labels),
        labelled=dict(
            churn=int((sel["churn"] >= 0).sum()), migration=int((sel["migration"] >= 0).sum())
        ),
        notes=sel.get("notes", []),
    )
