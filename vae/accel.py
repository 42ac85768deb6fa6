"""How a training step runs fast on its device: mixed precision, memory format and batch size.

On a GPU a small VAE step is launch-bound: at batch 32 the default model took 6.6 ms a step on an
H200 for a few MFLOPs, and bf16 autocast alone was slower than fp32. Measured there (issue #13, train
step on synthetic batches): batch 256 gave 5.8x the samples/s of batch 32, and bf16 autocast together
with channels_last 1.35x more than fp32 at batch 256 (1.9x on the music preset). So on CUDA, ``auto``
means bf16 + channels_last and a batch of :data:`GPU_BATCH`; on the CPU and MPS nothing changes unless
asked: fp32, contiguous memory and the architecture's batch, so CPU results stay as they were.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from preprocessing.config import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
GPU_BATCH = 256  # clips per step on CUDA with --batch-size auto
RESIDENT_BYTES = 8 << 30  # a split of at most this many bytes of spectrograms is kept on the GPU...
RESIDENT_SHARE = 0.25  # ...and at most this share of the GPU memory free at the start (FSDD's store: ~120 MB)
MIN_STEPS = 8  # ...but at least this many steps an epoch on small stores


@dataclass(frozen=True)
class Accel:
    """The step's precision and memory format on ``device``."""

    device: torch.device
    bf16: bool = False
    channels_last: bool = False

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def autocast(self) -> AbstractContextManager:
        """The forward pass's autocast context (losses are computed in fp32 either way: see ``train_step``)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` with its 4-D weights in channels-last order where that is chosen (in place)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """A batch (B, 1, F, T) in the memory format the model's convolutions expect."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def choose(precision: str, device: torch.device) -> Accel:
    """The :class:`Accel` for ``precision`` (one of :data:`PRECISIONS`) on ``device``: ``auto`` is bf16 with
    channels-last on CUDA (where bf16 is supported), fp32 elsewhere; ``bf16`` asks for it anywhere (CPU
    autocast included; channels-last only on CUDA, where it measured faster)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = device.type == "cuda"
    if precision == "auto":
        fast = cuda and torch.cuda.is_bf16_supported()
        return Accel(device, bf16=fast, channels_last=fast)
    return Accel(device, bf16=precision == "bf16", channels_last=precision == "bf16" and cuda)


def auto_batch(batch_size: int, lr: float, device: torch.device, n_train: int) -> tuple[int, float]:
    """``--batch-size auto``: the batch and learning rate for ``device``. On CUDA, :data:`GPU_BATCH` (at most
    ``n_train / MIN_STEPS``, at least the architecture's ``batch_size``), with the learning rate scaled by the
    square root of the batch ratio (the usual rule for Adam, gentler than linear scaling; not yet compared
    on a GPU); elsewhere the architecture's own batch and rate, unchanged."""
    if device.type != "cuda":
        return batch_size, lr
    batch = max(batch_size, min(GPU_BATCH, n_train // MIN_STEPS))
    return batch, lr * math.sqrt(batch / batch_size)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether a split of ``nbytes`` stays on ``device`` for the whole run (CUDA only: the batches are then
    gathered on the GPU, with no host-to-device copy per step; on the CPU it is in RAM already)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= min(RESIDENT_BYTES, RESIDENT_SHARE * free)

