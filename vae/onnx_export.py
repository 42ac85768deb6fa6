"""ONNX export (issue #14): a checkpoint as ``encoder.onnx``, ``decoder.onnx`` and ``sound_vae.json``, for
hosts without Python or PyTorch (onnxruntime in C++, C#, JavaScript, ...).

The graphs (float32, opset :data:`OPSET`)::

    encoder.onnx  spectrogram (B, F, T) in [0, 1]  ->  mu (B, *latent), logvar (B, *latent)
    decoder.onnx  z (B, *latent)                   ->  spectrogram (B, F, T) in [0, 1]

A conditional model's graphs (``ModelConfig.labels``) take a second input, ``label`` (B,) int64: each
clip's or code's row in the label vocabulary that ``sound_vae.json`` lists (with each label's Gaussian of
codes, for sampling a label, when the latent statistics hold them).

``latent`` is (D,) for a global model, whose T is fixed at the clip's ``n_frames``; a temporal model's is
(D, frames) with T = r * frames for any frames >= 1 (r = ``ModelConfig.time_ratio``: its strided convolutions
shorten time r-fold, so a spectrogram's T must be a multiple of r). B is dynamic in both graphs, and so is
``frames``. ``sound_vae.json`` (:func:`host_config`) says what a host needs to go between these spectrograms
and sound: the STFT, the dB range the decoder's 0..1 stands for, and the latent statistics (mean,
principal directions and their SDs) that the app's sliders move along.

Exporting needs the ``onnx`` extra (onnx, onnxscript); :func:`compare_onnx` needs onnxruntime.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from preprocessing.errors import UserError

from .checkpoint import Checkpoint, CheckpointError, commit_files, load_checkpoint
from .generate import display_range
from .latents import RANGE_SD, LatentStats, load_latent_stats, n_sliders, prior_stats
from .model import VAE

FORMAT = "sound-vae-onnx/1"
ENCODER, DECODER, CONFIG = "encoder.onnx", "decoder.onnx", "sound_vae.json"
OPSET = 18  # the oldest the dynamo exporter targets: the widest choice of hosts (IR 10: onnxruntime >= 1.16)
EXTRA_HINT = "pip install 'sound-vae[onnx]' (or: pip install onnx onnxscript)"
TOLERANCE = 1e-4  # max abs difference onnxruntime vs PyTorch the tests accept (measured <= 1.4e-5; README)


class OnnxExportError(UserError):
    """The ONNX export cannot run here (a package is missing) or cannot write its files."""


class EncoderGraph(nn.Module):
    """The exported encoder: spectrograms (B, F, T) in [0, 1] (and labels (B,) int64 for a conditional model)
    -> (mu, logvar), each (B, *latent)."""

    def __init__(self, model: VAE):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(x.unsqueeze(1), label)


class DecoderGraph(nn.Module):
    """The exported decoder: codes z (B, *latent) (and labels (B,) int64 for a conditional model) ->
    spectrograms (B, F, T) in [0, 1] (sigmoid included)."""

    def __init__(self, model: VAE):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.decode(z, label)[:, 0]


def require_onnx() -> None:
    """Raise :class:`OnnxExportError` saying what to install unless onnx and onnxscript import."""
    for name in ("onnx", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise OnnxExportError(f"ONNX export needs the {name} package, which is not installed: {EXTRA_HINT}") \
                from None


def require_onnxruntime() -> Any:
    """The onnxruntime module; :class:`OnnxExportError` saying what to install when it is missing."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise OnnxExportError("comparing with onnxruntime needs it installed: pip install onnxruntime") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the exporter's noise that says nothing about our model (torchvision ops it skips, a pytree
    deprecation inside torch.export); restore the logging level after."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
            # a conditional model's two inputs share the batch axis, which the exporter names once: as wanted
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints with another axis",
                                    category=UserWarning)
            yield
    finally:
        log.setLevel(level)


