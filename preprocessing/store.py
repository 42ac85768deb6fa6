"""The dataset store: a folder of audio in, one directory of spectrograms out.

Layout of a store directory::

    spectrograms.npy   float32 (N, n_freq, n_frames) in [0, 1], memory-mappable
    manifest.json      one entry per clip: source file, window offset (s), label, speaker,
                       split, the dB range (lo, hi) that maps to [0, 1], and the input gain
    config.json        the SpectrogramConfig (with the dataset's ref_db), the input
                       fingerprint, and the files that were skipped with their reasons

No pickle. Re-running on unchanged input with the same parameters reuses the store. The store
is written to a temporary sibling directory and renamed into place, so an interrupted run never
leaves a half-written store behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so a store in use is not protected from a rebuild there
    fcntl = None  # type: ignore[assignment]

from .analysis import FileAnalysis, RawShard, Segment, analyse_file, normalise_rows
from .audio import MAX_FILE_S, AudioError, fit_length, is_audio_path, load_audio
from .config import ConfigError, SpectrogramConfig
from .errors import UserError
from .labels import ClipLabel, assign_splits, parse_label, relative_name
from .parallel import Pool, analyse_task, check_workers, usable_cpus
from .progress import ProgressFn
from .rows import RowReader
from .spectrogram import denormalise, to_audio
from .tempfiles import left_by_dead_writer, tmp_path

STORE_VERSION = 1
LOCK = "config.json"  # flock'd: shared while a run trains on the store, exclusive while it is rebuilt
MAX_STORE_BYTES = 64 * 2**30  # default limit on a store's spectrograms (`preprocess --max-store-gb`)
CLIP_KEYS = ("source", "offset", "label", "split", "lo", "hi")  # what every manifest entry must have
REBUILD = "rebuild it with `sound-vae preprocess --force` (or build it again in the app), or pick another folder"


class PreprocessError(UserError):
    """The whole run cannot proceed (no audio at all, nothing usable, bad output path)."""


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class StoreSummary:
    """What a store holds, for people: counts per label and split, duration, skipped files."""

    path: str
    n_clips: int
    n_files: int
    shape: tuple[int, int]
    duration_s: float
    per_label: dict[str, dict[str, int]]  # label -> {"train": n, "test": n}
    skipped: list[Skipped] = field(default_factory=list)
    silent_windows: int = 0
    reused: bool = False

    def to_text(self) -> str:
        lines = [
            f"{self.n_clips} clips from {self.n_files} files ({self.duration_s / 60:.1f} min), "
            f"spectrograms {self.shape[0]}x{self.shape[1]}" + (" [reused]" if self.reused else ""),
        ]
        for label, counts in sorted(self.per_label.items()):
            lines.append(f"  {label}: train {counts.get('train', 0)}, test {counts.get('test', 0)}")
        if self.silent_windows:
            lines.append(f"  {self.silent_windows} silent windows left out")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} files:")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


class Store:
    """A dataset store opened read-only; ``specs`` is a memory map (N, n_freq, n_frames), ``rows`` the same
    rows read with explicit reads (``store.rows[[i, j]]``: a new array, no pages left mapped; for big stores)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = _read_json(self.path / "config.json")
        if not isinstance(self.meta, dict) or "spectrogram" not in self.meta:
            raise PreprocessError(f"{self.path / 'config.json'} is not a store config (no spectrogram "
                                  f"parameters); {REBUILD}")
        try:
            self.config = SpectrogramConfig.from_dict(self.meta["spectrogram"])
        except ConfigError as e:
            raise PreprocessError(f"{self.path / 'config.json'} has bad spectrogram parameters ({e}); "
                                  f"{REBUILD}") from None
        self.clips: list[dict] = _read_json(self.path / "manifest.json")
        if not isinstance(self.clips, list) or not all(
                isinstance(c, dict) and all(k in c for k in CLIP_KEYS) for c in self.clips):
            raise PreprocessError(f"{self.path / 'manifest.json'} is not a store manifest (a list of clips "
                                  f"with {', '.join(CLIP_KEYS)}); {REBUILD}")
        self.specs = _load_specs(self.path / "spectrograms.npy")
        if self.specs.shape != (len(self.clips), *self.config.shape):
            raise PreprocessError(f"{self.path}: spectrograms.npy has shape {self.specs.shape}, "
                                  f"manifest and config expect {(len(self.clips), *self.config.shape)}")
        self.rows = RowReader(self.specs.filename, self.specs.shape, self.specs.dtype, self.specs.offset)

    def __len__(self) -> int:
        return len(self.clips)

    @contextlib.contextmanager
    def hold(self) -> Iterator[Store]:
        """Keep the store from being rebuilt while in use (training): a shared lock on its ``config.json``
        (no extra file; read-only stores too), released when the block ends or the process dies."""
        try:
            f = open(self.path / LOCK, "rb") if fcntl is not None else None
        except OSError:
            f = None
        if f is None:
            yield self
            return
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PreprocessError(f"the store {self.path} is being rebuilt; try again when that ends") from None
            yield self

    def indices(self, split: str | None = None) -> list[int]:
        """Clip indices of one split ("train"/"test"), or all."""
        return [i for i, c in enumerate(self.clips) if split is None or c["split"] == split]

    def labels(self) -> list[str]:
        return sorted({c["label"] for c in self.clips if c["label"] is not None})

    def clip_name(self, i: int) -> str:
        c = self.clips[i]
        return f"{c['source']} @ {c['offset']:.2f}s" if c["offset"] else c["source"]

    def summary(self, reused: bool = False) -> StoreSummary:
        per_label: dict[str, Counter] = {}
        for c in self.clips:
            per_label.setdefault(c["label"] or "(unlabelled)", Counter())[c["split"]] += 1
        return StoreSummary(
            path=str(self.path),
            n_clips=len(self.clips),
            n_files=len({c["source"] for c in self.clips}),
            shape=self.config.shape,
            duration_s=len(self.clips) * self.config.duration,
            per_label={k: dict(v) for k, v in per_label.items()},
            skipped=[Skipped(**s) for s in self.meta.get("skipped", [])],
            silent_windows=self.meta.get("silent_windows", 0),
            reused=reused,
        )


