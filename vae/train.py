"""The training loop, as a generator of progress events.

``for event in train(...)`` drives training; the CLI turns events into a tqdm bar, the app into
live plots. One loop serves both. Checkpoints: ``output/last`` every epoch (and on stop),
``output`` itself whenever validation loss improves.

The steps, each its own function: :func:`resolve_configs` (configs and overrides, checked before any
work), :func:`train_step` (one optimisation step, also timed by the benchmarks), :func:`_validate`,
:func:`_save` (a checkpoint of the :class:`LoopState`) and :func:`_stop` (the one way a run stops early).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from preprocessing.config import ConfigError
from preprocessing.errors import UserError
from preprocessing.rows import RowReader
from preprocessing.store import Store

from . import distributed
from .accel import Accel, auto_batch, choose, fits_on_device
from .augment import augment_batch, batch_generator
from .checkpoint import (
    MAX_PARAMS,
    STATS_FILES,
    CheckpointConfig,
    CheckpointError,
    count_parameters,
    load_checkpoint,
    load_config,
    load_training_state,
    recover_run,
    resumable,
    save_checkpoint,
)
from .conditioning import CONDITIONS, label_indices
from .config import ModelConfig, TrainConfig, arch_for, model_config, train_config
from .distributed import Dist, shard
from .latents import compute_latent_stats, encode_indices, save_latent_stats, subsample
from .losses import spectral_loss, vae_loss
from .model import VAE

# A store of at most this many bytes of spectrograms is copied to RAM (both splits: at most this much in all);
# a larger one is read batch by batch with explicit reads (Store.rows), which keeps a run's memory bounded
# whatever the store's size: reading through the memory map would leave every page touched in the run's RSS.
PRELOAD_BYTES = 2 << 30
ETA_MIN_STEPS = 3  # no ETA before a run has done this many steps: the first ones say little about speed
LOSS_KEYS = ("loss", "recon", "kl")
EventKind = Literal["step", "epoch", "done", "stopped"]


class TrainingError(UserError):
    """Training cannot start or had to stop (diverged, bad data); the message says what to do."""


class Diverged(TrainingError):
    """A training step's loss is not finite; ``loss`` holds its value."""

    def __init__(self, loss: float):
        super().__init__(f"loss became {loss}")
        self.loss = loss


@dataclass
class Preview:
    """A validation clip and its reconstruction by the current weights, (F, T) arrays in [0, 1]."""

    index: int  # clip index in the store
    name: str
    original: np.ndarray
    reconstruction: np.ndarray


@dataclass
class TrainEvent:
    """One progress report."""

    kind: EventKind
    epoch: int  # epochs completed (for "step": the current epoch, 0-based)
    epochs: int
    step: int = 0  # step within the epoch
    steps: int = 0  # steps per epoch
    losses: dict[str, float] = field(default_factory=dict)  # running training means
    val: dict[str, float] | None = None
    samples_per_s: float = 0.0  # "step": over this run's training steps; "epoch": over the epoch
    eta_s: float = 0.0  # 0 until the run has done ETA_MIN_STEPS steps
    elapsed_s: float = 0.0
    checkpoint: str | None = None
    preview: Preview | None = None
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


# ----- (a) configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration, resolved and checked before any work starts."""

    arch: str
    model: ModelConfig
    train: TrainConfig
    device: torch.device
    epochs_done: int = 0  # epochs trained before (when resuming)


OVERRIDES = frozenset(f.name for f in dataclasses.fields(TrainConfig)) | {"latent_dim"}


def condition_labels(store: Store, condition: str | None) -> tuple[str, ...]:
    """The label vocabulary a model conditioned on ``condition`` gets from ``store`` (() for None): its
    labels, sorted. :class:`TrainingError` when the store has none or leaves some clips unlabelled."""
    if condition is None:
        return ()
    if condition not in CONDITIONS:
        raise ConfigError(f"unknown condition {condition!r}; choose one of {CONDITIONS}")
    unlabelled = sum(c["label"] is None for c in store.clips)
    if unlabelled or not store.labels():
        raise TrainingError(f"cannot condition on labels: {unlabelled or len(store)} clips of {store.path} have no "
                            "label (FSDD names such as 7_jackson_0.wav, or one folder per genre/style, give them)")
    return tuple(store.labels())


