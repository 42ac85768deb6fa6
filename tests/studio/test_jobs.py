"""The background training-job manager (studio.jobs), with a scripted training loop and a real one, in a
thread of this process (tests/studio/test_job_process.py: as its own process, the app's default)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shutil
import threading
import time

import numpy as np
import pytest
from conftest import TINY

from preprocessing.config import ConfigError, SpectrogramConfig
from preprocessing.store import PreprocessError
from studio.jobs import JobBusy, JobPreview, JobState, TrainingJobs, preview_audio, run_progress
from vae.checkpoint import CheckpointError
from vae.train import Preview, RunConfig, TrainEvent, TrainingError, train


def scripted(epochs: int = 3, steps: int = 4, gate: threading.Event | None = None, fail: Exception | None = None):
    """A stand-in for vae.train.train: step and epoch events, honours ``stop``, can fail."""

    def fake(data, output, resume=False, stop=None, **overrides):
        spec = np.full(TINY.shape, 0.5, dtype=np.float32)
        for e in range(epochs):
            for s in range(steps):
                if gate is not None:
                    gate.wait(5)
                if fail is not None and e == 1:
                    raise fail
                yield TrainEvent("step", e, epochs, s + 1, steps, {"loss": 10.0 - e, "recon": 0.1, "kl": 2.0},
                                 samples_per_s=100.0, eta_s=5.0)
                if stop is not None and stop.is_set():
                    yield TrainEvent("stopped", e, epochs, s + 1, steps, message="stopped on request")
                    return
            yield TrainEvent("epoch", e + 1, epochs, steps, steps, {"loss": 10.0 - e, "recon": 0.1, "kl": 2.0},
                             {"loss": 11.0 - e, "recon": 0.2, "kl": 2.5},
                             preview=Preview(0, "0_alice_0.wav", spec, spec))
        yield TrainEvent("done", epochs, epochs, steps, steps, message="best validation loss 9")

    return fake


def test_runs_to_done_with_history_and_preview(tiny_store, tmp_path):
    jobs = TrainingJobs(scripted(), step_every_s=0)
    first = jobs.start(tiny_store.path, tmp_path / "run", epochs=3)
    assert first.status == "running" and first.run == "run"
    s = jobs.wait(10)
    assert s.status == "done" and s.epoch == 3 and s.fraction == 1.0
    assert [h["epoch"] for h in s.history] == [1, 2, 3]
    assert s.history[0]["val"]["loss"] == 11.0
    assert isinstance(s.preview, JobPreview) and isinstance(s.preview.config, SpectrogramConfig)
    assert s.preview.epoch == 3 and s.preview_version == 3  # one preview per epoch
    assert (s.preview.index, s.preview.name, s.preview.config) == (0, "0_alice_0.wav", tiny_store.config)
    assert "finished" in s.progress_text()
    # the preview clip's own dB range, from the store
    lo, hi = tiny_store.clips[0]["lo"], tiny_store.clips[0]["hi"]
    assert (s.preview.lo, s.preview.hi) == pytest.approx((lo, hi)) and hi > lo
    preview = dataclasses.replace(s.preview, reconstruction=np.zeros(TINY.shape, np.float32))  # tell the two apart
    o_db, r_db, o_w, r_w, sr = preview_audio(preview, n_iter=2)
    assert o_db.shape == r_db.shape == TINY.shape and sr == TINY.sample_rate
    np.testing.assert_allclose(o_db, np.full(TINY.shape, lo + 0.5 * (hi - lo)), atol=1e-4)  # 0.5: mid-range
    np.testing.assert_allclose(r_db, np.full(TINY.shape, lo), atol=1e-4)  # 0: the bottom of the range
    assert o_w.shape == r_w.shape == (TINY.n_samples,) and np.isfinite(o_w).all()
    # one gain for both, so the quieter reconstruction stays quieter; never above 0.99
    assert np.abs(r_w).max() < np.abs(o_w).max() <= 0.99 + 1e-6


def test_one_job_at_a_time_and_stop(tiny_store, tmp_path):
    gate = threading.Event()
    jobs = TrainingJobs(scripted(epochs=50, gate=gate), step_every_s=0)
    jobs.start(tiny_store.path, tmp_path / "a", epochs=50)
    with pytest.raises(JobBusy, match="already running"):
        jobs.start(tiny_store.path, tmp_path / "b", epochs=1)
    assert jobs.running
    assert jobs.stop()
    assert jobs.snapshot().status == "stopping"
    assert "stopping" in jobs.snapshot().progress_text()
    gate.set()
    s = jobs.wait(10)
    assert s.status == "stopped" and not jobs.running
    assert not jobs.stop()  # nothing to stop any more
    # after it ends, a new job may start
    jobs._train_fn = scripted(epochs=1)
    jobs.start(tiny_store.path, tmp_path / "c", epochs=1)
    assert jobs.wait(10).status == "done"


def test_snapshots_are_copies_and_versions_grow(tiny_store, tmp_path):
    jobs = TrainingJobs(scripted(), step_every_s=0)
    v0 = jobs.snapshot().version
    jobs.start(tiny_store.path, tmp_path / "run", epochs=3)
    s = jobs.wait(10)
    assert s.version > v0
    s.history.clear()
    assert jobs.snapshot().history  # the manager's own state is untouched


@pytest.mark.parametrize("error,expected", [
    (TrainingError("loss became nan"), "loss became nan"),
    (RuntimeError("boom"), "unexpected RuntimeError (a bug; the console log has details)"),
    (ValueError("bad"), "unexpected ValueError (a bug; the console log has details)"),  # not a UserError
])
def test_errors_in_the_thread_become_state(tiny_store, tmp_path, error, expected):
    jobs = TrainingJobs(scripted(fail=error), step_every_s=0)
    jobs.start(tiny_store.path, tmp_path / "run", epochs=3)
    s = jobs.wait(10)
    assert s.status == "error" and s.error == expected
    assert expected in s.progress_text()


def test_start_checks_before_starting(tiny_store, tmp_path):
    jobs = TrainingJobs(scripted(), step_every_s=0)
    with pytest.raises(ConfigError, match="lr"):
        jobs.start(tiny_store.path, tmp_path / "r", lr=0.0)
    with pytest.raises(ConfigError, match="latent_dim"):
        jobs.start(tiny_store.path, tmp_path / "r", latent_dim=0)
    with pytest.raises(PreprocessError, match="not a dataset store"):
        jobs.start(tmp_path / "nostore", tmp_path / "r")
    assert not jobs.running and jobs.snapshot().status == "idle"
    assert "No training job" in JobState().progress_text()


def test_start_rejects_bad_devices_and_unknown_parameters(tiny_store, tmp_path):
    jobs = TrainingJobs(scripted(), step_every_s=0)
    with pytest.raises(TrainingError, match="unknown device 'nonsense-device'"):
        jobs.start(tiny_store.path, tmp_path / "r", device="nonsense-device")
    with pytest.raises(ConfigError, match=re.escape("unknown training parameters: ['bogus']")):
        jobs.start(tiny_store.path, tmp_path / "r", bogus=1)
    assert not jobs.running and jobs.snapshot().status == "idle"


@pytest.mark.parametrize("in_thread", [True, False], ids=["thread", "process"])
def test_resume_continues_a_real_run(trained, tmp_path, in_thread):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    jobs = TrainingJobs(train) if in_thread else TrainingJobs(threads=1)
    with pytest.raises(ConfigError, match="already trained 4 epochs"):
        jobs.resume(run, epochs=4)
    with pytest.raises(ConfigError, match=r"^run has already trained 4 epochs: set Epochs above 4 to continue$"):
        jobs.resume(run)  # its own 4 epochs are all done
    assert run_progress(run) == (4, 4)
    first = jobs.resume(run, epochs=5, batch_size=8, device="cpu")
    assert (first.status, first.epoch, first.epochs, first.step) == ("running", 4, 5, 0)  # not "epoch 0/5"
    assert first.message == first.progress_text() == "Resuming run from epoch 4 to 5"
    assert [h["epoch"] for h in first.history] == [1, 2, 3, 4]  # the curves so far, at once
    s = jobs.wait(120)
    assert s.status == "done", s.error
    assert s.resumed and s.epoch == 5
    assert [h["epoch"] for h in s.history] == [1, 2, 3, 4, 5]


def test_resume_errors(tmp_path, trained):
    jobs = TrainingJobs()
    with pytest.raises(CheckpointError, match="no saved state"):
        jobs.resume(tmp_path / "missing")
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    cfg = (run / "last" / "config.json")
    cfg.write_text(cfg.read_text().replace('"store": "', '"store": "/gone'))
    with pytest.raises(PreprocessError, match="is gone"):
        jobs.resume(run, epochs=9)


def replay(*events: TrainEvent, request_stop: bool = False):
    """A stand-in for vae.train.train that yields ``events``; with ``request_stop`` the stop is asked for."""

    def fake(data, output, resume=False, stop=None, **overrides):
        for ev in events:
            if ev.kind == "stopped" and request_stop:
                stop.set()
            yield ev

    return fake


LOSSES = {"loss": 3.0, "recon": 0.1, "kl": 2.0}


@pytest.mark.parametrize(("events", "requested", "text", "fraction"), [
    ([TrainEvent("step", 22, 40, 1, 12, LOSSES), TrainEvent("stopped", 22, 40, 1, 12, LOSSES)], True,
     "run: stopped at epoch 23/40 (step 1 of 12); Resume continues from there", (22 + 1 / 12) / 40),
    ([TrainEvent("step", 22, 40, 12, 12, LOSSES), TrainEvent("epoch", 23, 40, 12, 12, LOSSES, LOSSES),
      TrainEvent("stopped", 23, 40, 12, 12, LOSSES, LOSSES)], True,
     "run: stopped after epoch 23/40; Resume continues from there", 23 / 40),
    ([TrainEvent("step", 22, 40, 5, 12, LOSSES), TrainEvent("stopped", 22, 40, 5, 12, LOSSES)], False,
     "run: time limit reached: stopped at epoch 23/40 (step 5 of 12); Resume continues from there",
     (22 + 5 / 12) / 40),
], ids=["mid-epoch", "after-an-epoch", "time-limit"])
def test_stopped_reads_as_one_sentence(tiny_store, tmp_path, events, requested, text, fraction):
    jobs = TrainingJobs(replay(*events, request_stop=requested), step_every_s=0)
    jobs.start(tiny_store.path, tmp_path / "run", epochs=40)
    s = jobs.wait(10)
    assert s.status == "stopped"
    assert s.progress_text() == text
    assert s.fraction == pytest.approx(fraction)


def test_progress_never_goes_back_and_ends_at_the_last_epoch(tiny_store, tmp_path):
    """Recorded after every event: the shown (epoch, step) only moves forward (an epoch's end counts as
    its last step), and so does the fraction; a finished run reads epoch 3/3 at fraction 1."""
    seen = []

    def fake(data, output, resume=False, stop=None, **overrides):
        for ev in scripted(epochs=3, steps=4)(data, output):
            yield ev
            s = jobs.snapshot()
            seen.append((s.progress_text(), s.fraction))

    jobs = TrainingJobs(fake, step_every_s=0)
    jobs.start(tiny_store.path, tmp_path / "run", epochs=3)
    final = jobs.wait(10)
    seen.append((final.progress_text(), final.fraction))
    assert len(seen) == 3 * 5 + 2
    positions = []
    for text, _ in seen:
        m = re.match(r"run: epoch (\d)/3(?:, step (\d)/4)?", text)
        assert m, text
        positions.append((int(m[1]), int(m[2] or 4)))
    assert positions == sorted(positions) and positions[0] == (1, 1) and positions[-1] == (3, 4)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 1 / 12 and fractions[-1] == 1.0
    assert final.status == "done" and final.progress_text().startswith("run: epoch 3/3: finished in ")


def test_progress_text_while_training():
    s = JobState(status="running", run="r", epoch=2, epochs=40, step=3, steps=12, samples_per_s=812.4, eta_s=107)
    assert s.progress_text() == "r: epoch 3/40, step 3/12, 812 samples/s, about 1 min 47 s left: training"
    assert dataclasses.replace(s, eta_s=0.0).progress_text() == "r: epoch 3/40, step 3/12, 812 samples/s: training"
    assert dataclasses.replace(s, step=0).progress_text().startswith("r: epoch 2/40, 812 samples/s")  # validated
    done = JobState(status="done", run="r", epoch=40, epochs=40, steps=12, elapsed_s=61, message="best 3")
    assert (done.progress_text(), done.fraction) == ("r: epoch 40/40: finished in 1 min 01 s. best 3", 1.0)


def test_stop_after_the_final_event_changes_nothing(tiny_store, tmp_path):
    """Between the final event and the thread's end, Stop must not turn a stopped run into "stopping"."""
    gate = threading.Event()

    def fake(data, output, resume=False, stop=None, **overrides):
        yield TrainEvent("stopped", 1, 4, 2, 4, LOSSES)
        gate.wait(5)

    jobs = TrainingJobs(fake, step_every_s=0)
    jobs.start(tiny_store.path, tmp_path / "run", epochs=4)
    for _ in range(200):
        if jobs.snapshot().status == "stopped":
            break
        time.sleep(0.01)
    assert not jobs.stop()
    gate.set()
    assert jobs.wait(10).status == "stopped"


