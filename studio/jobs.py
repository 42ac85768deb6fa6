"""Training in the background: one job at a time, observable from any page and any reload.

The :class:`TrainingJobs` manager runs :func:`vae.train.train` in a thread and records what the
event generator reports (progress, per-epoch history, the latest preview). The app polls
:meth:`TrainingJobs.snapshot`, so a page reload simply reads the state again: nothing about the
job lives in a browser session. Stop sets a :class:`threading.Event`; the training loop then saves
``<run>/last`` and ends, and :meth:`TrainingJobs.resume` continues from there.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocessing.audio import limit_peak
from preprocessing.config import ConfigError, SpectrogramConfig
from preprocessing.errors import UserError
from preprocessing.spectrogram import denormalise, to_audio
from preprocessing.store import PreprocessError, Store
from vae.checkpoint import CheckpointError, read_config
from vae.config import TrainConfig
from vae.train import TrainEvent, TrainingError, pick_device, train

log = logging.getLogger(__name__)
USER_ERRORS = (TrainingError, ConfigError, PreprocessError, CheckpointError, FileNotFoundError, ValueError)


class JobBusy(UserError):
    """A training job is already running; only one runs at a time."""


@dataclass
class JobState:
    """What the app shows about the current (or last) training job. A copy: safe to read freely."""

    status: str = "idle"  # idle | running | stopping | done | stopped | error
    run: str = ""  # run name (the output folder's name)
    output: str = ""
    data: str = ""
    resumed: bool = False
    epoch: int = 0  # epochs completed
    epochs: int = 0
    step: int = 0
    steps: int = 0
    fraction: float = 0.0
    samples_per_s: float = 0.0
    eta_s: float = 0.0
    elapsed_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: {"epoch", "train", "val"}
    current: dict[str, Any] | None = None  # the running epoch: {"epoch": fractional, "train": {...}}
    preview: dict[str, Any] | None = None  # latest preview event dict plus "epoch", "lo", "hi"
    preview_version: int = 0
    message: str = ""
    error: str = ""
    version: int = 0  # increases with every change, so pollers can skip redraws
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ("running", "stopping")

    def progress_text(self) -> str:
        """One line for people: what is happening, how fast, how long is left."""
        if self.status == "idle":
            return "No training job yet. Pick a store and press Start."
        if self.status == "error":
            return f"Training of {self.run} failed: {self.error}"
        shown = min(self.epoch + (1 if self.status == "running" and self.step else 0), self.epochs)
        head = f"{self.run}: epoch {shown}/{self.epochs}"
        if self.status in ("running", "stopping"):
            step = f", step {self.step}/{self.steps}" if self.steps else ""
            speed = f", {self.samples_per_s:.0f} samples/s" if self.samples_per_s else ""
            eta = f", about {_duration(self.eta_s)} left" if self.eta_s else ""
            what = "stopping after this step (saving a checkpoint)" if self.status == "stopping" else "training"
            return f"{head}{step}{speed}{eta}: {what}"
        if self.status == "done":
            return f"{head}: finished in {_duration(self.elapsed_s)}. {self.message}"
        return f"{head}: stopped. {self.message}"


def _duration(s: float) -> str:
    s = round(s)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


TrainFn = Callable[..., Iterator[TrainEvent]]


def check_overrides(overrides: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for a bad hyperparameter now, rather than later in the job's thread."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    TrainConfig().replace(**{k: v for k, v in overrides.items() if k in names})
    latent = overrides.get("latent_dim")
    if latent is not None and int(latent) < 1:
        raise ConfigError(f"latent_dim must be at least 1, got {latent}")
    if overrides.get("device"):
        pick_device(str(overrides["device"]))


class TrainingJobs:
    """Runs at most one training job at a time in a background thread."""

    def __init__(self, train_fn: TrainFn = train, step_every_s: float = 0.25):
        self._train_fn = train_fn
        self._lock = threading.Lock()
        self._state = JobState()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._step_every_s = step_every_s  # step events are frequent; record at most this often

    # ----- control -----

    def start(self, data: str | Path, output: str | Path, resume: bool = False, **overrides: Any) -> JobState:
        """Start training ``data`` into ``output`` in the background; raises :class:`JobBusy`."""
        data, output = Path(data), Path(output)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                s = self._state
                raise JobBusy(f"a training job is already running ({s.run}, epoch {s.epoch}/{s.epochs}); "
                              "only one runs at a time: stop it or wait for it to finish")
            check_overrides(overrides)
            if not resume:
                Store(data)  # fail now, in the caller, if the store cannot be opened
            self._stop = threading.Event()
            self._state = JobState(status="running", run=output.name, output=str(output), data=str(data),
                                   resumed=resume, epochs=int(overrides.get("epochs") or 0),
                                   params=dict(overrides), version=self._state.version + 1,
                                   preview_version=self._state.preview_version,
                                   message="resuming..." if resume else "starting...")
            self._thread = threading.Thread(target=self._run, args=(data, output, resume, overrides, self._stop),
                                            name=f"train-{output.name}", daemon=True)
            self._thread.start()
            return copy.deepcopy(self._state)

    def resume(self, output: str | Path, **overrides: Any) -> JobState:
        """Continue the run in ``output`` from ``output/last`` on the store it was trained on."""
        output = Path(output)
        try:
            meta = read_config(output / "last").get("meta", {})
        except CheckpointError:
            raise CheckpointError(f"cannot resume {output.name}: it has no saved state (last/); "
                                  "start a new run instead") from None
        data = meta.get("store")
        if not data or not (Path(data) / "config.json").is_file():
            raise PreprocessError(f"cannot resume {output.name}: its dataset store {data} is gone; "
                                  "rebuild it in the Dataset tab with the same name, or start a new run")
        done = int(meta.get("epoch", 0))
        if overrides.get("epochs") is not None and int(overrides["epochs"]) <= done:
            raise ConfigError(f"{output.name} has already trained {done} epochs: set Epochs above {done} to continue")
        return self.start(data, output, resume=True, **overrides)

    def stop(self) -> bool:
        """Ask the running job to save and stop; False when nothing is running."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                return False
            self._stop.set()
            self._state.status = "stopping"
            self._state.version += 1
            return True

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the job's thread ends (for tests and scripts); return the final state."""
        t = self._thread
        if t is not None:
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

    def _run(self, data: Path, output: Path, resume: bool, overrides: dict[str, Any], stop: threading.Event) -> None:
        last_step = 0.0
        try:
            if resume:
                self._load_history(output)
            store = Store(data)  # the previews' dB ranges and spectrogram settings
            store_cfg = store.config.to_dict()
            store_ranges = {i: (float(c["lo"]), float(c["hi"])) for i, c in enumerate(store.clips)}
            del store
            for ev in self._train_fn(data, output, resume=resume, stop=stop, **overrides):
                if ev.kind == "step":
                    now = time.monotonic()
                    if now - last_step < self._step_every_s and ev.step != ev.steps:
                        continue
                    last_step = now
                    self._update(epoch=ev.epoch, epochs=ev.epochs, step=ev.step, steps=ev.steps, fraction=ev.fraction,
                                 samples_per_s=ev.samples_per_s, eta_s=ev.eta_s, elapsed_s=ev.elapsed_s,
                                 current={"epoch": ev.epoch + ev.step / max(1, ev.steps), "train": dict(ev.losses)},
                                 message=ev.message)
                elif ev.kind == "epoch":
                    with self._lock:
                        s = self._state
                        s.history = [h for h in s.history if h["epoch"] < ev.epoch]
                        s.history.append({"epoch": ev.epoch, "train": dict(ev.losses), "val": dict(ev.val or {})})
                        s.epoch, s.epochs, s.step, s.steps = ev.epoch, ev.epochs, 0, ev.steps
                        s.fraction, s.current, s.elapsed_s = ev.fraction, None, ev.elapsed_s
                        if ev.preview is not None:
                            lo, hi = store_ranges.get(int(ev.preview["index"]), (0.0, 1.0))
                            s.preview = {**ev.preview, "epoch": ev.epoch, "lo": lo, "hi": hi,
                                         "config": store_cfg}
                            s.preview_version += 1
                        s.version += 1
                else:  # done | stopped
                    done = ev.kind == "done"
                    self._update(status="done" if done else "stopped", epoch=ev.epoch, epochs=ev.epochs,
                                 fraction=ev.fraction if done else ev.epoch / max(1, ev.epochs),
                                 elapsed_s=ev.elapsed_s, current=None, message=ev.message, eta_s=0.0)
            with self._lock:
                if self._state.status in ("running", "stopping"):  # generator ended without a final event
                    self._state.status = "done"
                    self._state.version += 1
        except USER_ERRORS as e:
            self._update(status="error", error=str(e), current=None)
        except Exception as e:  # keep the app alive; the console gets the traceback
            log.error("training job failed:\n%s", traceback.format_exc())
            self._update(status="error", error=f"{type(e).__name__}: {e}", current=None)

    def _load_history(self, output: Path) -> None:
        """On resume, fill in the curves of the epochs trained before (from ``last/config.json``)."""
        try:
            hist = read_config(output / "last").get("meta", {}).get("history", [])
        except CheckpointError:
            return
        with self._lock:
            have = {h["epoch"] for h in self._state.history}
            old = [{"epoch": h["epoch"], "train": h["train"], "val": h.get("val") or {}}
                   for h in hist if h["epoch"] not in have]
            if old:
                self._state.history = sorted(old + self._state.history, key=lambda h: h["epoch"])
                self._state.version += 1


def preview_audio(preview: dict[str, Any],
                  n_iter: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(original dB (F, T), reconstruction dB, original audio, reconstruction audio, sample rate)
    of a training preview, both in the preview clip's dB range."""
    if not preview or preview.get("config") is None:
        raise ValueError("no preview yet")
    cfg = SpectrogramConfig.from_dict(preview["config"])
    lo, hi = preview["lo"], preview["hi"]
    out = [denormalise(torch.from_numpy(np.asarray(preview[key], dtype=np.float32)), lo, hi)
           for key in ("original", "reconstruction")]
    waves = limit_peak(np.stack([to_audio(db, cfg, phase="griffinlim", n_iter=n_iter).numpy() for db in out]))
    waves = waves.astype(np.float32)  # (2, n): one gain for both, so their levels compare
    return out[0].numpy(), out[1].numpy(), waves[0], waves[1], cfg.sample_rate
