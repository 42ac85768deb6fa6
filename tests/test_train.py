"""The training generator: events, checkpoints, stop/resume, divergence, devices (vae.train)."""

import importlib
import json
import threading

import pytest
import torch
from conftest import TINY, TRAIN_KW, tiny_model_cfg, write_fsdd_like

from preprocessing.store import PreprocessError, build_store
from vae.checkpoint import CheckpointError, load_checkpoint, load_training_state
from vae.config import ModelConfig
from vae.latents import load_latent_stats
from vae.train import TrainingError, pick_device, train

STEPS = 3  # 24 training clips / batch 8
train_module = importlib.import_module("vae.train")  # `vae.train` the attribute is the function


def _meta(directory):
    return json.loads((directory / "config.json").read_text())["meta"]


def _run(store, out, **kw):
    return list(train(store.path, out, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, **kw}))


def test_event_sequence(trained):
    _, events = trained
    kinds = [e.kind for e in events]
    assert kinds == (["step"] * STEPS + ["epoch"]) * 4 + ["done"]
    steps = [e for e in events if e.kind == "step"]
    assert [(e.epoch, e.step, e.steps) for e in steps[:4]] == [(0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 3)]
    assert all(set(e.losses) == {"loss", "recon", "kl"} for e in steps)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.epoch for e in epochs] == [1, 2, 3, 4]
    assert all(e.val is not None and e.samples_per_s > 0 for e in epochs)
    assert [e.preview is not None for e in epochs] == [True, True, False, True]  # first, every 2nd, last
    assert epochs[0].preview["original"].shape == epochs[0].preview["reconstruction"].shape == (32, 64)
    assert events[-1].checkpoint == str(trained[0])


def test_loss_goes_down(trained):
    epochs = [e for e in trained[1] if e.kind == "epoch"]
    assert epochs[-1].losses["loss"] < 0.9 * epochs[0].losses["loss"]
    assert epochs[-1].losses["recon"] < epochs[0].losses["recon"]
    assert epochs[-1].val["recon"] < epochs[0].val["recon"]


def test_checkpoints_written(trained):
    out, _ = trained
    assert {"config.json", "model.safetensors", "latents.safetensors", "last"} <= {p.name for p in out.iterdir()}
    assert {p.name for p in (out / "last").iterdir()} == {"config.json", "model.safetensors", "training_state.pt"}
    last, best = _meta(out / "last"), _meta(out)
    assert last["epoch"] == 4 and len(last["history"]) == 4
    vals = [h["val"]["loss"] for h in last["history"]]
    assert best["epoch"] == 1 + vals.index(min(vals))  # the best by validation loss
    assert best["best_val"] == pytest.approx(min(vals))
    state = load_training_state(out / "last")
    assert (state["epoch"], state["step"]) == (4, 0)
    ck = load_checkpoint(out)
    assert ck.meta["arch"] == "default" and ck.meta["n_train"] == 24 and ck.meta["n_val"] == 12
    stats = load_latent_stats(out)
    assert stats.codes.shape == (24, 4) and stats.label_names == ["0", "1", "2"]


def test_checkpoint_every_epoch(tiny_store, tmp_path):
    seen = []
    for ev in train(tiny_store.path, tmp_path, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 2}):
        if ev.kind == "epoch":
            seen.append((ev.epoch, _meta(tmp_path / "last")["epoch"]))
    assert seen == [(1, 1), (2, 2)]


def test_stop_then_resume(tiny_store, tmp_path):
    stop = threading.Event()
    events = []
    for ev in train(tiny_store.path, tmp_path, model_cfg=tiny_model_cfg(), stop=stop, **{**TRAIN_KW, "epochs": 2}):
        events.append(ev)
        if ev.kind == "step":
            stop.set()
    assert [e.kind for e in events] == ["step", "stopped"]
    assert "stopped on request" in events[-1].message and events[-1].checkpoint == str(tmp_path / "last")
    state = load_training_state(tmp_path / "last")
    assert (state["epoch"], state["step"]) == (0, 1)
    load_checkpoint(tmp_path / "last")
    load_checkpoint(tmp_path)  # no validated best yet: the latest stands in
    assert (tmp_path / "latents.safetensors").is_file()

    resumed = list(train(tiny_store.path, tmp_path, resume=True, epochs=3))
    steps = [e for e in resumed if e.kind == "step"]
    assert (steps[0].epoch, steps[0].step) == (0, 2)  # continues mid-epoch, where it stopped
    assert len(steps) == 3 * STEPS - 1
    assert resumed[-1].kind == "done" and resumed[-1].epoch == 3
    assert _meta(tmp_path / "last")["epoch"] == 3 and len(_meta(tmp_path / "last")["history"]) == 3


