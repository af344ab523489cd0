"""Distributed data-parallel training under torchrun: process group, shards, metric reductions.

``torchrun --nproc_per_node=N train/train.py --config C`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. :func:`setup` joins them into one process
group (NCCL when the backend chose CUDA, gloo on the CPU) and returns a :class:`DistContext`;
without torchrun (or with one process) it returns None and training is plain single-process.

Which device kind runs is decided in :mod:`gpuseg.backend`; here only the GPU index is picked
(``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel

from gpuseg.errors import BackendError, ConfigError, GpusegError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job. The training device is ``device`` on every rank."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that validates, tests and writes files."""
        return self.rank == 0


def setup(device: torch.device) -> DistContext | None:
    """Join the torchrun job described by the environment; None when not under torchrun.

    ``device`` is the backend's torch device: CUDA gives NCCL and ``cuda:LOCAL_RANK``, the CPU
    gives gloo. A one-process job is returned as None, so it runs exactly the single-process code.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise BackendError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA GPUs visible"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, device)


def teardown(ctx: DistContext | None) -> None:
    """Leave the process group (after a barrier, so no rank exits while others still talk)."""
    if ctx is not None and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def shard_rows(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's rows: every ``world_size``-th row from ``rank`` on, padded to equal length.

    All shards get ``ceil(len(rows) / world_size)`` rows (the short ones repeat their rank's
    first rows of the whole list, at most one row each), so every rank runs the same number of
    steps and none waits forever in an all-reduce. Strided, not contiguous, so that a panel sorted
    by any attribute gives every rank the same mix.
    """
    rows = np.asarray(rows)
    if len(rows) < world_size:
        raise ConfigError(f"{len(rows)} training rows cannot be shared by {world_size} processes")
    per_rank = -(-len(rows) // world_size)
    padded = np.concatenate([rows, rows[: per_rank * world_size - len(rows)]])
    return padded[rank::world_size]


def local_batch_size(batch_size: int, ctx: DistContext | None) -> int:
    """Rows per step on this rank: ``train.batch_size`` is the global batch of all ranks together,
    so a config means the same optimisation whatever the number of processes."""
    if ctx is None:
        return batch_size
    if batch_size % ctx.world_size:
        raise ConfigError(
            f"train.batch_size={batch_size} is the global batch and must be divisible by the "
            f"{ctx.world_size} processes"
        )
    return batch_size // ctx.world_size


def wrap(model: torch.nn.Module, ctx: DistContext, unused: bool = True) -> torch.nn.Module:
    """The model in DistributedDataParallel, with rank 0's parameters and buffers (the
    normalisation statistics, fitted on rank 0 only) on every rank. Buffers are constant during
    training, so they are not re-sent at every step. ``unused``: some steps leave parameters out
    of the loss (e.g. the migration head in a batch without migration labels); DDP then looks for
    them in every step's graph."""

    for tensor in (*model.parameters(), *model.buffers()):
        tdist.broadcast(tensor.data, src=0)
    no_resend = (  # torch >= 2.13 renamed broadcast_buffers (now deprecated)
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=unused, **no_resend
    )


def all_reduce(values: list[float], ctx: DistContext, op: str = "sum") -> list[float]:
    """Element-wise sum (or ``op="max"``) of ``values`` over all ranks, as float64."""
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM if op == "sum" else tdist.ReduceOp.MAX)
    return t.tolist()


def broadcast(values: list[float], ctx: DistContext, src: int = 0) -> list[float]:
    """``values`` of rank ``src`` on every rank (float64, exact)."""
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    tdist.broadcast(t, src=src)
    return t.tolist()


def broadcast_object(obj, ctx: DistContext, src: int = 0):
    """A picklable object of rank ``src`` on every rank (in memory between the job's own
    processes; nothing is unpickled from files)."""
    box = [obj if ctx.rank == src else None]
    tdist.broadcast_object_list(box, src=src, device=ctx.device)
    return box[0]


def on_main(fn: Callable[[], T], ctx: DistContext | None) -> T:
    """``fn()`` run by rank 0 alone (e.g. creating the run directory); its result on every rank.
    A :class:`GpusegError` it raises is raised on every rank, so no rank is left waiting."""
    if ctx is None:
        return fn()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except GpusegError as exc:
            error = exc
    result, error = broadcast_object((result, error), ctx)
    if error is not None:
        raise error
    return result


def barrier(ctx: DistContext | None) -> None:
    if ctx is not None:
        tdist.barrier()
