"""Checkpoints: a directory with ``config.json`` and ``model.safetensors``.

Nothing is unpickled: weights load with safetensors, the optimiser state for resuming with
``torch.load(weights_only=True)``, everything else is JSON. Every file is written to a temporary
name and renamed into place, so a crash never leaves a half-written checkpoint.

Layout of a training run's output directory::

    config.json, model.safetensors   the best model by validation loss ("the checkpoint")
    latents.safetensors              latent statistics for exploration (written at the end)
    last/                            the latest state: config.json, model.safetensors,
                                     training_state.pt (optimiser, epoch, step, RNG) for resume
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from preprocessing.config import SpectrogramConfig
from preprocessing.errors import UserError

from .config import ModelConfig, TrainConfig
from .model import VAE

FORMAT = "sound-vae/1"


class CheckpointError(UserError):
    """A checkpoint is missing, malformed, or does not fit its config."""


@dataclass
class Checkpoint:
    """A loaded model with everything needed to go between audio and latent codes."""

    model: VAE
    spec: SpectrogramConfig
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    meta: dict[str, Any] = field(default_factory=dict)  # arch, epoch, history, data, timings
    path: Path | None = None
    prior: Any = None  # a temporal model's learned prior over latent sequences (vae.prior.Prior), if fitted

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename tmp_path to ``path`` (same directory)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(
    directory: str | Path, model: VAE, spec: SpectrogramConfig, train_cfg: TrainConfig,
    meta: dict[str, Any], training_state: dict[str, Any] | None = None,
) -> Path:
    """Write weights (and optionally the training state), then config.json last."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / "model.safetensors", lambda p: save_file(weights, str(p)))
    if training_state is not None:
        atomic_write(directory / "training_state.pt", lambda p: torch.save(training_state, p))
    config = {"format": FORMAT, "model": model.cfg.to_dict(), "spectrogram": spec.to_dict(),
              "training": train_cfg.to_dict(), "meta": meta}
    atomic_write(directory / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: no config.json "
                              "(train one with `python -m vae train` or pick a folder under checkpoints/)")
    return read_format_json(path, FORMAT, CheckpointError, "a sound-vae checkpoint config")


def read_format_json(path: Path, fmt: str, error: type[Exception], what: str, hint: str = "") -> dict[str, Any]:
    """The JSON object in ``path`` whose "format" is ``fmt``; otherwise ``error`` naming the file and saying
    what is wrong (``what``: what the file should be; ``hint``: appended to a JSON error, e.g. what to do)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}){hint}") from None
    except OSError as e:
        raise error(f"cannot read {path} ({e.strerror or e})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise error(f"{path} is not {what} (format {fmt!r} expected)")
    return doc


@dataclass
class CheckpointConfig:
    """A checkpoint's config.json, parsed and checked: everything but the weights."""

    spec: SpectrogramConfig
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    meta: dict[str, Any] = field(default_factory=dict)


def load_config(directory: str | Path) -> CheckpointConfig:
    """The configs of a checkpoint directory (no weights read); raises :class:`CheckpointError`."""
    config = read_config(directory)
    try:
        model_cfg = ModelConfig.from_dict(config["model"])
        spec = SpectrogramConfig.from_dict(config["spectrogram"])
        train_cfg = TrainConfig.from_dict(config.get("training", {}))  # absent in hand-made checkpoints
    except (KeyError, TypeError, ValueError) as e:  # ConfigError is a ValueError
        raise CheckpointError(f"{directory}/config.json has a bad or missing entry: {e}") from None
    if (model_cfg.n_freq, model_cfg.n_frames) != spec.shape:
        raise CheckpointError(f"{directory}: model expects {model_cfg.n_freq}x{model_cfg.n_frames} "
                              f"spectrograms but its spectrogram config gives {spec.shape[0]}x{spec.shape[1]}")
    return CheckpointConfig(spec, model_cfg, train_cfg, config.get("meta", {}))


M = TypeVar("M", bound=torch.nn.Module)


def load_weights(module: M, path: Path, error: type[Exception], what: str) -> M:
    """``module`` with the safetensors weights in ``path`` (weights only, nothing unpickled); otherwise
    ``error`` naming the file: unreadable, or not matching ``what`` (e.g. "the architecture in config.json")."""
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise error(f"{path} is not a readable safetensors file ({e})") from None
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        first = " ".join(str(e).strip().splitlines()[:3])[:400]
        raise error(f"{path} does not match {what}: {first}") from None
    return module


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory; raises :class:`CheckpointError` saying what is wrong."""
    directory = Path(directory)
    cc = load_config(directory)
    weights_path = directory / "model.safetensors"
    if not weights_path.is_file():
        raise CheckpointError(f"{directory} has no model.safetensors")
    model = load_weights(VAE(cc.model_cfg), weights_path, CheckpointError, "the architecture in config.json")
    model.to(device).eval()
    prior = None
    if cc.model_cfg.kind == "temporal":
        from .prior import PriorError, load_prior

        try:
            prior = load_prior(directory, device)
        except PriorError as e:
            raise CheckpointError(f"{e} (or delete prior.json to use the model without its prior)") from None
    return Checkpoint(model, cc.spec, cc.model_cfg, cc.train_cfg, cc.meta, directory, prior)


def export_checkpoint(source: str | Path, output: str | Path, half: bool = False) -> Path:
    """Copy a checkpoint for sharing: the model, its latent statistics and card, no training state.

    ``half=True`` stores the weights as float16, halving the file; they load back as float32
    (``load_state_dict`` casts), so every consumer of the checkpoint works unchanged.
    """
    source, output = Path(source), Path(output)
    ck = load_checkpoint(source)  # validates config and weights before anything is written
    if output.resolve() == source.resolve():
        raise CheckpointError(f"export needs an output folder other than its source ({source})")
    weights = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in ck.model.state_dict().items()}
    overflow = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if overflow:
        raise CheckpointError(f"{source}: {', '.join(overflow[:3])} do not fit in float16; export without --half")
    output.mkdir(parents=True, exist_ok=True)
    atomic_write(output / "model.safetensors", lambda p: save_file(weights, str(p)))
    for name in ("latents.safetensors", "prior.safetensors", "prior.json", "README.md"):
        if (source / name).is_file():
            atomic_write(output / name, lambda p, name=name: shutil.copyfile(source / name, p))
    config = read_config(source)
    config["meta"] = {**config.get("meta", {}), "weights_dtype": "float16" if half else "float32"}
    atomic_write(output / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))
    return output


def load_training_state(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "training_state.pt"
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} not found (was the run started with this output folder?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(f"{path} is unreadable or not a plain state dict ({e})") from None


def find_checkpoints(*roots: str | Path) -> list[Path]:
    """Checkpoint directories (those with config.json + model.safetensors) under ``roots``."""
    found = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for cfg in sorted(root.rglob("config.json")):
            d = cfg.parent
            if d.name != "last" and (d / "model.safetensors").is_file():
                found.append(d)
    return found