def _axes(value: Any) -> list[int | str]:
    """An ONNX graph input or output's shape: ints, or axis names for dynamic axes."""
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def graph_shapes(model_proto: Any) -> dict[str, list[int | str]]:
    """Name -> shape of every input and output of an ONNX ModelProto."""
    return {v.name: _axes(v) for v in (*model_proto.graph.input, *model_proto.graph.output)}


def _export(module: nn.Module, example: torch.Tensor, input_name: str, output_names: list[str],
            dims: dict[int, Any], axis_names: dict[str, dict[int, str]], label: torch.Tensor | None = None) -> bytes:
    """``module`` as a serialised ONNX model, with ``dims`` (axis -> torch.export.Dim) dynamic in its input
    and the graph's axes named by ``axis_names`` (value -> axis -> name). ``label``: an example of a
    conditional model's labels (B,), a second input ``label`` with the same batch axis."""
    examples, names, shapes = (example,), [input_name], (dims,)
    if label is not None:
        examples, names, shapes = (example, label), [input_name, "label"], (dims, {0: dims[0]})
        axis_names = {**axis_names, "label": {0: "batch"}}
    # The dynamo exporter (torch.export + onnxscript, torch.onnx's default since 2.9). The legacy TorchScript
    # exporter (dynamo=False) exports both architectures too, to the same ~1e-6 and several times faster, but it
    # is deprecated (a DeprecationWarning in torch 2.11) and would leave this module on a path PyTorch removes.
    with _quiet():
        program = torch.onnx.export(module.eval(), examples, None, dynamo=True, verbose=False, opset_version=OPSET,
                                    input_names=names, output_names=output_names, dynamic_shapes=shapes)
    graph = program.model.graph
    values = {v.name: v for v in (*graph.inputs, *graph.outputs)}
    renames = {}
    for name, axes in axis_names.items():
        for axis, new in axes.items():
            old = values[name].shape[axis]
            if not isinstance(old, int) and old.value != new:
                renames[old] = new
    if renames:
        program.rename_axes(renames)
    return program.model_proto.SerializeToString()


def onnx_graphs(ck: Checkpoint) -> dict[str, bytes]:
    """The encoder and decoder of ``ck`` as serialised ONNX models ({ENCODER: ..., DECODER: ...})."""
    require_onnx()
    model, cfg, dev = ck.model.eval(), ck.model_cfg, ck.device
    f = cfg.n_freq
    batch = torch.export.Dim("batch", min=1)
    y = torch.arange(2, device=dev) % cfg.n_labels if cfg.labels else None  # (2,) a conditional model's labels
    if cfg.kind == "temporal":
        # examples of 2 or more: torch.export would fix an axis whose example is 1 to that size
        r, n, frames = cfg.time_ratio, max(2, cfg.latent_shape[1]), torch.export.Dim("frames", min=1)
        time, time_dim = spec_time_axis(r), (frames if r == 1 else r * frames)
        z, x = torch.randn(2, cfg.latent_dim, n, device=dev), torch.rand(2, f, r * n, device=dev)
        enc = _export(EncoderGraph(model), x, "spectrogram", ["mu", "logvar"], {0: batch, 2: time_dim},
                      {"spectrogram": {0: "batch", 2: time}, "mu": {0: "batch", 2: "frames"},
                       "logvar": {0: "batch", 2: "frames"}}, y)
        dec = _export(DecoderGraph(model), z, "z", ["spectrogram"], {0: batch, 2: frames},
                      {"z": {0: "batch", 2: "frames"}, "spectrogram": {0: "batch", 2: time}}, y)
    else:
        z, x = torch.randn(2, cfg.latent_dim, device=dev), torch.rand(2, f, cfg.n_frames, device=dev)
        enc = _export(EncoderGraph(model), x, "spectrogram", ["mu", "logvar"], {0: batch},
                      {"spectrogram": {0: "batch"}, "mu": {0: "batch"}, "logvar": {0: "batch"}}, y)
        dec = _export(DecoderGraph(model), z, "z", ["spectrogram"], {0: batch}, {"z": {0: "batch"},
                                                                                "spectrogram": {0: "batch"}}, y)
    return {ENCODER: enc, DECODER: dec}


