"""A run directory over a large synthetic world, scored through a small trained run (issue 16).

    python benchmarks/plan_world.py TRAINED_RUN WORLD OUT

``gpuseg plan`` reads a finished run directory (panel, predictions, segments, embeddings). To
measure it at millions of subscribers without training there, this script builds one the way
``gpuseg score`` scores new data, streamed: the world's tables are prepared against the trained
run's panel meta (same metrics, periods, static encoding), and the trained model embeds every
row and assigns segments block by block. The run's config is copied with ``synth.out_dir``
pointing at WORLD, so that ``gpuseg plan OUT`` finds the world's campaign table and future
revenue. WORLD is a ``gpuseg synth --set campaigns=true`` world of the same family.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from gpuseg.backend import resolve_backend
from gpuseg.config import load_config, save_config
from gpuseg.data.panel import META_SCHEMA, load_panel
from gpuseg.data.prepare import prepare
from gpuseg.io.store import read_json
from gpuseg.pipeline.stages import embed_panel
from gpuseg.segment.cluster import Segmenter
from gpuseg.segment.targets import segment_names
from gpuseg.training.checkpoint import load_checkpoint
from gpuseg.training.heads import load_head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("world", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    backend = resolve_backend("cpu")
    cfg = load_config(args.run / "config.yaml")
    w = args.world
    data = replace(
        cfg.data,
        usage=str(w / "usage.parquet"),
        static=str(w / "static.parquet"),
        labels=str(w / "labels.parquet"),
    )
    cfg = replace(cfg, data=data, out_dir=str(args.out), synth=replace(cfg.synth, out_dir=str(w)))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "model.safetensors", "cluster.json", "summary.json"):
        if (args.run / name).is_file():
            shutil.copy2(args.run / name, args.out / name)
    if (args.run / "report" / "segments.csv").is_file():  # segment names
        (args.out / "report").mkdir(exist_ok=True)
        shutil.copy2(args.run / "report" / "segments.csv", args.out / "report" / "segments.csv")
    save_config(cfg, args.out / "config.yaml")
    reference = read_json(args.run / "panel" / "meta.json", META_SCHEMA)
    prepare(data, backend, args.out / "panel", reference=reference)
    panel = load_panel(args.out / "panel")
    model, info = load_checkpoint(args.run, backend.torch_device)
    seg = Segmenter.from_state(read_json(args.run / "cluster.json"), args.run / "cluster.json")
    n = embed_panel(
        model,
        tuple(info["platt"]),
        panel,
        backend.torch_device,
        args.out,
        segmenter=seg,
        segment_names=segment_names(args.run),
        head=load_head(args.run),
    )
    id_col = panel.meta["id_column"]
    pred = pq.read_table(args.out / "predictions.parquet", columns=[id_col, "segment"])
    pq.write_table(pred, args.out / "segments.parquet")
    print(f"{args.out}: {n:,} subscribers")


if __name__ == "__main__":
    main()