def test_the_device_is_checked_once_per_start(tiny_store, tmp_path, monkeypatch):
    train_module = importlib.import_module("vae.train")  # `vae.train` the attribute is the function
    calls, real = [], train_module.pick_device
    monkeypatch.setattr(train_module, "pick_device", lambda name="auto": calls.append(name) or real(name))
    jobs = TrainingJobs(train)  # in this process, where the calls are seen (a training process checks its own)
    first = jobs.start(tiny_store.path, tmp_path / "run", epochs=1, batch_size=24, latent_dim=2, device="cpu")
    assert (first.epoch, first.epochs, first.message) == (0, 1, "Starting run: 1 epoch")
    s = jobs.wait(120)
    assert s.status == "done", s.error
    assert calls == ["cpu"]


def test_run_progress(trained, tmp_path):
    assert run_progress(trained[0]) == (4, 4)
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        run_progress(tmp_path)


def test_the_job_passes_its_resolved_config_to_training(tiny_store, tmp_path):
    got = {}

    def fake(data, output, resume=False, stop=None, **kw):
        got.update(kw)
        yield TrainEvent("done", 2, 2, 1, 1)

    jobs = TrainingJobs(fake, step_every_s=0)
    jobs.start(tiny_store.path, tmp_path / "run", arch="study", epochs=2, lr=1e-4, device="cpu")
    assert jobs.wait(10).status == "done"
    cfg = got.pop("config")
    assert not got and isinstance(cfg, RunConfig)
    assert (cfg.arch, cfg.train.epochs, cfg.train.lr, str(cfg.device)) == ("study", 2, 1e-4, "cpu")
    assert cfg.model.latent_dim == 128  # the study's model, sized for the store
    assert json.loads(json.dumps(cfg.train.to_dict()))["epochs"] == 2
