"""Thin launch script: train the sequence model of a run from its config, on one or N processes.

    python train/train.py --config configs/demo.yaml [--set train.epochs=5 ...]
    torchrun --nproc_per_node=4 train/train.py --config configs/demo.yaml

Under torchrun the model trains with DistributedDataParallel (NCCL on GPUs, one per process;
gloo on the CPU). ``train.batch_size`` is the global batch: each of N processes takes
``batch_size / N`` rows of its own shard per step, so the same config describes the same training
whatever N is. Rank 0 alone prints, writes the epoch checkpoints and, at the end,
``model.safetensors``, ``model.json``, ``split.npz`` and ``metrics.json`` to the run directory,
from which ``gpuseg embed``, ``cluster`` and ``report`` continue. A killed job resumes from the
last finished epoch when it is launched again.
"""

from __future__ import annotations

import argparse
import contextlib
import json

from gpuseg.backend import resolve_backend
from gpuseg.config import load_config
from gpuseg.io.lock import RunDirLock
from gpuseg.pipeline.stages import check_run_dir, train_stage
from gpuseg.training import ddp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("--set", "-s", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    backend = resolve_backend(cfg.device)
    dist = ddp.setup(backend.torch_device)  # None without torchrun
    is_main = dist is None or dist.is_main
    # rank 0 holds the run directory's lock (one writer at a time, gpuseg.io.lock)
    with RunDirLock(cfg.out_dir) if is_main else contextlib.nullcontext():
        run_dir = ddp.on_main(lambda: check_run_dir(cfg), dist)
        metrics = train_stage(
            cfg,
            backend,
            run_dir,
            on_epoch=(lambda r: print(json.dumps(r), flush=True)) if is_main else None,
            dist=dist,
            log=lambda m: print(m, flush=True) if is_main else None,
        )
    ddp.teardown(dist)
    if is_main:
        print(json.dumps({k: metrics[k] for k in ("churn", "best_epoch", "epochs_run")}, indent=2))


if __name__ == "__main__":
    main()
