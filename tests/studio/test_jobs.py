"""The background training-job manager (studio.jobs), with a scripted training loop and a real one."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from conftest import TINY

from preprocessing.config import ConfigError
from preprocessing.store import PreprocessError
from studio.jobs import JobBusy, JobState, TrainingJobs, check_overrides, preview_audio
from vae.checkpoint import CheckpointError
from vae.train import TrainEvent, TrainingError


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
                             preview={"index": 0, "name": "0_alice_0.wav", "original": spec, "reconstruction": spec})
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
    assert s.preview["epoch"] == 3 and s.preview_version == 3  # one preview per epoch
    assert "finished" in s.progress_text()
    # the preview clip's own dB range, from the store
    lo, hi = tiny_store.clips[0]["lo"], tiny_store.clips[0]["hi"]
    assert (s.preview["lo"], s.preview["hi"]) == pytest.approx((lo, hi)) and hi > lo
    preview = {**s.preview, "reconstruction": np.zeros(TINY.shape, np.float32)}  # tell the two apart
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


@pytest.mark.parametrize("error,expected", [(TrainingError("loss became nan"), "loss became nan"),
                                            (RuntimeError("boom"), "RuntimeError: boom")])
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


def test_check_overrides_device():
    check_overrides({"device": "cpu", "epochs": 2})
    with pytest.raises(TrainingError):
        check_overrides({"device": "nonsense-device"})


def test_resume_continues_a_real_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    jobs = TrainingJobs()
    with pytest.raises(ConfigError, match="already trained 4 epochs"):
        jobs.resume(run, epochs=4)
    jobs.resume(run, epochs=5, batch_size=8, device="cpu")
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
