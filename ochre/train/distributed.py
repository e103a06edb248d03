"""torchrun/DDP plumbing shared by the training loops: init from the environment, pick the
device, reduce metrics. Single-process runs go through the same code with world = 1."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ochre.device import pick_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA,
    gloo on CPU. Returns this process's rank, world size and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        # A gloo worker thread frees a finished collective's tensors only once it holds the GIL.
        # The process group's destructor (when DDP is freed) joins those threads while holding
        # the GIL, so a rank that leaves right after its last collective could hang there for
        # good (2 of 8 two-rank CPU runs did; 0 of 10 with this). Sleeping hands them the GIL first.
        time.sleep(0.1)
        dist.destroy_process_group()


def mean_across_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average scalar tensors over ranks in one all-reduce (a no-op on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    stacked = torch.stack([v.float() for v in values.values()])
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return dict(zip(values, stacked))


def gather_ints(value: int) -> list[int]:
    """Every rank's `value`, in rank order, on every rank ([value] on one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [int(value)]
    # all_gather_object works on gloo and NCCL alike (NCCL needs the CUDA device set: setup does it).
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, int(value))
    return [int(v) for v in out]


@torch.no_grad()
def check_ranks_agree(model: torch.nn.Module) -> None:
    """Weights and codebook must be identical on every rank after DDP training; a silent drift
    (a missed all-reduce, a rank-local restart) would otherwise only show as a worse model."""
    total = torch.stack([t.double().sum() for t in model.state_dict().values()]).sum().reshape(1)
    sums = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(sums, total)
    if any(not torch.equal(s, sums[0]) for s in sums):
        raise RuntimeError(f"ranks disagree after training: checksums {[float(s) for s in sums]}")
