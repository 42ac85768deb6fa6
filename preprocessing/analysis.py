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


# Building a store writes it twice (raw rows, then normalised) and reads it once: 22 GB for a 10 GB store. Left
# to itself, the OS keeps all of it in its cache until memory runs out, then reclaims it page by page under the
# writes, in the writing processes: on 2 cores and 23 GB of RAM that cost more CPU than the STFTs (system time
# 12 ms a 30 s file, against 2 ms). So the build tells the OS (posix_fadvise, where there is one) to drop what it
# has read, and what it wrote more than DROP_BEHIND bytes ago (written out by then: each page gets three tries).
# Measured on 2,100 files of 30 s with 2 workers: analysis 79.5 s -> 28-32 s, normalising 15 s -> 12 s (sys time
# 37 s -> 14 s). The new store is then mostly not in the cache: training reads it from the disk.
DROP_BEHIND = 32 << 20


def drop_cached(fd: int, start: int, length: int) -> None:
    """Ask the OS to drop the file's cached pages in [start, start + length) (those written out; a hint)."""
    if hasattr(os, "posix_fadvise") and length > 0:
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)


def drop_behind(fd: int, end: int) -> None:
    """:func:`drop_cached` for what lies DROP_BEHIND to 4 x DROP_BEHIND bytes before ``end``."""
    start = max(0, end - 4 * DROP_BEHIND)
    drop_cached(fd, start, end - DROP_BEHIND - start)


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
        if self.bytes // DROP_BEHIND > before // DROP_BEHIND:  # every DROP_BEHIND bytes
            drop_behind(self.fd, self.bytes)
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
            at = first * (rows.nbytes // len(ranges))
            read_into(fds[src], memoryview(rows).cast("B"), at)
            drop_cached(fds[src], at, rows.nbytes)  # read once
            _normalise(rows, ranges)
            write_at(out_fd, rows, out_offset)
            drop_behind(out_fd, out_offset)
    finally:
        for fd in (out_fd, *fds.values()):
            os.close(fd)
