"""Thin launch script: train the sequence model of a run from its config.

    python train/train.py --config configs/demo.yaml [--set train.epochs=5 ...]

Single process for now. Distributed training under torchrun (DDP) is tracked in issue 7 and will be
launched from here as ``torchrun --nproc_per_node=N train/train.py --config ...``.
"""

from __future__ import annotations

import argparse
import json

from gpuseg.backend import resolve_backend
from gpuseg.config import load_config
from gpuseg.pipeline import check_run_dir, train_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("--set", "-s", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    run_dir = check_run_dir(cfg)
    metrics = train_stage(
        cfg, resolve_backend(cfg.device), run_dir, on_epoch=lambda r: print(json.dumps(r))
    )
    print(json.dumps({k: metrics[k] for k in ("churn", "best_epoch", "epochs_run")}, indent=2))


if __name__ == "__main__":
    main()
