"""Training in the background: one job at a time, observable from any page, any reload and any restart.

By default the :class:`TrainingJobs` manager starts each job as its own process, ``python -m vae train``
(:mod:`studio.train_process`: lower priority, its own thread count), and follows the event log that
process writes in the run folder (:mod:`vae.events`); with a ``train_fn`` it runs that generator in a
thread of the app instead (the tests' scripted loops). Either way it records what training reports
(progress, per-epoch history, the latest preview). The app polls :meth:`TrainingJobs.snapshot`, so a
page reload simply reads the state again: nothing about the job lives in a browser session, and
:meth:`TrainingJobs.attach` finds a run still training after the app restarts. Stop sends SIGTERM (or sets
a :class:`threading.Event`); training then saves ``<run>/last`` and ends, and :meth:`TrainingJobs.resume`
continues from there. A crashed training process is a job in the "error" state, never a crashed app.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from preprocessing.audio import limit_peak
from preprocessing.config import ConfigError, SpectrogramConfig
from preprocessing.errors import UserError
from preprocessing.spectrogram import denormalise, to_audio
from preprocessing.store import PreprocessError, Store
from vae.checkpoint import CheckpointConfig, CheckpointError, load_config, resumable
from vae.events import EVENTS, EventReader, lock_holder, to_event
from vae.train import STOP_REQUESTED, RunConfig, TrainEvent, resolve_configs

from .train_process import LOG, NICE, AdoptedProcess, TrainProcess, command, default_threads

log = logging.getLogger(__name__)
JobStatus = Literal["idle", "running", "stopping", "done", "stopped", "error"]
TrainFn = Callable[..., Iterator[TrainEvent]]
Process = TrainProcess | AdoptedProcess


class JobBusy(UserError):
    """A training job is already running; only one runs at a time."""


@dataclass
class JobPreview:
    """The latest preview: a validation clip and its reconstruction after ``epoch``, ready to plot and play."""

    index: int  # clip index in the store
    name: str
    epoch: int
    lo: float  # the clip's dB range: [0, 1] maps to [lo, hi]
    hi: float
    config: SpectrogramConfig
    original: np.ndarray  # (F, T) in [0, 1]
    reconstruction: np.ndarray  # (F, T) in [0, 1]


@dataclass
class JobState:
    """What the app shows about the current (or last) training job. A copy: safe to read freely."""

    status: JobStatus = "idle"
    run: str = ""  # run name (the output folder's name)
    output: str = ""
    data: str = ""
    resumed: bool = False
    epoch: int = 0  # epochs completed
    epochs: int = 0
    step: int = 0  # steps done in the epoch after ``epoch`` (0 at an epoch's end)
    steps: int = 0  # steps per epoch (0 until the first event)
    samples_per_s: float = 0.0
    eta_s: float = 0.0
    elapsed_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: {"epoch", "train", "val"}
    current: dict[str, Any] | None = None  # the running epoch: {"epoch": fractional, "train": {...}}
    preview: JobPreview | None = None
    preview_version: int = 0
    message: str = ""
    error: str = ""
    pid: int = 0  # the training process (0: in this process, or not known)
    version: int = 0  # increases with every change, so pollers can skip redraws
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ("running", "stopping")

    @property
    def within_epoch(self) -> bool:
        """True between an epoch's first step and its end (validation included)."""
        return self.step > 0 and self.steps > 0

    @property
    def fraction(self) -> float:
        """Share of the run's epochs done, steps included: 1.0 for a finished run."""
        done = self.epoch + (self.step / self.steps if self.within_epoch else 0.0)
        return min(1.0, done / max(1, self.epochs))

    def progress_text(self) -> str:
        """One line for people: what is happening, how fast, how long is left."""
        if self.status == "idle":
            return "No training job yet. Pick a store and press Start."
        if self.status == "error":
            return f"Training of {self.run} failed: {self.error}"
        if self.status == "done":
            took = _duration(self.elapsed_s)
            return f"{self.run}: epoch {self.epoch}/{self.epochs}: finished in {took}. {self.message}"
        if self.status == "stopped":
            where = (f"at epoch {self.epoch + 1}/{self.epochs} (step {self.step} of {self.steps})"
                     if self.within_epoch else f"after epoch {self.epoch}/{self.epochs}")
            why = f"{self.message}: stopped" if self.message else "stopped"
            return f"{self.run}: {why} {where}; Resume continues from there"
        if self.status == "running" and not self.steps:  # no event yet
            return self.message or f"{self.run}: starting..."
        where = (f"epoch {self.epoch + 1}/{self.epochs}, step {self.step}/{self.steps}" if self.within_epoch
                 else f"epoch {self.epoch}/{self.epochs}")
        speed = f", {self.samples_per_s:.0f} samples/s" if self.samples_per_s else ""
        eta = f", about {_duration(self.eta_s)} left" if self.eta_s else ""
        what = "stopping after this step (saving a checkpoint)" if self.status == "stopping" else "training"
        return f"{self.run}: {where}{speed}{eta}: {what}"