def resolve_configs(store: Store, arch: str | None = None, model_cfg: ModelConfig | None = None,
                    train_cfg: TrainConfig | None = None, last: CheckpointConfig | None = None,
                    condition: str | None = None, **overrides: Any) -> RunConfig:
    """The model and training configs of a run on ``store``, with ``overrides`` applied and checked.

    ``arch``: None picks the one measured best for the store's preset (:func:`vae.config.arch_for`).
    ``overrides``: :class:`TrainConfig` fields and ``latent_dim``; ``last``: the config of ``output/last``
    when resuming (its model, arch and training settings are kept; overrides such as ``epochs`` still
    apply). ``condition="label"``: the model is conditioned on the store's labels (its vocabulary: the
    store's label names, sorted; a resumed run keeps its own). Raises :class:`ConfigError` for an unknown or
    bad value, :class:`TrainingError` for a device that is not available or a model that does not fit the
    store. The one place the device is checked.
    """
    unknown = sorted(set(overrides) - OVERRIDES)
    if unknown:
        raise ConfigError(f"unknown training parameters: {unknown}")
    auto_batch_size = overrides.get("batch_size") == "auto"  # resolved below, once the device is known
    if auto_batch_size:
        overrides.pop("batch_size")
    latent_dim = overrides.pop("latent_dim", None)
    if latent_dim is not None and int(latent_dim) < 1:
        raise ConfigError(f"latent_dim must be at least 1, got {latent_dim}")
    epochs_done = 0
    labels = condition_labels(store, condition)
    arch = arch or arch_for(store.config)
    if last is not None:  # a trained model keeps its architecture: latent_dim does not apply
        if last.spec.shape != store.config.shape:
            raise TrainingError(f"cannot resume: checkpoint expects {last.spec.shape} spectrograms, "
                                f"store has {store.config.shape}")
        if labels and last.model_cfg.labels != labels:
            raise TrainingError("cannot resume with --condition label: the run was started without it (or with "
                                "other labels); start a new run to condition on labels")
        model_cfg, arch = last.model_cfg, last.meta.get("arch", arch)
        # a time limit belongs to the run that set it: a resumed run has none unless given again
        train_cfg = dataclasses.replace(last.train_cfg, time_limit_s=None).replace(**overrides)
        epochs_done = int(last.meta.get("epoch", 0))
    else:
        model_cfg = model_cfg or model_config(arch, store.config.shape, latent_dim)
        if labels:
            model_cfg = dataclasses.replace(model_cfg, labels=labels).validate()
        train_cfg = (train_cfg or train_config(arch, store.config.shape)).replace(**overrides)
    if model_cfg.labels:  # every clip's label must have an embedding row (a resumed run on another store)
        try:
            label_indices(model_cfg.labels, [c["label"] for c in store.clips])
        except UserError as e:
            raise TrainingError(f"store {store.path} does not fit the model's labels: {e}") from None
    if (model_cfg.n_freq, model_cfg.n_frames) != store.config.shape:
        raise TrainingError(f"model expects {model_cfg.n_freq}x{model_cfg.n_frames} spectrograms, "
                            f"store {store.path} has {store.config.shape[0]}x{store.config.shape[1]}")
    n = count_parameters(lambda: VAE(model_cfg))
    if n > MAX_PARAMS:
        raise ConfigError(f"this model would have {n:,} parameters, more than the limit of {MAX_PARAMS:,}; "
                          "use a smaller latent_dim")
    device = pick_device(train_cfg.device)
    if auto_batch_size:  # from the architecture's own batch and rate (a resumed run's may be auto already)
        base = train_config(arch, store.config.shape)
        batch, lr = auto_batch(base.batch_size, base.lr, device, len(store.indices("train")))
        train_cfg = train_cfg.replace(batch_size=batch, lr=train_cfg.lr if overrides.get("lr") else lr)
    return RunConfig(arch, model_cfg, train_cfg, device, epochs_done)


# ----- data ------------------------------------------------------------------------------------------


Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # x (B, 1, F, T), or (x, labels (B,) long) when labelled