def test_resume_without_last(tiny_store, tmp_path):
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        next(train(tiny_store.path, tmp_path, resume=True))


def test_time_limit_stops(tiny_store, tmp_path):
    events = _run(tiny_store, tmp_path, epochs=50, time_limit_s=1e-6)
    assert [e.kind for e in events] == ["step", "stopped"]
    assert "time limit reached" in events[-1].message
    assert load_training_state(tmp_path / "last")["step"] == 1


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tiny_store, tmp_path, monkeypatch):
    poisoned = threading.Event()
    real = train_module.vae_loss

    def loss(*args):
        total, recon, kl = real(*args)
        return (total * float("nan"), recon, kl) if poisoned.is_set() else (total, recon, kl)

    monkeypatch.setattr(train_module, "vae_loss", loss)
    gen = train(tiny_store.path, tmp_path, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 3})
    with pytest.raises(TrainingError, match="loss became nan at epoch 2, step 1") as e:
        for ev in gen:
            if ev.kind == "epoch":
                poisoned.set()
    assert "lower learning rate" in str(e.value) and str(tmp_path / "last") in str(e.value)
    ck = load_checkpoint(tmp_path / "last")
    assert ck.meta["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck.model.state_dict().values())


def test_divergence_at_epoch_end_does_not_overwrite_last(tiny_store, tmp_path):
    """An absurd lr on resume: the diverged weights must not replace the good last checkpoint."""
    _run(tiny_store, tmp_path, epochs=1)
    good = load_checkpoint(tmp_path / "last").model.state_dict()
    with pytest.raises(TrainingError, match="loss became nan"):
        list(train(tiny_store.path, tmp_path, resume=True, epochs=3, lr=1e6, batch_size=24))
    ck = load_checkpoint(tmp_path / "last")
    assert ck.meta["epoch"] == 1
    for k, v in ck.model.state_dict().items():
        assert torch.equal(v, good[k]), k


def test_store_without_test_split_validates_on_training_slice(tmp_path):
    src = tmp_path / "in"
    for p in write_fsdd_like(src):
        if int(p.stem.split("_")[2]) < 5:
            p.unlink()
    build_store(src, tmp_path / "store", TINY)
    events = list(train(tmp_path / "store", tmp_path / "out", model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 1}))
    assert "no test split" in events[0].message
    assert events[-1].kind == "done" and _meta(tmp_path / "out")["n_val"] == 2


def test_bad_setups_fail_before_writing(tiny_store, tmp_path, monkeypatch):
    out = tmp_path / "out"
    wrong = ModelConfig(n_freq=64, n_frames=64, channels=(8,), strides=((2, 2),), decoder_channels=(), latent_dim=2)
    with pytest.raises(TrainingError, match="model expects 64x64"):
        next(train(tiny_store.path, out, model_cfg=wrong))
    with pytest.raises(PreprocessError, match="not a dataset store"):
        next(train(tmp_path, out))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="CUDA is not available"):
        next(train(tiny_store.path, out, model_cfg=tiny_model_cfg(), device="cuda"))
    assert not out.exists()


def test_pick_device(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(TrainingError, match="CUDA is not available"):
            pick_device(name)
    with pytest.raises(TrainingError, match="'mps' requested but not available"):
        pick_device("mps")
    with pytest.raises(TrainingError, match="unknown device"):
        pick_device("tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_same_seed_same_losses(tiny_store, tmp_path):
    a = _run(tiny_store, tmp_path / "a", epochs=1)
    b = _run(tiny_store, tmp_path / "b", epochs=1)
    assert [e.losses for e in a if e.kind == "step"] == [e.losses for e in b if e.kind == "step"]