def _duration(s: float) -> str:
    s = round(s)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def run_progress(output: str | Path) -> tuple[int, int]:
    """(epochs trained, epochs configured) of the run in ``output``, from ``output/last``; raises
    :class:`CheckpointError` when it has no saved state."""
    last = load_config(Path(output) / "last")
    return int(last.meta.get("epoch", 0)), last.train_cfg.epochs


class _Previews:
    """Turns a training preview into a :class:`JobPreview`: the clip's dB range and the store's settings."""

    def __init__(self, data: Path):
        store = Store(data)
        self.config = store.config
        self.ranges = {i: (float(c["lo"]), float(c["hi"])) for i, c in enumerate(store.clips)}

    def __call__(self, ev: TrainEvent) -> JobPreview:
        p = ev.preview
        lo, hi = self.ranges.get(int(p.index), (0.0, 1.0))
        return JobPreview(p.index, p.name, ev.epoch, lo, hi, self.config, p.original, p.reconstruction)


class TrainingJobs:
    """Runs at most one training job at a time: as its own process (``train_fn`` None, the app's default;
    ``threads``: its torch threads, default :func:`~studio.train_process.default_threads`; ``nice``: added
    to its niceness), or, with ``train_fn``, in a background thread (tests)."""

    def __init__(self, train_fn: TrainFn | None = None, step_every_s: float = 0.25, *, threads: int | None = None,
                 nice: int = NICE, poll_s: float = 0.25):
        self._train_fn = train_fn
        self._lock = threading.Lock()
        self._state = JobState()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._proc: Process | None = None
        self._started = False  # the process has logged its start: its signal handlers are in place
        self._step_every_s = step_every_s  # in a thread, step events are frequent; record at most this often
        self._threads, self._nice, self._poll_s = threads, nice, poll_s

    # ----- control -----

    def start(self, data: str | Path, output: str | Path, resume: bool = False, arch: str = "default",
              processes: int = 1, **overrides: Any) -> JobState:
        """Start training ``data`` into ``output`` in the background (continuing ``output/last`` with
        ``resume``; ``processes`` > 1: through torchrun). Bad hyperparameters, store or device raise here,
        before the job starts; a running job raises :class:`JobBusy`."""
        data, output = Path(data), Path(output)
        with self._lock:
            self._check_free(output)
            if processes < 1 or (processes > 1 and self._train_fn is not None):
                raise ConfigError(f"processes must be 1, or more for a training process, got {processes}")
            last = load_config(output / "last") if resume else None
            cfg = resolve_configs(Store(data), arch, last=last, **overrides)  # checks the device, once
            if last is not None and cfg.train.epochs <= cfg.epochs_done:
                raise ConfigError(f"{output.name} has already trained {cfg.epochs_done} epochs: "
                                  f"set Epochs above {cfg.epochs_done} to continue")
            state = self._initial_state(data, output, cfg, last, overrides)
            self._stop = threading.Event()
            if self._train_fn is None:
                self._thread = self._launch(data, output, resume, arch, processes, overrides)
                state.pid = self._proc.pid
            else:
                self._proc = None
                self._thread = threading.Thread(target=self._run, args=(data, output, cfg, resume, self._stop),
                                                name=f"train-{output.name}", daemon=True)
            self._state = state
            self._thread.start()
            return copy.deepcopy(self._state)

    def _check_free(self, output: Path) -> None:
        if self._thread is not None and self._thread.is_alive():
            s = self._state
            raise JobBusy(f"a training job is already running ({s.run}, epoch {s.epoch}/{s.epochs}); "
                          "only one runs at a time: stop it or wait for it to finish")
        pid = lock_holder(output)
        if pid is not None:
            raise JobBusy(f"{output.name} is being trained by another process (pid {pid}); stop it or wait for it")

    def _launch(self, data: Path, output: Path, resume: bool, arch: str, processes: int,
                overrides: dict[str, Any]) -> threading.Thread:
        """Start the training process; the thread that follows its log (not started)."""
        threads = self._threads or default_threads()
        log = output / EVENTS
        reader = EventReader(output, offset=log.stat().st_size if log.is_file() else 0)
        self._proc = TrainProcess(command(data, output, arch, resume, threads, processes, overrides), output,
                                  threads, self._nice)
        self._started = False
        return threading.Thread(target=self._watch, args=(self._proc, reader, data, []), name=f"watch-{output.name}",
                                daemon=True)

    def _initial_state(self, data: Path, output: Path, cfg: RunConfig, last: CheckpointConfig | None,
                       overrides: dict[str, Any]) -> JobState:
        name, done, epochs = output.name, cfg.epochs_done, cfg.train.epochs
        history = _history(last.meta.get("history", []) if last else [])
        message = (f"Resuming {name} from epoch {done} to {epochs}" if last
                   else f"Starting {name}: {epochs} epoch{'s' if epochs != 1 else ''}")
        return JobState(status="running", run=name, output=str(output), data=str(data), resumed=last is not None,
                        epoch=done, epochs=epochs, history=history, params=dict(overrides), message=message,
                        version=self._state.version + 1, preview_version=self._state.preview_version)

    def attach(self, runs_dir: str | Path) -> JobState:
        """Follow a training process still running on a run in ``runs_dir`` (after a restart of the app;
        the newest if several), or, when none runs, show the newest run's last state from its log. Does
        nothing while a job of this manager runs."""
        logs = []
        for log in Path(runs_dir).glob(f"*/{EVENTS}"):
            try:
                logs.append((log.stat().st_mtime, log.parent))
            except OSError:
                continue
        runs = [run for _, run in sorted(logs, reverse=True)]
        with self._lock:
            if not runs or (self._thread is not None and self._thread.is_alive()):
                return copy.deepcopy(self._state)
            live = [(run, pid) for run in runs if (pid := lock_holder(run)) is not None]
            run, pid = live[0] if live else (runs[0], 0)
            reader = EventReader(run, from_last_start=True)
            first = reader.read()
            start = first[0] if first and first[0]["kind"] == "start" else {}
            history = _history(start.get("history") or [])
            self._state = JobState(status="running", run=run.name, output=str(run), data=str(start.get("data", "")),
                                   resumed=bool(start.get("resume")), epoch=history[-1]["epoch"] if history else 0,
                                   history=history, pid=pid, message=f"{run.name}: re-attached, reading its log",
                                   version=self._state.version + 1, preview_version=self._state.preview_version)
            self._stop, self._started = threading.Event(), True
            self._proc = AdoptedProcess(run, pid)
            self._thread = threading.Thread(target=self._watch, args=(self._proc, reader, Path(self._state.data),
                                                                      first), name=f"watch-{run.name}", daemon=True)
            if live:
                self._thread.start()
        if not live:  # a finished run: its log is read to the end at once
            self._thread.run()
        return self.snapshot()

    def resume(self, output: str | Path, **overrides: Any) -> JobState:
        """Continue the run in ``output`` from ``output/last`` on the store it was trained on."""
        output = Path(output)
        if not resumable(output):
            raise CheckpointError(f"cannot resume {output.name}: it has no saved state (last/); "
                                  "start a new run instead")
        data = load_config(output / "last").meta.get("store")
        if not data or not (Path(data) / "config.json").is_file():
            raise PreprocessError(f"cannot resume {output.name}: its dataset store {data} is gone; "
                                  "rebuild it in the Dataset tab with the same name, or start a new run")
        return self.start(data, output, resume=True, **overrides)

    def stop(self) -> bool:
        """Ask the running job to save and stop; False when nothing is running."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or not self._state.active:
                return False
            self._stop.set()
            self._state.status = "stopping"
            self._state.version += 1
            if self._proc is not None and self._started:  # else: as soon as it has logged its start
                self._proc.terminate()
            return True

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the job ends (for tests and scripts: its thread, and so its process); the final state."""
        t = self._thread
        if t is not None and t.ident is not None:
            t.join(timeout)
        return self.snapshot()

    def snapshot(self) -> JobState:
        with self._lock:
            return copy.deepcopy(self._state)

    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    # ----- the thread -----

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._state, k, v)
            self._state.version += 1

    def _run(self, data: Path, output: Path, cfg: RunConfig, resume: bool, stop: threading.Event) -> None:
        """Thread mode: drive ``train_fn`` here."""
        last_step = 0.0
        try:
            previews = _Previews(data)
            for ev in self._train_fn(data, output, resume=resume, stop=stop, config=cfg):
                if ev.kind == "step":
                    now = time.monotonic()
                    if now - last_step < self._step_every_s and ev.step != ev.steps:
                        continue
                    last_step = now
                    self._on_step(ev)
                elif ev.kind == "epoch":
                    self._on_epoch(ev, previews(ev) if ev.preview is not None else None)
                else:
                    self._on_end(ev, requested=stop.is_set())
            with self._lock:
                if self._state.active:  # generator ended without a final event
                    self._state.status = "done"
                    self._state.version += 1
        except UserError as e:
            self._update(status="error", error=str(e), current=None)
        except Exception as e:  # a bug: keep the app alive; the console gets the traceback
            log.error("training job failed:\n%s", traceback.format_exc())
            self._update(status="error", error=f"unexpected {type(e).__name__} (a bug; the console log has details)",
                         current=None)

    def _watch(self, proc: Process, reader: EventReader, data: Path, first: list[dict[str, Any]]) -> None:
        """Process mode: follow the log until the process ends. A process that ends without a final
        record (killed, crashed) is an error, explained by its exit and the end of its log."""
        previews: list[_Previews | None] = []  # made at the first preview: the store may be gone
        final, records = False, first
        try:
            while True:
                ended = proc.ended()  # before reading: what it wrote before it ended is read next
                for rec in [*records, *reader.read()]:
                    final = self._record(rec, proc, data, previews) or final
                records = []
                if ended:
                    break
                time.sleep(self._poll_s)
            if not final:
                self._update(status="error", error=proc.failure(), current=None)
        except Exception as e:  # a bug here: keep the app alive
            log.error("following the training log failed:\n%s", traceback.format_exc())
            self._update(status="error", error=f"unexpected {type(e).__name__} (a bug; the console log has details)",
                         current=None)

    def _record(self, rec: dict[str, Any], proc: Process, data: Path, previews: list[_Previews | None]) -> bool:
        """Apply one log record to the state; True for a final one (done, stopped, error)."""
        kind = rec["kind"]
        if kind == "start":
            with self._lock:
                self._started = True
                if self._stop.is_set():  # Stop was pressed while the process started up
                    proc.terminate()
            return False
        if kind == "error":
            error = (str(rec.get("error")) if rec.get("user") else
                     f"unexpected {rec.get('type', 'error')} in training (a bug; {proc.run / LOG} has the details)")
            self._update(status="error", error=error, current=None)
            return True
        if kind not in ("step", "epoch", "done", "stopped"):
            return False
        ev = to_event(rec, proc.run)
        if kind == "step":
            self._on_step(ev)
        elif kind == "epoch":
            self._on_epoch(ev, _preview_of(ev, data, previews))
        else:
            self._on_end(ev, requested=ev.message.startswith(STOP_REQUESTED))
        return kind in ("done", "stopped")

    def _on_step(self, ev: TrainEvent) -> None:
        self._update(epoch=ev.epoch, epochs=ev.epochs, step=ev.step, steps=ev.steps, samples_per_s=ev.samples_per_s,
                     eta_s=ev.eta_s, elapsed_s=ev.elapsed_s, message=ev.message,
                     current={"epoch": ev.epoch + ev.step / max(1, ev.steps), "train": dict(ev.losses)})

    def _on_epoch(self, ev: TrainEvent, preview: JobPreview | None) -> None:
        with self._lock:
            s = self._state
            s.history = [h for h in s.history if h["epoch"] < ev.epoch]
            s.history.append({"epoch": ev.epoch, "train": dict(ev.losses), "val": dict(ev.val or {})})
            s.epoch, s.epochs, s.step, s.steps = ev.epoch, ev.epochs, 0, ev.steps
            s.current, s.elapsed_s = None, ev.elapsed_s
            if preview is not None:
                s.preview = preview
                s.preview_version += 1
            s.version += 1

    def _on_end(self, ev: TrainEvent, requested: bool) -> None:
        """A "done" or "stopped" event. A stop after an epoch's last step is at that epoch's end."""
        done = ev.kind == "done"
        # unasked, training stops only at its time limit
        message = ev.message if done else ("" if requested else "time limit reached")
        self._update(status="done" if done else "stopped", epoch=ev.epoch, epochs=ev.epochs,
                     step=0 if done or ev.step >= ev.steps else ev.step, steps=ev.steps, elapsed_s=ev.elapsed_s,
                     current=None, message=message, eta_s=0.0)


