"""Training across processes (issue #13, item 2): ``torchrun --nproc_per_node 2 -m vae train`` on the CPU
with gloo takes the steps one process takes with the same global batch, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from vae.checkpoint import load_checkpoint, read_config

ARGS = ["--arch", "temporal", "--epochs", "3", "--batch-size", "8", "--device", "cpu", "--seed", "3",
        "--threads", "1", "--preview-every", "0"]
# With no sampling noise (tests/ddp_probe.py) the runs differ only in the order of floating-point sums (the
# gradient averaged over two half batches against one batch's): measured here, the losses of 3 epochs agree
# to 3e-5 (with the noise, each process's own, they drift apart by up to 6% by epoch 3).
RTOL = 1e-4


def _train(store, out, log, processes: int, *extra: str, env: dict[str, str] | None = None) -> str:
    """Train under torchrun (or as one process); returns what the run printed (stdout)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd = [*launcher, str(ROOT / "tests" / "ddp_probe.py")] if processes > 1 else \
        [sys.executable, str(ROOT / "tests" / "ddp_probe.py")]
    env = {**os.environ, "DDP_PROBE_LOG": str(log), "OMP_NUM_THREADS": "1", "DDP_PROBE_NO_NOISE": "1", **(env or {})}
    run = subprocess.run([*cmd, "train", "--data", str(store), "--output", str(out), *ARGS, *extra], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _saves(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(tiny_store, tmp_path):
    _train(tiny_store.path, tmp_path / "one", tmp_path / "one.log", 1)
    printed = _train(tiny_store.path, tmp_path / "two", tmp_path / "two.log", 2)
    assert printed.count("epoch 1/3:") == 1  # only rank 0 reports
    one, two = (read_config(tmp_path / r)["meta"] for r in ("one", "two"))
    assert (two["processes"], two["global_batch"], two["lr"]) == (2, 8, one["lr"]) and one["processes"] == 1
    assert len(one["history"]) == len(two["history"]) == 3
    for a, b in zip(one["history"], two["history"]):
        for part in ("train", "val"):
            assert b[part]["loss"] == pytest.approx(a[part]["loss"], rel=RTOL), (a["epoch"], part)
    # every checkpoint written exactly once, by rank 0, in the same order as by one process
    saves_one, saves_two = _saves(tmp_path / "one.log"), _saves(tmp_path / "two.log")
    assert {s["rank"] for s in saves_two} == {0}
    assert [(s["dir"].replace("/two", "/one"), s["epoch"], s["step"]) for s in saves_two] == \
        [(s["dir"], s["epoch"], s["step"]) for s in saves_one]
    load_checkpoint(tmp_path / "two")
    assert (tmp_path / "two" / "latents.safetensors").is_file()

    # resuming across a change in the number of processes: 2 processes for 2 epochs, then 1 for the third,
    # ends where one process alone does (the state counts global batches)
    _train(tiny_store.path, tmp_path / "mixed", tmp_path / "mixed.log", 2, "--epochs", "2")
    _train(tiny_store.path, tmp_path / "mixed", tmp_path / "mixed.log", 1, "--resume")
    mixed = read_config(tmp_path / "mixed")["meta"]["history"]
    assert [h["epoch"] for h in mixed] == [1, 2, 3]
    assert mixed[-1]["val"]["loss"] == pytest.approx(one["history"][-1]["val"]["loss"], rel=RTOL)


@pytest.mark.slow
def test_a_time_limit_stops_every_process_at_the_same_step(tiny_store, tmp_path):
    """Each process measures its own training time; the stop is all-reduced with the losses, so both stop at
    one step and save once (if they did not agree, one would wait for the other's all-reduce for ever)."""
    _train(tiny_store.path, tmp_path / "run", tmp_path / "run.log", 2, "--epochs", "500", "--time-limit", "2")
    state = read_config(tmp_path / "run" / "last")["meta"]
    assert (state["epoch"], state["step"]) != (0, 0) and state["epoch"] < 500  # stopped part-way, saved
    saves = _saves(tmp_path / "run.log")
    assert {s["rank"] for s in saves} == {0}
    assert len({(s["dir"], s["epoch"], s["step"]) for s in saves}) == len(saves)  # none written twice


@pytest.mark.slow
def test_a_stop_asked_by_one_rank_at_an_epoch_end_stops_all(tiny_store, tmp_path):
    """The epoch-end stop check is collective on every rank, also on the one that already wants to stop (it
    used to skip the all-reduce, and the other rank then waited on a peer that had exited)."""
    _train(tiny_store.path, tmp_path / "run", tmp_path / "run.log", 2, "--epochs", "5",
           env={"DDP_PROBE_RANK0_STOPS_AFTER_EPOCH": "1"})
    state = read_config(tmp_path / "run" / "last")["meta"]
    assert (state["epoch"], state["step"]) == (1, 0) and len(state["history"]) == 1



@pytest.mark.slow
def test_a_conditional_model_trains_across_processes_as_in_one(tiny_store, tmp_path):
    """Each rank's slice of a batch carries its own clips' labels: the losses match one process's (a label
    paired with another clip would change them) and the model keeps its vocabulary."""
    for name, processes in (("one", 1), ("two", 2)):
        _train(tiny_store.path, tmp_path / name, tmp_path / f"{name}.log", processes, "--epochs", "2",
               "--condition", "label")
    one, two = (read_config(tmp_path / r) for r in ("one", "two"))
    assert one["model"]["labels"] == two["model"]["labels"] == ["0", "1", "2"]
    for a, b in zip(one["meta"]["history"], two["meta"]["history"], strict=True):
        assert b["train"]["loss"] == pytest.approx(a["train"]["loss"], rel=RTOL), a["epoch"]
        assert b["val"]["loss"] == pytest.approx(a["val"]["loss"], rel=RTOL), a["epoch"]
    assert load_checkpoint(tmp_path / "two").prior.cfg.n_labels == 3  # temporal: its prior is conditional too


@pytest.mark.slow
def test_the_ranks_leave_together_when_rank_0_is_slow_over_the_statistics(tiny_store, tmp_path):
    """Rank 0 alone writes the latent statistics at the end; the other ranks wait for it at a barrier before they
    leave the process group (vae.train), and that wait must neither fail nor time out: rank 0 here sleeps 8 s
    before its statistics. (The abort that leaving early once caused in CI did not recur here, with or without
    the barrier, so this checks the wait, not that abort.)"""
    _train(tiny_store.path, tmp_path / "run", tmp_path / "run.log", 2, "--epochs", "1",
           env={"DDP_PROBE_RANK0_SLOW_STATS": "8"})
    assert (tmp_path / "run" / "latents.safetensors").is_file()
