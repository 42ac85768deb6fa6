"""Faults during training (issue #12): kill -9 at any moment, a crash between the renames of a checkpoint
set, leftovers of killed writers, and a full disk. After each, resuming (or starting again) must end
exactly where a run that never failed ends, and a full disk must be one ``error:`` line naming the folder.

The in-process tests inject the fault at a chosen point (``os.replace``, the journal's writer); the
subprocess test kills ``python -m vae train`` with SIGKILL at 20 random moments, as a user's machine would.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TRAIN_KW, tiny_model_cfg
from safetensors.torch import load_file

import vae.checkpoint as checkpoint_module
from vae.checkpoint import CheckpointError, load_checkpoint, load_training_state
from vae.cli import main
from vae.latents import compute_latent_stats, load_latent_stats
from vae.train import train

train_module = sys.modules["vae.train"]  # `vae.train` the attribute is the function


class _Kill(BaseException):
    """Stands in for kill -9 in-process: no ``except Exception`` handler catches it."""


@pytest.fixture(autouse=True)
def _keep_sigint_handler():
    """The CLI's `train` installs a Ctrl-C handler; give pytest its own back afterwards."""
    old = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, old)


def _run(store, out, **kw):
    return list(train(store.path, out, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, **kw}))


def _meta(directory):
    return json.loads((directory / "config.json").read_text())["meta"]


def _hidden(*folders):
    """Journal, pending and temporary files left in ``folders``."""
    return sorted(p.name for d in folders if d.is_dir() for p in d.iterdir() if p.name.startswith("."))


def _assert_same_run(got: Path, expected: Path):
    """Two run folders hold bit-identical weights (best and last), latent codes and per-epoch losses."""
    for sub in (".", "last"):
        a, b = load_file(str(got / sub / "model.safetensors")), load_file(str(expected / sub / "model.safetensors"))
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), f"{sub}/model.safetensors: {name}"
    strip = [{k: h[k] for k in ("epoch", "train", "val")} for h in _meta(got / "last")["history"]]
    assert strip == [{k: h[k] for k in ("epoch", "train", "val")} for h in _meta(expected / "last")["history"]]
    assert _meta(got)["epoch"] == _meta(expected)["epoch"]
    assert torch.equal(load_latent_stats(got).codes, load_latent_stats(expected).codes)
    assert _hidden(got, got / "last") == []


def _kill_on_replace(monkeypatch, when):
    """Make ``os.replace`` raise :class:`_Kill` instead of renaming when ``when(destination)`` says so."""
    real = os.replace

    def replace(src, dst):
        if when(Path(dst)):
            raise _Kill
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_kill_between_two_renames_of_last_then_resume_ends_as_an_uninterrupted_run(tiny_store, tmp_path,
                                                                                      monkeypatch):
    """Defect 4: killed while ``last/`` of epoch 2 is switched, after its weights are in place but before its
    training state. Before #12 resume trained epoch 2 again on top of epoch-2 weights and ended elsewhere."""
    _run(tiny_store, tmp_path / "straight", epochs=3)
    out, renames = tmp_path / "run", []

    def second_rename_of_the_state(dst):
        if dst != out / "last" / "training_state.pt":
            return False
        renames.append(dst)
        return len(renames) == 2

    _kill_on_replace(monkeypatch, second_rename_of_the_state)
    with pytest.raises(_Kill):
        _run(tiny_store, out, epochs=3)
    monkeypatch.undo()
    assert renames == [out / "last" / "training_state.pt"] * 2
    assert load_training_state(out / "last")["epoch"] == 1  # the kill left new weights beside the old state
    resumed = list(train(tiny_store.path, out, resume=True))
    assert [e.epoch for e in resumed if e.kind == "epoch"] == [3]  # the set of epoch 2 was finished, then used
    _assert_same_run(out, tmp_path / "straight")


