"""torch.distributed for extraction: init from torchrun's environment, shard ownership, gathering shards.

A single process (no `WORLD_SIZE`, or `WORLD_SIZE=1`) never touches torch.distributed. Under
`torchrun --nproc-per-node N` (one host or many, via its rendezvous) each rank extracts the shards
`i` with `i % world_size == rank`; rank 0 then receives the shards it does not already see on its
own disk (no shared file system is needed) and writes the one cache.

torchrun's variables (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`) are read here, as the torchrun contract
requires; nothing else about the environment is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among `world_size` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def owns(self, shard_index: int) -> bool:
        return shard_index % self.world_size == self.rank

    def owner(self, shard_index: int) -> int:
        return shard_index % self.world_size


def env_world_size() -> int:
    """torchrun's `WORLD_SIZE` (1 when not launched by torchrun); cheap, imports nothing."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device_type: str) -> DistContext:
    """Join the torchrun process group when `WORLD_SIZE>1` (NCCL on CUDA, gloo on CPU); else rank 0 of 1."""
    world = env_world_size()
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(hours=6))
    return DistContext(rank=rank, world_size=world, local_rank=local_rank)


def device_for(ctx: DistContext, device: str) -> str:
    """Under torchrun each rank takes its own GPU (`cuda:<local_rank>`)."""
    if ctx.enabled and device == "cuda":
        return f"cuda:{ctx.local_rank}"
    return device


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def from_main(ctx: DistContext, value: Any) -> Any:
    """Rank 0's `value` on every rank (so all ranks take the same branch)."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ok(ctx: DistContext, ok: bool) -> bool:
    """True on every rank only when `ok` is true on every rank (so one failing rank stops them all)."""
    if not ctx.enabled:
        return ok
    import torch.distributed as dist

    flag = [ok]
    gathered: list[list[bool] | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, flag)
    return all(g is not None and g[0] for g in gathered)


def gather_shards(
    ctx: DistContext, n_shards: int, path_of: Callable[[int], Path], valid: Callable[[int], bool]
) -> None:
    """Bring every shard file to rank 0: it asks for those it lacks, their owners send the bytes.

    `path_of(i)` is shard i's path on this host; `valid(i)` says whether this host holds a good copy.
    """
    if not ctx.enabled:
        return
    import torch.distributed as dist

    wanted = [[i for i in range(n_shards) if not valid(i)] if ctx.is_main else None]
    dist.broadcast_object_list(wanted, src=0)
    for i in wanted[0] or []:
        src = ctx.owner(i)
        if src == 0:
            continue  # rank 0 owned it; a missing copy is reported by the caller
        if ctx.rank == src:
            dist.send_object_list([Path(path_of(i)).read_bytes()], dst=0)
        elif ctx.is_main:
            box: list[bytes | None] = [None]
            dist.recv_object_list(box, src=src)
            from partbench.fsutil import atomic_write

            with atomic_write(path_of(i)) as fh:
                fh.write(box[0] or b"")


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def shutdown(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
