"""A small learned prior over latent sequences: sample codes that decode to sounds, not noise.

A temporal VAE's latent is a sequence z (D, T') per clip with a per-element KL to N(0, 1), but
the codes of real clips are far from i.i.d.: neighbouring frames are strongly correlated, so
N(0, 1) samples decode to noise. This module fits an autoregressive model to the encoded store
after the VAE is trained, and samples from it ancestrally. It works on plain tensors and needs
nothing from the VAE code.

The model: each frame t gets a diagonal Gaussian (mean, log-variance) given the frames before it,
the first one given a learned start vector; ``kind="gru"`` reads the past with a GRU over frames,
``kind="conv"`` with a causal dilated Conv1d stack (WaveNet-style gated residual blocks). A prior for a
conditional model (``n_labels`` > 0) is conditional too, p(z | label): a learned label vector is added
to every frame's input, so that sampling for label d draws codes of clips of d (the codes of a
conditional VAE still carry the label; a prior shared by the labels drew any label). It models
the sequence standardised per channel with the training data's mean and std (stored as buffers),
so :func:`sample_prior` returns latents in the VAE's own scale and :func:`nll` is in that scale too.

Files, beside a checkpoint or anywhere: ``prior.safetensors`` (weights, buffers included) and
``prior.json`` (config, normalisation, training summary), written last so its presence marks a
complete prior. Nothing is unpickled.
"""

from __future__ import annotations

import copy
import json
import math
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from preprocessing.config import ConfigError, DictConfig
from preprocessing.errors import InputError
from preprocessing.progress import ProgressFn

from .checkpoint import atomic_write, load_weights, read_format_json

FORMAT = "sound-vae-prior/1"
WEIGHTS, CONFIG = "prior.safetensors", "prior.json"
PriorKind = Literal["gru", "conv"]
PRIOR_KINDS: tuple[str, ...] = typing.get_args(PriorKind)
LOGVAR_MIN, LOGVAR_MAX = -9.0, 3.0  # of a standardised frame: std 0.011 .. 4.5 data std
MAX_SAMPLES, MAX_LENGTH = 64, 4096  # bounds of one sample_prior call
MAX_LABELS = 4096  # labels a conditional prior knows (as vae.config bounds a model's vocabulary)
STD_FLOOR = 1e-6  # a constant channel is standardised with this std instead of 0
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class PriorError(InputError):
    """Bad input to the prior, or a prior file that is missing, corrupt or mismatched (a ValueError)."""


@dataclass(frozen=True)
class PriorConfig(DictConfig):
    """An autoregressive diagonal-Gaussian prior over sequences of ``latent_dim``-number frames.

    ``kind="gru"``: ``n_layers`` stacked GRUs of ``hidden`` units (context: every earlier frame).
    ``kind="conv"``: ``n_layers`` gated causal conv blocks of ``hidden`` channels, dilations 1, 2, 4, ...
    (context: :attr:`receptive_field` frames). ``n_labels`` > 0: conditional on a label in [0, n_labels).
    """

    what: ClassVar[str] = "prior"
    required: ClassVar[tuple[str, ...]] = ("latent_dim", "hidden", "n_layers", "kind")

    latent_dim: int = 32
    hidden: int = 128
    n_layers: int = 1
    kind: PriorKind = "gru"
    kernel: int = 3  # conv only: taps per causal conv
    n_labels: int = 0  # 0: unconditional

    def validate(self) -> PriorConfig:
        for name, lo, hi in (("latent_dim", 1, 4096), ("hidden", 1, 4096), ("n_layers", 1, 16), ("kernel", 2, 16),
                             ("n_labels", 0, MAX_LABELS)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"prior {name} must be an integer in [{lo}, {hi}], got {v!r}")
        if self.kind not in PRIOR_KINDS:
            raise ConfigError(f"prior kind must be one of {PRIOR_KINDS}, got {self.kind!r}")
        return self

    @property
    def receptive_field(self) -> int:
        """Frames of past a prediction sees (conv; a GRU sees them all)."""
        return 1 + (self.kernel - 1) * (2**self.n_layers - 1)


