"""The per-subscriber inputs of the action models, read from a finished run directory.

One float32 matrix in panel row order: the window aggregates of :func:`gpuseg.model.window_stats`
(signed log1p), the encoded static attributes, the model's churn probability and, when the run
has them, its embeddings. Built chunk by chunk, so memory is the matrix itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from gpuseg.config import RunConfig, load_config
from gpuseg.data.panel import Panel, load_attributes, load_panel
from gpuseg.errors import RunDirError
from gpuseg.features.window import window_stats
from gpuseg.io.store import require

CHUNK = 16_384


@dataclass
class RunInputs:
    """What the action stage reads from a run directory."""

    run_dir: Path
    cfg: RunConfig
    panel: Panel
    attributes: pd.DataFrame | None
    ids: np.ndarray  # (N,) str, as in the run
    id_column: str
    churn_prob: np.ndarray  # (N,)
    segment: np.ndarray  # (N,) learned segment
    features: np.ndarray  # (N, F) float32
    feature_names: list[str]


def aligned(path: Path, ids: np.ndarray, id_col: str, columns: list[str]) -> pd.DataFrame:
    """``columns`` of the parquet at ``path`` in the order of ``ids`` (RunDirError on gaps)."""
    frame = pd.read_parquet(require(path, "run `gpuseg run` (or its stages) first"))
    for col in [id_col, *columns]:
        if col not in frame.columns:
            raise RunDirError(f"{path}: no '{col}' column")
    keys = frame[id_col].astype(str)
    if keys.duplicated().any():
        raise RunDirError(f"{path}: duplicate {id_col} values")
    out = frame.set_index(keys.to_numpy())[columns].reindex(ids)
    if out.isna().any().any():
        raise RunDirError(
            f"{path}: {int(out.isna().any(axis=1).sum()):,} panel subscribers missing"
        )
    return out


def read_run(run_dir: str | Path, embeddings: bool = True) -> RunInputs:
    """Load a finished run (panel, predictions, segments, optionally embeddings) and features."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a run directory")
    cfg_path = run_dir / "config.yaml"
    cfg = load_config(cfg_path) if cfg_path.is_file() else load_config(None)
    panel_dir = run_dir / "panel"
    require(panel_dir / "meta.json", "run `gpuseg prepare` first")
    panel = load_panel(panel_dir)
    id_col = panel.meta.get("id_column", "subscriber_id")
    ids = np.asarray(panel.ids).astype(str)
    attributes = (
        load_attributes(panel_dir) if (panel_dir / "attributes.parquet").is_file() else None
    )
    churn = aligned(run_dir / "predictions.parquet", ids, id_col, ["churn_prob"])
    segment = aligned(run_dir / "segments.parquet", ids, id_col, ["segment"])
    n = len(ids)
    metrics = list(panel.meta.get("metrics") or [])
    stats = ("mean", "last", "last_quarter", "slope", "drop", "std")
    names = [f"{m}__{s}" for s in stats for m in metrics] + ["share_present"]
    names += [f"static__{s}" for s in panel.meta.get("static_features") or []]
    blocks = [np.empty((n, len(names)), dtype=np.float32)]
    n_static = panel.static.shape[1]
    for s in range(0, n, CHUNK):
        e = min(s + CHUNK, n)
        w = window_stats(
            torch.as_tensor(np.array(panel.usage[s:e], dtype=np.float64)),
            torch.as_tensor(np.array(panel.mask[s:e], dtype=bool)),
        ).numpy()
        w = np.sign(w) * np.log1p(np.abs(w))
        blocks[0][s:e, : w.shape[1]] = w
        blocks[0][s:e, w.shape[1] :] = np.asarray(panel.static[s:e], dtype=np.float32)
    assert blocks[0].shape[1] == w.shape[1] + n_static
    p = churn["churn_prob"].to_numpy(np.float64)
    blocks.append(p.astype(np.float32)[:, None])
    names.append("churn_prob")
    emb_path = run_dir / "embeddings.parquet"
    if embeddings and emb_path.is_file():
        table = pq.read_table(emb_path)
        cols = [c for c in table.column_names if c != id_col]
        emb = aligned(emb_path, ids, id_col, cols).to_numpy(np.float32)
        blocks.append(emb)
        names += [f"emb__{c}" for c in cols]
    return RunInputs(
        run_dir=run_dir,
        cfg=cfg,
        panel=panel,
        attributes=attributes,
        ids=ids,
        id_column=id_col,
        churn_prob=p,
        segment=segment["segment"].to_numpy(np.int64),
        features=np.concatenate(blocks, axis=1),
        feature_names=names,
    )