def _read_json(path: Path) -> Any:
    """The JSON in a store file, or :class:`PreprocessError` naming the file and what to do."""
    if not path.is_file():
        raise PreprocessError(f"{path.parent} is not a dataset store (no {path.name}); create one with "
                              "`python -m vae preprocess` or pick another folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PreprocessError(f"cannot read {path} ({e.strerror or e}); check its permissions, "
                              "or pick another folder") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise PreprocessError(f"{path} is damaged (not valid JSON: {e}); {REBUILD}") from None


def _load_specs(path: Path) -> np.ndarray:
    """``spectrograms.npy`` as a read-only memory map, or :class:`PreprocessError`."""
    if not path.is_file():
        raise PreprocessError(f"{path.parent} is not a complete dataset store (no {path.name}); {REBUILD}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as e:
        raise PreprocessError(f"cannot read {path} ({e.strerror or e}); check its permissions, "
                              "or pick another folder") from None
    except (ValueError, EOFError) as e:  # not an .npy file, truncated, or pickled objects
        raise PreprocessError(f"{path} is damaged ({e}); {REBUILD}") from None


def find_audio(inputs: str | Path | Sequence[str | Path]) -> tuple[Path, list[Path], list[Skipped]]:
    """(root, audio files, skipped non-audio files) for a folder or a list of files."""
    missing: list[Skipped] = []  # listed files that do not exist
    if isinstance(inputs, (str, Path)):
        root = Path(inputs)
        if root.is_file():
            files = [root]
            root = root.parent
        elif root.is_dir():
            files, missing = _walk(root)
        else:
            raise PreprocessError(f"input {root} does not exist")
    else:
        given = sorted(Path(p) for p in inputs)
        if not given:
            raise PreprocessError("no input files given")
        files = [p for p in given if p.is_file()]
        missing = [Skipped(str(p), "file not found") for p in given if not p.is_file()]
        if not files:
            raise PreprocessError(f"none of the {len(given)} input files exist (e.g. {given[0]})")
        root = Path(os.path.commonpath([Path(os.path.abspath(p)).parent for p in files]))
    audio = [p for p in files if is_audio_path(p)]
    skipped = missing + [Skipped(str(p), f"unsupported format {p.suffix or '(no extension)'!r}")
                         for p in files if not is_audio_path(p)]
    if not audio:
        raise PreprocessError(f"no audio files found in {root} (looked for .wav, .flac, .ogg, .mp3, .aiff)")
    return root, audio, skipped


def _walk(root: Path) -> tuple[list[Path], list[Skipped]]:
    """(files, what was left out with its reason) under ``root``, hidden names skipped. Unreadable folders,
    broken or looping links and links to folders (not followed: they could lead outside the folder given,
    or round in a loop) are reported rather than silently dropped."""
    files: list[Path] = []
    left_out: list[Skipped] = []

    def unreadable(e: OSError) -> None:
        left_out.append(Skipped(str(e.filename), f"cannot read folder ({e.strerror or e})"))

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in [d for d in dirs if (here / d).is_symlink()]:
            dirs.remove(d)
            left_out.append(Skipped(str(here / d), "a link to a folder, not followed: give the folder itself"))
        for name in sorted(n for n in names if not n.startswith(".")):
            path = here / name
            if path.is_file():
                files.append(path)
            elif path.is_symlink():
                left_out.append(Skipped(str(path), "a broken or looping link"))
    return sorted(files), left_out


def fingerprint(cfg: SpectrogramConfig, root: Path, files: list[Path], test_fraction: float) -> str:
    """Hash of parameters and input files (path, size, mtime) deciding whether a store is reusable."""
    h = hashlib.sha256()
    params = {**cfg.to_dict(), "ref_db": None, "test_fraction": test_fraction, "version": STORE_VERSION}
    h.update(json.dumps(params, sort_keys=True).encode())
    for p in files:
        st = p.stat()
        h.update(f"{relative_name(p, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_store(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    cfg: SpectrogramConfig,
    progress: ProgressFn | None = None,
    test_fraction: float = 0.1,
    reuse: bool = True,
    max_bytes: int = MAX_STORE_BYTES,
    workers: int | None = 1,
) -> StoreSummary:
    """Preprocess audio files into a store at ``output``; return its summary.

    ``workers``: processes analysing files at once, 1 to 256 (at most one per file is started); None: one per
    usable CPU when the store is estimated at PARALLEL_MIN_BYTES or more, else 1 (:func:`auto_workers`). 1 does
    all the work in this process; more give the same store byte for byte, faster on several cores (see
    :mod:`.parallel`; a script using them must start under ``if __name__ == "__main__":``).
    Files that cannot be used are skipped with a reason (see ``StoreSummary.skipped``). Raises
    :class:`PreprocessError` when there is no audio at all or no file is usable, when the store would
    exceed ``max_bytes`` or the free disk space (estimated from the files' headers before any work), or
    while a training run holds the store at ``output`` (see :meth:`Store.hold`).
    """
    cfg.validate()
    check_test_fraction(test_fraction)
    if workers is not None:
        check_workers(workers)
    output = Path(output)
    if output.name in ("", ".."):  # "." or "..": a folder name for the temporary sibling
        output = Path(os.path.abspath(output))
    root, files, skipped = find_audio(inputs)
    try:
        _refuse_non_store(output)
        fp = fingerprint(cfg, root, files, test_fraction)
        if reuse and (reused := _reusable(output, fp)) is not None:
            return reused
        size = check_store_size(files, cfg, output, max_bytes)
        workers = min(auto_workers(size) if workers is None else workers, len(files))
        _remove_stale_tmp(output)
        with _exclusive(output):
            _write_store(root, files, skipped, output, cfg, fp, progress, test_fraction, workers)
    except OSError as e:  # an unwritable or full disk, a folder in the way, an input file gone meanwhile
        where = f": {e.filename}" if e.filename else ""
        raise PreprocessError(f"cannot build the store {output} ({e.strerror or e}{where}); check that its "
                              "folder is writable and has free space, or choose another output") from None
    return Store(output).summary()


# Starting the workers costs 3-5 s (fresh interpreters importing torch and torchaudio), so they pay off only for
# bigger stores. Measured on 2 cores (BENCHMARKS.md, "Data at scale"; ranges: other work on the machine): FSDD's
# 2,500 short files (digits preset, 0.12 GiB) took 3.8 s in one process and 5.5 s with two workers; 300 files of
# 30 s (music, 1.5 GiB) 8.7-21 s and 9.8-15 s; 2,100 of them (10.25 GiB) 115 s and 82 s.
PARALLEL_MIN_BYTES = 1 << 30


def auto_workers(store_bytes: int) -> int:
    """Workers for a store of about ``store_bytes``: one per usable CPU from PARALLEL_MIN_BYTES on, else 1."""
    return usable_cpus() if store_bytes >= PARALLEL_MIN_BYTES else 1


def check_test_fraction(fraction: float) -> float:
    """``fraction`` when it is a share of files to hold out for testing, else :class:`ConfigError`."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(f"test fraction must be a number from 0 (no test split) to below 1, got {fraction!r}")
    return fraction


def check_store_size(files: list[Path], cfg: SpectrogramConfig, output: Path, max_bytes: int = MAX_STORE_BYTES) -> int:
    """The estimated size of the store (bytes) from the files' durations (headers only); raises
    :class:`PreprocessError` when it is over ``max_bytes`` or does not fit on the disk of ``output``
    (building briefly needs twice the size: raw spectrograms, then the normalised ones)."""
    clips = 0
    for path in files:
        try:
            info = sf.info(str(path))
            seconds = info.frames / info.samplerate if info.samplerate > 0 else 0.0
        except Exception:  # unreadable headers are skipped later with their reason
            seconds = 0.0
        clips += 1 if cfg.windowing == "first" else max(1, math.floor(min(seconds, MAX_FILE_S) / cfg.duration + 0.5))
    size = clips * cfg.n_freq * cfg.n_frames * 4
    what = f"about {size / 2**30:.2f} GiB ({clips:,} clips of {cfg.n_freq} x {cfg.n_frames})"
    if size > max_bytes:
        raise PreprocessError(f"this store would take {what}; the limit is {max_bytes / 2**30:.0f} GiB. Raise it with "
                              "`sound-vae preprocess --max-store-gb N`, or use fewer files, a shorter duration or a "
                              "larger hop")
    parent = next(p for p in (output.absolute(), *output.absolute().parents) if p.exists())
    free = shutil.disk_usage(parent).free
    if 2 * size > free:
        raise PreprocessError(f"this store would take {what} and building it needs twice that, but {parent} has "
                              f"{free / 2**30:.2f} GiB free; free some space or choose another output")
    return size


def _remove_stale_tmp(output: Path) -> None:
    """Remove temporary siblings (``.<name>.tmp-<pid>``) left by builds that were killed."""
    for tmp in output.parent.glob(f".{output.name}.tmp-*"):
        if left_by_dead_writer(tmp.name):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(output: Path) -> Iterator[None]:
    """Hold the store at ``output`` exclusively while it is replaced; :class:`PreprocessError` when a
    training run holds it (:meth:`Store.hold`). Nothing to hold when there is no store yet."""
    lock = output / LOCK
    try:
        f = open(lock, "rb") if fcntl is not None else None
    except OSError:  # no store there yet
        f = None
    if f is None:
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PreprocessError(f"the store {output} is in use by a training run; wait for it to end or stop it, "
                                  "or build the new store under another name") from None
        yield


def _refuse_non_store(output: Path) -> None:
    """Never delete something that is not a store (e.g. ``--output`` pointing at an audio folder)."""
    if output.exists() and not (output / "config.json").is_file() and (not output.is_dir() or any(output.iterdir())):
        raise PreprocessError(f"output {output} exists and is not a dataset store; choose a new or empty folder")


def _reusable(output: Path, fp: str) -> StoreSummary | None:
    """The summary of the store at ``output`` if it was built from the same input and parameters."""
    if not (output / "config.json").is_file():
        return None
    try:
        store = Store(output)
    except PreprocessError:
        return None  # unreadable or damaged store: rebuild it
    return store.summary(reused=True) if store.meta.get("fingerprint") == fp else None


def _write_store(root: Path, files: list[Path], skipped: list[Skipped], output: Path, cfg: SpectrogramConfig,
                 fp: str, progress: ProgressFn | None, test_fraction: float, workers: int = 1) -> None:
    """Analyse ``files`` into a temporary sibling of ``output``, then rename it into place."""
    tmp = tmp_path(output)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
            clips, parts, n_silent = _analyse(root, files, cfg, tmp, skipped, progress, test_fraction, pool)
            if not clips:
                reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in skipped[:5])
                raise PreprocessError(f"none of the {len(files)} audio files in {root} could be used ({reasons})")
            cfg = _finalise(tmp, clips, parts, cfg, pool)
        for shard in tmp.glob("*.f32"):  # the raw rows, once the workers that wrote them have ended
            shard.unlink()
        meta = {
            "version": STORE_VERSION, "spectrogram": cfg.to_dict(), "input": str(root.resolve()),
            "fingerprint": fp, "test_fraction": test_fraction, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "skipped": [dataclasses.asdict(s) for s in skipped], "silent_windows": n_silent,
        }
        (tmp / "manifest.json").write_text(json.dumps(clips, indent=0))
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        if output.exists():
            shutil.rmtree(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _analysed(files: list[Path], cfg: SpectrogramConfig, tmp: Path, pool: Pool | None) -> Iterator[FileAnalysis]:
    """Each file's analysis, in order: here into one raw shard (``spectrograms.f32``), or by the pool's workers
    into theirs."""
    if pool is not None:
        yield from pool.in_order(analyse_task, ((str(p), cfg, str(tmp)) for p in files))
        return
    shard = RawShard(tmp / "spectrograms.f32")
    try:
        for path in files:
            yield analyse_file(path, cfg, shard)
    finally:
        shard.close()


def _analyse(root: Path, files: list[Path], cfg: SpectrogramConfig, tmp: Path, skipped: list[Skipped],
             progress: ProgressFn | None, test_fraction: float,
             pool: Pool | None = None) -> tuple[list[dict], list[FileAnalysis], int]:
    """Write every usable window's dB spectrogram to raw shards in ``tmp``; return the manifest entries, the
    analyses of the files that gave rows (where the rows are), and the number of silent windows left out."""
    labels: list[ClipLabel] = [parse_label(p, root) for p in files]
    splits = assign_splits(files, labels, root, test_fraction)
    clips: list[dict] = []
    parts: list[FileAnalysis] = []
    n_silent = 0
    with contextlib.closing(_analysed(files, cfg, tmp, pool)) as results:
        for k, (path, lab, split, res) in enumerate(zip(files, labels, splits, results)):
            rel = relative_name(path, root)
            n_silent += res.n_silent
            if res.reason is not None:
                skipped.append(Skipped(str(path), res.reason))
            elif res.rows:
                parts.append(res)
                clips += [{"source": rel, "offset": offset, "label": lab.label, "speaker": lab.speaker, "split": split,
                           "lo": lo, "hi": hi, "gain": res.gain, "db_max": db_max}
                          for offset, (lo, hi), db_max in zip(res.offsets, res.ranges, res.db_max)]
            if progress:
                progress(k + 1, len(files), rel)
    return clips, parts, n_silent


NORMALISE_BYTES = 32 << 20  # rows normalised per task: bounded memory, few tasks


def _finalise(tmp: Path, clips: list[dict], parts: list[FileAnalysis], cfg: SpectrogramConfig,
              pool: Pool | None = None) -> SpectrogramConfig:
    """Normalise the raw dB rows into ``spectrograms.npy`` (explicit reads and writes of at most NORMALISE_BYTES
    at a time, by the pool's workers when there is one); return cfg with ref_db set."""
    if cfg.normalisation == "global":
        train = [c["db_max"] for c in clips if c["split"] == "train"] or [c["db_max"] for c in clips]
        cfg = dataclasses.replace(cfg, ref_db=round(max(train), 3))
        lo, hi = cfg.ref_db - cfg.top_db, cfg.ref_db
        for c in clips:
            c["lo"], c["hi"] = lo, hi
    out = tmp / "spectrograms.npy"
    header = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(len(clips), *cfg.shape))
    offset, row_bytes = header.offset, cfg.n_freq * cfg.n_frames * 4
    del header  # the file has its header and size; the rows are written below
    ranges = [(c["lo"], c["hi"]) for c in clips]
    for c in clips:
        del c["db_max"]  # a build value, not kept in the manifest
    step = max(1, NORMALISE_BYTES // row_bytes)
    tasks: list[tuple] = []
    segments: list[Segment] = []
    row = n = 0  # the store's next row; rows in the task being gathered
    for part in parts:
        for first in range(0, part.rows, step):  # a long file's rows in pieces of at most NORMALISE_BYTES
            count = min(step, part.rows - first)
            segments.append((str(tmp / part.shard), part.first_row + first, ranges[row:row + count],
                             offset + row * row_bytes))
            row, n = row + count, n + count
            if n >= step:
                tasks.append((segments, str(out), cfg.shape))
                segments, n = [], 0
    if segments:
        tasks.append((segments, str(out), cfg.shape))
    if pool is None:
        for task in tasks:
            normalise_rows(*task)
    else:
        for _ in pool.in_order(normalise_rows, tasks):
            pass
    return cfg


def clip_db(store: Store, index: int) -> tuple[np.ndarray, float, float]:
    """The stored spectrogram of clip ``index`` in dB (F, T), with its (lo, hi) dB range."""
    c = store.clips[index]
    lo, hi = float(c["lo"]), float(c["hi"])
    return denormalise(torch.from_numpy(np.array(store.specs[index], dtype=np.float32)), lo, hi).numpy(), lo, hi


def clip_audio(store: Store, index: int, n_iter: int = 32) -> tuple[np.ndarray, int, bool]:
    """The audio of clip ``index``: ``(wave (n_samples,), sample_rate, from_source)``.

    Read from its source file (at the window's offset) when that file still exists; otherwise
    resynthesised from the stored spectrogram with Griffin-Lim (``from_source`` is then False).
    """
    if not 0 <= index < len(store):
        raise PreprocessError(f"clip {index} does not exist: the store has {len(store)} clips (0..{len(store) - 1})")
    cfg, c = store.config, store.clips[index]
    source = Path(store.meta.get("input", "")) / c["source"]
    if source.is_file():
        try:
            wave = load_audio(source, cfg.sample_rate)
            start = round(float(c["offset"]) * cfg.sample_rate)
            wave = fit_length(wave[start:], cfg.n_samples) * float(c.get("gain", 1.0))
            return wave.astype(np.float32), cfg.sample_rate, True
        except AudioError:
            pass  # fall back to the spectrogram
    db, _, _ = clip_db(store, index)
    wave = to_audio(torch.from_numpy(db), cfg, phase="griffinlim", n_iter=n_iter).numpy()
    return wave.astype(np.float32), cfg.sample_rate, False
