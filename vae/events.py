"""A training run's event log: one JSON object per line in ``<run>/events.jsonl``, and its lock.

``python -m vae train`` writes the log while it trains; anything that wants to follow the run (the
app, a script, a person with ``tail -f``) reads it. The records:

- ``start``: a training process began (``pid``, ``data``, ``resume``, and ``history``: the epochs
  trained before, when resuming); a log holds one per start or resume, the last one is current;
- ``step``, ``epoch``, ``done``, ``stopped``: a :class:`~vae.train.TrainEvent`'s fields (steps at most
  every ``step_every_s``, and every epoch's last). An epoch's preview is a float32 array (2, F, T)
  (original, reconstruction) in ``<run>/previews/epoch-NNNN.npy``, named by the record's ``preview``
  entry; the two latest are kept. Read with ``np.load(..., allow_pickle=False)``; nothing is pickled;
- ``error``: training failed (``error``: the message; ``user``: true for a
  :class:`~preprocessing.errors.UserError`, false for a bug, whose traceback goes to stderr).

Every record has ``t``, the wall-clock time (``time.time()``). While a process writes a run it holds
an exclusive ``flock`` on ``<run>/train.lock`` (which also holds its pid): a second process cannot
write the same run, and :func:`lock_holder` tells whether a run is live, even after ``kill -9``
(the kernel drops the lock with the process).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from preprocessing.errors import UserError

from .checkpoint import atomic_write
from .train import Preview, TrainEvent, TrainingError

try:
    import fcntl
except ImportError:  # Windows: no locks, so runs cannot be found live by another process
    fcntl = None  # type: ignore[assignment]

EVENTS, LOCK, PREVIEWS = "events.jsonl", "train.lock", "previews"
KEEP_PREVIEWS = 2
FIELDS = tuple(f.name for f in dataclasses.fields(TrainEvent) if f.name != "preview")


def lock_holder(run: str | Path) -> int | None:
    """The pid of the process training ``run`` now (0 if it has not written its pid yet), or None when
    no process holds the run's lock."""
    path = Path(run) / LOCK
    if fcntl is None or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = path.read_text().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class EventLog:
    """Writes ``<run>/events.jsonl`` and holds the run's lock, as a context manager. ``enabled=False``
    (the other ranks of a multi-process run) writes and locks nothing."""

    def __init__(self, run: str | Path, step_every_s: float = 0.5, enabled: bool = True):
        self.run, self.step_every_s, self.enabled = Path(run), step_every_s, enabled
        self._file: Any = None
        self._lock_fd: int | None = None
        self._last_step = -float("inf")

    def __enter__(self) -> EventLog:
        if not self.enabled:
            return self
        self.run.mkdir(parents=True, exist_ok=True)
        if fcntl is not None:
            fd = os.open(self.run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise TrainingError(f"another training process (pid {lock_holder(self.run)}) is writing to "
                                    f"{self.run}; stop it first, or train into another folder") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._lock_fd = fd
        self._file = open(self.run / EVENTS, "a", encoding="utf-8")  # closed in __exit__
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor releases the lock
            self._lock_fd = None

    def _put(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({**record, "t": round(time.time(), 3)}) + "\n")
            self._file.flush()

    def start(self, **info: Any) -> None:
        """The ``start`` record of this process (``info``: data, resume, history, ...)."""
        self._put({"kind": "start", "pid": os.getpid(), **info})

    def write(self, ev: TrainEvent) -> None:
        """Record ``ev`` (a step only if ``step_every_s`` has passed since the last, or it ends an epoch)."""
        if ev.kind == "step":
            now = time.monotonic()
            if now - self._last_step < self.step_every_s and ev.step != ev.steps:
                return
            self._last_step = now
        record = {k: getattr(ev, k) for k in FIELDS}
        if ev.preview is not None and self._file is not None:
            record["preview"] = self._save_preview(ev.epoch, ev.preview)
        self._put(record)

    def error(self, exc: BaseException) -> None:
        """The ``error`` record of a failed run."""
        self._put({"kind": "error", "error": str(exc) or type(exc).__name__, "user": isinstance(exc, UserError),
                   "type": type(exc).__name__})

    def _save_preview(self, epoch: int, p: Preview) -> dict[str, Any]:
        folder = self.run / PREVIEWS
        folder.mkdir(exist_ok=True)
        name = f"epoch-{epoch:04d}.npy"
        arr = np.stack([np.asarray(p.original, np.float32), np.asarray(p.reconstruction, np.float32)])

        def save(path: Path) -> None:
            with open(path, "wb") as f:
                np.save(f, arr, allow_pickle=False)

        atomic_write(folder / name, save)
        for old in sorted(folder.glob("epoch-*.npy"))[:-KEEP_PREVIEWS]:
            old.unlink(missing_ok=True)
        return {"index": int(p.index), "name": p.name, "file": f"{PREVIEWS}/{name}"}


class EventReader:
    """Reads the records of ``<run>/events.jsonl`` as they are written: each :meth:`read` returns the
    complete lines added since the last one. ``from_last_start``: begin at the log's last ``start``
    record (the current or latest training process) instead of at ``offset``."""

    def __init__(self, run: str | Path, offset: int = 0, from_last_start: bool = False):
        self.path = Path(run) / EVENTS
        self.offset = offset
        self._partial = b""
        if from_last_start:
            self.offset = last_start_offset(self.path)

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [r for r in map(_parse, lines) if r is not None]


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:  # a torn or foreign line: skip it
        return None
    return record if isinstance(record, dict) and isinstance(record.get("kind"), str) else None


def last_start_offset(path: Path) -> int:
    """Byte offset of the last ``start`` record in the log at ``path`` (0 when it has none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    at = data.rfind(b'{"kind": "start"')
    while at > 0 and data[at - 1:at] != b"\n":  # only at the beginning of a line
        at = data.rfind(b'{"kind": "start"', 0, at)
    return max(at, 0)


def to_event(record: dict[str, Any], run: str | Path) -> TrainEvent:
    """The :class:`TrainEvent` of a step/epoch/done/stopped record, its preview loaded (None when its file
    is gone: only the latest previews are kept)."""
    ev = TrainEvent(**{k: record[k] for k in FIELDS if k in record})
    ref = record.get("preview")
    if isinstance(ref, dict):
        path = Path(run) / str(ref.get("file", ""))
        if path.is_file() and path.resolve().is_relative_to(Path(run).resolve()):
            arr = np.load(path, allow_pickle=False)
            ev.preview = Preview(int(ref["index"]), str(ref["name"]), arr[0], arr[1])
    return ev