class _Batches:
    """Shuffled mini-batches of one split, deterministic per (seed, epoch): from RAM for a store of at most
    PRELOAD_BYTES, else read from the store batch by batch (the same batches), the next one read while the
    current one is used. With ``labels`` (N,) int64, one per clip of the store (a conditional model's
    embedding rows), each batch is (x, y) with y (B,) the labels of the same rows."""

    def __init__(self, store: Store, indices: list[int], batch_size: int, d: Dist = Dist(),
                 device: torch.device | None = None, labels: np.ndarray | None = None):
        self.dist = d  # under torchrun each rank takes its slice of every (global) batch
        idx = np.asarray(sorted(indices), dtype=np.int64)
        self.preloaded = store.rows.nbytes <= PRELOAD_BYTES
        self.data: np.ndarray | RowReader | torch.Tensor = store.rows[idx] if self.preloaded else store.rows
        self.idx = np.arange(len(idx)) if self.preloaded else idx
        self.batch_size = batch_size
        # labels indexed like self.data's rows: by position when preloaded, by store index otherwise
        self.labels = None if labels is None else torch.from_numpy(
            np.asarray(labels, dtype=np.int64)[idx] if self.preloaded else np.asarray(labels, dtype=np.int64))
        if self.preloaded and device is not None and fits_on_device(self.data.nbytes, device):
            self.data = torch.from_numpy(self.data).to(device)  # batches are gathered there: no copy per step
            self.labels = None if self.labels is None else self.labels.to(device)

    def _with_labels(self, x: torch.Tensor, rows: np.ndarray) -> Batch:
        """x, or (x, the labels (B,) of ``rows``) when the batches carry labels."""
        if self.labels is None:
            return x
        return x, self.labels[torch.from_numpy(rows).to(self.labels.device)]

    def __len__(self) -> int:
        n, b = len(self.idx), self.batch_size
        # a last batch smaller than the number of processes would leave one without a clip: it is left out
        return n // b + (1 if 0 < n % b and (n % b >= self.dist.world or not self.dist.active) else 0)

    def epoch(self, seed: int, epoch: int, shuffle: bool = True, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch ``start`` on (the order does not depend on ``start``): this rank's
        slice of each, under torchrun; (x, y) pairs when the batches carry labels."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.idx)) if shuffle else np.arange(len(self.idx))
        batches = (np.sort(shard(self.idx[order[s:s + self.batch_size]], self.dist))
                   for s in range(start * self.batch_size, len(self) * self.batch_size, self.batch_size))
        if isinstance(self.data, torch.Tensor):  # resident on the device
            for rows in batches:
                yield self._with_labels(self.data[torch.from_numpy(rows).to(self.data.device)].unsqueeze(1), rows)
            return
        if self.preloaded:
            for rows in batches:
                yield self._with_labels(torch.from_numpy(self.data[rows]).unsqueeze(1), rows)  # (B, 1, F, T)
            return
        # from the store: one batch read ahead in a thread (reads release the GIL), so a GPU step and the next
        # read overlap; at most two batches are held
        with ThreadPoolExecutor(1, thread_name_prefix="batches") as reader:
            ahead_rows = next(batches, np.zeros(0, dtype=np.int64))
            ahead = reader.submit(self.data.__getitem__, ahead_rows)
            for rows in batches:
                current, current_rows = ahead, ahead_rows
                ahead, ahead_rows = reader.submit(self.data.__getitem__, rows), rows
                yield self._with_labels(torch.from_numpy(current.result()).unsqueeze(1), current_rows)
            last = ahead.result()
            if len(last):
                yield self._with_labels(torch.from_numpy(last).unsqueeze(1), ahead_rows)


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x (B, 1, F, T), labels (B,) or None) of a batch from :meth:`_Batches.epoch`."""
    return batch if isinstance(batch, tuple) else (batch, None)


# ----- (b) one optimisation step ---------------------------------------------------------------------


def batch_loss(x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, tc: TrainConfig,
           kl_scale: float = 1.0, top_db: float = 80.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, recon, kl) of a batch as ``tc`` weighs them: the VAE loss, plus ``tc.spectral_weight`` x the
    multi-resolution spectral loss when that is on (``top_db``: the dB span of the store's 0..1)."""
    loss, recon, kl = vae_loss(x_hat, x, mu, logvar, tc.recon_weight, tc.kl_weight * kl_scale)
    if tc.spectral_weight:
        loss = loss + tc.spectral_weight * spectral_loss(x_hat, x, top_db)
    return loss, recon, kl


