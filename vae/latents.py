"""Latent statistics of a trained model: the space the Explore tab moves through.

Computed from the posterior means of a dataset's clips and saved beside the checkpoint
(``latents.safetensors``), so exploration works without the dataset: mean and spread, principal
directions with the spread along each, per-label means, and a sample of codes for the 2-D map. A
conditional model with global codes also gets each label's codes as a Gaussian (its mean and a
Cholesky factor of its covariance): what :func:`vae.generate.sample` draws from when asked for a label,
as ex-post density estimation does (Ghosh et al., 2020, "From variational to deterministic
autoencoders"). N(0, I) is a poor fit to where a label's codes lie: with checkpoints/digits-conditioned,
samples of a digit decoded from it were recognised as that digit 70-98% of the time, from the digit's
Gaussian 93-100% (README, "Conditional generation").

A code is (D,) for a global model and a sequence (D, T') for a temporal one. For sequences, the mean,
the directions and their spread are those of the frames (each of the T' columns is one D-vector), as
RAVE's knobs are: a slider moves every frame of a clip by the same offset, a clip's place on the map
is its mean frame, and its frames drawn in order are its trajectory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from preprocessing.errors import InputError
from preprocessing.rows import RowReader

from .conditioning import label_indices
from .model import VAE
from .named_directions import NamedDirections, fit_named_directions, model_decoder, store_db_range

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

MAX_MAP_POINTS = 3000
MAX_CODE_NUMBERS = 2_000_000  # saved codes: at most this many numbers (sequences are D x T' each)
MAX_SVD_FRAMES = 100_000  # frames the principal directions are computed from (a seeded subsample)
MAX_SLIDERS = 6  # a handful: more sliders are hard to use and matter little
SLIDER_COVERAGE = 0.8  # sliders until this share of the variance is covered (capped at MAX_SLIDERS)
RANGE_SD = 3.0  # slider range, +/- this many standard deviations
MAX_GAUSSIAN_DIM = 512  # label Gaussians for global codes of at most this many numbers (L x D x D saved)
SHRINK = 0.1  # a label's covariance is shrunk this far toward its diagonal (a few hundred codes a label)


@dataclass
class LatentStats:
    mean: torch.Tensor  # (D,) mean code, or mean frame of sequences
    components: torch.Tensor  # (K, D) principal directions, unit length, by variance
    component_sd: torch.Tensor  # (K,) standard deviation of the codes (frames) along each direction
    explained: torch.Tensor  # (K,) fraction of variance along each direction
    label_names: list[str]
    label_means: torch.Tensor  # (L, *latent_shape)
    codes: torch.Tensor  # (N, *latent_shape) posterior means of (a sample of) the clips
    code_labels: list[str | None]
    code_names: list[str]
    named: NamedDirections | None = None  # directions named by a property (vae.named_directions), when fitted
    label_chol: torch.Tensor | None = None  # (L, D, D) Cholesky factor of each label's code covariance, when fitted

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(D,), or (D, T') for a temporal model."""
        return tuple(self.codes.shape[1:])

    def mean_frames(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (..., *latent_shape) -> (..., D): a sequence's mean frame; frames (..., D) as they are."""
        return z.mean(-1) if len(self.latent_shape) == 2 and tuple(z.shape[-2:]) == self.latent_shape else z

    def trajectory(self, z: torch.Tensor, k: int = 2) -> torch.Tensor:
        """A sequence's frames (D, T') on the first k directions, (T', k) in SD; a global code: (1, k)."""
        frames = _frames(self, z).T  # (T', D)
        return (frames - self.mean) @ self.components[:k].T / self.component_sd[:k].clamp_min(1e-8)

    def n_sliders(self, coverage: float = SLIDER_COVERAGE, cap: int = MAX_SLIDERS) -> int:
        """How many principal directions cover ``coverage`` of the variance (at most ``cap``)."""
        cum = torch.cumsum(self.explained, 0)
        return int(min(cap, len(cum), int((cum < coverage).sum()) + 1))

    def project(self, z: torch.Tensor, k: int = 2) -> torch.Tensor:
        """Coordinates (..., k) of codes (..., *latent_shape) (sequences: their mean frames) or of frames
        (..., D) on the first k directions."""
        return (self.mean_frames(z) - self.mean) @ self.components[:k].T

    def covered(self, n: int) -> float:
        """Share of the codes' variance along the first ``n`` directions."""
        return float(self.explained[:n].sum())


def prior_stats(latent_shape: int | tuple[int, ...], k: int = MAX_SLIDERS) -> LatentStats:
    """Stand-in statistics for a checkpoint without ``latents.safetensors``: the prior's axes.
    ``latent_shape``: (D,) or (D, T'), or D alone."""
    shape = (latent_shape,) if isinstance(latent_shape, int) else tuple(latent_shape)
    latent_dim = shape[0]
    k = min(k, latent_dim)
    return LatentStats(
        mean=torch.zeros(latent_dim), components=torch.eye(latent_dim)[:k], component_sd=torch.ones(k),
        explained=torch.full((k,), 1.0 / latent_dim), label_names=[], label_means=torch.zeros(0, *shape),
        codes=torch.zeros(0, *shape), code_labels=[], code_names=[],
    )


def n_sliders(stats: LatentStats, coverage: float = SLIDER_COVERAGE, cap: int = MAX_SLIDERS) -> int:
    """How many sliders a model gets: enough directions to cover ``coverage`` of the variance."""
    return min(stats.n_sliders(coverage, cap), len(stats.components))


def _frames(stats: LatentStats, z: torch.Tensor) -> torch.Tensor:
    """A code (D,) or a sequence (D, T') as frames (D, T'); a global code is one frame (D, 1)."""
    return torch.as_tensor(z, dtype=torch.float32).reshape(len(stats.mean), -1)


def _unframe(z: torch.Tensor) -> torch.Tensor:
    """(D, T') back to a sequence, or to a code (D,) when there is one frame."""
    return z[:, 0] if z.shape[1] == 1 else z


def to_sliders(stats: LatentStats, z: torch.Tensor, n: int, range_sd: float = RANGE_SD,
               step: float | None = None) -> tuple[list[float], torch.Tensor]:
    """Code (D,) or sequence (D, T') -> (slider values in SD for the first ``n`` directions, residual).

    The residual (the shape of ``z``) is the part of ``z`` the slider values do not say, so starting from
    a clip keeps everything about it the sliders do not cover: ``from_sliders(values, residual)`` gives
    ``z`` back. A sequence's values are those of its mean frame, and the residual keeps how each frame
    differs from it. With ``step``, values are rounded to multiples of it (a slider's grid) and the
    remainder stays in the residual. Values outside +/- ``range_sd`` are clipped to the slider range
    (the code then moves to the edge).
    """
    frames = _frames(stats, z)  # (D, T')
    comps, sd = stats.components[:n], stats.component_sd[:n].clamp_min(1e-8)
    coords = (frames.mean(1) - stats.mean) @ comps.T  # (n,)
    if step:
        snapped = torch.round(coords / sd / step) * step
        residual = frames - (stats.mean + (snapped * sd) @ comps)[:, None]
        return [round(float(v), 6) for v in snapped.clamp(-range_sd, range_sd)], _unframe(residual)
    residual = frames - (stats.mean + coords @ comps)[:, None]
    return [round(float(v), 3) for v in (coords / sd).clamp(-range_sd, range_sd)], _unframe(residual)


def zero_sliders(stats: LatentStats, z: torch.Tensor, n: int) -> tuple[list[float], torch.Tensor]:
    """Code or sequence -> (all ``n`` sliders at 0, residual of z's shape): ``z`` itself becomes where the
    sliders start (e.g. the prior's origin, which is rarely the codes' mean)."""
    return [0.0] * n, _unframe(_frames(stats, z) - stats.mean[:, None])


def from_sliders(stats: LatentStats, values: list[float], residual: torch.Tensor,
                 named: list[float] | None = None) -> torch.Tensor:
    """Slider values (SD, first ``len(values)`` directions) plus the residual -> code (D,) or sequence
    (D, T'): one offset along the directions, added to every frame. ``named``: SD along the offered named
    directions (``stats.named.offered()``, in order), added on top."""
    n = len(values)
    if n > len(stats.components):
        raise InputError(f"{n} slider values but only {len(stats.components)} directions")
    v = torch.as_tensor([float(x) for x in values], dtype=torch.float32)
    offset = stats.mean + (v * stats.component_sd[:n]) @ stats.components[:n]  # (D,)
    if named and any(named):
        if stats.named is None:
            raise InputError("named slider values, but this model has no named directions")
        offset = offset + stats.named.offset(named)
    return _unframe(_frames(stats, residual) + offset[:, None])


def subsample(indices: list[int], max_points: int, seed: int = 0) -> list[int]:
    """At most ``max_points`` of ``indices``, a seeded random choice kept in order."""
    if len(indices) <= max_points:
        return list(indices)
    return sorted(np.random.default_rng(seed).choice(indices, max_points, replace=False).tolist())


ENCODE_BYTES = 16 << 20  # input spectrograms encoded at once (32 music clips, 128 digits): bounded activations


def encode_indices(model: VAE, specs: np.ndarray | RowReader, indices: list[int], batch: int = 128,
                   labels: np.ndarray | None = None) -> torch.Tensor:
    """Posterior means (N, *latent_shape) of the spectrograms ``specs[indices]`` ((N, F, T) in [0, 1]), read and
    encoded ``batch`` at a time, fewer for big spectrograms (at most ENCODE_BYTES of input a batch: memory stays
    bounded for any N), into one preallocated tensor. A store's ``rows`` read without leaving its pages in this
    process's memory. ``labels`` (N,): a conditional model's label rows for those clips (None: no label)."""
    device = next(model.parameters()).device
    model.eval()
    batch = max(1, min(batch, ENCODE_BYTES // (4 * math.prod(specs.shape[1:]))))
    out: torch.Tensor | None = None
    with torch.no_grad():
        for s in range(0, len(indices), batch):
            x = torch.from_numpy(np.asarray(specs[indices[s:s + batch]])).unsqueeze(1).to(device)
            y = None if labels is None else torch.from_numpy(np.asarray(labels[s:s + batch], dtype=np.int64)).to(device)
            mu = model.encode(x, y)[0].float().cpu()
            if out is None:
                out = torch.empty((len(indices), *mu.shape[1:]), dtype=torch.float32)
            out[s:s + len(mu)] = mu
    return out if out is not None else torch.zeros(0)


def compute_latent_stats(model: VAE, store, indices: list[int]) -> LatentStats:
    """Statistics of the codes of ``store`` clips ``indices`` (a preprocessing.Store)."""
    indices = subsample(indices, min(MAX_MAP_POINTS, MAX_CODE_NUMBERS // math.prod(model.cfg.latent_shape)))
    names = [store.clips[i]["label"] for i in indices]
    labels = label_indices(model.cfg.labels, names) if model.cfg.labels else None  # a conditional model's rows
    codes = encode_indices(model, store.rows, indices, labels=labels)  # (N, *latent_shape)
    stats = stats_from_codes(codes, [store.clips[i]["label"] for i in indices], [store.clip_name(i) for i in indices])
    stats.named = fit_named_directions(model_decoder(model, store_db_range(store, indices)), codes,
                                       store.config.sample_rate)
    if model.cfg.labels and codes.dim() == 2 and codes.shape[1] <= MAX_GAUSSIAN_DIM:
        stats.label_chol = label_gaussians(codes, names, stats.label_names)
    return stats


def label_gaussians(codes: torch.Tensor, labels: list[str | None], label_names: list[str]) -> torch.Tensor:
    """Codes (N, D) and their labels -> (L, D, D): for each of ``label_names``, a lower Cholesky factor of the
    covariance of its codes, shrunk by SHRINK toward its diagonal (a label with one code: the codes' spread)."""
    x = codes.double()
    overall = torch.diag(x.var(0, correction=1) if len(x) > 1 else torch.ones(x.shape[1], dtype=x.dtype))
    out = []
    for name in label_names:
        xs = x[[i for i, lab in enumerate(labels) if lab == name]]  # (n, D)
        if len(xs) < 2:
            cov = overall
        else:
            c = xs - xs.mean(0)
            cov = c.T @ c / (len(xs) - 1)
            cov = (1 - SHRINK) * cov + SHRINK * torch.diag(torch.diag(cov))
        eye = torch.eye(len(cov), dtype=cov.dtype)
        jitter = 1e-6 * float(torch.diag(cov).mean().clamp_min(1e-12))
        chol, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        # shrinkage keeps it positive definite; were rounding to break that, the label's own spreads alone
        out.append(chol if int(info) == 0 else torch.diag(torch.diag(cov).clamp_min(0).sqrt() + jitter))
    return torch.stack(out).float() if out else torch.zeros(0, x.shape[1], x.shape[1])


def sample_label_gaussian(stats: LatentStats, label: str, n: int, temperature: float = 1.0,
                          seed: int | None = None) -> torch.Tensor:
    """``n`` codes (n, D) from label ``label``'s Gaussian: its mean plus ``temperature`` times its spread."""
    if stats.label_chol is None or label not in stats.label_names:
        raise InputError(f"no Gaussian for label {label!r} in these latent statistics")
    k = stats.label_names.index(label)
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    eps = torch.randn(n, stats.label_chol.shape[1], generator=g)  # (n, D)
    return stats.label_means[k] + temperature * eps @ stats.label_chol[k].T


def stats_from_codes(codes: torch.Tensor, labels: list[str | None], names: list[str]) -> LatentStats:
    """Statistics of codes (N, D) or sequences (N, D, T'): directions of the codes, or of all the frames."""
    frames = codes if codes.dim() == 2 else codes.transpose(1, 2).reshape(-1, codes.shape[1])  # (N * T', D)
    if len(frames) > MAX_SVD_FRAMES:
        frames = frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:MAX_SVD_FRAMES]]
    mean = frames.mean(0)
    _, s, vt = torch.linalg.svd(frames - mean, full_matrices=False)  # vt: (K, D)
    var = s.pow(2) / max(1, len(frames) - 1)
    label_names = sorted({lab for lab in labels if lab is not None})
    label_means = torch.stack([codes[[i for i, lab in enumerate(labels) if lab == n]].mean(0) for n in label_names]) \
        if label_names else torch.zeros(0, *codes.shape[1:])
    return LatentStats(mean, vt, var.sqrt(), var / var.sum().clamp_min(1e-12), label_names, label_means,
                       codes, list(labels), list(names))


STATS_TENSORS = ("mean", "components", "component_sd", "explained", "label_means", "codes")
NAMED_TENSORS = ("directions", "sd", "slope", "r2", "r2_linear", "spearman", "spread", "values")  # saved "named_*"


def save_latent_stats(directory: str | Path, stats: LatentStats) -> Path:
    from .checkpoint import atomic_write

    path = Path(directory) / "latents.safetensors"
    tensors = {k: getattr(stats, k).contiguous() for k in
               STATS_TENSORS}
    metadata = {"label_names": json.dumps(stats.label_names), "code_labels": json.dumps(stats.code_labels),
                "code_names": json.dumps(stats.code_names)}
    if stats.named is not None:
        tensors.update({f"named_{k}": getattr(stats.named, k).float().contiguous() for k in NAMED_TENSORS})
        metadata["named"] = json.dumps(stats.named.names)
    if stats.label_chol is not None:
        tensors["label_chol"] = stats.label_chol.float().contiguous()
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))
    return path


class LatentStatsError(InputError):
    """A checkpoint's latents.safetensors cannot be read or does not fit its model."""


def load_latent_stats(directory: str | Path, latent_shape: tuple[int, ...] | None = None) -> LatentStats | None:
    """The saved statistics, or None when the checkpoint has none; :class:`LatentStatsError` naming the file
    when it is damaged or its shapes disagree (with each other, or with ``latent_shape`` when given)."""
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / "latents.safetensors"
    if not path.is_file():
        return None
    fix = "delete it to explore with the prior's axes, or train the run to its end again"
    try:
        t = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            md = f.metadata() or {}
        names = [json.loads(md.get(k, "[]")) for k in ("label_names", "code_labels", "code_names")]
        named_names = json.loads(md["named"]) if "named" in md else None
    except (SafetensorError, OSError, ValueError) as e:
        raise LatentStatsError(f"{path} is damaged ({e}); {fix}") from None
    missing = [k for k in STATS_TENSORS if k not in t]
    if missing or not all(isinstance(n, list) for n in names):
        raise LatentStatsError(f"{path} lacks {', '.join(missing) or 'its label lists'}; {fix}")
    stats = LatentStats(t["mean"], t["components"], t["component_sd"], t["explained"], names[0], t["label_means"],
                        t["codes"], names[1], names[2])
    if named_names is not None or any(k.startswith("named_") for k in t):  # files before issue #14 have none
        missing = [f"named_{k}" for k in NAMED_TENSORS if f"named_{k}" not in t]
        if missing or not isinstance(named_names, list):
            what = ", ".join(missing) or "the names of its named directions"
            raise LatentStatsError(f"{path} is damaged: it lacks {what}; {fix}")
        stats.named = NamedDirections(named_names, *(t[f"named_{k}"] for k in NAMED_TENSORS))
    stats.label_chol = t.get("label_chol")  # files before conditional sampling have none
    problem = _stats_problem(stats, latent_shape)
    if problem:
        raise LatentStatsError(f"{path} does not fit: {problem}; {fix}")
    return stats


def _stats_problem(s: LatentStats, latent_shape: tuple[int, ...] | None) -> str:
    """What is inconsistent in loaded statistics ("" when nothing)."""
    d = s.mean.shape[0] if s.mean.dim() == 1 else -1
    k = s.components.shape[0] if s.components.dim() == 2 else -1
    if d < 1 or s.components.shape != (k, d) or s.component_sd.shape != (k,) or s.explained.shape != (k,):
        return f"directions of shapes {tuple(s.components.shape)} for a mean of {tuple(s.mean.shape)}"
    if s.codes.dim() not in (2, 3) or s.codes.shape[1] != d or tuple(s.label_means.shape[1:]) != s.latent_shape:
        return f"codes of shape {tuple(s.codes.shape)} and label means of {tuple(s.label_means.shape)}"
    if latent_shape is not None and s.latent_shape != tuple(latent_shape):
        return f"codes of shape {s.latent_shape}, the model's are {tuple(latent_shape)}"
    # the name lists may be absent (a file written without metadata), but not of another length
    if any(names and len(names) != n for names, n in ((s.label_names, len(s.label_means)),
                                                       (s.code_labels, len(s.codes)), (s.code_names, len(s.codes)))):
        return "label lists of another length than the codes"
    if s.label_chol is not None and (s.latent_shape != (d,) or s.label_chol.shape != (len(s.label_means), d, d)
                                     or not bool(torch.isfinite(s.label_chol).all())):
        return f"label Gaussians of shape {tuple(s.label_chol.shape)} for {len(s.label_means)} labels of {d} numbers"
    return _named_problem(s.named, d, len(s.codes)) if s.named is not None else ""


def _named_problem(nd: NamedDirections, d: int, n_codes: int) -> str:
    """What is inconsistent in loaded named directions ("" when nothing)."""
    from .properties import PROPERTIES

    p = len(nd.names)
    unknown = [n for n in nd.names if not isinstance(n, str) or n not in PROPERTIES]
    if unknown or len(set(nd.names)) != p:
        return f"named directions {nd.names} (known properties: {', '.join(PROPERTIES)})"
    if nd.directions.shape != (p, d) or any(getattr(nd, k).shape != (p,) for k in NAMED_TENSORS[1:-1]) \
            or nd.values.shape != (n_codes, p):
        return f"named directions of shape {tuple(nd.directions.shape)} for {p} names and {d}-number frames"
    if not all(bool(torch.isfinite(getattr(nd, k)).all()) for k in NAMED_TENSORS):
        return "named directions with values that are not finite"
    return ""


@dataclass
class LatentMap:
    """Clips placed on the first two slider directions (in SD), with what is needed to load them."""

    xy: np.ndarray  # (N, 2)
    codes: torch.Tensor  # (N, D)
    labels: list[str | None]
    names: list[str]
    store_indices: list[int] | None = None  # clip index in ``store`` for each point, when from a store
    store: str | None = None


def _plane(stats: LatentStats, codes: torch.Tensor) -> np.ndarray:
    if len(stats.components) < 2:
        raise InputError("the model's latent statistics have fewer than two directions; no 2-D map")
    return (stats.project(codes, 2) / stats.component_sd[:2].clamp_min(1e-8)).numpy()


def checkpoint_map(stats: LatentStats) -> LatentMap:
    """The codes saved with the checkpoint (its training clips, no dataset needed)."""
    if len(stats.codes) == 0:
        raise InputError("this checkpoint has no saved latent codes (latents.safetensors); "
                         "pick a dataset store to map instead")
    return LatentMap(_plane(stats, stats.codes), stats.codes, list(stats.code_labels), list(stats.code_names))


def _knows(vocabulary: tuple[str, ...], names: list[str | None]) -> bool:
    """Whether a conditional model knows every one of the labels ``names``."""
    return bool(vocabulary) and all(n in vocabulary for n in names)


def store_map(ck: Checkpoint, stats: LatentStats, store, max_points: int = 1500, seed: int = 0) -> LatentMap:
    """Encode (up to ``max_points``) clips of ``store`` (a preprocessing.Store) and place them on the
    directions of ``stats``."""
    shape = ck.spec.shape
    if store.config.shape != shape:
        raise InputError(f"store {store.path.name} has {store.config.shape[0]}x{store.config.shape[1]} "
                         f"spectrograms, the model expects {shape[0]}x{shape[1]}: pick a store "
                         "built with the model's settings")
    idx = subsample(store.indices(), max_points, seed)
    names, vocabulary = [store.clips[i]["label"] for i in idx], ck.model_cfg.labels
    # a conditional model encodes each clip with its label, when it knows them all
    codes = encode_indices(ck.model, store.rows, idx,
                           labels=label_indices(vocabulary, names) if _knows(vocabulary, names) else None)
    return LatentMap(_plane(stats, codes), codes, [store.clips[i]["label"] for i in idx],
                     [store.clip_name(i) for i in idx], idx, str(store.path))
