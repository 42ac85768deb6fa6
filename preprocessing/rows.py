"""Rows of an array file read and written with explicit positioned I/O: bounded memory for stores larger than RAM.

Indexing a memory map copies the rows out, but every page it touched stays mapped into the process and counts
in its resident memory (``RssFile`` in ``/proc/PID/status``) until the kernel reclaims it, so an epoch over a
10 GB store read through the map shows up to 10 GB of RSS. Reading the rows with ``pread`` into a new array
keeps only that array; the file's pages stay in the OS cache, shared and not counted against the process.
Measured on a 10.25 GiB store (benchmarks/bench_scale.py, BENCHMARKS.md).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .errors import UserError


class RowsError(UserError):
    """An array file is shorter than its header says, or changed since it was opened."""


_LOCK = threading.Lock()  # seek + read/write where there is no pread/pwrite; opening a reader's file


def read_into(fd: int, buf: memoryview, offset: int) -> None:
    """Fill ``buf`` from ``fd`` at byte ``offset`` (positioned: the file position is not used or moved)."""
    done = 0
    while done < len(buf):
        if hasattr(os, "preadv"):  # straight into the array, no intermediate bytes
            n = os.preadv(fd, [buf[done:]], offset + done)
        else:  # Windows has no positioned reads in os
            n = _read_at(fd, buf[done:], offset + done)
        if n <= 0:
            raise RowsError(f"file ends at byte {offset + done}, {len(buf) - done} bytes short")
        done += n


def write_at(fd: int, data: np.ndarray, offset: int) -> None:
    """Write the C-contiguous array ``data`` to ``fd`` at byte ``offset`` (positioned, like :func:`read_into`)."""
    buf = memoryview(np.ascontiguousarray(data)).cast("B")
    done = 0
    while done < len(buf):
        if hasattr(os, "pwritev"):
            done += os.pwritev(fd, [buf[done:]], offset + done)
        else:
            with _LOCK:
                os.lseek(fd, offset + done, os.SEEK_SET)
                done += os.write(fd, buf[done:])


def _read_at(fd: int, buf: memoryview, offset: int) -> int:
    with _LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        data = os.read(fd, len(buf))
    buf[:len(data)] = data
    return len(data)


class RowReader:
    """Rows of a C-ordered ``.npy`` file (N, ...) read on demand: ``reader[rows]`` is a new array
    (len(rows), ...) for a list or array of row indices (any order, repeats allowed), or one row for an int.

    Consecutive indices are read with one call. The file is opened at the first read and checked against the
    shape and dtype given (those of the memory map the store opened), so a store rebuilt meanwhile with other
    contents is refused rather than read.
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: np.dtype, offset: int):
        self.path = Path(path)
        self.shape, self.dtype, self.offset = tuple(shape), np.dtype(dtype), int(offset)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def _open(self) -> int:
        with _LOCK:  # one file per reader, also when threads (a prefetching one) read at once
            if self._fd is None:
                self._fd = self._checked_fd()
        return self._fd

    def _checked_fd(self) -> int:
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        size = os.fstat(fd).st_size
        if size != self.offset + self.nbytes:
            os.close(fd)
            raise RowsError(f"{self.path} changed since it was opened ({size:,} bytes, expected "
                            f"{self.offset + self.nbytes:,}); open the store again")
        return fd

    def __getitem__(self, rows: int | list[int] | np.ndarray) -> np.ndarray:
        one = isinstance(rows, int | np.integer)
        idx = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if idx.ndim != 1:
            raise IndexError(f"row indices must be one-dimensional, got shape {idx.shape}")
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        if not out.size:
            return out[0] if one else out
        buf = memoryview(out).cast("B")
        fd = self._open()
        start = 0
        for end in range(1, len(idx) + 1):  # runs of consecutive rows: one read each
            if end == len(idx) or idx[end] != idx[end - 1] + 1:
                read_into(fd, buf[start * self.row_bytes:end * self.row_bytes],
                          self.offset + int(idx[start]) * self.row_bytes)
                start = end
        return out[0] if one else out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable (and deep-copyable): the copy opens its own file
        return {**self.__dict__, "_fd": None}
