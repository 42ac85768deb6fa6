"""The training loop, as a generator of progress events.

``for event in train(...)`` drives training; the CLI turns events into a tqdm bar, the app into
live plots. One loop serves both. Checkpoints: ``output/last`` every epoch (and on stop),
``output`` itself whenever validation loss improves.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocessing.errors import UserError
from preprocessing.store import Store

from .checkpoint import load_checkpoint, load_training_state, read_config, save_checkpoint
from .config import ModelConfig, TrainConfig, model_config, train_config
from .latents import compute_latent_stats, save_latent_stats
from .model import VAE, vae_loss

PRELOAD_BYTES = 2 << 30  # datasets smaller than this are copied to RAM (faster batches)


class TrainingError(UserError):
    """Training cannot start or had to stop (diverged, bad data); the message says what to do."""


@dataclass
class TrainEvent:
    """One progress report. ``kind``: "step", "epoch", "done" or "stopped"."""

    kind: str
    epoch: int  # epochs completed (for "step": the current epoch, 0-based)
    epochs: int
    step: int = 0  # step within the epoch
    steps: int = 0  # steps per epoch
    losses: dict[str, float] = field(default_factory=dict)  # running training means
    val: dict[str, float] | None = None
    samples_per_s: float = 0.0
    eta_s: float = 0.0
    elapsed_s: float = 0.0
    checkpoint: str | None = None
    preview: dict[str, Any] | None = None  # {"index", "name", "original", "reconstruction"} (F, T) arrays
    message: str = ""

    @property
    def fraction(self) -> float:
        done = self.epoch + (self.step / self.steps if self.kind == "step" and self.steps else 0)
        return min(1.0, done / max(1, self.epochs))


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda, then mps, then cpu; otherwise the named device (checked)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrainingError("device 'mps' requested but not available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise TrainingError(f"unknown device {name!r} ({e})") from None


class _Batches:
    """Shuffled mini-batches of one split, deterministic per (seed, epoch)."""

    def __init__(self, store: Store, indices: list[int], batch_size: int):
        idx = np.asarray(sorted(indices), dtype=np.int64)
        nbytes = len(idx) * int(np.prod(store.specs.shape[1:])) * 4
        self.data = np.asarray(store.specs[idx]) if nbytes <= PRELOAD_BYTES else store.specs
        self.idx = np.arange(len(idx)) if nbytes <= PRELOAD_BYTES else idx
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.idx) / self.batch_size)

    def epoch(self, seed: int, epoch: int, shuffle: bool = True) -> Iterator[torch.Tensor]:
        order = np.random.default_rng([seed, epoch]).permutation(len(self.idx)) if shuffle else np.arange(len(self.idx))
        for s in range(0, len(order), self.batch_size):
            rows = np.sort(self.idx[order[s:s + self.batch_size]])
            yield torch.from_numpy(np.asarray(self.data[rows])).unsqueeze(1)  # (B, 1, F, T)


def _validate(model: VAE, batches: _Batches, device: torch.device, tc: TrainConfig) -> dict[str, float]:
    """Mean validation losses; reconstructions decode the posterior mean (deterministic)."""
    model.eval()
    sums, n = {"loss": 0.0, "recon": 0.0, "kl": 0.0}, 0
    with torch.no_grad():
        for x in batches.epoch(tc.seed, 0, shuffle=False):
            x = x.to(device)
            mu, logvar = model.encode(x)
            loss, recon, kl = vae_loss(model.decode(mu), x, mu, logvar, tc.recon_weight, tc.kl_weight)
            for k, v in (("loss", loss), ("recon", recon), ("kl", kl)):
                sums[k] += float(v) * len(x)
            n += len(x)
    model.train()
    return {k: v / max(1, n) for k, v in sums.items()}


def _preview(model: VAE, store: Store, index: int, device: torch.device) -> dict[str, Any]:
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.array(store.specs[index])).to(device)[None, None]  # copy: memmap is read-only
        x_hat = model.decode(model.encode(x)[0])
    model.train()
    return {"index": index, "name": store.clip_name(index),
            "original": x[0, 0].cpu().numpy(), "reconstruction": x_hat[0, 0].cpu().numpy()}


def _should_stop(stop: threading.Event | None, tc: TrainConfig, train_time: float) -> str:
    """Why training should stop now ("" to go on)."""
    if stop is not None and stop.is_set():
        return "stopped on request"
    if tc.time_limit_s is not None and train_time >= tc.time_limit_s:
        return "time limit reached"
    return ""


def _diverged(what: str, output: Path, tc: TrainConfig) -> TrainingError:
    """The error for a non-finite loss: what happened, where the good checkpoint is, what to try."""
    return TrainingError(f"{what}; training stopped. The last good checkpoint is in {output / 'last'}. "
                         f"Try a lower learning rate (now {tc.lr:g}) or a smaller reconstruction weight, "
                         "then --resume.")


def _save_stats(output: Path, store: Store, indices: list[int], device: torch.device) -> None:
    """Latent statistics of the best checkpoint, for exploration without the dataset."""
    best = load_checkpoint(output, device)
    save_latent_stats(output, compute_latent_stats(best.model, store, indices))


def train(
    data: str | Path,
    output: str | Path,
    arch: str = "default",
    model_cfg: ModelConfig | None = None,
    train_cfg: TrainConfig | None = None,
    resume: bool = False,
    stop: threading.Event | None = None,
    **overrides: Any,
) -> Iterator[TrainEvent]:
    """Train a VAE on the store at ``data``, writing checkpoints to ``output``.

    ``overrides`` (epochs, batch_size, lr, kl_weight, device, ...) patch the architecture's
    default :class:`TrainConfig`; ``latent_dim`` patches the model. With ``resume=True`` the run
    continues from ``output/last`` (overrides such as ``epochs`` still apply). Setting ``stop``
    ends training after saving ``output/last``. Raises :class:`TrainingError` on a non-finite
    loss, leaving the last good checkpoint in place.
    """
    output = Path(output)
    store = Store(data)
    latent_dim = overrides.pop("latent_dim", None)
    state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    if resume:
        last = read_config(output / "last")
        ck = load_checkpoint(output / "last")
        model_cfg, arch = ck.model_cfg, ck.meta.get("arch", arch)
        # a time limit belongs to the run that set it: a resumed run has none unless given again
        train_cfg = dataclasses.replace(ck.train_cfg, time_limit_s=None).replace(**overrides)
        state = load_training_state(output / "last")
        history = last["meta"].get("history", [])
        if ck.spec.shape != store.config.shape:
            raise TrainingError(f"cannot resume: checkpoint expects {ck.spec.shape} spectrograms, "
                                f"store has {store.config.shape}")
    else:
        model_cfg = model_cfg or model_config(arch, store.config.shape, latent_dim)
        train_cfg = (train_cfg or train_config(arch, store.config.shape)).replace(**overrides)
    if (model_cfg.n_freq, model_cfg.n_frames) != store.config.shape:
        raise TrainingError(f"model expects {model_cfg.n_freq}x{model_cfg.n_frames} spectrograms, "
                            f"store {data} has {store.config.shape[0]}x{store.config.shape[1]}")
    tc = train_cfg
    device = pick_device(tc.device)

    train_idx, val_idx = store.indices("train"), store.indices("test")
    message = ""
    if not train_idx:
        raise TrainingError(f"store {data} has no training clips")
    if not val_idx:
        val_idx = train_idx[: max(1, len(train_idx) // 10)]
        message = "store has no test split: validating on a slice of the training clips"
    batches, val_batches = _Batches(store, train_idx, tc.batch_size), _Batches(store, val_idx, 64)

    torch.manual_seed(tc.seed)
    model = VAE(model_cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    start_epoch, skip_steps, best = 0, 0, math.inf
    train_time = 0.0
    if state is not None:
        model.load_state_dict(ck.model.state_dict())
        opt.load_state_dict(state["optimizer"])
        for group in opt.param_groups:
            group["lr"] = tc.lr
        start_epoch, skip_steps = int(state["epoch"]), int(state["step"])
        best, train_time = float(state["best"]), float(state["train_time"])
        torch.set_rng_state(state["rng"])
    model.train()

    meta = {"arch": arch, "store": str(Path(data).resolve()), "n_train": len(train_idx), "n_val": len(val_idx),
            "device": str(device), "torch": torch.__version__,
            # decoding a sample needs a dB range; per-clip normalisation has none, so keep a typical one
            "typical_range": [float(np.median([store.clips[i][k] for i in train_idx])) for k in ("lo", "hi")]}
    preview_index = val_idx[0]

    def checkpoint(directory: Path, epoch: int, step: int, with_state: bool) -> None:
        m = {**meta, "epoch": epoch, "step": step, "best_val": best, "train_time_s": round(train_time, 1),
             "history": history}
        ts = None
        if with_state:
            ts = {"optimizer": opt.state_dict(), "epoch": epoch, "step": step, "best": best,
                  "train_time": train_time, "rng": torch.get_rng_state()}
        save_checkpoint(directory, model, store.config, tc, m, ts)

    steps = len(batches)
    t_run = time.perf_counter()
    for epoch in range(start_epoch, tc.epochs):
        sums, seen, t_epoch = {"loss": 0.0, "recon": 0.0, "kl": 0.0}, 0, time.perf_counter()
        for step, x in enumerate(batches.epoch(tc.seed, epoch)):
            if step < skip_steps:
                continue
            t0 = time.perf_counter()
            x = x.to(device, non_blocking=True)
            warm = min(1.0, (epoch + step / steps) / tc.kl_warmup_epochs) if tc.kl_warmup_epochs else 1.0
            x_hat, mu, logvar = model(x)
            loss, recon, kl = vae_loss(x_hat, x, mu, logvar, tc.recon_weight, tc.kl_weight * warm)
            if not torch.isfinite(loss):
                raise _diverged(f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}",
                                output, tc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            dt = time.perf_counter() - t0
            train_time += dt
            for k, v in (("loss", loss), ("recon", recon), ("kl", kl)):
                sums[k] += float(v.detach()) * len(x)
            seen += len(x)
            rate = seen / max(1e-9, time.perf_counter() - t_epoch)
            remaining = (steps - step - 1 + (tc.epochs - epoch - 1) * steps) * tc.batch_size / max(rate, 1e-9)
            yield TrainEvent("step", epoch, tc.epochs, step + 1, steps, {k: v / seen for k, v in sums.items()},
                             samples_per_s=rate, eta_s=remaining, elapsed_s=time.perf_counter() - t_run,
                             message=message)
            why = _should_stop(stop, tc, train_time)
            if why and step + 1 < steps:  # on an epoch's last step, finish the epoch (validate) first
                checkpoint(output / "last", epoch, step + 1, True)
                if not (output / "config.json").exists():  # no validated best yet: the latest is the best we have
                    checkpoint(output, epoch, 0, False)
                _save_stats(output, store, train_idx, device)
                yield TrainEvent("stopped", epoch, tc.epochs, step + 1, steps,
                                 {k: v / seen for k, v in sums.items()}, elapsed_s=time.perf_counter() - t_run,
                                 checkpoint=str(output / "last"),
                                 message=f"{why} at epoch {epoch + 1}, step {step + 1}; resume to continue")
                return
        skip_steps = 0
        losses = {k: v / max(1, seen) for k, v in sums.items()}
        val = _validate(model, val_batches, device, tc)
        if not math.isfinite(val["loss"]):  # weights diverged in the last step: do not save them
            raise _diverged(f"validation loss became {val['loss']} after epoch {epoch + 1}", output, tc)
        history.append({"epoch": epoch + 1, "train": losses, "val": val, "train_time_s": round(train_time, 1)})
        improved = val["loss"] < best
        if improved:
            best = val["loss"]
            checkpoint(output, epoch + 1, 0, False)
        if (epoch + 1) % tc.checkpoint_every == 0 or epoch + 1 == tc.epochs:
            checkpoint(output / "last", epoch + 1, 0, True)
        preview = None
        if tc.preview_every and ((epoch + 1) % tc.preview_every == 0 or epoch + 1 == tc.epochs or epoch == start_epoch):
            preview = _preview(model, store, preview_index, device)
        rate = seen / (time.perf_counter() - t_epoch)
        yield TrainEvent("epoch", epoch + 1, tc.epochs, steps, steps, losses, val, rate,
                         elapsed_s=time.perf_counter() - t_run, checkpoint=str(output if improved else output / "last"),
                         preview=preview, message=message)
        why = _should_stop(stop, tc, train_time)
        if why and epoch + 1 < tc.epochs:
            if (epoch + 1) % tc.checkpoint_every:
                checkpoint(output / "last", epoch + 1, 0, True)
            _save_stats(output, store, train_idx, device)
            yield TrainEvent("stopped", epoch + 1, tc.epochs, steps, steps, losses, val,
                             elapsed_s=time.perf_counter() - t_run, checkpoint=str(output / "last"),
                             message=f"{why} after epoch {epoch + 1}; resume to continue")
            return

    _save_stats(output, store, train_idx, device)
    yield TrainEvent("done", tc.epochs, tc.epochs, steps, steps, history[-1]["train"] if history else {},
                     history[-1]["val"] if history else None, elapsed_s=time.perf_counter() - t_run,
                     checkpoint=str(output), message=f"best validation loss {best:.4g}")
