"""torch.distributed helpers: process-group setup from torchrun's environment, per-rank seeds.

``torchrun --nproc_per_node N -m incontext train ...`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`setup` reads them and starts a process group (gloo on
CPU, nccl on GPU). Without them everything runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from incontext.device import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when setup() created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device_name: str = "auto") -> DistInfo:
    """Join (or create) the process group described by the torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world <= 1:
        return DistInfo(device=device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=local_rank, device=device, owns_group=owns)


def cleanup(info: DistInfo, meet: bool = False) -> None:
    """Destroy the process group if :func:`setup` created it.

    ``meet=True`` (a normal finish, every rank gets here) has the ranks meet first: a rank
    that tears gloo down while another still talks to it can abort the other process
    ("terminate called without an active exception"). After an error, no meeting: the
    other ranks may never arrive.
    """
    if info.owns_group and dist.is_initialized():
        if meet:
            dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> np.random.SeedSequence:
    """Independent, reproducible seed material for ``rank`` of a run seeded ``seed``."""
    return np.random.SeedSequence([int(seed), int(rank), 0x7A11])


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(info: DistInfo, obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(info: DistInfo, values: list[float]) -> list[float]:
    """Element-wise mean of ``values`` over ranks."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.to(info.device)
    dist.all_reduce(t)
    return (t / info.world_size).cpu().tolist()
