"""Training as its own process: ``python -m vae train ...`` (or torchrun with N processes), started at a
lower priority with its own thread count, its output in ``<run>/train.log``.

:class:`TrainProcess` is a process this app started; :class:`AdoptedProcess` one found running after a
restart (by the lock its ``train`` verb holds on the run, :func:`vae.events.lock_holder`). Both say
whether the process has ended, stop it with SIGTERM (the verb then saves ``<run>/last``), and explain an
end without a final report (exit status or signal, and the last lines of ``train.log``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed

import vae
from vae.cli import train_argv
from vae.events import lock_holder

LOG = "train.log"  # the training process's stdout and stderr, in the run folder
NICE = 10  # added to the app's niceness: the app's requests come first
TAIL_LINES = 6


def default_threads() -> int:
    """Torch threads for a training process: the cores the app's own threads leave (at least 1)."""
    return max(1, (os.cpu_count() or 2) - torch.get_num_threads())


def torchrun_available() -> bool:
    """Whether ``torchrun`` (``torch.distributed.run``) can start training processes here."""
    return torch.distributed.is_available() and importlib.util.find_spec("torch.distributed.run") is not None


def command(data: str | Path, output: str | Path, arch: str | None, resume: bool, threads: int, processes: int,
            overrides: dict[str, Any]) -> list[str]:
    """The command line of a training process: ``python -m vae train ...``, or with ``processes`` > 1
    ``python -m torch.distributed.run --standalone --nproc_per_node N -m vae train ...`` (torchrun)."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return [*launcher, "-m", "vae", *train_argv(data, output, arch, resume, threads, **overrides)]


def child_env(threads: int) -> dict[str, str]:
    """The environment of a training process: this code first on the path (so it runs what the app runs),
    ``threads`` OpenMP/MKL threads, and a quiet progress bar (its log is a file)."""
    root = str(Path(vae.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TQDM_MININTERVAL": "30", "PYTHONUNBUFFERED": "1"}


def log_tail(run: str | Path, lines: int = TAIL_LINES) -> str:
    """The last lines of ``<run>/train.log``, progress-bar redraws removed ("" when there is none)."""
    try:
        with open(Path(run) / LOG, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln.rsplit("\r", 1)[-1].strip() for ln in text.splitlines()]
    return "\n".join([ln for ln in kept if ln][-lines:])


def _ended_text(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def autogroup(pid: int | str) -> tuple[str, int] | None:
    """``(name, nice)`` of the autogroup process ``pid`` is scheduled in, or None where there is none: not
    Linux, autogroups off, or a process in a cgroup of its own (containers), whose file is empty."""
    try:
        fields = Path(f"/proc/{pid}/autogroup").read_text().split()  # "/autogroup-594 nice 0"
        return fields[0], int(fields[-1])
    except (OSError, ValueError, IndexError):
        return None


def lower_priority(pid: int, nice: int) -> None:
    """Make process ``pid`` ``nice`` steps nicer than this one. On Linux with autogroups (the default on
    desktops and many servers) a new session is scheduled as its own group, beside this one, and a nice
    value only counts within its group: so the group's nice (``/proc/PID/autogroup``) is raised too."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, 0) + nice)
        theirs, ours = autogroup(pid), autogroup("self")
        if theirs and ours and theirs[0] != ours[0]:
            Path(f"/proc/{pid}/autogroup").write_text(str(min(19, ours[1] + nice)))
    except (OSError, AttributeError):  # ended already, or not Linux: it runs as it is
        pass


class TrainProcess:
    """A training process this app started (its own session, so a Ctrl-C of the app does not reach it, and
    it outlives the app: a restarted app adopts it)."""

    def __init__(self, argv: list[str], run: Path, threads: int, nice: int = NICE):
        self.run = run
        run.mkdir(parents=True, exist_ok=True)
        with open(run / LOG, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=child_env(threads), start_new_session=True)
        self.pid = self.proc.pid
        if nice:  # before torch is even imported there: no race that matters
            lower_priority(self.pid, nice)

    def ended(self) -> bool:
        return self.proc.poll() is not None

    def terminate(self) -> None:
        """SIGTERM: the train verb (or torchrun, which passes it on) saves ``last/`` and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def failure(self) -> str:
        """Why the process ended without a final report."""
        return failure_text(self.run, _ended_text(self.proc.wait()))


class AdoptedProcess:
    """A training process found running on ``run`` (started by an earlier app, or from a terminal)."""

    def __init__(self, run: Path, pid: int):
        self.run, self.pid = run, pid

    def ended(self) -> bool:
        return lock_holder(self.run) is None

    def terminate(self) -> None:
        pid = lock_holder(self.run)
        if pid:  # never 0: that would signal our own process group
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def failure(self) -> str:
        return failure_text(self.run, "ended")


def failure_text(run: Path, how: str) -> str:
    tail = log_tail(run)
    where = f"; the end of {run / LOG}:\n{tail}" if tail else ""
    return f"the training process {how} without a final report{where}"
