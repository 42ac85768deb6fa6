"""Training across processes with PyTorch's own engine: ``torchrun --nproc_per_node N -m vae train ...``.

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init` joins the process group (gloo on the
CPU, NCCL on GPUs). Every rank builds the same model from the same seed and walks the same shuffled order
of the training clips; each takes its own slice of every global batch (:func:`shard`), and DDP averages
the gradients, so a step is the step one process would take on the whole global batch. Only rank 0 logs,
previews and writes checkpoints (:attr:`Dist.main`). Without torchrun everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process logs, previews and writes checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_env() -> Dist:
    """The run's layout as torchrun describes it (one process without torchrun)."""
    return Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def init(device: torch.device) -> Dist:
    """Join the process group when started by torchrun with more than one process; the layout either way.
    On CUDA each process takes the GPU of its ``LOCAL_RANK``."""
    d = from_env()
    if d.active and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d


def device_for(device: torch.device, d: Dist) -> torch.device:
    """This rank's device: its own GPU under torchrun on CUDA, else ``device``."""
    if d.active and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard(rows: np.ndarray, d: Dist) -> np.ndarray:
    """This rank's slice of a global batch's rows: contiguous, sizes differing by at most one."""
    return np.array_split(rows, d.world)[d.rank] if d.active else rows


def reduce_step(losses: dict[str, float], n: int, stop: bool, d: Dist) -> tuple[dict[str, float], int, bool]:
    """The global batch's mean losses, its size, and whether any rank wants to stop (so that every rank
    stops at the same step): one all-reduce of a few numbers per step."""
    if not d.active:
        return losses, n, stop
    keys = sorted(losses)
    t = torch.tensor([losses[k] * n for k in keys] + [float(n), float(stop)], dtype=torch.float64)
    if dist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
        t = t.cuda()
    dist.all_reduce(t)
    t = t.cpu()
    total = int(t[-2])
    return {k: float(t[i]) / max(1, total) for i, k in enumerate(keys)}, total, bool(t[-1] > 0)


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def close(d: Dist) -> None:
    """Leave the process group (at the end of a run)."""
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