def train_step(model: VAE, opt: torch.optim.Optimizer, x: torch.Tensor, tc: TrainConfig, kl_scale: float = 1.0,
               forward: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
               autocast: AbstractContextManager | None = None, top_db: float = 80.0,
               labels: torch.Tensor | None = None) -> dict[str, float]:
    """Forward, loss, non-finite check, backward, gradient clipping and ``opt.step()`` on a batch
    ``x`` (B, 1, F, T) (with its ``labels`` (B,) long for a conditional model); the KL weight is
    ``tc.kl_weight * kl_scale`` (warm-up). ``forward`` (e.g. a compiled ``model``) and ``autocast`` serve
    the benchmarks. Returns the batch's losses; raises :class:`Diverged` before touching the weights when
    the loss is not finite."""
    with autocast or nullcontext():
        x_hat, mu, logvar = (forward or model)(x) if labels is None else (forward or model)(x, labels)
        loss, recon, kl = batch_loss(x_hat.float(), x, mu.float(), logvar.float(), tc, kl_scale, top_db)
    if not torch.isfinite(loss):
        raise Diverged(float(loss.detach()))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if tc.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    opt.step()
    return {k: float(v.detach()) for k, v in zip(LOSS_KEYS, (loss, recon, kl))}


# ----- (c) validation and previews -------------------------------------------------------------------


def _validate(model: VAE, batches: _Batches, device: torch.device, tc: TrainConfig,
              top_db: float = 80.0) -> dict[str, float]:
    """Mean validation losses; reconstructions decode the posterior mean (deterministic)."""
    model.eval()
    sums, n = dict.fromkeys(LOSS_KEYS, 0.0), 0
    with torch.no_grad():
        for batch in batches.epoch(tc.seed, 0, shuffle=False):
            x, y = split_batch(batch)
            x, y = x.to(device), None if y is None else y.to(device)
            mu, logvar = model.encode(x, y)
            loss, recon, kl = batch_loss(model.decode(mu, y), x, mu, logvar, tc, top_db=top_db)
            for k, v in zip(LOSS_KEYS, (loss, recon, kl)):
                sums[k] += float(v) * len(x)
            n += len(x)
    model.train()
    return {k: v / max(1, n) for k, v in sums.items()}


def _preview(model: VAE, store: Store, index: int, device: torch.device) -> Preview:
    y = _clip_labels(model.cfg, store, [index])
    y = None if y is None else torch.from_numpy(y).to(device)
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(store.rows[index]).to(device)[None, None]
        x_hat = model.decode(model.encode(x, y)[0], y)
    model.train()
    return Preview(index, store.clip_name(index), x[0, 0].cpu().numpy(), x_hat[0, 0].cpu().numpy())


def _clip_labels(cfg: ModelConfig, store: Store, indices: list[int] | None = None) -> np.ndarray | None:
    """Embedding rows (N,) of the store's clips ``indices`` (all when None) for a conditional model; else None."""
    if not cfg.labels:
        return None
    clips = store.clips if indices is None else [store.clips[i] for i in indices]
    return label_indices(cfg.labels, [c["label"] for c in clips])


# ----- the loop's state and its checkpoints ----------------------------------------------------------


@dataclass
class LoopState:
    """Where training is: saved with ``output/last`` and restored on resume."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps done within the current epoch
    best: float = math.inf  # best validation loss so far
    train_time: float = 0.0  # seconds in training steps, over every run
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: train/val losses, train_time_s
    saved_last: tuple[int, int] | None = None  # (epoch, step) of the latest save of output/last in this run
    # the current epoch's training loss sums (loss x clips) and clips so far: saved with output/last, so the
    # mean of an epoch stopped part-way and resumed covers all its steps
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOSS_KEYS, 0.0))
    seen: int = 0


@dataclass
class _Speed:
    """This run's speed: over all its training steps, since one epoch's first steps alone are noisy."""

    t0: float  # time.perf_counter() at the run's start
    steps: int = 0
    samples: int = 0
    train_time: float = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def samples_per_s(self) -> float:
        return self.samples / max(1e-9, self.train_time)

    def eta(self, remaining_steps: int) -> float:
        """Seconds left at the run's mean wall time per step (validation included); 0 before ETA_MIN_STEPS."""
        return remaining_steps * self.elapsed() / self.steps if self.steps >= ETA_MIN_STEPS else 0.0


