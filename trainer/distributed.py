"""DDP plumbing under torchrun: process group, rank-aware reductions, cleanup.

Single-process runs take the same code path with world_size 1 and no collectives.
"""

from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .device import choose_backend


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> DistInfo:
    """torchrun exports RANK/LOCAL_RANK/WORLD_SIZE; plain `python -m trainer` does not."""
    return DistInfo(
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
    )


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (nccl/rccl on GPUs, gloo on CPU); no-op for one process."""
    if not info.enabled or dist.is_initialized():
        return
    kwargs: dict[str, Any] = {"backend": choose_backend(device.type)}
    kwargs["timeout"] = datetime.timedelta(minutes=30)
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sum_(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum floats over ranks (loss sums, sample counts); identity for one process."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_(flags: list[bool], device: torch.device, info: DistInfo) -> list[bool]:
    """Per-flag OR over ranks, so every rank stops or checkpoints at the same step."""
    if not info.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def min_int(value: int, device: torch.device, info: DistInfo) -> int:
    """Smallest value over ranks (probed batch sizes must agree)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather(obj: Any, info: DistInfo, device: torch.device) -> list[Any]:
    """Every rank's object (RNG states for the checkpoint), in rank order.

    Pickled bytes through plain tensor all_gathers: all_gather_object needs numpy,
    which a minimal torch install may lack.
    """
    if not info.enabled:
        return [obj]
    data = pickle.dumps(obj)
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    longest = max(int(s.item()) for s in sizes)
    buf = torch.zeros(longest, dtype=torch.uint8)
    buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    buf = buf.to(device)
    parts = [torch.empty_like(buf) for _ in range(info.world_size)]
    dist.all_gather(parts, buf)
    return [
        pickle.loads(bytes(p[: int(n.item())].cpu().tolist()))
        for p, n in zip(parts, sizes, strict=True)
    ]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
