"""One audio file -> the dB spectrograms of its usable windows: the per-file step of building a store.

The same function runs in the building process (one worker) or in worker processes (:mod:`.parallel`), so the
two give the same bytes. The spectrograms go to a :class:`RawShard`, an append-only file of float32 rows
(F x T each; one a process), which the store's last step normalises into ``spectrograms.npy``
(:func:`normalise_rows`): the normalisation needs the loudest level of the whole training split first.

Computing each file twice instead, a first pass for its levels and a second writing its rows normalised in
place, would halve what is written but cost another STFT a file: tried on 2 cores and a 10 GB store, it was
slower (102.6 s against 81.8-93.3 s; the CPU, not the disk, was the limit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import AudioError, is_silent, load_audio, peak, windows
from .config import SpectrogramConfig
from .rows import read_into, write_at
from .spectrogram import db_range, log_spectrogram


@dataclass
class FileAnalysis:
    """What one file gave: its kept windows' manifest values, and where their raw dB rows are."""

    offsets: list[float] = field(default_factory=list)  # window starts, s (rounded to 0.1 ms)
    ranges: list[tuple[float, float]] = field(default_factory=list)  # (lo, hi) dB per window ("clip"), else (0, 0)
    db_max: list[float] = field(default_factory=list)  # loudest dB per window (sets a "global" store's ref_db)
    gain: float = 1.0  # the peak normalisation applied to the file
    n_silent: int = 0  # windows left out as silent
    reason: str | None = None  # why the file is skipped (an AudioError), else None
    shard: str = ""  # file name of the RawShard holding the rows, in the build folder
    first_row: int = 0  # the first row there; the file's rows are consecutive

    @property
    def rows(self) -> int:
        return len(self.offsets)


DROP_BEHIND = 32 << 20  # bytes of a raw shard kept in the OS cache behind its end (Linux; see RawShard.append)


class RawShard:
    """An append-only file of float32 rows (n_freq x n_frames each), written unbuffered (so another process
    can read what was appended as soon as :meth:`append` returns)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
        self.rows = 0
        self.bytes = 0

    def append(self, spec: np.ndarray) -> int:
        """Write one row (F, T) as float32; return its row number."""
        row = np.ascontiguousarray(spec, dtype=np.float32)
        write_at(self.fd, row, self.bytes)
        before, self.rows, self.bytes = self.bytes, self.rows + 1, self.bytes + row.nbytes
        if self.bytes // DROP_BEHIND > before // DROP_BEHIND and hasattr(os, "posix_fadvise"):
            # the rows are read back once, at the end: have the OS write out and drop what lies more than
            # DROP_BEHIND behind the end (each page gets three chances, once it is written) rather than fill its
            # cache with them; reclaiming that cache under the writes cost more CPU than the STFTs on a 10 GB store
            start = max(0, self.bytes - 4 * DROP_BEHIND)
            os.posix_fadvise(self.fd, start, max(0, self.bytes - DROP_BEHIND - start), os.POSIX_FADV_DONTNEED)
        return self.rows - 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def spectrograms(path: Path, cfg: SpectrogramConfig) -> tuple[FileAnalysis, list[np.ndarray]]:
    """Cut ``path`` into windows: the manifest values of the usable ones and their dB spectrograms (F, T) (views
    of one array). A file that cannot be used gives ``reason`` (and no windows) instead of raising."""
    res = FileAnalysis()
    try:
        wave = load_audio(path, cfg.sample_rate, min_samples=cfg.n_fft)
        if is_silent(wave):
            raise AudioError(path, "all-silent audio (peak below -80 dBFS)")
        res.gain = 1.0 / peak(wave) if cfg.peak_normalise else 1.0
        all_wins = windows(wave * res.gain, cfg.n_samples, cfg.windowing)
        wins = [(o, w) for o, w in all_wins if not is_silent(w)]
        res.n_silent = len(all_wins) - len(wins)
        if not wins:
            raise AudioError(path, "all windows are silent")
        db = log_spectrogram(np.stack([w for _, w in wins]), cfg).numpy()  # (W, F, T)
    except AudioError as e:
        res.reason = e.reason  # n_silent stays: a file whose windows are all silent counts them, as before
        return res, []
    kept = []
    for (offset, _), spec in zip(wins, db):
        lo, hi = db_range(torch.from_numpy(spec), cfg) if cfg.normalisation == "clip" else (0.0, 0.0)
        if cfg.normalisation == "clip" and not hi > lo:
            res.n_silent += 1
            continue
        kept.append(spec)
        res.offsets.append(round(offset / cfg.sample_rate, 4))
        res.ranges.append((lo, hi))
        res.db_max.append(float(spec.max()))
    return res, kept


def analyse_file(path: Path, cfg: SpectrogramConfig, shard: RawShard) -> FileAnalysis:
    """:func:`spectrograms` of ``path``, appended to ``shard`` (the one-process build: one pass, then the rows
    are normalised from the shard)."""
    first_row = shard.rows
    res, specs = spectrograms(path, cfg)
    for spec in specs:
        shard.append(spec)
    res.shard, res.first_row = shard.path.name, first_row
    return res


def _normalise(rows: np.ndarray, ranges: list[tuple[float, float]]) -> None:
    """Rows (N, F, T) of dB, in place: ``np.clip((row - lo) / (hi - lo), 0, 1)`` in float32 for each row's Python
    floats (lo, hi), the arithmetic of a row at a time."""
    lo = np.array([r[0] for r in ranges], dtype=np.float32)[:, None, None]
    span = np.array([hi - lo for lo, hi in ranges], dtype=np.float32)[:, None, None]  # float64, then cast
    np.subtract(rows, lo, out=rows)
    np.divide(rows, span, out=rows)
    np.clip(rows, 0.0, 1.0, out=rows)


Segment = tuple[str, int, list[tuple[float, float]], int]  # (raw shard, first row, (lo, hi) dB per row, out byte)


def normalise_rows(segments: list[Segment], out: str, shape: tuple[int, int]) -> None:
    """For each segment, read its raw dB rows (F, T) from the shard, map each row's (lo, hi) dB to [0, 1]
    (clipped) and write them into ``out`` at the segment's byte offset. The arithmetic is float32 as in
    ``np.clip((row - lo) / (hi - lo), 0, 1)`` with Python floats lo and hi, row by row: the same bytes."""
    binary = getattr(os, "O_BINARY", 0)
    fds: dict[str, int] = {}
    out_fd = os.open(out, os.O_WRONLY | binary)
    try:
        for src, first, ranges, out_offset in segments:
            if src not in fds:
                fds[src] = os.open(src, os.O_RDONLY | binary)
            rows = np.empty((len(ranges), *shape), dtype=np.float32)
            read_into(fds[src], memoryview(rows).cast("B"), first * (rows.nbytes // len(ranges)))
            if os.environ.get("EXP_READ_DROP"):
                os.posix_fadvise(fds[src], first * (rows.nbytes // len(ranges)), rows.nbytes, os.POSIX_FADV_DONTNEED)
            _normalise(rows, ranges)
            write_at(out_fd, rows, out_offset)
            if os.environ.get("EXP_OUT_DROP"):
                os.posix_fadvise(out_fd, max(0, out_offset - 4 * DROP_BEHIND), 3 * DROP_BEHIND, os.POSIX_FADV_DONTNEED)
    finally:
        for fd in (out_fd, *fds.values()):
            os.close(fd)
