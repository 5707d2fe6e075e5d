"""Processes of a training run: one, or the DDP group that torchrun starts.

``torchrun --nproc_per_node N -m lre.train ...`` describes the group in the environment
(``WORLD_SIZE``, ``LOCAL_RANK``, ...); gloo joins it on CPU, nccl on GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

__all__ = ["Dist", "setup_distributed"]


@dataclass
class Dist:
    """This process's place in the run: rank, number of processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs to file and writes the experiment dir."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process (collectives needed)."""
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a float64 CPU tensor ``(n,)`` over processes."""
        if not self.active:
            return values
        t = values.to(self.device)
        torch.distributed.all_reduce(t)
        return t.cpu()

    def close(self) -> None:
        """Leave the process group (if this process joined one)."""
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup_distributed() -> Dist:
    """Join the process group that torchrun describes in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size <= 1:
        return Dist(device=device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank()
    if rank != 0:
        logging.getLogger("lre").setLevel(logging.WARNING)
    return Dist(rank, torch.distributed.get_world_size(), local_rank, device)