@pytest.mark.parametrize("where", ["run folder", "last"])
def test_a_kill_during_the_first_save_leaves_a_run_that_can_start_again(tiny_store, tmp_path, monkeypatch, where):
    """The first rename of the first save of the run folder (its best model) or of ``last/`` is killed.
    Resume says there is nothing to resume; a new run in the same folder works and ends as usual."""
    _run(tiny_store, tmp_path / "straight", epochs=2)
    out = tmp_path / "run"
    target = out if where == "run folder" else out / "last"
    _kill_on_replace(monkeypatch, lambda dst: dst.parent == target)
    with pytest.raises(_Kill):
        _run(tiny_store, out, epochs=2)
    monkeypatch.undo()
    with pytest.raises(CheckpointError) as e:
        next(train(tiny_store.path, out, resume=True))
    assert str(e.value) == (f"cannot resume {out}: it holds no saved training state (no config.json and "
                            f"training_state.pt in {out / 'last'}), so there is nothing to resume; start it as "
                            "a new run (without --resume)")
    assert main(["train", "--data", str(tiny_store.path), "--output", str(out), "--resume"]) == 2
    _run(tiny_store, out, epochs=2)  # started again in the same folder
    _assert_same_run(out, tmp_path / "straight")


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.mark.parametrize("resume", [False, True])
def test_training_starts_by_removing_what_killed_writers_left(tiny_store, tmp_path, resume):
    """Temporary files of a killed writer (``.NAME.tmp-PID``) and uncommitted pending files go when training
    starts, new or resumed; the temporary file of a writer that still runs stays."""
    out = tmp_path / "run"
    if resume:
        _run(tiny_store, out, epochs=1)
    dead, alive = _dead_pid(), os.getppid()
    leftovers = [out / f".model.safetensors.tmp-{dead}", out / f".latents.safetensors.tmp-{dead}",
                 out / "last" / f".training_state.pt.tmp-{dead}", out / "last" / ".config.json.pending"]
    for path in [*leftovers, out / f".prior.json.tmp-{alive}"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    events = (train(tiny_store.path, out, resume=True, epochs=2) if resume else
              train(tiny_store.path, out, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 2}))
    next(events)  # training has started: one step done, nothing saved yet
    assert [p.name for p in leftovers if p.exists()] == []
    assert (out / f".prior.json.tmp-{alive}").read_bytes() == b"half written"
    list(events)


def test_a_new_best_model_takes_the_old_latent_statistics_with_it(tiny_store, tmp_path, monkeypatch):
    """Defect 11: killed after epoch 2's best model was saved and before the statistics (written at the end)
    were rewritten, the run folder held latents.safetensors of the epoch-1 model beside the epoch-2 model.
    The new best model now deletes them (and a prior) in its set; finishing the run writes them anew."""
    out = tmp_path / "run"
    _run(tiny_store, out, epochs=1)
    (out / "prior.json").write_text("{}")
    (out / "prior.safetensors").write_bytes(b"of the old model")

    def kill(*args, **kwargs):
        raise _Kill

    monkeypatch.setattr(train_module, "_save_stats", kill)
    with pytest.raises(_Kill):
        list(train(tiny_store.path, out, resume=True, epochs=2))
    monkeypatch.undo()
    assert _meta(out)["epoch"] == 2  # guard: epoch 2 improved, so the best model changed
    assert [n for n in ("latents.safetensors", "prior.json", "prior.safetensors") if (out / n).exists()] == []
    list(train(tiny_store.path, out, resume=True, epochs=2))  # nothing left to train: writes the statistics
    best = load_checkpoint(out)
    expected = compute_latent_stats(best.model, tiny_store, tiny_store.indices("train"))
    assert torch.equal(load_latent_stats(out).codes, expected.codes)


def _disk_full_for(folder: Path, when=lambda: True):
    """A stand-in for the journal's writer that fails with ENOSPC in ``folder`` once ``when()`` holds."""
    real = getattr(checkpoint_module, "_write_bytes", None)

    def write(path, data):
        if path.parent == folder and when():
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    return write


def _full_message(folder: Path) -> str:
    return (f"the disk is full: cannot write the checkpoint in {folder}; free some space, then resume the run "
            "(the checkpoint saved before is unchanged)")