def _history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The loss history of a checkpoint or a start record, as the job shows it."""
    return [{"epoch": h["epoch"], "train": h["train"], "val": h.get("val") or {}} for h in history]


def _preview_of(ev: TrainEvent, data: Path, previews: list[_Previews | None]) -> JobPreview | None:
    """``ev``'s preview as a :class:`JobPreview` (``previews`` caches the store's settings; None when the
    store cannot be read)."""
    if ev.preview is None:
        return None
    if not previews:
        try:
            previews.append(_Previews(data))
        except UserError:
            previews.append(None)
    return previews[0](ev) if previews[0] is not None else None


def preview_audio(preview: JobPreview | None,
                  n_iter: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(original dB (F, T), reconstruction dB, original audio, reconstruction audio, sample rate)
    of a training preview, both in the preview clip's dB range."""
    if preview is None:
        raise ValueError("no preview yet")
    cfg = preview.config
    out = [denormalise(torch.from_numpy(np.asarray(spec, dtype=np.float32)), preview.lo, preview.hi)
           for spec in (preview.original, preview.reconstruction)]
    waves = limit_peak(np.stack([to_audio(db, cfg, phase="griffinlim", n_iter=n_iter).numpy() for db in out]))
    waves = waves.astype(np.float32)  # (2, n): one gain for both, so their levels compare
    return out[0].numpy(), out[1].numpy(), waves[0], waves[1], cfg.sample_rate