@dataclass
class _Run:
    """Everything one call of :func:`train` works with."""

    cfg: RunConfig
    output: Path
    store: Store
    model: VAE
    opt: torch.optim.Optimizer
    batches: _Batches
    val_batches: _Batches
    train_idx: list[int]
    preview_index: int  # the first validation clip
    meta: dict[str, Any]  # written into every checkpoint
    state: LoopState
    speed: _Speed
    start_epoch: int
    message: str = ""
    dist: Dist = field(default_factory=Dist)  # this process's rank under torchrun
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None  # the DDP-wrapped model, if any
    accel: Accel = field(default_factory=lambda: Accel(torch.device("cpu")))  # the step's precision and layout

    @property
    def tc(self) -> TrainConfig:
        return self.cfg.train

    @property
    def steps(self) -> int:
        return len(self.batches)


def _save(run: _Run, directory: Path, with_state: bool) -> None:
    """Checkpoint the model into ``directory``; with the training state for ``output/last``. Rank 0 only."""
    st = run.state
    if not run.dist.main:
        st.saved_last = (st.epoch, st.step) if with_state else st.saved_last
        return
    step = st.step if with_state else 0  # the best checkpoint is an epoch's end
    meta = {**run.meta, "epoch": st.epoch, "step": step, "best_val": st.best,
            "train_time_s": round(st.train_time, 1), "history": st.history}
    ts = None
    if with_state:
        ts = {"optimizer": run.opt.state_dict(), "epoch": st.epoch, "step": st.step, "best": st.best,
              "train_time": st.train_time, "rng": torch.get_rng_state(), "epoch_sums": dict(st.sums),
              "epoch_seen": st.seen}
        st.saved_last = (st.epoch, st.step)
    # a new best model makes the latent statistics (written at the end) stale: they go in the same set
    save_checkpoint(directory, run.model, run.store.config, run.tc, meta, ts, stale=() if with_state else STATS_FILES)


PRIOR_TIME_S = {"done": 300.0, "stopped": 15.0}  # bounds on fitting the prior (300 steps): at the end, on a Stop
STOP_REQUESTED = "stopped on request"
MAX_PRIOR_NUMBERS = 50_000_000  # latent numbers the prior is fitted on (a seeded subsample of the clips)