def spec_time_axis(time_ratio: int) -> str:
    """The name of a temporal model's spectrogram time axis: ``"frames"`` times the ratio, e.g. ``"2*frames"``."""
    return "frames" if time_ratio == 1 else f"{time_ratio}*frames"


def _numbers(t: torch.Tensor) -> list[Any]:
    """A tensor as nested lists of floats with 9 significant digits (which give float32 back exactly)."""
    a = t.detach().cpu().to(torch.float64).numpy()
    return np.vectorize(lambda v: float(f"{v:.9g}"), otypes=[object])(a).tolist()


def _json(value: Any, depth: int = 0) -> str:
    """``value`` as JSON with one key a line and each innermost list on one line (a direction is a row)."""
    pad, end = " " * (depth + 1), " " * depth
    if isinstance(value, dict) and value:
        return "{\n" + ",\n".join(f"{pad}{json.dumps(k)}: {_json(v, depth + 1)}" for k, v in value.items()) + \
            f"\n{end}}}"
    if isinstance(value, list) and any(isinstance(v, list | dict) for v in value):
        return "[\n" + ",\n".join(pad + _json(v, depth + 1) for v in value) + f"\n{end}]"
    return json.dumps(value)


def host_config(ck: Checkpoint, stats: LatentStats, stats_source: str,
                shapes: dict[str, dict[str, list[int | str]]], ir_version: int) -> dict[str, Any]:
    """What ``sound_vae.json`` holds: everything a host needs besides the two graphs (``shapes``: file ->
    :func:`graph_shapes`; ``ir_version``: their ONNX IR version), to turn the decoder's output into sound
    (and sound into the encoder's input)."""
    spec, cfg = ck.spec, ck.model_cfg
    lo, hi = display_range(ck)
    temporal = cfg.kind == "temporal"
    clip = spec.normalisation == "clip"
    return {
        "format": FORMAT,
        "source": {"checkpoint": ck.path.name if ck.path else None, "arch": ck.meta.get("arch"),
                   "epoch": ck.meta.get("epoch"), "torch": torch.__version__},
        "kind": cfg.kind,
        "opset": OPSET, "ir_version": ir_version,
        "encoder": {"file": ENCODER, "shapes": shapes[ENCODER]},
        "decoder": {"file": DECODER, "shapes": shapes[DECODER]},
        "shape": {
            "n_freq": cfg.n_freq, "clip_frames": cfg.n_frames, "latent_dim": cfg.latent_dim,
            "latent_shape": list(cfg.latent_shape),
            "time_ratio": cfg.time_ratio if temporal else None,
            "rule": (f"time = {cfg.time_ratio} * frames for any frames >= 1: a spectrogram's time axis must be a "
                     f"multiple of {cfg.time_ratio}; one clip is {cfg.n_frames} spectrogram frames, "
                     f"{cfg.latent_shape[1]} latent frames") if temporal else
                    f"fixed: one clip is a code of {cfg.latent_dim} numbers and a {cfg.n_freq} x {cfg.n_frames} "
                    "spectrogram",
        },
        "stft": {
            "sample_rate": spec.sample_rate, "n_fft": spec.n_fft, "hop_length": spec.hop_length,
            "win_length": spec.n_fft, "window": "hann, periodic (torch.hann_window)", "center": True,
            "pad_mode": "reflect", "magnitude": "abs(STFT), power 1, not normalised",
            "bins": f"0 .. n_fft/2 - 1 ({spec.n_freq}): the Nyquist bin is dropped; append a row of zeros "
                    "before inverting",
            "clip_samples": spec.n_samples, "clip_seconds": spec.duration,
            "samples": "clip_samples for a clip's clip_frames frames, else (time - 1) * hop_length",
        },
        "levels": {
            "normalisation": spec.normalisation, "db_range": [lo, hi], "top_db": spec.top_db, "ref_db": spec.ref_db,
            "amin": 1e-5,
            "to_db": "db = lo + x * (hi - lo), (lo, hi) = db_range" +
                     (" for sampled codes; an encoded clip's own (lo, hi) for its reconstruction" if clip else ""),
            "to_magnitude": "magnitude = 10 ** (db / 20) (amplitude re 1.0 full scale)",
            "from_audio": ("scale the signal to peak 1.0" if spec.peak_normalise else "the signal as it is") +
                          ", cut into clip_samples windows (the last padded with zeros); per window, "
                          "db = 20 * log10(max(magnitude, amin)); x = clip((db - lo) / (hi - lo), 0, 1) with " +
                          ("the clip's own hi = max(db), lo = max(min(db), hi - top_db)" if clip else "db_range"),
            "playback": "scale down (never up) to peak 0.99" if spec.peak_normalise else "as it is",
        },
        "phase": {"method": spec.phase, "griffinlim_iters": spec.griffinlim_iters, "griffinlim_momentum": 0.99,
                  "zero": "inverse STFT of the bare magnitudes (the study's method)"},
        "latents": {
            "source": stats_source,
            "mean": _numbers(stats.mean), "directions": _numbers(stats.components),
            "sd": _numbers(stats.component_sd), "explained": _numbers(stats.explained),
            "sliders": n_sliders(stats), "slider_range_sd": RANGE_SD,
            "rule": "code = mean + sum_k v_k * sd_k * directions[k], v_k in SDs" +
                    (", added to every frame (column) of a temporal code" if temporal else ""),
            "named": _named(stats),
            "prior": "N(0, I) for every number of a code" +
                     ("; the checkpoint's learned prior over sequences is not exported" if ck.prior is not None
                      else ""),
        },
        "labels": _labels(ck, stats),
    }


