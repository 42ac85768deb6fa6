"""Where the app finds and keeps things: stores, runs, shipped checkpoints, example clips.

A :class:`Workspace` lists what exists *now* (pickers refresh from it without a restart), loads
checkpoints once and keeps them (with their latent statistics), writes playable WAV files for
downloads, and says in plain words what is missing and how to get it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocessing.audio import AUDIO_EXTENSIONS, save_wav
from preprocessing.config import PRESETS
from preprocessing.errors import InputError
from vae.checkpoint import (
    Checkpoint,
    CheckpointError,
    find_checkpoints,
    load_checkpoint,
    load_config,
    read_config,
    resumable,
)
from vae.events import lock_holder
from vae.latents import LatentStats, LatentStatsError, load_latent_stats

from .datasets import APP_PRESETS, check_name, list_stores, store_problem
from .plots import safe_name, save_png


def _short(message: str, limit: int = 120) -> str:
    """The first line of an error message, cut to ``limit`` characters (for a picker label)."""
    text = message.strip().splitlines()[0] if message.strip() else "unknown problem"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _broken_note(problem: str) -> str:
    return f" (broken: {problem})" if problem else ""


@dataclass
class Workspace:
    """The app's folders: ``data_dir`` holds ``stores/`` and ``uploads/``; runs go to ``runs_dir``."""

    data_dir: Path = Path("data")
    runs_dir: Path = Path("runs")
    checkpoints_dir: Path = Path("checkpoints")
    examples_dir: Path = Path("examples")
    audio_root: Path | None = None  # where playable WAVs are written; a fresh temporary folder by default
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _wav_dirs: list[Path] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.data_dir, self.runs_dir = Path(self.data_dir), Path(self.runs_dir)
        self.checkpoints_dir, self.examples_dir = Path(self.checkpoints_dir), Path(self.examples_dir)

    @classmethod
    def at(cls, data_dir: str | Path | None = None, root: str | Path = ".") -> Workspace:
        """The default layout under the project ``root`` (``data/``, ``runs/``), or everything
        app-made under ``data_dir`` (``<data_dir>/stores``, ``<data_dir>/runs``) when given."""
        root = Path(root)
        if data_dir is None:
            return cls(root / "data", root / "runs", root / "checkpoints", root / "examples")
        return cls(Path(data_dir), Path(data_dir) / "runs", root / "checkpoints", root / "examples")

    @property
    def stores_dir(self) -> Path:
        return self.data_dir / "stores"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def audio_dir(self) -> Path:
        # The system temp folder: Gradio serves files from there without extra configuration.
        if self.audio_root is None:
            self.audio_root = Path(tempfile.mkdtemp(prefix="sound-vae-audio-"))
        return self.audio_root

    # ----- listing (called on every tab visit, so it must stay cheap) -----

    def stores(self) -> list[tuple[str, str]]:
        """(name, path) of every store in ``stores_dir``; a store whose config cannot be read is named
        "<name> (broken: <reason>)", so it shows up with what is wrong instead of taking a listing down."""
        return [(p.name + _broken_note(store_problem(p)), str(p)) for p in list_stores(self.stores_dir)]

    def checkpoints(self) -> list[tuple[str, str]]:
        """(display name, path) of shipped checkpoints then app-trained runs; a checkpoint whose config
        cannot be read or does not fit is listed as "(broken: <reason>)" (picking it shows the full error)."""
        shipped = [(f"{d.relative_to(self.checkpoints_dir).as_posix()} (shipped{self._note(d, epoch=False)})", str(d))
                   for d in find_checkpoints(self.checkpoints_dir)]
        return shipped + [(f"{d.relative_to(self.runs_dir).as_posix()} (trained here{self._note(d)})", str(d))
                          for d in find_checkpoints(self.runs_dir)]

    @staticmethod
    def _note(d: Path, epoch: bool = True) -> str:
        """", epoch N" for a readable checkpoint config, "; broken: <reason>" for one that is not."""
        try:
            meta = load_config(d).meta
        except CheckpointError as e:
            return f"; broken: {_short(str(e).replace(f'{d}/', ''))}"
        n = meta.get("epoch")
        return f", epoch {n}" if epoch and isinstance(n, int) else ""

    def resumable_runs(self) -> list[tuple[str, str]]:
        """(name, path) of runs with a ``last/`` state that training can resume from."""
        if not self.runs_dir.is_dir():
            return []
        return [(p.name, str(p)) for p in sorted(self.runs_dir.iterdir()) if p.is_dir() and resumable(p)]

    def default_checkpoint(self) -> str | None:
        """``checkpoints/digits`` when shipped, else the first checkpoint found, else None."""
        digits = self.checkpoints_dir / "digits"
        if (digits / "config.json").is_file() and (digits / "model.safetensors").is_file():
            return str(digits)
        found = self.checkpoints()
        return found[0][1] if found else None

    def examples(self) -> list[tuple[str, str]]:
        """(name relative to examples/, path) of the example audio clips."""
        if not self.examples_dir.is_dir():
            return []
        files = sorted(p for p in self.examples_dir.rglob("*")
                       if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))
        return [(p.relative_to(self.examples_dir).as_posix(), str(p)) for p in files]

    def default_example(self, checkpoint: str | None) -> str | None:
        """An example clip that suits ``checkpoint``: one whose path contains the checkpoint's folder name,
        else one in ``examples/<preset>/`` for the app preset with the checkpoint's sample rate, else the first."""
        ex = self.examples()
        if not ex:
            return None
        if checkpoint:
            key = Path(checkpoint).name.lower()
            named = [path for name, path in ex if key and key in name.lower()]
            if named:
                return named[0]
            for folder in self._presets_like(checkpoint):
                in_folder = [path for name, path in ex if name.startswith(f"{folder}/")]
                if in_folder:
                    return in_folder[0]
        return ex[0][1]

    @staticmethod
    def _presets_like(checkpoint: str | Path) -> list[str]:
        """The app presets with the checkpoint's sample rate, closest parameters first; read from its
        config.json only (no weights). Empty when the config cannot be read."""
        try:
            spec = read_config(checkpoint).get("spectrogram")
        except (CheckpointError, OSError, ValueError):
            return []
        if not isinstance(spec, dict):
            return []
        same_rate = [name for name in APP_PRESETS if PRESETS[name].sample_rate == spec.get("sample_rate")]
        return sorted(same_rate, key=lambda name: -sum(spec.get(k) == v for k, v in PRESETS[name].to_dict().items()))

    def missing(self, has_model: bool = False) -> list[str]:
        """Plain-language notes about what is not there yet and how to get it (markdown)."""
        notes = []
        if not has_model and not find_checkpoints(self.checkpoints_dir) and not find_checkpoints(self.runs_dir):
            store, run = (shlex.quote(str(d / "digits")) for d in (self.stores_dir, self.runs_dir))
            notes.append(
                f"**No trained model yet.** The shipped models belong in `{self.checkpoints_dir}/digits` and "
                f"`{self.checkpoints_dir}/music` and are not in this copy. Get them as the README describes, or make "
                "one here: *Dataset* tab -> **Download FSDD** (or point it at a folder of audio), then the "
                "*Train* tab. From a terminal: `sound-vae preprocess --preset digits --input <folder> "
                f"--output {store}` then `sound-vae train --data {store} --output {run}`.")
        if not self.examples():
            notes.append(f"**No example clips** in `{self.examples_dir}/`: reconstruct an uploaded or recorded "
                         "clip, or a clip from a dataset store, instead.")
        if not self.stores():
            notes.append(f"**No dataset store yet** in `{self.stores_dir}/`: build one in the *Dataset* tab "
                         "(training and the store-based pickers need one; exploring a trained model does not).")
        return notes

    def new_run_dir(self, name: str) -> Path:
        """``runs_dir/name`` for a new run; refuses names that exist (resume those instead)."""
        name = check_name(name, "run")
        path = self.runs_dir / name
        if lock_holder(path) is not None:
            raise InputError(f"a run named {name!r} is training now; choose another name")
        if resumable(path) or (path / "config.json").exists():  # a folder with nothing saved can start again
            raise InputError(f"a run named {name!r} already exists in {self.runs_dir}; "
                             "choose another name, or pick it under Resume")
        return path

    # ----- loading, cached -----

    def load(self, path: str | Path | None) -> Checkpoint:
        """The checkpoint at ``path`` on the CPU, loaded once and kept (reloaded if its weights change)."""
        if not path:
            raise CheckpointError("no model selected: pick a checkpoint "
                                  "(train one in the Train tab if the list is empty)")
        return self._entry(path)[1]

    def latent_stats(self, path: str | Path) -> LatentStats | None:
        """The checkpoint's saved latent statistics (``latents.safetensors``), or None; raises
        :class:`LatentStatsError` when that file is damaged (loading the model itself does not)."""
        stats = self._entry(path)[2]
        if isinstance(stats, LatentStatsError):
            raise stats
        return stats

    def _entry(self, path: str | Path) -> tuple[tuple[int, int], Checkpoint, LatentStats | LatentStatsError | None]:
        p = Path(path)
        weights = p / "model.safetensors"
        latents = p / "latents.safetensors"
        try:
            stamp = (weights.stat().st_mtime_ns, latents.stat().st_mtime_ns if latents.exists() else 0)
        except OSError:
            raise CheckpointError(f"{p} is not a checkpoint (no model.safetensors); pick another model") from None
        key = str(p.resolve())
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamp:
                self._cache.move_to_end(key)
                return hit
        ck = load_checkpoint(p, "cpu")
        try:  # kept, not raised: Reconstruct needs only the model; Explore says what is wrong
            stats: LatentStats | LatentStatsError | None = load_latent_stats(p, ck.model_cfg.latent_shape)
        except LatentStatsError as e:
            stats = e
        entry = (stamp, ck, stats)
        with self._lock:
            self._cache[key] = entry
            while len(self._cache) > 4:
                self._cache.popitem(last=False)
        return entry

    # ----- files for players and downloads -----

    def wav(self, wave: np.ndarray, sample_rate: int, name: str) -> str:
        """Write ``wave`` as ``<audio dir>/<unique>/<name>.wav`` (16-bit) and return its path.

        A file path (rather than a numpy tuple) keeps the level as it is (Gradio would normalise
        an array by its peak) and gives downloads a meaningful name. Old files are removed so the
        folder stays small.
        """
        d = self._track(self.audio_dir / uuid.uuid4().hex[:12])
        path = d / f"{safe_name(name, 'audio')}.wav"
        return str(save_wav(path, np.asarray(wave, dtype=np.float32), int(sample_rate)))

    def download_dir(self) -> Path:
        """A new empty folder for files offered as downloads (removed with the oldest, as the players' are)."""
        d = self._track(self.audio_dir / uuid.uuid4().hex[:12])
        d.mkdir(parents=True, exist_ok=True)
        return d

    def png(self, rgb: np.ndarray, name: str) -> str:
        """Write an RGB image (H, W, 3) uint8 as ``<audio dir>/<unique>/<name>.png``; return its path
        (so a download is called e.g. ``0_alice_0_reconstruction.png``, not ``image.png``)."""
        path = save_png(rgb, self.audio_dir, name)
        self._track(Path(path).parent)
        return path

    def _track(self, d: Path, keep: int = 400) -> Path:
        """Remember the folder of a new file; folders beyond the newest ``keep`` are removed."""
        with self._lock:
            self._wav_dirs.append(d)
            old = self._wav_dirs[:-keep]
            del self._wav_dirs[:-keep]
        for o in old:
            _remove_folder(o)
        return d


def _remove_folder(d: Path) -> None:
    """Remove one of the workspace's own small output folders (its files, then itself). Not
    ``shutil.rmtree``: its symlink-safe walk costs more than the render it follows on a slider move."""
    try:
        for f in os.scandir(d):
            os.unlink(f.path)  # a file, or a link the workspace never makes: unlink either way
        os.rmdir(d)
    except OSError:
        shutil.rmtree(d, ignore_errors=True)  # anything unexpected inside: the careful way

