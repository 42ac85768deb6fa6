"""The training event log (vae.events) and the `train` verb's process behaviour: the log it writes, its
lock, SIGTERM, its thread count and the command line the app builds for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY

from preprocessing.config import ConfigError
from vae.cli import build_parser, main, train_argv
from vae.events import EVENTS, LOCK, PREVIEWS, EventLog, EventReader, last_start_offset, lock_holder, to_event
from vae.train import OVERRIDES, STOP_REQUESTED, Preview, TrainEvent, TrainingError

LOSSES = {"loss": 3.0, "recon": 0.25, "kl": 1.5}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / EVENTS).read_text().splitlines()]


def test_the_log_holds_events_and_previews_as_plain_arrays(tmp_path):
    rng = np.random.default_rng(0)
    previews = {e: Preview(3, f"clip{e}.wav", rng.random(TINY.shape, np.float32), rng.random(TINY.shape, np.float32))
                for e in (1, 2, 3)}
    with EventLog(tmp_path / "run", step_every_s=3600) as log:
        log.start(data="/store", resume=False, history=[])
        for e in (1, 2, 3):
            for s in (1, 2, 3):  # throttled: only the first step of the run and each epoch's last are kept
                log.write(TrainEvent("step", e - 1, 3, s, 3, LOSSES, samples_per_s=10.0 * s))
            log.write(TrainEvent("epoch", e, 3, 3, 3, LOSSES, {"loss": 4.0 + e}, 12.5, preview=previews[e]))
        log.write(TrainEvent("done", 3, 3, 3, 3, LOSSES, message="best validation loss 5"))
    recs = records(tmp_path / "run")
    assert [(r["kind"], r.get("step")) for r in recs] == [
        ("start", None), ("step", 1), ("step", 3), ("epoch", 3), ("step", 3), ("epoch", 3), ("step", 3), ("epoch", 3),
        ("done", 3)]
    assert recs[0]["pid"] == os.getpid() and all(abs(r["t"] - time.time()) < 60 for r in recs)
    ev = to_event(recs[-2], tmp_path / "run")
    assert (ev.kind, ev.epoch, ev.val, ev.samples_per_s, ev.losses) == ("epoch", 3, {"loss": 7.0}, 12.5, LOSSES)
    np.testing.assert_array_equal(ev.preview.original, previews[3].original)
    np.testing.assert_array_equal(ev.preview.reconstruction, previews[3].reconstruction)
    assert (ev.preview.index, ev.preview.name) == (3, "clip3.wav")
    # only the two latest previews are kept; an event whose file is gone has no preview
    assert sorted(p.name for p in (tmp_path / "run" / PREVIEWS).iterdir()) == ["epoch-0002.npy", "epoch-0003.npy"]
    assert to_event(recs[3], tmp_path / "run").preview is None
    assert to_event(recs[-1], tmp_path / "run").message == "best validation loss 5"


def test_a_pickled_preview_is_refused(tmp_path):
    run = tmp_path / "run"
    (run / PREVIEWS).mkdir(parents=True)
    np.save(run / PREVIEWS / "epoch-0001.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    rec = {"kind": "epoch", "epoch": 1, "epochs": 1,
           "preview": {"index": 0, "name": "x", "file": "previews/epoch-0001.npy"}}
    with pytest.raises(ValueError, match="allow_pickle"):
        to_event(rec, run)
    outside = {**rec, "preview": {**rec["preview"], "file": "../elsewhere.npy"}}
    np.save(tmp_path / "elsewhere.npy", np.zeros((2, 2, 2), np.float32))
    assert to_event(outside, run).preview is None  # a file outside the run folder is not read


def test_the_reader_returns_complete_lines_once_and_starts_at_the_last_start(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    log = run / EVENTS
    lines = ['{"kind": "start", "pid": 1}', '{"kind": "step", "step": 1}', "not json", '[1, 2]',
             '{"kind": "start", "pid": 2}', '{"kind": "step", "step": 7}']
    log.write_text("\n".join(lines[:2]) + "\n" + lines[2][:3])
    reader = EventReader(run)
    assert reader.read() == [{"kind": "start", "pid": 1}, {"kind": "step", "step": 1}]
    assert reader.read() == []  # nothing new; the torn line waits for its end
    with open(log, "a") as f:
        f.write(lines[2][3:] + "\n" + "\n".join(lines[3:5]) + "\n" + lines[5][:10])
    assert reader.read() == [{"kind": "start", "pid": 2}]  # garbage lines are skipped
    with open(log, "a") as f:
        f.write(lines[5][10:] + "\n")
    assert reader.read() == [{"kind": "step", "step": 7}]
    assert last_start_offset(log) == len("\n".join(lines[:4])) + 1
    assert EventReader(run, from_last_start=True).read() == [{"kind": "start", "pid": 2}, {"kind": "step", "step": 7}]
    assert EventReader(tmp_path / "none").read() == [] and last_start_offset(tmp_path / "none" / EVENTS) == 0


def test_a_run_is_locked_while_written_and_free_after(tmp_path):
    run = tmp_path / "run"
    assert lock_holder(run) is None
    with EventLog(run):
        assert lock_holder(run) == os.getpid()
        with pytest.raises(TrainingError, match=rf"another training process \(pid {os.getpid()}\) is writing to"):
            EventLog(run).__enter__()
    assert lock_holder(run) is None
    assert (run / LOCK).is_file()  # a lock file left behind says nothing: only a held lock counts
    size = (run / EVENTS).stat().st_size
    with EventLog(run, enabled=False) as quiet:  # another rank: no lock, no log
        quiet.start()
        assert lock_holder(run) is None
    assert (run / EVENTS).stat().st_size == size
    with EventLog(tmp_path / "other", enabled=False) as quiet:
        quiet.start()
    assert not (tmp_path / "other").exists()


def test_a_killed_process_leaves_its_run_free(tmp_path):
    run = tmp_path / "run"
    code = f"from vae.events import EventLog\nwith EventLog({str(run)!r}):\n    print('locked', flush=True)\n" \
           "    import time; time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        assert lock_holder(run) == p.pid
        p.kill()
        p.wait(10)
        assert lock_holder(run) is None
    finally:
        p.kill()


SAMPLES = {"epochs": 7, "batch_size": 16, "lr": 0.0025, "recon_weight": 1000.0, "kl_weight": 0.5,
           "kl_warmup_epochs": 2, "grad_clip": 0.0, "seed": 3, "device": "cpu", "checkpoint_every": 2,
           "preview_every": 3, "time_limit_s": 12.5, "augment": True, "spectral_weight": 0.25, "precision": "bf16",
           "latent_dim": 6}


def parsed_overrides(argv: list[str]) -> dict:
    a = build_parser().parse_args(argv)
    return {k: getattr(a, k) for k in OVERRIDES if getattr(a, k, None) is not None}


def test_every_training_parameter_reaches_the_train_verb():
    assert set(SAMPLES) == OVERRIDES  # a new TrainConfig field needs a sample here, and a flag
    argv = train_argv("/s", "/o", "study", True, 2, **SAMPLES)
    assert argv[:9] == ["train", "--data", "/s", "--output", "/o", "--arch", "study", "--resume", "--threads"]
    assert parsed_overrides(argv) == SAMPLES
    a = build_parser().parse_args(argv)
    assert (a.data, a.output, a.arch, a.resume, a.threads) == ("/s", "/o", "study", True, 2)
    assert parsed_overrides(train_argv("/s", "/o", augment=False)) == {"augment": False}
    assert build_parser().parse_args(train_argv("/s", "/o")).threads is None
    assert build_parser().parse_args(train_argv("/s", "/o", condition="label")).condition == "label"
    assert build_parser().parse_args(train_argv("/s", "/o")).condition is None
    with pytest.raises(ConfigError, match=r"unknown training parameters: \['bogus'\]"):
        train_argv("/s", "/o", bogus=1)


def test_threads_flag_sets_torch_threads_and_signal_handlers_come_back(tiny_store, tmp_path):
    before, handlers = torch.get_num_threads(), [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    try:
        assert main(["train", "--data", str(tiny_store.path), "--output", str(tmp_path / "run"), "--epochs", "1",
                     "--batch-size", "24", "--latent-dim", "2", "--device", "cpu", "--threads", "3"]) == 0
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
    recs = records(tmp_path / "run")
    assert recs[0]["kind"] == "start" and recs[0]["threads"] == 3 and recs[-1]["kind"] == "done"
    assert recs[0]["params"] == {"batch_size": 24, "device": "cpu", "epochs": 1, "latent_dim": 2}


def wait_for_record(run: Path, kind: str, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = [r for r in EventReader(run).read() if r["kind"] == kind]
        if found:
            return found[0]
        time.sleep(0.1)
    raise TimeoutError(f"no {kind} record in {run} within {timeout} s")


def test_sigterm_saves_last_and_exits_cleanly(tiny_store, tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "vae", *train_argv(tiny_store.path, run, threads=1, epochs=500,
                                                                      batch_size=8, latent_dim=2, device="cpu")],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_record(run, "step")
        assert lock_holder(run) == p.pid
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, err
    last = records(run)[-1]
    assert last["kind"] == "stopped" and last["message"].startswith(STOP_REQUESTED)
    assert (run / "last" / "training_state.pt").is_file() and lock_holder(run) is None


def test_a_failure_is_logged_as_an_error_record(tiny_store, tmp_path, capsys):
    """A failure once the run has started (here: nothing to resume) is the log's last record; a store that
    cannot be opened is refused before the run folder is made (tests/test_store_errors.py)."""
    assert main(["train", "--data", str(tiny_store.path), "--output", str(tmp_path / "run"), "--resume"]) == 2
    last = records(tmp_path / "run")[-1]
    assert last["kind"] == "error" and last["user"] is True and "nothing to resume" in last["error"]
    assert last["type"] == "CheckpointError"
    assert "error: " in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nostore"), "--output", str(tmp_path / "other")]) == 2
    assert not (tmp_path / "other").exists()
