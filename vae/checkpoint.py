"""Checkpoints: a directory with ``config.json`` and ``model.safetensors``.

Nothing is unpickled: weights load with safetensors, the optimiser state for resuming with
``torch.load(weights_only=True)``, everything else is JSON. Every file is written to a temporary
name and renamed into place, so a crash never leaves a half-written file; and the files of one
checkpoint switch as a set (:func:`commit_files`, a small journal), so a crash never leaves weights of
one epoch beside the config or training state of another. :func:`recover_run` (at the start of
training) finishes or undoes a set a crash interrupted and removes temporary leftovers.

Layout of a training run's output directory::

    config.json, model.safetensors   the best model by validation loss ("the checkpoint")
    latents.safetensors              latent statistics for exploration (written at the end; a new
    prior.safetensors, prior.json    best model deletes them in its set, as they describe older weights)
    last/                            the latest state: config.json, model.safetensors,
                                     training_state.pt (optimiser, epoch, step, RNG) for resume
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as serialize

from preprocessing.config import SpectrogramConfig
from preprocessing.errors import UserError
from preprocessing.tempfiles import left_by_dead_writer, tmp_path

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


# The files of a checkpoint switch as a set through a small journal in their own folder, rather than by
# writing a new folder and renaming it over the old: a folder swap needs two renames (old away, new in)
# with a moment where neither is in place, and it cannot serve the best checkpoint, whose files share
# the run folder with last/ and the latent statistics. The journal keeps the layout, so shipped
# checkpoints and every reader stay as they were.
COMMIT = ".commit.json"  # the commit marker: the set's file names; while it exists the set is committed
COMMIT_FORMAT = "sound-vae-commit/1"
PENDING = ".pending"  # a set's new file NAME is written as .NAME.pending first
STATS_FILES = ("latents.safetensors", "prior.safetensors", "prior.json")  # describe the best model's weights
RESUME_FILES = ("config.json", "model.safetensors", "training_state.pt")  # what output/last needs to resume
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how safetensors (Rust) reports an I/O error's errno
_FIXABLE = {errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}  # the user's to fix, like a full disk


RESUME_HINT = "resume the run (the checkpoint saved before is unchanged)"


def _write_error(e: BaseException, directory: Path, what: str = "the checkpoint",
                 then: str = RESUME_HINT) -> CheckpointError | None:
    """The error for a write of ``what`` into ``directory`` that failed with ``e`` because the disk is full,
    read only or not ours to write, ending with what to do ``then``; None for anything else (a bug: it
    propagates as it is)."""
    if isinstance(e, OSError):
        code = e.errno
    else:  # SafetensorError only says "I/O error: ... (os error 28)"
        m = _OS_ERROR.search(str(e)) if isinstance(e, SafetensorError) else None
        code = int(m[1]) if m else None
    if code in (errno.ENOSPC, errno.EDQUOT):
        return CheckpointError(f"the disk is full: cannot write {what} in {directory}; free some space, then {then}")
    if code in _FIXABLE:
        return CheckpointError(f"cannot write {what} in {directory} ({os.strerror(code)}); make the folder "
                               f"writable, then {then}")
    return None


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` then rename tmp_path to ``path`` (same directory). A full disk or a folder
    that cannot be written raises :class:`CheckpointError` naming the folder."""
    tmp = tmp_path(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # safetensors creates its files 0600: others on the machine could not load them
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        error = _write_error(e, path.parent, path.name, f"try again (the {path.name} there before is unchanged)")
        if error is None:
            raise
        raise error from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk (a commit marker must not name unwritten files)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    """Flush ``directory``'s entries (renames, new names) to the disk; POSIX only (elsewhere a no-op)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pending(directory: Path, name: str) -> Path:
    return directory / f".{name}{PENDING}"


def _plain_names(names: Any) -> bool:
    """Whether ``names`` is a list of plain file names (nothing outside the folder, no hidden files)."""
    return isinstance(names, list) and all(
        isinstance(n, str) and n and n == Path(n).name and not n.startswith(".") for n in names)


def _read_marker(directory: Path) -> tuple[list[str], list[str]] | None:
    """(files, deletions) of the committed set in ``directory``; None without one (or with a marker that
    is not a valid one of ours: it is ignored, as if absent)."""
    try:
        doc = json.loads((directory / COMMIT).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent; UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(doc, dict) or doc.get("format") != COMMIT_FORMAT:
        return None
    files, delete = doc.get("files"), doc.get("delete", [])
    return (files, delete) if _plain_names(files) and _plain_names(delete) else None


def _apply(directory: Path, files: list[str], delete: list[str]) -> None:
    """Roll a committed set forward: rename its pending files into place, delete ``delete``, drop the
    marker. Each step can be done twice, so a crash part-way is finished by running it again."""
    for name in files:
        try:
            os.replace(_pending(directory, name), directory / name)
        except FileNotFoundError:  # renamed before a crash
            pass
    for name in delete:
        (directory / name).unlink(missing_ok=True)
    _fsync_dir(directory)  # the renames are on the disk before the marker goes
    (directory / COMMIT).unlink(missing_ok=True)


def _stage(directory: Path, files: dict[str, bytes], delete: list[str]) -> None:
    """Write the set's pending files, then its commit marker; on any failure, remove what was written."""
    written: list[Path] = []
    try:
        for name, data in files.items():
            written.append(_pending(directory, name))
            _write_bytes(written[-1], data)
        marker = {"format": COMMIT_FORMAT, "files": list(files), "delete": delete}
        atomic_write(directory / COMMIT, lambda p: _write_bytes(p, json.dumps(marker).encode()))
        _fsync_dir(directory)  # the marker's name is on the disk: the set is committed
    except BaseException:
        (directory / COMMIT).unlink(missing_ok=True)
        for path in written:
            path.unlink(missing_ok=True)
        raise


def commit_files(directory: str | Path, files: dict[str, bytes], delete: Iterable[str] = ()) -> Path:
    """Put ``files`` (name -> contents) into ``directory`` and delete the files named in ``delete``, as one
    set: after a crash at any moment, :func:`recover` leaves either all the old files or all the new ones.

    Each file is written to ``.NAME.pending`` and flushed; then the marker ``.commit.json`` lists the set
    (from then on it counts as written); then each pending file is renamed into place and the marker
    removed. A failed write removes the pending files and leaves the old set as it was; a full disk or a
    folder that cannot be written raises :class:`CheckpointError` naming the folder.
    """
    directory = Path(directory)
    names = [n for n in delete if n not in files]
    if not (_plain_names(list(files)) and _plain_names(names)):
        raise ValueError(f"not plain file names: {list(files)}, {names}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        recover(directory)  # finish (or undo) a set a crash interrupted before this one starts
        _stage(directory, files, names)
        _apply(directory, list(files), names)
    except (OSError, SafetensorError) as e:
        error = _write_error(e, directory)
        if error is None:
            raise
        raise error from None
    return directory


def recover(directory: str | Path) -> bool:
    """Finish the checkpoint set in ``directory`` that a crash interrupted after its commit (True), or drop
    one interrupted before it (False); remove pending files and the temporary files of writers that no
    longer run. Only the one process that writes ``directory`` may call this, never a reader."""
    directory = Path(directory)
    if not directory.is_dir():
        return False
    marker = _read_marker(directory)
    if marker is not None:
        _apply(directory, *marker)
    for path in directory.iterdir():
        name = path.name
        if name == COMMIT or (name.startswith(".") and name.endswith(PENDING)) or left_by_dead_writer(name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return marker is not None


def recover_run(output: str | Path) -> None:
    """:func:`recover` a training run's folder and its ``last/``: done when training starts."""
    recover(Path(output) / "last")
    recover(output)


def resumable(output: str | Path) -> bool:
    """Whether the run in ``output`` can be resumed: ``output/last`` holds a committed set with its training
    state. Reads only (a set committed but not yet renamed into place counts), so readers may call it."""
    last = Path(output) / "last"
    marked = (_read_marker(last) or ([], []))[0]
    return all(n in marked or (last / n).is_file() for n in RESUME_FILES)


def save_checkpoint(
    directory: str | Path, model: VAE, spec: SpectrogramConfig, train_cfg: TrainConfig,
    meta: dict[str, Any], training_state: dict[str, Any] | None = None, stale: Iterable[str] = (),
) -> Path:
    """Write the weights, config.json and (optionally) the training state into ``directory`` as one set
    (:func:`commit_files`), deleting the files named in ``stale`` (e.g. :data:`STATS_FILES`) in that set."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    files = {"model.safetensors": serialize(weights)}
    if training_state is not None:
        buffer = io.BytesIO()  # in memory: torch.save's own file writer reports a full disk as a RuntimeError
        torch.save(training_state, buffer)
        files["training_state.pt"] = buffer.getvalue()
    config = {"format": FORMAT, "model": model.cfg.to_dict(), "spectrogram": spec.to_dict(),
              "training": train_cfg.to_dict(), "meta": meta}
    files["config.json"] = json.dumps(config, indent=2).encode()
    return commit_files(directory, files, stale)


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
    meta = config.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{directory}/config.json: 'meta' must be an object, got {type(meta).__name__}")
    return CheckpointConfig(spec, model_cfg, train_cfg, meta)


M = TypeVar("M", bound=torch.nn.Module)


MAX_PARAMS = 200_000_000  # 800 MB of float32: 50x the largest preset (the study's music model, 3.9M)


def load_weights(build: Callable[[], M], path: Path, error: type[Exception], what: str) -> M:
    """The module ``build()`` makes, with the safetensors weights in ``path`` (weights only, nothing
    unpickled); otherwise ``error`` naming the file: unreadable, or not matching ``what`` (e.g. "the
    architecture in config.json").

    Before any memory is allocated, the module is built on the meta device (no storage) to count its
    parameters against :data:`MAX_PARAMS` and to compare every tensor's shape with the file's header, so a
    hostile config or a mismatched file is refused for what it is.
    """
    expected = _meta_shapes(build)
    n = sum(math.prod(shape) for shape in expected.values())
    if n > MAX_PARAMS:
        raise error(f"{what} asks for {n:,} parameters, more than the limit of {MAX_PARAMS:,}; "
                    f"its config is damaged, or not meant for this tool")
    try:
        with safe_open(str(path), "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # header only
    except (SafetensorError, OSError) as e:
        raise error(f"{path} is not a readable safetensors file ({e})") from None
    problem = _shape_mismatch(expected, found)
    if problem:
        raise error(f"{path} does not match {what}: {problem}")
    module = build()
    try:
        module.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, RuntimeError) as e:  # e.g. a file truncated after its header
        first = " ".join(str(e).strip().splitlines()[:3])[:400]
        raise error(f"{path} does not match {what}: {first}") from None
    return module


def _meta_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in the state of the module ``build()`` makes, built on the meta device
    (shapes only: no memory, whatever the sizes)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build().state_dict().items()}


def count_parameters(build: Callable[[], torch.nn.Module]) -> int:
    """The number of values in the state of the module ``build()`` makes, without allocating them."""
    return sum(math.prod(shape) for shape in _meta_shapes(build).values())


def _shape_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    """The first differences between the tensors a module needs and those a file holds ("" when none)."""
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = [f"{k} is {found[k]}, expected {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
    parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
        ([f"unexpected {', '.join(extra[:3])}"] if extra else []) + wrong[:3]
    return "; ".join(parts)


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory; raises :class:`CheckpointError` saying what is wrong."""
    directory = Path(directory)
    cc = load_config(directory)
    weights_path = directory / "model.safetensors"
    if not weights_path.is_file():
        raise CheckpointError(f"{directory} has no model.safetensors")
    model = load_weights(lambda: VAE(cc.model_cfg), weights_path, CheckpointError, "the architecture in config.json")
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
    config = read_config(source)
    config["meta"] = {**config.get("meta", {}), "weights_dtype": "float16" if half else "float32"}
    extras = ("latents.safetensors", "prior.safetensors", "prior.json", "README.md")
    files = {"model.safetensors": serialize(weights), "config.json": json.dumps(config, indent=2).encode()}
    files.update({name: (source / name).read_bytes() for name in extras if (source / name).is_file()})
    # one set: an export over an earlier one never mixes the two (nor keeps its statistics or prior)
    return commit_files(output, files, delete=[name for name in extras if name not in files])


def load_training_state(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "training_state.pt"
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} not found (was the run started with this output folder?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refuses anything but tensors and plain containers
        # (PyTorch's own message suggests weights_only=False: never, for a file that may come from anyone)
        raise CheckpointError(f"{path} holds objects other than tensors and plain values, which this tool never "
                              "loads; resume only from training states it wrote") from None
    except Exception as e:  # truncated, not a zip, unreadable
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is unreadable or damaged ({detail}); resume from another run, "
                              "or start this one again") from None


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