def _labels(ck: Checkpoint, stats: LatentStats) -> dict[str, Any] | None:
    """A conditional model's label input: its vocabulary and, when the statistics hold them, each label's
    Gaussian of codes (what ``sample --label`` draws from); None for a model without labels."""
    labels = list(ck.model_cfg.labels)
    if not labels:
        return None
    out: dict[str, Any] = {
        "vocabulary": labels,
        "input": "label: (batch,) int64 in both graphs, each clip's or code's row in vocabulary",
    }
    if stats.label_chol is not None and stats.label_names == labels:
        out["gaussians"] = {
            "rule": "a code of label k = means[k] + temperature * chol[k] @ e, e ~ N(0, I) (D numbers)",
            "means": _numbers(stats.label_means), "chol": _numbers(stats.label_chol),
        }
    return out


def _named(stats: LatentStats) -> list[dict[str, Any]]:
    """The named directions the app offers as sliders (vae.named_directions), each with its unit vector (D,),
    the codes' SD along it and the decoded property's change per SD: moving v SD adds v * sd * direction to
    every frame, on top of the principal sliders."""
    from .properties import PROPERTIES

    named = stats.named
    if named is None:
        return []
    return [{"property": named.names[i], "title": PROPERTIES[named.names[i]].title,
             "low": PROPERTIES[named.names[i]].low, "high": PROPERTIES[named.names[i]].high,
             "unit": PROPERTIES[named.names[i]].unit, "direction": _numbers(named.directions[i]),
             "sd": float(named.sd[i]), "change_per_sd": float(named.slope[i]), "r2_held_out": float(named.r2[i])}
            for i in named.offered()]


