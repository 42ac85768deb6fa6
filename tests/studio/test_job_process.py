"""Training as its own process: the app's default TrainingJobs runs `python -m vae train` and follows
its event log. Real (tiny) training runs in subprocesses; every test kills what it left running."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from app_helpers import wait_for
from conftest import TINY

from preprocessing.config import ConfigError
from studio import jobs as jobs_module
from studio.jobs import JobBusy, TrainingJobs
from studio.train_process import LOG, NICE, autogroup, command
from vae.checkpoint import load_config
from vae.cli import build_parser
from vae.events import EVENTS, lock_holder

KW = {"batch_size": 8, "latent_dim": 2, "device": "cpu"}


@pytest.fixture
def runs(tmp_path):
    """A runs folder; whatever still trains in it at the end is killed."""
    folder = tmp_path / "runs"
    folder.mkdir()
    yield folder
    for run in folder.iterdir():
        pid = lock_holder(run)
        if pid:
            os.kill(pid, signal.SIGKILL)


def new_jobs() -> TrainingJobs:
    return TrainingJobs(threads=1, poll_s=0.05)


def start_long(jobs: TrainingJobs, store, run: Path, **kw):
    """A run long enough to be stopped, once it has finished an epoch."""
    jobs.start(store.path, run, epochs=500, **KW, **kw)
    wait_for(lambda: jobs.snapshot().epoch >= 1 or jobs.snapshot().status == "error", timeout=120)
    assert jobs.snapshot().status == "running", jobs.snapshot().error


def test_a_run_in_its_own_process_reports_losses_and_previews(tiny_store, runs):
    jobs = new_jobs()
    first = jobs.start(tiny_store.path, runs / "run", epochs=2, **KW)
    assert first.status == "running" and first.pid > 0 and first.pid != os.getpid()
    # a lower priority than the app's, while it runs
    assert os.getpriority(os.PRIO_PROCESS, first.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE)
    theirs, mine = autogroup(first.pid), autogroup("self")
    if mine is not None:  # Linux with autogroups: its own session is its own group, and that group is nicer too
        assert theirs is not None and theirs[0] != mine[0] and theirs[1] == min(19, mine[1] + NICE)
    s = jobs.wait(120)
    assert s.status == "done", s.error
    assert lock_holder(runs / "run") is None  # the process has ended
    saved = load_config(runs / "run" / "last").meta["history"]  # what the process itself saved
    assert [(h["epoch"], h["train"], h["val"]) for h in s.history] == [(h["epoch"], h["train"], h["val"])
                                                                        for h in saved]
    assert s.epoch == s.epochs == 2 and s.fraction == 1.0 and "finished" in s.progress_text()
    assert s.preview is not None and s.preview.epoch == 2 and s.preview.original.shape == TINY.shape
    assert s.preview.config == tiny_store.config
    records = [json.loads(line) for line in (runs / "run" / EVENTS).read_text().splitlines()]
    assert records[0]["kind"] == "start" and records[0]["threads"] == 1 and records[0]["pid"] == first.pid


def test_stop_saves_last_and_the_process_exits(tiny_store, runs):
    jobs = new_jobs()
    start_long(jobs, tiny_store, runs / "run")
    assert jobs.stop() and jobs.snapshot().status == "stopping"
    s = jobs.wait(120)
    assert s.status == "stopped" and not jobs.running
    assert s.progress_text().startswith("run: stopped ") and "time limit" not in s.progress_text()
    assert lock_holder(runs / "run") is None
    last = load_config(runs / "run" / "last").meta
    assert (last["epoch"], last["step"]) == (s.epoch, s.step)
    assert (runs / "run" / "last" / "training_state.pt").is_file()
    # and Resume continues it, in a new process, from there
    resumed = jobs.resume(runs / "run", epochs=s.epoch + 1, **KW)
    assert resumed.resumed and resumed.epoch == s.epoch
    assert jobs.wait(120).status == "done"
    assert load_config(runs / "run" / "last").meta["epoch"] == s.epoch + 1


def test_stop_while_the_process_starts_up_still_saves(tiny_store, runs):
    jobs = new_jobs()
    jobs.start(tiny_store.path, runs / "run", epochs=500, **KW)
    assert jobs.stop()  # before the process has even imported torch: the signal waits for its start record
    s = jobs.wait(120)
    assert s.status == "stopped", s.error
    assert (runs / "run" / "last" / "training_state.pt").is_file()


def test_a_restarted_app_reattaches_to_a_live_run_and_can_stop_it(tiny_store, runs):
    first = new_jobs()
    start_long(first, tiny_store, runs / "run")
    pid = lock_holder(runs / "run")
    # another manager (a restarted app) finds it by its lock and reads its log
    again = new_jobs()
    state = again.attach(runs)
    assert state.status == "running" and state.run == "run" and state.pid == pid
    assert state.data == str(tiny_store.path.resolve())
    wait_for(lambda: again.snapshot().history, timeout=30)
    assert again.snapshot().history[0] == first.snapshot().history[0]
    with pytest.raises(JobBusy, match=r"a training job is already running \(run, epoch \d+/500\)"):
        again.start(tiny_store.path, runs / "other", epochs=3, **KW)
    with pytest.raises(JobBusy, match=rf"^run is being trained by another process \(pid {pid}\)"):
        new_jobs().start(tiny_store.path, runs / "run", resume=True, epochs=3, **KW)  # a third, not attached
    assert again.stop()
    s = again.wait(120)
    assert s.status == "stopped" and "time limit" not in s.progress_text()
    assert first.wait(60).status == "stopped"  # the first manager saw the same end in the log
    assert lock_holder(runs / "run") is None and (runs / "run" / "last" / "training_state.pt").is_file()


def test_a_restarted_app_shows_the_last_runs_final_state(tiny_store, runs):
    jobs = new_jobs()
    jobs.start(tiny_store.path, runs / "old", epochs=1, **KW)
    assert jobs.wait(120).status == "done"
    jobs.start(tiny_store.path, runs / "new", epochs=2, **KW)
    done = jobs.wait(120)
    assert done.status == "done"
    s = new_jobs().attach(runs)
    assert (s.status, s.run, s.epoch, s.epochs) == ("done", "new", 2, 2)
    assert s.history == done.history and s.preview is not None and s.preview.epoch == 2
    assert new_jobs().attach(runs / "nothing-here").status == "idle"


def test_a_killed_training_process_is_an_error_and_the_app_carries_on(tiny_store, runs):
    jobs = new_jobs()
    start_long(jobs, tiny_store, runs / "run")
    os.kill(lock_holder(runs / "run"), signal.SIGKILL)
    s = jobs.wait(60)
    assert s.status == "error"
    assert s.error.startswith("the training process was killed by signal 9 (SIGKILL) without a final report")
    assert "Training of run failed: the training process was killed" in s.progress_text()
    assert not jobs.stop()
    jobs.start(tiny_store.path, runs / "next", epochs=1, **KW)  # the same manager still works
    assert jobs.wait(120).status == "done"


def test_a_store_gone_before_training_starts_is_its_message(tiny_store, runs, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(tiny_store.path, store)
    jobs = new_jobs()
    jobs.start(store, runs / "run", epochs=2, **KW)
    shutil.rmtree(store)  # the process has not read it yet (it takes seconds to start)
    s = jobs.wait(120)
    assert s.status == "error" and "is not a dataset store" in s.error and "unexpected" not in s.error


def test_an_exit_without_a_report_shows_its_status_and_log(tiny_store, runs, monkeypatch):
    code = "import sys; print('first line'); print('disk full, say', file=sys.stderr); sys.exit(3)"
    monkeypatch.setattr(jobs_module, "command", lambda *a: [sys.executable, "-c", code])
    jobs = new_jobs()
    jobs.start(tiny_store.path, runs / "run", epochs=2, **KW)
    s = jobs.wait(60)
    assert s.status == "error"
    assert s.error == (f"the training process exited with status 3 without a final report; the end of "
                       f"{runs / 'run' / LOG}:\nfirst line\ndisk full, say")


def test_a_bug_in_training_names_its_log(runs):
    run = runs / "run"
    run.mkdir()
    (run / EVENTS).write_text(json.dumps({"kind": "start", "pid": 1, "data": "/x", "history": []}) + "\n"
                              + json.dumps({"kind": "error", "error": "x", "user": False, "type": "KeyError"}) + "\n")
    s = new_jobs().attach(runs)
    assert s.status == "error"
    assert s.error == f"unexpected KeyError in training (a bug; {run / LOG} has the details)"
    user = {"kind": "error", "error": "loss became nan", "user": True, "type": "TrainingError"}
    with open(run / EVENTS, "a") as f:
        f.write(json.dumps({"kind": "start", "pid": 2, "data": "/x", "history": []}) + "\n" + json.dumps(user) + "\n")
    assert new_jobs().attach(runs).error == "loss became nan"


def test_the_command_line_is_the_cli_or_torchrun(tmp_path):
    one = command("/s", "/o", "default", False, 2, 1, {"epochs": 3, "lr": 0.001})
    assert one[:4] == [sys.executable, "-m", "vae", "train"]
    a = build_parser().parse_args(one[3:])
    assert (a.data, a.output, a.arch, a.threads, a.epochs, a.lr) == ("/s", "/o", "default", 2, 3, 0.001)
    assert not a.resume
    many = command("/s", "/o", None, True, 1, 4, {})
    assert many[:9] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m",
                        "vae", "train"]
    assert build_parser().parse_args(many[8:]).resume
    with pytest.raises(ConfigError, match="processes"):
        TrainingJobs(lambda *a, **k: iter(())).start("/s", tmp_path / "r", processes=2)


@pytest.mark.slow
def test_a_run_on_two_processes_trains_through_torchrun(tiny_store, runs):
    """The Train tab's Processes field: torchrun starts two processes that train one model together (DDP,
    vae.distributed); the app follows rank 0's log, which saves the checkpoints."""
    jobs = new_jobs()
    jobs.start(tiny_store.path, runs / "ddp", epochs=2, processes=2, **KW)
    s = jobs.wait(240)
    assert s.status == "done", s.error
    meta = load_config(runs / "ddp").meta
    assert (meta["processes"], meta["global_batch"]) == (2, KW["batch_size"])
    assert [h["epoch"] for h in s.history] == [1, 2] == [h["epoch"] for h in meta["history"]]


def test_a_conditioned_run_in_its_own_process(tiny_store, runs):
    """The Train tab's "Condition on labels" reaches the training process as --condition label."""
    jobs = new_jobs()
    jobs.start(tiny_store.path, runs / "cond", epochs=1, condition="label", **KW)
    s = jobs.wait(120)
    assert s.status == "done", s.error
    assert load_config(runs / "cond").model_cfg.labels == ("0", "1", "2")