def _save_stats(output: Path, store: Store, indices: list[int], device: torch.device, end: str = "done") -> None:
    """Latent statistics of the best checkpoint, for exploration without the dataset, and for a temporal
    model its prior over latent sequences (vae.prior), fitted on the training clips' codes."""
    best = load_checkpoint(output, device)
    save_latent_stats(output, compute_latent_stats(best.model, store, indices))
    if best.model_cfg.kind == "temporal" and len(indices) >= 2:  # the prior holds one sequence out
        from .prior import PriorConfig, fit_prior, save_prior

        picked = subsample(indices, max(2, MAX_PRIOR_NUMBERS // math.prod(best.model_cfg.latent_shape)))
        labels = _clip_labels(best.model_cfg, store, picked)
        codes = encode_indices(best.model, store.rows, picked, labels=labels)
        # a conditional model's prior is conditional too: its codes still carry the label (vae.prior)
        cfg = PriorConfig(latent_dim=best.model_cfg.latent_dim, n_labels=best.model_cfg.n_labels)
        prior, _ = fit_prior(codes, cfg, labels=None if labels is None else torch.from_numpy(labels),
                             time_limit_s=PRIOR_TIME_S[end])
        save_prior(output, prior)


def _should_stop(stop: threading.Event | None, tc: TrainConfig, train_time: float) -> str:
    """Why training should stop now ("" to go on)."""
    if stop is not None and stop.is_set():
        return STOP_REQUESTED
    if tc.time_limit_s is not None and train_time >= tc.time_limit_s:
        return "time limit reached"
    return ""


def _stop(run: _Run, why: str, losses: dict[str, float], val: dict[str, float] | None) -> TrainEvent:
    """Save what resuming needs (mid-epoch or after an epoch) and report the stop."""
    st, out = run.state, run.output
    if st.saved_last != (st.epoch, st.step):
        _save(run, out / "last", True)
    if math.isinf(st.best):  # no validated best yet: the latest is the best we have (replacing another run's)
        _save(run, out, False)
    if run.dist.main:
        _save_stats(out, run.store, run.train_idx, run.cfg.device, "stopped" if why == STOP_REQUESTED else "done")
    where = f"at epoch {st.epoch + 1}, step {st.step}" if st.step else f"after epoch {st.epoch}"
    return TrainEvent("stopped", st.epoch, run.tc.epochs, st.step or run.steps, run.steps, losses, val,
                      elapsed_s=run.speed.elapsed(), checkpoint=str(out / "last"),
                      message=f"{why} {where}; resume to continue")


def _diverged(what: str, output: Path, tc: TrainConfig) -> TrainingError:
    """The error for a non-finite loss: what happened, what was kept (only what exists) and what to try,
    in words that fit the app and the command line."""
    lower = f"a lower learning rate (now {tc.lr:g}) or a smaller reconstruction weight"
    if resumable(output):
        kept = (f"The last good state is kept in {output / 'last'}: resume the run with {lower} (app: Train tab, "
                "Resume; command line: `--resume --lr ...`).")
    else:
        kept = f"Nothing was saved before it diverged: start the run again with {lower}."
    return TrainingError(f"{what}; training stopped. {kept}")


# ----- setting up and running ------------------------------------------------------------------------


def _setup(store: Store, output: Path, cfg: RunConfig, resume: bool) -> _Run:
    """Model, optimiser, batches and loop state (restored from ``output/last`` when resuming)."""
    tc, device = cfg.train, cfg.device
    train_idx, val_idx = store.indices("train"), store.indices("test")
    message = ""
    if not train_idx:
        raise TrainingError(f"store {store.path} has no training clips")
    if not val_idx:
        val_idx = train_idx[: max(1, len(train_idx) // 10)]
        message = "store has no test split: validating on a slice of the training clips"
    torch.manual_seed(tc.seed)  # the same initial weights in every process
    accel = choose(tc.precision, device)
    model = accel.model(VAE(cfg.model).to(device))
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    d = distributed.from_env()
    state = LoopState()
    if resume:
        ck, saved = load_checkpoint(output / "last"), load_training_state(output / "last")
        model.load_state_dict(ck.model.state_dict())
        opt.load_state_dict(saved["optimizer"])
        for group in opt.param_groups:
            group["lr"] = tc.lr
        sums = saved.get("epoch_sums", {})  # absent from training states saved before it was kept
        state = LoopState(int(saved["epoch"]), int(saved["step"]), float(saved["best"]), float(saved["train_time"]),
                          list(ck.meta.get("history", [])),
                          sums={k: float(sums.get(k, 0.0)) for k in LOSS_KEYS}, seen=int(saved.get("epoch_seen", 0)))
        torch.set_rng_state(saved["rng"])
    if d.rank:  # each process its own sampling noise, deterministic per (seed, rank, position)
        torch.manual_seed(hash((tc.seed, d.rank, state.epoch, state.step)) & 0x7FFF_FFFF)
    model.train()
    meta = {"arch": cfg.arch, "store": str(store.path.resolve()), "n_train": len(train_idx), "n_val": len(val_idx),
            "device": str(device), "torch": torch.__version__, "processes": d.world, "global_batch": tc.batch_size,
            "lr": tc.lr, "precision": accel.precision, "channels_last": accel.channels_last,
            # decoding a sample needs a dB range; per-clip normalisation has none, so keep a typical one
            "typical_range": [float(np.median([store.clips[i][k] for i in train_idx])) for k in ("lo", "hi")]}
    forward = None
    if d.active:  # gradients averaged over the processes at each backward
        ids = [device] if device.type == "cuda" else None
        forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    labels = _clip_labels(cfg.model, store)  # (N,) embedding rows of every clip, for a conditional model
    if labels is not None:
        meta["condition"] = "label"
    batches = _Batches(store, train_idx, tc.batch_size, d, device, labels)
    val_batches = _Batches(store, val_idx, 64, device=device, labels=labels)
    meta["resident"] = isinstance(batches.data, torch.Tensor) and batches.data.device.type != "cpu"
    return _Run(cfg, output, store, model, opt, batches, val_batches, train_idx, val_idx[0], meta,
                state, _Speed(time.perf_counter()), state.epoch, message, d, forward, accel)


EpochSteps = Generator[TrainEvent, None, tuple[dict[str, float], int] | None]


def _train_epoch(run: _Run, stop: threading.Event | None) -> EpochSteps:
    """The current epoch's steps (from ``state.step`` on), one event each. Returns (mean losses, clips
    seen), or None after yielding a "stopped" event (a stop before the epoch's last step)."""
    st, tc, speed, steps = run.state, run.tc, run.speed, run.steps
    epoch, device = st.epoch, run.cfg.device
    seen = 0  # clips this run trained in this epoch (for its rate); st.seen counts the whole epoch's
    for batch in run.batches.epoch(tc.seed, epoch, start=st.step):
        t0 = time.perf_counter()
        x, y = split_batch(batch)
        x = x.to(device, non_blocking=True)  # (B, 1, F, T)
        y = None if y is None else y.to(device, non_blocking=True)  # (B,) labels of a conditional model
        if tc.augment:  # training batches only; seeded by position, so a resumed run sees the same ones
            x = augment_batch(x, batch_generator(tc.seed, epoch, st.step), run.store.config.top_db)
        x = run.accel.batch(x)
        warm = min(1.0, (epoch + st.step / steps) / tc.kl_warmup_epochs) if tc.kl_warmup_epochs else 1.0
        try:
            losses = train_step(run.model, run.opt, x, tc, warm, forward=run.forward, autocast=run.accel.autocast(),
                                top_db=run.store.config.top_db, labels=y)
        except Diverged as e:
            raise _diverged(f"{e} at epoch {epoch + 1}, step {st.step + 1}", run.output, tc) from None
        dt = time.perf_counter() - t0
        st.step, st.train_time = st.step + 1, st.train_time + dt
        why = _should_stop(stop, tc, st.train_time)
        losses, n, stopping = distributed.reduce_step(losses, len(x), bool(why), run.dist)  # the global batch's
        speed.steps, speed.samples, speed.train_time = speed.steps + 1, speed.samples + n, speed.train_time + dt
        for k in LOSS_KEYS:
            st.sums[k] += losses[k] * n
        seen, st.seen = seen + n, st.seen + n
        means = {k: v / st.seen for k, v in st.sums.items()}
        remaining = steps - st.step + (tc.epochs - epoch - 1) * steps
        yield TrainEvent("step", epoch, tc.epochs, st.step, steps, means, samples_per_s=speed.samples_per_s(),
                         eta_s=speed.eta(remaining), elapsed_s=speed.elapsed(), message=run.message)
        if run.dist.active:  # every process stops at the same step: where any one of them asked to
            why = why or (STOP_REQUESTED if stopping else "")
        else:  # a stop requested while this step's event was handled counts at once
            why = _should_stop(stop, tc, st.train_time)
        if why and st.step < steps:  # on an epoch's last step, finish the epoch (validate) first
            yield _stop(run, why, means, None)
            return None
    return {k: v / max(1, st.seen) for k, v in st.sums.items()}, seen


def _end_epoch(run: _Run, losses: dict[str, float], seen: int, t_epoch: float) -> TrainEvent:
    """Validate, record, checkpoint and preview the epoch just trained; its event."""
    st, tc, out = run.state, run.tc, run.output
    val = _validate(run.model, run.val_batches, run.cfg.device, tc, run.store.config.top_db)
    if not math.isfinite(val["loss"]):  # weights diverged in the last step: do not save them
        raise _diverged(f"validation loss became {val['loss']} after epoch {st.epoch + 1}", out, tc)
    st.epoch, st.step = st.epoch + 1, 0
    st.sums, st.seen = dict.fromkeys(LOSS_KEYS, 0.0), 0
    st.history.append({"epoch": st.epoch, "train": losses, "val": val, "train_time_s": round(st.train_time, 1)})
    improved = val["loss"] < st.best
    if improved:
        st.best = val["loss"]
        _save(run, out, False)
    if st.epoch % tc.checkpoint_every == 0 or st.epoch == tc.epochs:
        _save(run, out / "last", True)
    preview = None
    if run.dist.main and tc.preview_every and (st.epoch % tc.preview_every == 0 or st.epoch == tc.epochs
                             or st.epoch - 1 == run.start_epoch):
        preview = _preview(run.model, run.store, run.preview_index, run.cfg.device)
    rate = seen / (time.perf_counter() - t_epoch)
    return TrainEvent("epoch", st.epoch, tc.epochs, run.steps, run.steps, losses, val, rate,
                      elapsed_s=run.speed.elapsed(), checkpoint=str(out if improved else out / "last"),
                      preview=preview, message=run.message)


def train(
    data: str | Path,
    output: str | Path,
    arch: str | None = None,
    model_cfg: ModelConfig | None = None,
    train_cfg: TrainConfig | None = None,
    resume: bool = False,
    stop: threading.Event | None = None,
    config: RunConfig | None = None,
    condition: str | None = None,
    **overrides: Any,
) -> Iterator[TrainEvent]:
    """Train a VAE on the store at ``data``, writing checkpoints to ``output``.

    ``overrides`` (epochs, batch_size, lr, kl_weight, device, ...) patch the architecture's
    default :class:`TrainConfig`; ``latent_dim`` patches the model. With ``resume=True`` the run
    continues from ``output/last`` (overrides such as ``epochs`` still apply). ``config``: the result
    of :func:`resolve_configs` when the caller has resolved it already (then arch, configs and overrides
    are not used). ``condition="label"`` conditions the model on the store's labels (vae.conditioning).
    Setting ``stop`` ends training after saving ``output/last``. Raises
    :class:`TrainingError` on a non-finite loss, leaving the last good checkpoint in place, and
    :class:`CheckpointError` when ``output`` has nothing to resume or a checkpoint cannot be written (disk
    full). Training starts by finishing or undoing a checkpoint set a crash interrupted
    (:func:`vae.checkpoint.recover_run`), so a folder that holds no saved state can start a new run.
    """
    output, store = Path(output), Store(data)
    d = distributed.from_env()
    if d.main:  # one writer per folder: the others wait for it below
        recover_run(output)  # finish or undo a checkpoint set a crash interrupted; remove temporary leftovers
    if resume and not resumable(output):
        raise CheckpointError(f"cannot resume {output}: it holds no saved training state (no config.json and "
                              f"training_state.pt in {output / 'last'}), so there is nothing to resume; "
                              "start it as a new run (without --resume)")
    if config is None:
        last = load_config(output / "last") if resume else None
        config = resolve_configs(store, arch, model_cfg, train_cfg, last, condition, **overrides)
    d = distributed.init(config.device)
    config = dataclasses.replace(config, device=distributed.device_for(config.device, d))
    try:
        distributed.barrier(d)  # rank 0 has recovered the folder
        with store.hold():  # the store cannot be rebuilt under the run (preprocessing.store.build_store refuses)
            yield from _loop(_setup(store, output, config, resume), stop)
        # The ranks leave together, once rank 0 has written the latent statistics and the prior: PyTorch's docs
        # ask for destroy_process_group on every rank within the timeout, and in CI a rank that tore its group
        # down while rank 0 still worked was once aborted (SIGABRT, "terminate called without an active
        # exception"; two of the four torchrun tests of one CI run, not reproduced since).
        distributed.barrier(d)
    finally:
        distributed.close(d)


def _loop(run: _Run, stop: threading.Event | None) -> Iterator[TrainEvent]:
    """Epochs until the configured number, a stop request or the time limit; then the latent statistics."""
    st, tc, output = run.state, run.tc, run.output
    while st.epoch < tc.epochs:
        t_epoch = time.perf_counter()
        result = yield from _train_epoch(run, stop)
        if result is None:
            return
        ev = _end_epoch(run, *result, t_epoch)
        yield ev
        why = _should_stop(stop, tc, st.train_time)
        anyone = distributed.reduce_step({}, 0, bool(why), run.dist)[2]  # every rank, always: it is collective
        why = why or (STOP_REQUESTED if anyone else "")
        if why and st.epoch < tc.epochs:
            yield _stop(run, why, ev.losses, ev.val)
            return
    if run.dist.main:
        _save_stats(output, run.store, run.train_idx, run.cfg.device)
    final = st.history[-1] if st.history else {"train": {}, "val": None}
    yield TrainEvent("done", tc.epochs, tc.epochs, run.steps, run.steps, final["train"], final["val"],
                     elapsed_s=run.speed.elapsed(), checkpoint=str(output),
                     message=f"best validation loss {st.best:.4g}")