def onnx_files(ck: Checkpoint) -> dict[str, bytes]:
    """The export's three files (name -> contents) for ``ck``: the graphs and their ``sound_vae.json``."""
    import onnx

    files = onnx_graphs(ck)
    protos = {name: onnx.load_from_string(data) for name, data in files.items()}
    shapes = {name: graph_shapes(proto) for name, proto in protos.items()}
    stats = load_latent_stats(ck.path, ck.model_cfg.latent_shape) if ck.path else None
    source = "latents.safetensors" if stats is not None else "the prior's axes (no latents.safetensors)"
    config = host_config(ck, stats or prior_stats(ck.model_cfg.latent_shape), source, shapes,
                         protos[DECODER].ir_version)
    files[CONFIG] = (_json(config) + "\n").encode()
    return files


def export_onnx(source: str | Path, output: str | Path) -> Path:
    """Export the checkpoint in ``source`` as ONNX into the folder ``output``: ``encoder.onnx``,
    ``decoder.onnx`` and ``sound_vae.json``, written as one set (:func:`vae.checkpoint.commit_files`).
    Other files in ``output`` are left as they are. Returns ``output``."""
    require_onnx()  # before the checkpoint is read: say what to install first
    source, output = Path(source), Path(output)
    ck = load_checkpoint(source)
    if output.resolve() == source.resolve():
        raise CheckpointError(f"export needs an output folder other than its source ({source})")
    return commit_files(output, onnx_files(ck))


def export_onnx_zip(source: str | Path, folder: str | Path) -> Path:
    """Export ``source`` as ONNX (:func:`export_onnx`) into ``folder/<name>-onnx`` and pack that folder as
    ``folder/<name>-onnx.zip`` (what the app offers as one download); returns the zip's path."""
    source, folder = Path(source), Path(folder)
    out = export_onnx(source, folder / f"{source.name}-onnx")
    return Path(shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name))


def compare_onnx(ck: Checkpoint, directory: str | Path, seed: int = 0) -> dict[str, float]:
    """Max abs difference between onnxruntime (on the files in ``directory``) and PyTorch (eval mode) for
    ``ck``: ``decoder`` on N(0, I) codes, ``mu`` and ``logvar`` on random spectrograms and on the decoded ones;
    at batch 1 and 3 and, for a temporal model, at the clip's length and at 2 * frames + 1; a conditional
    model's with random labels."""
    ort = require_onnxruntime()
    directory = Path(directory)
    enc, dec = (ort.InferenceSession(str(directory / n), providers=["CPUExecutionProvider"])
                for n in (ENCODER, DECODER))
    cfg, g = ck.model_cfg, torch.Generator().manual_seed(seed)
    shapes = [tuple(cfg.latent_shape)]
    if cfg.kind == "temporal":
        shapes.append((cfg.latent_dim, 2 * cfg.latent_shape[1] + 1))
    err = {"decoder": 0.0, "mu": 0.0, "logvar": 0.0}

    def note(key: str, got: np.ndarray, want: torch.Tensor) -> None:
        err[key] = max(err[key], float(np.abs(got - want.cpu().numpy()).max()))

    model = ck.model.eval()
    with torch.no_grad():
        for shape in shapes:
            for b in (1, 3):
                z = torch.randn(b, *shape, generator=g)
                y = torch.randint(cfg.n_labels, (b,), generator=g) if cfg.labels else None  # (b,)
                extra = {"label": y.numpy()} if y is not None else {}
                yd = None if y is None else y.to(ck.device)
                x = model.decode(z.to(ck.device), yd)[:, 0].cpu()
                note("decoder", dec.run(None, {"z": z.numpy(), **extra})[0], x)
                for spec in (x, torch.rand(x.shape, generator=g)):
                    mu, logvar = model.encode(spec.unsqueeze(1).to(ck.device), yd)
                    got = enc.run(None, {"spectrogram": spec.numpy(), **extra})
                    note("mu", got[0], mu)
                    note("logvar", got[1], logvar)
    return err