class CausalBlock(nn.Module):
    """x + W(tanh(a) * sigmoid(b)), (a, b) = a causal dilated conv of x: (B, H, T) -> (B, H, T)."""

    def __init__(self, hidden: int, kernel: int, dilation: int):
        super().__init__()
        self.pad = (kernel - 1) * dilation  # on the left only: output t sees inputs <= t
        self.conv = nn.Conv1d(hidden, 2 * hidden, kernel, dilation=dilation)
        self.proj = nn.Conv1d(hidden, hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(F.pad(x, (self.pad, 0))).chunk(2, dim=1)  # (B, H, T) each
        return x + self.proj(torch.tanh(a) * torch.sigmoid(b))


class Prior(nn.Module):
    """p(z) = prod_t N(z_t; mean_t, diag exp(logvar_t)) with (mean_t, logvar_t) a function of z_<t
    (and of the label y, for a conditional prior: p(z | y)).

    ``mean`` and ``std`` (buffers, (D,)) standardise the data; the network sees and predicts
    standardised frames. ``info`` holds the training summary that :func:`save_prior` writes.
    """

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg.validate()
        d, h = cfg.latent_dim, cfg.hidden
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.start = nn.Parameter(torch.zeros(d))  # stands in for the frame before the first
        self.inp = nn.Linear(d, h)
        # a conditional prior: each label's vector is added to every frame's input (no label: their mean)
        self.label = nn.Embedding(cfg.n_labels, h) if cfg.n_labels else None
        if cfg.kind == "gru":
            self.rnn = nn.GRU(h, h, cfg.n_layers, batch_first=True)
        else:
            self.blocks = nn.Sequential(*(CausalBlock(h, cfg.kernel, 2**i) for i in range(cfg.n_layers)))
        self.out = nn.Linear(h, 2 * d)
        nn.init.zeros_(self.out.weight)  # starts as i.i.d. N(0, 1) over standardised frames
        nn.init.zeros_(self.out.bias)
        self.info: dict[str, Any] = {}

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    def _head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.out(h).chunk(2, dim=-1)  # (..., D) each
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def condition(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The input offset (n, H) for labels (n,) long, their mean with None; None for an unconditional prior."""
        if self.label is None:
            if labels is not None:
                raise PriorError("this prior is not conditional: it takes no labels")
            return None
        if labels is None:
            return self.label.weight.mean(0).expand(n, -1)  # "no label in particular", as the VAE's decoder
        labels = torch.as_tensor(labels)
        if labels.shape != (n,) or labels.dtype != torch.long:
            raise PriorError(f"labels must be ({n},) long, got {tuple(labels.shape)} {labels.dtype}")
        lo, hi = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
        if not 0 <= lo <= hi < self.cfg.n_labels:
            raise PriorError(f"labels must be in [0, {self.cfg.n_labels}), got {lo}..{hi}")
        return self.label(labels.to(self.label.weight.device))  # (n, H)

    def forward(self, u: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised u (B, D, T) (and labels (B,) long) -> mean, logvar (B, D, T) of each frame given the frames
        before it."""
        prev = torch.cat([self.start[:, None].expand(len(u), -1, 1), u[:, :, :-1]], dim=2)  # (B, D, T): shifted by one
        x = self.inp(prev.transpose(1, 2))  # (B, T, H)
        c = self.condition(labels, len(u))
        if c is not None:
            x = x + c[:, None]
        h = self.rnn(x)[0] if self.cfg.kind == "gru" else self.blocks(x.transpose(1, 2)).transpose(1, 2)
        mu, logvar = self._head(h)  # (B, T, D) each
        return mu.transpose(1, 2), logvar.transpose(1, 2)

    def step(self, prev: torch.Tensor, state: Any, cond: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One frame of ancestral sampling: the previous standardised frame (B, D), the state and the label's
        offset (B, H) from :meth:`condition` -> mean, logvar (B, D) of the next frame and the new state (GRU:
        hidden (L, B, H); conv: the last inputs)."""
        x = self.inp(prev) if cond is None else self.inp(prev) + cond  # (B, H)
        if self.cfg.kind == "gru":
            h, state = self.rnn(x[:, None], state)  # (B, 1, H)
            return (*self._head(h[:, 0]), state)
        window = x[:, :, None] if state is None else torch.cat([state, x[:, :, None]], dim=2)
        window = window[:, :, -self.cfg.receptive_field:]  # (B, H, <= RF): all the past an output sees
        h = self.blocks(window)[:, :, -1]  # (B, H)
        return (*self._head(h), window)


# ----- likelihood -------------------------------------------------------------------------------------


def _check_sequences(z: Any, what: str, latent_dim: int | None = None) -> torch.Tensor:
    z = torch.as_tensor(z)
    if z.ndim != 3:
        raise PriorError(f"{what} must be latent sequences (N, D, T), got shape {tuple(z.shape)}")
    if z.is_complex() or z.dtype == torch.bool:
        raise PriorError(f"{what} must be real numbers, got {z.dtype}")
    if latent_dim is not None and z.shape[1] != latent_dim:
        raise PriorError(f"{what} has {z.shape[1]} channels but the prior models {latent_dim} (shape (N, D, T))")
    if z.shape[0] < 1 or z.shape[2] < 1:
        raise PriorError(f"{what} is empty: shape {tuple(z.shape)}")
    z = z.float()
    if not torch.isfinite(z).all():
        raise PriorError(f"{what} has {int((~torch.isfinite(z)).sum())} non-finite values (NaN or inf)")
    return z


def nll(prior: Prior, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean negative log-likelihood per element, in nats, of latents z (B, D, T) in the VAE's scale (given
    their labels (B,) long, for a conditional prior).

    Differentiable (training uses it). Compare with :func:`standard_normal_nll`, the i.i.d. N(0, 1) prior.
    """
    z = _check_sequences(z, "z", prior.latent_dim).to(prior.std.device)
    u = (z - prior.mean[:, None]) / prior.std[:, None]  # (B, D, T) standardised
    mu, logvar = prior(u, labels)  # (B, D, T) each
    per = HALF_LOG_2PI + 0.5 * logvar + 0.5 * (u - mu) ** 2 * torch.exp(-logvar)
    return per.mean() + torch.log(prior.std).mean()  # + log |d u / d z|: back to z's scale


def standard_normal_nll(z: torch.Tensor) -> torch.Tensor:
    """The baseline: mean NLL per element (nats) of z (any shape) under i.i.d. N(0, 1)."""
    return HALF_LOG_2PI + 0.5 * (torch.as_tensor(z, dtype=torch.float32) ** 2).mean()


# ----- fitting ----------------------------------------------------------------------------------------


def _initial_prior(cfg: PriorConfig, train: torch.Tensor, seed: int) -> Prior:
    """A seeded untrained prior (the global RNG untouched) standardising with ``train``'s (N, D, T) statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prior = Prior(cfg)
    prior.mean.copy_(train.mean(dim=(0, 2)))
    prior.std.copy_(train.std(dim=(0, 2), correction=0).clamp_min(STD_FLOOR))
    return prior


def _check_labels(labels: Any, cfg: PriorConfig, n: int) -> torch.Tensor | None:
    """Labels (n,) long in [0, n_labels) for a conditional prior's fit, None for an unconditional one."""
    if not cfg.n_labels:
        if labels is not None:
            raise PriorError("labels given for an unconditional prior (PriorConfig.n_labels is 0)")
        return None
    if labels is None:
        raise PriorError(f"a conditional prior (n_labels={cfg.n_labels}) is fitted on labelled latents: give labels")
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise PriorError(f"labels must be ({n},) integers, got {tuple(labels.shape)} {labels.dtype}")
    labels = labels.long().cpu()
    if not 0 <= int(labels.min()) <= int(labels.max()) < cfg.n_labels:
        raise PriorError(f"labels must be in [0, {cfg.n_labels}), got {int(labels.min())}..{int(labels.max())}")
    return labels


def _check_fit(z: torch.Tensor, cfg: PriorConfig, steps: int, batch_size: int, lr: float, val_fraction: float,
               time_limit_s: float | None) -> torch.Tensor:
    """:func:`fit_prior`'s arguments checked (a :class:`PriorError` saying which is wrong); z on the CPU."""
    z = _check_sequences(z, "training latents", cfg.latent_dim).cpu()
    n = len(z)
    if n < 2:
        raise PriorError(f"fitting a prior needs at least 2 sequences (one is held out), got {n}")
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PriorError(f"{name} must be a positive integer, got {v!r}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise PriorError(f"lr must be a positive number, got {lr!r}")
    if not 0 < val_fraction < 1:
        raise PriorError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if time_limit_s is not None and not time_limit_s > 0:
        raise PriorError(f"time_limit_s must be positive or None, got {time_limit_s!r}")
    return z


def fit_prior(
    z: torch.Tensor, cfg: PriorConfig, *, labels: torch.Tensor | None = None, steps: int = 300, batch_size: int = 64,
    lr: float = 3e-3, seed: int = 0, val_fraction: float = 0.1, time_limit_s: float | None = None,
    progress: ProgressFn | None = None,
) -> tuple[Prior, dict[str, Any]]:
    """Fit a prior to latent sequences z (N, D, T) (with their labels (N,), for a conditional ``cfg``); returns
    it (on the CPU, eval mode) and its history.

    A seeded ``val_fraction`` of the sequences (at least one) is held out; Adam with cosine decay for
    ``steps`` minibatches, or until ``time_limit_s`` seconds; the weights with the best validation NLL are
    kept. Deterministic on the CPU for a given seed, and the global RNG is left as it was. ``progress``
    is called as ``progress(step, steps, message)`` at each validation. History: ``step``, ``train_nll``,
    ``val_nll`` (per validation), ``initial_val_nll`` (before training), ``best_step``, ``best_val_nll``,
    ``baseline_val_nll`` (i.i.d. N(0, 1)), ``steps_done``, ``stopped`` ("steps" or "time limit"), ``seconds``,
    ``n_train``, ``n_val``, ``length``, ``seed``; all but the first three go to ``prior.info``.
    """
    cfg = cfg.validate()
    z = _check_fit(z, cfg, steps, batch_size, lr, val_fraction, time_limit_s)
    y = _check_labels(labels, cfg, len(z))
    n = len(z)
    t0 = time.monotonic()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    train, val = z[order[n_val:]], z[order[:n_val]]  # (N - n_val, D, T), (n_val, D, T)
    y_train, y_val = (None, None) if y is None else (y[order[n_val:]], y[order[:n_val]])  # (N - n_val,), (n_val,)
    eval_every = max(1, min(50, steps // 10))
    prior = _initial_prior(cfg, train, seed)
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))

    def validate() -> float:
        prior.eval()
        with torch.no_grad():
            chunks = val.split(256)
            ys = [None] * len(chunks) if y_val is None else y_val.split(256)
            v = sum(float(nll(prior, chunk, yc)) * len(chunk) for chunk, yc in zip(chunks, ys, strict=True))
        prior.train()
        return v / n_val

    hist: dict[str, Any] = {"step": [], "train_nll": [], "val_nll": [], "initial_val_nll": validate()}
    best_val, best_step, best_state = hist["initial_val_nll"], 0, copy.deepcopy(prior.state_dict())
    stopped, running, count, step = "steps", 0.0, 0, 0
    while step < steps:
        if time_limit_s is not None and time.monotonic() - t0 > time_limit_s:
            stopped = "time limit"
            break
        idx = torch.randint(len(train), (min(batch_size, len(train)),), generator=g)
        loss = nll(prior, train[idx], None if y_train is None else y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        running, count = running + loss.item(), count + 1
        if step % eval_every == 0 or step == steps:
            v = validate()
            hist["step"].append(step)
            hist["train_nll"].append(running / count)
            hist["val_nll"].append(v)
            running, count = 0.0, 0
            if v < best_val:
                best_val, best_step, best_state = v, step, copy.deepcopy(prior.state_dict())
            if progress:
                progress(step, steps, f"step {step}/{steps}: validation NLL {v:.3f} (best {best_val:.3f})")
    prior.load_state_dict(best_state)
    prior.eval()
    hist.update(best_step=best_step, best_val_nll=best_val, baseline_val_nll=float(standard_normal_nll(val)),
                steps_done=step, stopped=stopped, seconds=round(time.monotonic() - t0, 3), n_train=len(train),
                n_val=n_val, length=int(z.shape[2]), seed=seed)
    prior.info = {k: v for k, v in hist.items() if k not in ("step", "train_nll", "val_nll")}
    return prior, hist


# ----- sampling ---------------------------------------------------------------------------------------


@torch.no_grad()
def sample_prior(prior: Prior, n: int, length: int, temperature: float = 1.0, seed: int | None = None,
                 label: int | None = None) -> torch.Tensor:
    """``n`` latent sequences (n, D, length) in the VAE's scale, drawn frame by frame (a conditional prior's
    given the label row ``label``; None: the mean of its labels' vectors).

    Each frame's deviation from its predicted mean is scaled by ``temperature`` (0: the most likely
    path given the first frame's mean). Noise comes from a generator seeded with ``seed`` (a fresh
    random one when None): the same seed gives the same samples, and the global RNG is not touched.
    ``length`` need not be the training length.
    """
    for name, v, hi in (("n", n, MAX_SAMPLES), ("length", length, MAX_LENGTH)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise PriorError(f"{name} must be an integer in [1, {hi}], got {v!r}")
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0):
        raise PriorError(f"temperature must be a finite number >= 0, got {temperature!r}")
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    was_training = prior.training
    prior.eval()
    device = prior.std.device
    noise = torch.randn(length, n, prior.latent_dim, generator=g).to(device)  # (length, n, D)
    cond = prior.condition(None if label is None else torch.full((n,), int(label), dtype=torch.long), n)  # (n, H)
    prev, state, frames = prior.start.expand(n, -1), None, []
    for t in range(length):
        mu, logvar, state = prior.step(prev, state, cond)  # (n, D) each
        prev = mu + temperature * torch.exp(0.5 * logvar) * noise[t]  # (n, D) standardised
        frames.append(prev)
    prior.train(was_training)
    u = torch.stack(frames, dim=2)  # (n, D, length)
    return u * prior.std[:, None] + prior.mean[:, None]


# ----- files ------------------------------------------------------------------------------------------


def save_prior(directory: str | Path, prior: Prior) -> Path:
    """Write ``prior.safetensors`` then ``prior.json`` (config, normalisation, training summary) into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in prior.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda p: save_file(weights, str(p)))
    doc = {"format": FORMAT, "config": prior.cfg.to_dict(),
           "normalisation": {"mean": weights["mean"].tolist(), "std": weights["std"].tolist()},
           "training": prior.info}
    atomic_write(directory / CONFIG, lambda p: p.write_text(json.dumps(doc, indent=2)))
    return directory


def load_prior(directory: str | Path, device: str | torch.device = "cpu") -> Prior | None:
    """The prior saved in ``directory`` (eval mode), or None when it has none (no prior.json).

    Raises :class:`PriorError` (a ValueError) naming the file when a file is unreadable, malformed, or
    does not fit the other.
    """
    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG, directory / WEIGHTS
    if not cfg_path.is_file():
        return None
    doc = read_format_json(cfg_path, FORMAT, PriorError, "a prior config", "; fit the prior again")
    try:
        cfg = PriorConfig.from_dict(doc["config"])
        mean = torch.tensor(doc["normalisation"]["mean"], dtype=torch.float32)
        std = torch.tensor(doc["normalisation"]["std"], dtype=torch.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise PriorError(f"{cfg_path} has a bad or missing entry: {e}") from None
    if not weights_path.is_file():
        raise PriorError(f"{directory} has {CONFIG} but no {WEIGHTS}; fit the prior again")
    prior = load_weights(lambda: Prior(cfg), weights_path, PriorError, f"the prior in {CONFIG}")
    if not all(torch.isfinite(v).all() for v in prior.state_dict().values()):
        raise PriorError(f"{weights_path} has non-finite weights")
    if mean.shape != prior.mean.shape or not (torch.equal(mean, prior.mean) and torch.equal(std, prior.std)):
        raise PriorError(f"{cfg_path}'s normalisation does not match {weights_path} (files from different priors?)")
    prior.info = doc.get("training", {}) if isinstance(doc.get("training"), dict) else {}
    return prior.to(device).eval()