def test_a_full_disk_stops_training_and_keeps_the_last_set(tiny_store, tmp_path, monkeypatch):
    """The disk fills after epoch 1: saving ``last/`` of epoch 2 fails. Training stops with a
    :class:`CheckpointError` that says so and names the folder; ``last/`` still holds epoch 1, whole, and a
    resume once there is room ends as a run that never failed."""
    _run(tiny_store, tmp_path / "straight", epochs=3)
    out, full = tmp_path / "run", threading.Event()
    monkeypatch.setattr(checkpoint_module, "_write_bytes", _disk_full_for(out / "last", full.is_set), raising=False)
    with pytest.raises(CheckpointError) as e:
        for ev in train(tiny_store.path, out, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 3}):
            if ev.kind == "epoch":
                full.set()
    assert str(e.value) == _full_message(out / "last")
    monkeypatch.undo()
    assert _hidden(out, out / "last") == []
    assert load_training_state(out / "last")["epoch"] == _meta(out / "last")["epoch"] == 1
    list(train(tiny_store.path, out, resume=True))
    _assert_same_run(out, tmp_path / "straight")


def test_a_full_disk_is_one_error_line_in_the_cli(tiny_store, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint_module, "_write_bytes", _disk_full_for(out / "last"), raising=False)
    assert main(["train", "--data", str(tiny_store.path), "--output", str(out), "--epochs", "2",
                 "--device", "cpu", "--latent-dim", "4"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error: ")]
    assert lines == [f"error: {_full_message(out / 'last')}"] and "Traceback" not in err


# ----- a real full disk: a small tmpfs ------------------------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> str:
    """Mount a tmpfs of ``size`` on ``path``; "" on success, else why it cannot be done here."""
    if os.name != "posix" or os.geteuid() != 0:
        return "mounting a tmpfs needs root (the ENOSPC tests above stand in)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount command here"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return "" if done.returncode == 0 else f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs, unmounted afterwards; skips with the reason where one cannot be mounted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    why = _mount_tmpfs(mount, "4m")
    if why:
        pytest.skip(why)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk is full (unbuffered: nothing is left to fail on closing)."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_a_full_tmpfs_stops_training_with_one_error(tiny_store, small_tmpfs, tmp_path):
    """Training on a tmpfs that is filled after epoch 1: a :class:`CheckpointError` saying the disk is full
    and naming the folder it could not write; the checkpoint sets already there stay whole; a resume after
    the space is freed ends as a run that never failed (before #12: a SafetensorError traceback)."""
    _run(tiny_store, tmp_path / "straight", epochs=3)
    out, filler = small_tmpfs / "run", small_tmpfs / "filler"
    with pytest.raises(CheckpointError) as e:
        for ev in train(tiny_store.path, out, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 3}):
            if ev.kind == "epoch" and ev.epoch == 1:
                _fill(filler)
    assert str(e.value) in (_full_message(out), _full_message(out / "last"))
    assert _hidden(out, out / "last") == []
    assert load_training_state(out / "last")["epoch"] == _meta(out / "last")["epoch"] == 1
    assert load_checkpoint(out).meta["epoch"] == 1
    filler.unlink()
    list(train(tiny_store.path, out, resume=True))
    _assert_same_run(out, tmp_path / "straight")


# ----- kill -9 at 20 random moments -----------------------------------------------------------------------


KILLS = 20
EPOCHS = 60  # 180 steps: 20 segments of up to 6 steps (plus what runs in 0.15 s) leave the run unfinished
CLI_ARGS = ["--epochs", str(EPOCHS), "--batch-size", "8", "--lr", "3e-3", "--kl-weight", "0.1", "--latent-dim", "4",
            "--device", "cpu", "--seed", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread: fast on 2 cores, same sums
PROGRESS = re.compile(rb"(\d+)/(\d+) \[")  # tqdm's "57/180 [": steps done

# A `python -m vae train` spends 4 s on 2 cores importing torch (2 s) and what the first torch.optim.Adam
# imports (torch._dynamo, 2 s): 90 s for 21 runs. So each killed run is a fork of one process that did those
# imports: a separate process that runs `vae.cli.main(argv)`, all that `python -m vae` does after its imports,
# killed with SIGKILL. The reference run, which the result must equal, is a real `python -m vae train`.
ZYGOTE = """
import json, os, sys, traceback
import torch._dynamo  # what the first torch.optim.Adam imports (2 s)
import vae.cli

def run(argv, log):
    os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        code = vae.cli.main(argv)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)

done = {}
for line in sys.stdin:
    verb, arg, *rest = json.loads(line)
    if verb == "run":
        pid = os.fork()
        if pid == 0:
            run(arg, rest[0])
        reply = pid
    else:  # "poll" (null while it runs) or "wait": the exit code, -9 after SIGKILL
        if arg not in done:
            pid, status = os.waitpid(arg, os.WNOHANG if verb == "poll" else 0)
            if pid:
                done[arg] = os.waitstatus_to_exitcode(status)
        reply = done.get(arg)
    print(json.dumps(reply), flush=True)
"""


class _Zygote:
    """A process that imported vae.cli once and forks a CLI run on request."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=ROOT, env=ENV, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, *request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class _Training:
    """``vae.cli.main(["train", ...])`` in a forked process; its stderr (tqdm's bar: steps done) goes to ``log``."""

    def __init__(self, zygote: _Zygote, store: Path, out: Path, resume: bool, log: Path):
        argv = ["train", "--data", str(store), "--output", str(out), *CLI_ARGS, *(["--resume"] if resume else [])]
        self.zygote, self.log = zygote, log
        self.pid = zygote.ask("run", argv, str(log))

    def steps(self, timeout: float = 120.0) -> int | None:
        """Steps done so far once this process has done a step; None if it ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = PROGRESS.findall(self.log.read_bytes()[-400:]) if self.log.exists() else []
            if found:
                return int(found[-1][0])
            if self.zygote.ask("poll", self.pid) is not None:
                return None
            time.sleep(0.005)
        raise AssertionError(f"no training step within {timeout} s: {self.log.read_bytes()[-2000:]!r}")

    def running(self) -> bool:
        return self.zygote.ask("poll", self.pid) is None

    def wait(self) -> tuple[int, str]:
        return self.zygote.ask("wait", self.pid), self.log.read_text(errors="replace")


def _continue(zygote: _Zygote, store: Path, out: Path, log: Path) -> _Training:
    """What a user does: resume; when there is nothing to resume (killed before the first save), start again."""
    if out.exists():
        first = _Training(zygote, store, out, True, log)
        if first.steps() is not None:
            return first
        code, err = first.wait()
        assert code == 2 and "there is nothing to resume" in err, err
    return _Training(zygote, store, out, False, log)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the killed runs are forks of one process (POSIX only)")
def test_kill_9_at_20_random_moments_then_resume_ends_as_an_uninterrupted_run(tiny_store, tmp_path):
    """SIGKILL at 20 random moments (at a random step of the next two epochs, then after a random delay of up to
    0.15 s, so kills land in steps, validation and saves), each followed by ``--resume``: the final weights
    (best and last), latent codes and every epoch's losses are bit-identical to those of an uninterrupted
    ``python -m vae train`` (one thread, one seed: the same operations in the same order, so no tolerance)."""
    with open(tmp_path / "log-reference", "wb") as log:  # runs alongside
        reference = subprocess.Popen([sys.executable, "-m", "vae", "train", "--data", str(tiny_store.path),
                                      "--output", str(tmp_path / "straight"), *CLI_ARGS], cwd=ROOT, env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=log)
    zygote, rng, out = _Zygote(), random.Random(12), tmp_path / "run"
    kills = left_behind = 0
    try:
        while kills < KILLS:
            left_behind += bool(_hidden(out, out / "last"))  # a set half-switched or a temporary file
            run = _continue(zygote, tiny_store.path, out, tmp_path / f"log-{kills}")
            target = min(run.steps() + rng.randint(0, 6), EPOCHS * 3 - 3)
            while (done := run.steps()) is not None and done < target:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.15))
            assert run.running(), f"the run ended before kill {kills + 1}: {run.wait()}"
            os.kill(run.pid, signal.SIGKILL)
            assert run.wait()[0] == -signal.SIGKILL
            kills += 1
        final = _continue(zygote, tiny_store.path, out, tmp_path / "log-final")
        assert final.wait()[0] == 0, final.wait()[1]
    finally:
        zygote.close()
    assert reference.wait(timeout=300) == 0, (tmp_path / "log-reference").read_text()[-2000:]
    _assert_same_run(out, tmp_path / "straight")
    print(f"{kills} kills; {left_behind} left journal or temporary files that the next start cleared")
