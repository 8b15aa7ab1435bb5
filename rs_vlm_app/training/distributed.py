"""One process or many: the torch.distributed setup of a training run.

torchrun (or any launcher setting RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) starts
one process per device; each calls :func:`setup`. GPUs use NCCL, CPU processes Gloo, so the same
code runs on a laptop, one multi-GPU machine or many machines.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rs_vlm_app.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank among world_size processes and the device it trains on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None
    owns_group: bool = False  # this setup() created the process group (and tears it down)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the launcher's environment; (0, 0, 1) when run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, local_rank, world_size


def choose_device(preference: str, local_rank: int) -> torch.device:
    """The device of this process: ``auto`` takes the local GPU when there is one."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to this process")
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def setup(device_preference: str = "auto", timeout_minutes: int = 30) -> DistContext:
    """Join the process group when launched as one of several processes; pick this process's device."""
    rank, local_rank, world_size = world_from_env()
    device = choose_device(device_preference, local_rank)
    backend = None
    owns_group = False
    if world_size > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            owns_group = True
            dist.init_process_group(
                backend=backend,
                timeout=datetime.timedelta(minutes=timeout_minutes),
                device_id=device if device.type == "cuda" else None,
            )
        rank, world_size = dist.get_rank(), dist.get_world_size()
        log.debug("process %d of %d on %s (%s)", rank, world_size, device, backend)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device, backend=backend,
                       owns_group=owns_group)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def reduce_sum(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over all processes (``values`` itself when alone), on ``values``' device."""
    if not ctx.distributed:
        return values
    work = values.detach().to(collective_device(ctx), copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(values.device)


def sum_over_processes(ctx: DistContext, value: int) -> int:
    return int(reduce_sum(ctx, torch.tensor([value], dtype=torch.float64))[0].item())


def any_process(ctx: DistContext, flag: bool) -> bool:
    """True when ``flag`` is true in at least one process (e.g. a cancel request)."""
    if not ctx.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=collective_device(ctx))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def collective_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")
