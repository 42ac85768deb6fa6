"""The training generator: events, checkpoints, stop/resume, divergence, devices (vae.train)."""

import copy
import importlib
import json
import math
import re
import threading
import typing
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY, TRAIN_KW, tiny_model_cfg, write_fsdd_like

from preprocessing.config import ConfigError
from preprocessing.store import PreprocessError, Store, build_store
from vae.checkpoint import CheckpointError, load_checkpoint, load_config, load_training_state
from vae.config import ModelConfig, TrainConfig, model_config, train_config
from vae.generate import encode, reconstruct
from vae.latents import load_latent_stats
from vae.losses import vae_loss
from vae.model import VAE
from vae.train import Diverged, EventKind, Preview, TrainingError, pick_device, resolve_configs, train, train_step

STEPS = 3  # 24 training clips / batch 8
train_module = importlib.import_module("vae.train")  # `vae.train` the attribute is the function


def _meta(directory):
    return json.loads((directory / "config.json").read_text())["meta"]


def _run(store, out, **kw):
    return list(train(store.path, out, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, **kw}))


def _run_until(store, out, when, **kw):
    """Like ``_run``, but asks training to stop right after the first event for which ``when(event)`` holds."""
    stop, events = threading.Event(), []
    for ev in train(store.path, out, model_cfg=tiny_model_cfg(), stop=stop, **{**TRAIN_KW, **kw}):
        events.append(ev)
        if when(ev):
            stop.set()
    return events


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
    assert epochs[0].preview.original.shape == epochs[0].preview.reconstruction.shape == (32, 64)
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
    assert last["epoch"] == 4 and [h["epoch"] for h in last["history"]] == [1, 2, 3, 4]
    assert not (out / "training_state.pt").exists()  # the best checkpoint carries no training state
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
    events = _run_until(tiny_store, tmp_path, lambda ev: ev.kind == "step", epochs=2)
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
    assert str(e.value) == (f"loss became nan at epoch 2, step 1; training stopped. The last good state is kept in "
                            f"{tmp_path / 'last'}: resume the run with a lower learning rate (now 0.003) or a smaller "
                            "reconstruction weight (app: Train tab, Resume; command line: `--resume --lr ...`).")
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


# --- values, recomputed independently of the training loop ---------------------------------------


def _specs(store, indices) -> torch.Tensor:
    return torch.from_numpy(np.array(store.specs[sorted(indices)])).unsqueeze(1)  # (N, 1, F, T)


def _losses_by_hand(model, x, recon_weight, kl_weight):
    """(total, recon, kl) of decoding the posterior mean, written out: per-pixel MSE, KL to N(0, I)
    summed over dims, batch mean."""
    mu, logvar = model.encode(x)
    x_hat = model.decode(mu)
    recon = ((x_hat - x) ** 2).mean()
    kl = (0.5 * (mu**2 + logvar.exp() - 1.0 - logvar)).sum(1).mean()
    return recon_weight * recon + kl_weight * kl, recon, kl


def test_validation_losses_are_those_of_the_test_split(trained, tiny_store):
    """Each saved checkpoint's validation losses, recomputed on the test clips through the posterior mean."""
    out, events = trained
    history = _meta(out / "last")["history"]
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.val for e in epochs] == [h["val"] for h in history]
    x = _specs(tiny_store, tiny_store.indices("test"))
    assert len(x) == 12
    for directory in (out / "last", out):  # the last epoch and the best one
        ck = load_checkpoint(directory)
        tc = ck.train_cfg
        assert (tc.kl_weight, tc.recon_weight) == (TRAIN_KW["kl_weight"], 10.0 * 32 * 64)
        with torch.no_grad():
            loss, recon, kl = _losses_by_hand(ck.model, x, tc.recon_weight, tc.kl_weight)
        val = history[ck.meta["epoch"] - 1]["val"]
        assert val["loss"] == pytest.approx(float(loss), rel=1e-5)
        assert val["recon"] == pytest.approx(float(recon), rel=1e-5)
        assert val["kl"] == pytest.approx(float(kl), rel=1e-5)
    # and the best checkpoint is the epoch with the lowest of these
    assert _meta(out)["best_val"] == min(h["val"]["loss"] for h in history)


def _spy_validation(monkeypatch) -> list[torch.Tensor]:
    """Record the inputs of every loss computed without gradients (validation, not training)."""
    seen, real = [], train_module.vae_loss

    def loss(x_hat, x, *args):
        if not torch.is_grad_enabled():
            seen.append(x.detach().clone())
        return real(x_hat, x, *args)

    monkeypatch.setattr(train_module, "vae_loss", loss)
    return seen


def _which_clips(store, batches) -> list[int]:
    """Store indices of the spectrograms in ``batches`` (each identified by its exact values)."""
    by_bytes = {np.ascontiguousarray(store.specs[i]).tobytes(): i for i in range(len(store))}
    assert len(by_bytes) == len(store)  # every clip is distinct
    return [by_bytes[row[0].numpy().tobytes()] for b in batches for row in b]


def test_validation_uses_exactly_the_test_clips(tiny_store, tmp_path, monkeypatch):
    seen = _spy_validation(monkeypatch)
    _run(tiny_store, tmp_path, epochs=1)
    used = _which_clips(tiny_store, seen)
    assert sorted(used) == tiny_store.indices("test") and len(set(used)) == len(used)
    assert _meta(tmp_path)["n_val"] == len(used) == 12
    assert _meta(tmp_path)["n_train"] == len(tiny_store.indices("train"))


def test_store_without_test_split_validates_on_the_first_training_clips(tmp_path, monkeypatch):
    src = tmp_path / "in"
    for p in write_fsdd_like(src):
        if int(p.stem.split("_")[2]) < 5:
            p.unlink()
    build_store(src, tmp_path / "store", TINY)
    store = Store(tmp_path / "store")
    seen = _spy_validation(monkeypatch)
    events = _run(store, tmp_path / "out", epochs=1)
    assert "no test split" in events[0].message and all(e.message == events[0].message for e in events[:-1])
    assert events[-1].kind == "done"
    used = _which_clips(store, seen)
    assert used == store.indices("train")[:2]  # a tenth of the 24 training clips
    assert _meta(tmp_path / "out")["n_val"] == len(used)


def _adam_by_hand(params, grads, state, lr, t, betas=(0.9, 0.999), eps=1e-8):
    """One Adam step (Kingma & Ba, with bias correction) on tensors, in place."""
    b1, b2 = betas
    for p, g in zip(params, grads):
        m, v = state.setdefault(id(p), (torch.zeros_like(p), torch.zeros_like(p)))
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def _replicate(store, n_steps, warmup, clip, by_hand):
    """The first ``n_steps`` steps of epoch 0 (batches of 12), written out: the run's seed, batch order and
    noise; each step uses only its own batch's gradient, clipped to norm ``clip``; the KL weight ramped
    over ``warmup`` epochs. Adam is written out (``by_hand``) or torch's, driven here step by step.

    Returns (model after the steps, [(loss, recon, kl) per step])."""
    rw, kw = 10.0 * 32 * 64, TRAIN_KW["kl_weight"]
    train_idx = sorted(store.indices("train"))
    data = np.array(store.specs[train_idx])
    order = np.random.default_rng([TRAIN_KW["seed"], 0]).permutation(len(train_idx))
    torch.manual_seed(TRAIN_KW["seed"])
    model = VAE(tiny_model_cfg()).train()
    params, state, losses = list(model.parameters()), {}, []
    opt = torch.optim.Adam(params, lr=TRAIN_KW["lr"])
    for t in range(1, n_steps + 1):
        x = torch.from_numpy(data[np.sort(order[(t - 1) * 12:t * 12])]).unsqueeze(1)
        warm = min(1.0, ((t - 1) / 2) / warmup) if warmup else 1.0  # epoch 0, step t-1 of 2
        x_hat, mu, logvar = model(x)  # the same forward, so the same noise and bit-identical gradients
        loss, recon, kl = vae_loss(x_hat, x, mu, logvar, rw, kw * warm)
        model.zero_grad(set_to_none=True)
        loss.backward()
        if by_hand:
            grads = [p.grad.detach().clone() for p in params]
            if clip:
                norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
                grads = [g * min(1.0, clip / (norm + 1e-6)) for g in grads]
            with torch.no_grad():
                _adam_by_hand(params, grads, state, TRAIN_KW["lr"], t)
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
        losses.append((loss.item(), recon.item(), kl.item()))
    return model, losses


def _assert_same_weights(directory, model, atol):
    got, expected = load_checkpoint(directory).model.state_dict(), model.state_dict()
    assert got.keys() == expected.keys()
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=atol, msg=name)


def test_first_step_is_adam_by_hand(tiny_store, tmp_path):
    """Stopped after one step: the weights are one hand-written Adam step (lr 3e-3, betas 0.9/0.999)
    on the clipped gradient of the first batch."""
    events = _run_until(tiny_store, tmp_path, lambda ev: True, epochs=1, batch_size=12)
    assert [e.kind for e in events] == ["step", "stopped"]
    model, losses = _replicate(tiny_store, 1, warmup=0, clip=5.0, by_hand=True)
    _assert_same_weights(tmp_path / "last", model, atol=1e-6)
    assert [events[0].losses[k] for k in ("loss", "recon", "kl")] == pytest.approx(losses[0], rel=1e-6)


@pytest.mark.parametrize(("warmup", "clip"), [(0, 5.0), (2, 0.0)], ids=["clipped", "warmup-unclipped"])
def test_two_steps_match_adam_driven_by_hand(tiny_store, tmp_path, warmup, clip):
    """One epoch of two batches of 12 against the same two steps driven here. The second step must use
    only the second batch's gradient (gradients zeroed between steps). Torch's Adam is used because the
    conv biases before batch norm have near-zero gradients that are pure rounding noise: any difference
    in the first step's rounding changes them, and Adam magnifies them to full-size steps."""
    kw = {**TRAIN_KW, "epochs": 1, "batch_size": 12, "kl_warmup_epochs": warmup, "grad_clip": clip}
    events = _run(tiny_store, tmp_path, **kw)
    steps = [e for e in events if e.kind == "step"]
    assert [(e.step, e.steps) for e in steps] == [(1, 2), (2, 2)]
    model, losses = _replicate(tiny_store, 2, warmup, clip, by_hand=False)
    # running means over the epoch (two equal batches)
    for j, k in enumerate(("loss", "recon", "kl")):
        assert steps[0].losses[k] == pytest.approx(losses[0][j], rel=1e-6)
        assert steps[1].losses[k] == pytest.approx((losses[0][j] + losses[1][j]) / 2, rel=1e-6)
    for directory in (tmp_path / "last", tmp_path):
        _assert_same_weights(directory, model, atol=1e-7)
    assert load_training_state(tmp_path / "last")["optimizer"]["state"][0]["step"] == 2


def test_epoch_events_preview_and_latents_hold_the_right_values(trained, tiny_store):
    out, events = trained
    epochs = [e for e in events if e.kind == "epoch"]
    history = _meta(out / "last")["history"]
    best_epoch = _meta(out)["epoch"]
    for e, h in zip(epochs, history):
        assert e.losses == h["train"] and e.val == h["val"]
        improved = h["val"]["loss"] == min(x["val"]["loss"] for x in history[: e.epoch])
        assert e.checkpoint == str(out if improved else out / "last")
    assert events[-1].val == history[-1]["val"] and events[-1].losses == history[-1]["train"]
    assert f"{_meta(out)['best_val']:.4g}" in events[-1].message
    # the last preview: the first test clip and its reconstruction by the final weights
    first_test = tiny_store.indices("test")[0]
    preview = epochs[-1].preview
    assert isinstance(preview, Preview)
    assert preview.index == first_test and preview.name == tiny_store.clip_name(first_test)
    np.testing.assert_array_equal(preview.original, tiny_store.specs[first_test])
    last = load_checkpoint(out / "last")
    np.testing.assert_allclose(preview.reconstruction, reconstruct(last, preview.original)[0].numpy(),
                               atol=1e-6)
    # latent statistics: posterior means of the training clips under the best checkpoint
    best = load_checkpoint(out)
    assert best.meta["epoch"] == best_epoch
    train_idx = tiny_store.indices("train")
    stats = load_latent_stats(out)
    torch.testing.assert_close(stats.codes, encode(best, np.array(tiny_store.specs[train_idx]))[0])
    assert stats.code_names == [tiny_store.clip_name(i) for i in train_idx]
    # the dB range kept for decoding: every clip of a global-normalised store has the same one
    ref = tiny_store.config.ref_db
    assert best.meta["typical_range"] == pytest.approx([ref - 80.0, ref])


def test_stopped_and_resumed_run_ends_where_an_uninterrupted_one_does(tiny_store, tmp_path):
    """Resuming restores weights, optimiser, RNG and position: the result is the run that never stopped."""
    straight = _run(tiny_store, tmp_path / "a", epochs=2)
    _run_until(tiny_store, tmp_path / "b", lambda ev: ev.kind == "step" and (ev.epoch, ev.step) == (0, 2), epochs=2)
    assert load_training_state(tmp_path / "b" / "last")["step"] == 2
    resumed = list(train(tiny_store.path, tmp_path / "b", resume=True))
    assert [(e.epoch, e.step) for e in resumed if e.kind == "step"] == [(0, 3), (1, 1), (1, 2), (1, 3)]
    _assert_same_weights(tmp_path / "b" / "last", load_checkpoint(tmp_path / "a" / "last").model, atol=0)
    assert _meta(tmp_path / "b" / "last")["history"][-1]["val"] == _meta(tmp_path / "a" / "last")["history"][-1]["val"]
    assert resumed[-1].val == straight[-1].val


def test_an_epoch_stopped_part_way_records_the_mean_over_all_its_steps(tiny_store, tmp_path):
    """Issue #12: an epoch stopped at step 2 and resumed recorded a train loss averaged over step 3 only. The
    running sums are saved with last/, so history and step events are those of a run that never stopped. A
    training state saved before the sums were kept still resumes (its epoch then averages the later steps)."""
    straight = _run(tiny_store, tmp_path / "a", epochs=2)
    stop_at_2 = lambda ev: ev.kind == "step" and (ev.epoch, ev.step) == (0, 2)  # noqa: E731
    _run_until(tiny_store, tmp_path / "b", stop_at_2, epochs=2)
    resumed = list(train(tiny_store.path, tmp_path / "b", resume=True))
    history = _meta(tmp_path / "b" / "last")["history"]
    assert [h["train"] for h in history] == [h["train"] for h in _meta(tmp_path / "a" / "last")["history"]]
    assert [e.losses for e in resumed if e.kind == "step"] == [e.losses for e in straight if e.kind == "step"][2:]

    _run_until(tiny_store, tmp_path / "c", stop_at_2, epochs=2)
    path = tmp_path / "c" / "last" / "training_state.pt"
    old = {k: v for k, v in torch.load(path, weights_only=True).items() if k not in ("epoch_sums", "epoch_seen")}
    torch.save(old, path)
    resumed = list(train(tiny_store.path, tmp_path / "c", resume=True))
    assert _meta(tmp_path / "c" / "last")["history"][0]["train"] == resumed[0].losses  # step 3's own losses
    assert resumed[-1].kind == "done"


# --- events with a fake clock: rates, ETA, elapsed and training time are exact ------------------------


class _Clock:
    """Stands in for ``time.perf_counter`` in vae.train: time moves only while a training step runs,
    the g-th training step (counted over every run that uses this clock) taking ``durations[g - 1]``."""

    def __init__(self, monkeypatch, durations):
        self.now, self.durations, self.steps = 0.0, list(durations), 0
        monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: self.now))
        real = train_module.vae_loss

        def loss(*args):
            if torch.is_grad_enabled():  # a training step, not validation
                self.now += self.durations[self.steps]
                self.steps += 1
            return real(*args)

        monkeypatch.setattr(train_module, "vae_loss", loss)


def _check_event(ev, kind, epoch, epochs, step, steps, *, losses, val=None, rate=0.0, eta=0.0, elapsed,
                 checkpoint=None, preview=False, message=""):
    assert (ev.kind, ev.epoch, ev.epochs, ev.step, ev.steps) == (kind, epoch, epochs, step, steps)
    assert ev.losses == losses and ev.val == val
    assert ev.samples_per_s == pytest.approx(rate, rel=1e-12, abs=0)
    assert ev.eta_s == pytest.approx(eta, rel=1e-12, abs=0)
    assert ev.elapsed_s == pytest.approx(elapsed, rel=1e-12, abs=0)
    assert ev.checkpoint == checkpoint and ev.message == message
    assert (ev.preview is not None) == preview


def test_time_limit_stop_and_resume_events_with_a_fake_clock(tiny_store, tmp_path, monkeypatch):
    """Batches of 10, 10 and 4 clips. Steps of the first epoch take 0.25 s, of the second 50 s. The time
    limit (0.5 s) is reached exactly at step 2; the resumed run has no limit and finishes."""
    _Clock(monkeypatch, [0.25] * 3 + [50.0] * 3)
    kw = {**TRAIN_KW, "epochs": 2, "batch_size": 10, "preview_every": 0}
    first = list(train(tiny_store.path, tmp_path, model_cfg=tiny_model_cfg(), time_limit_s=0.5, **kw))
    assert [e.kind for e in first] == ["step", "step", "stopped"]
    s1, s2, stopped = first
    # rate = clips trained in this run / its training time; no ETA before the run's 3rd step (ETA_MIN_STEPS)
    assert train_module.ETA_MIN_STEPS == 3
    _check_event(s1, "step", 0, 2, 1, 3, losses=s1.losses, rate=10 / 0.25, eta=0.0, elapsed=0.25)
    _check_event(s2, "step", 0, 2, 2, 3, losses=s2.losses, rate=20 / 0.5, eta=0.0, elapsed=0.5)
    _check_event(stopped, "stopped", 0, 2, 2, 3, losses=s2.losses, elapsed=0.5, checkpoint=str(tmp_path / "last"),
                 message="time limit reached at epoch 1, step 2; resume to continue")
    state = load_training_state(tmp_path / "last")
    assert (state["epoch"], state["step"], state["train_time"], state["best"]) == (0, 2, 0.5, math.inf)
    assert (_meta(tmp_path / "last")["epoch"], _meta(tmp_path / "last")["step"]) == (0, 2)
    assert _meta(tmp_path / "last")["train_time_s"] == 0.5
    # no validated best yet: the latest weights stand in as the checkpoint, without training state
    assert (_meta(tmp_path)["epoch"], _meta(tmp_path)["step"]) == (0, 0)
    assert not (tmp_path / "training_state.pt").exists()

    resumed = list(train(tiny_store.path, tmp_path, resume=True))  # the time limit is not carried over
    assert [e.kind for e in resumed] == ["step", "epoch"] + ["step"] * 3 + ["epoch", "done"]
    r3, e1, t1, t2, t3, e2, done = resumed
    out, last = str(tmp_path), str(tmp_path / "last")
    _check_event(r3, "step", 0, 2, 3, 3, losses=r3.losses, rate=4 / 0.25, eta=0.0, elapsed=0.25)
    history = _meta(tmp_path / "last")["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["train_time_s"] for h in history] == [0.8, 150.8]  # 0.75 and 150.75 s of training, rounded
    assert e1.losses == r3.losses == history[0]["train"]  # the epoch's mean so far, its steps before the stop too
    _check_event(e1, "epoch", 1, 2, 3, 3, losses=history[0]["train"], val=history[0]["val"], rate=4 / 0.25,
                 elapsed=0.25, checkpoint=out, message="")
    # the resumed run's speed covers all its steps (4 + 10 + 10 + 4 clips), not just this epoch's; from its
    # 3rd step on, eta = remaining steps * the run's wall time per step
    _check_event(t1, "step", 1, 2, 1, 3, losses=t1.losses, rate=14 / 50.25, eta=0.0, elapsed=50.25)
    _check_event(t2, "step", 1, 2, 2, 3, losses=t2.losses, rate=24 / 100.25, eta=1 * 100.25 / 3, elapsed=100.25)
    _check_event(t3, "step", 1, 2, 3, 3, losses=t3.losses, rate=28 / 150.25, eta=0.0, elapsed=150.25)
    improved = history[1]["val"]["loss"] < history[0]["val"]["loss"]
    _check_event(e2, "epoch", 2, 2, 3, 3, losses=history[1]["train"], val=history[1]["val"], rate=24 / 150,
                 elapsed=150.25, checkpoint=out if improved else last)
    best = min(h["val"]["loss"] for h in history)
    _check_event(done, "done", 2, 2, 3, 3, losses=history[1]["train"], val=history[1]["val"], elapsed=150.25,
                 checkpoint=out, message=f"best validation loss {best:.4g}")
    state = load_training_state(tmp_path / "last")
    assert (state["epoch"], state["step"], state["train_time"], state["best"]) == (2, 0, 150.75, best)
    assert _meta(tmp_path / "last")["train_time_s"] == 150.8 and _meta(tmp_path)["best_val"] == best


def test_checkpoint_every_preview_every_and_stop_after_an_epoch(tiny_store, tmp_path, monkeypatch):
    """``last`` after every 3rd epoch and the final one; previews on every 3rd, the final and the first
    epoch of each run. Stopping after epoch 2 (not a checkpoint epoch) writes ``last`` first."""
    _Clock(monkeypatch, [1.0] * 21)
    kw = {**TRAIN_KW, "epochs": 7, "checkpoint_every": 3, "preview_every": 3}
    stop = threading.Event()
    seen = []

    def run(**extra):
        events = []
        for ev in train(tiny_store.path, tmp_path, stop=stop, **extra):
            events.append(ev)
            if ev.kind == "epoch":
                has_last = (tmp_path / "last" / "config.json").exists()
                seen.append((ev.epoch, ev.preview is not None, _meta(tmp_path / "last")["epoch"] if has_last else None))
                if ev.epoch == 2:
                    stop.set()
        return events

    first = run(model_cfg=tiny_model_cfg(), **kw)
    assert [e.kind for e in first] == (["step"] * 3 + ["epoch"]) * 2 + ["stopped"]
    epoch2, stopped = first[-2], first[-1]
    _check_event(stopped, "stopped", 2, 7, 3, 3, losses=epoch2.losses, val=epoch2.val, elapsed=6.0,
                 checkpoint=str(tmp_path / "last"), message="stopped on request after epoch 2; resume to continue")
    assert _meta(tmp_path / "last")["epoch"] == 2 and load_training_state(tmp_path / "last")["epoch"] == 2
    assert (tmp_path / "latents.safetensors").is_file()
    stop.clear()
    resumed = run(resume=True)
    assert resumed[-1].kind == "done"
    assert seen == [(1, True, None), (2, False, None),  # first run: the first epoch previews
                    (3, True, 3), (4, False, 3), (5, False, 3), (6, True, 6), (7, True, 7)]


def test_stop_on_the_last_step_of_an_epoch_finishes_the_epoch(tiny_store, tmp_path):
    events = _run_until(tiny_store, tmp_path, lambda ev: ev.kind == "step" and ev.step == STEPS, epochs=2)
    assert [e.kind for e in events] == ["step"] * STEPS + ["epoch", "stopped"]
    assert events[-1].epoch == 1 and events[-1].message == "stopped on request after epoch 1; resume to continue"
    assert load_training_state(tmp_path / "last")["epoch"] == 1


def test_stop_during_the_final_epoch_ends_as_done(tiny_store, tmp_path):
    events = _run_until(tiny_store, tmp_path, lambda ev: ev.kind == "step" and ev.step == STEPS, epochs=1)
    assert [e.kind for e in events] == ["step"] * STEPS + ["epoch", "done"]


def test_kl_weight_warms_up_linearly_by_step(tiny_store, tmp_path, monkeypatch):
    """Two steps per epoch, warm-up over 2 epochs: the KL weight at step s of epoch e is
    kl_weight * min(1, (e + s / 2) / 2); without warm-up it is kl_weight throughout."""
    weights, real = [], train_module.vae_loss

    def loss(x_hat, x, mu, logvar, recon_weight, kl_weight):
        if torch.is_grad_enabled():
            weights.append((recon_weight, kl_weight))
        return real(x_hat, x, mu, logvar, recon_weight, kl_weight)

    monkeypatch.setattr(train_module, "vae_loss", loss)
    kw = {**TRAIN_KW, "epochs": 3, "batch_size": 12, "kl_weight": 0.4, "recon_weight": 7.0}
    _run(tiny_store, tmp_path / "a", kl_warmup_epochs=2, **{k: v for k, v in kw.items() if k != "kl_warmup_epochs"})
    assert weights == [(7.0, 0.4 * f) for f in (0.0, 0.25, 0.5, 0.75, 1.0, 1.0)]
    weights.clear()
    _run(tiny_store, tmp_path / "b", **{**kw, "epochs": 1})
    assert weights == [(7.0, 0.4), (7.0, 0.4)]


def _store_with_train_clips(tmp_path, n) -> Store:
    """A store of the first ``n`` training clips of the usual synthetic set, and no test split."""
    src = tmp_path / f"in{n}"
    files = write_fsdd_like(src)
    train_files = [p for p in files if int(p.stem.split("_")[2]) >= 5]
    for p in files:
        if p not in train_files[:n]:
            p.unlink()
    build_store(src, tmp_path / f"store{n}", TINY)
    return Store(tmp_path / f"store{n}")


@pytest.mark.parametrize(("n_train", "n_val"), [(1, 1), (12, 1), (20, 2)])
def test_without_test_split_a_tenth_of_the_training_clips_validates(tmp_path, monkeypatch, n_train, n_val):
    """A tenth of the training clips (at least one) validate; with one clip the losses are its own."""
    store = _store_with_train_clips(tmp_path, n_train)
    assert len(store.indices("train")) == n_train and not store.indices("test")
    seen = _spy_validation(monkeypatch)
    events = _run(store, tmp_path / "out", epochs=1, batch_size=32)
    assert _which_clips(store, seen) == store.indices("train")[:n_val]
    assert _meta(tmp_path / "out")["n_val"] == n_val
    epoch = events[-2]
    assert epoch.kind == "epoch" and epoch.losses == events[0].losses  # one step: the epoch mean is that step's
    ck = load_checkpoint(tmp_path / "out")
    with torch.no_grad():
        loss, recon, kl = _losses_by_hand(ck.model, _specs(store, store.indices("train")[:n_val]),
                                          ck.train_cfg.recon_weight, ck.train_cfg.kl_weight)
    assert epoch.val == pytest.approx({"loss": float(loss), "recon": float(recon), "kl": float(kl)}, rel=1e-4)


def test_best_checkpoint_only_on_strict_improvement(tiny_store, tmp_path, monkeypatch):
    vals = iter([3.0, 2.0, 2.0, 1.0])
    monkeypatch.setattr(train_module, "_validate", lambda *a: {"loss": next(vals), "recon": 0.5, "kl": 0.25})
    best_epochs, checkpoints = [], []
    for ev in train(tiny_store.path, tmp_path, model_cfg=tiny_model_cfg(), **TRAIN_KW):
        if ev.kind == "epoch":
            best_epochs.append(_meta(tmp_path)["epoch"])
            checkpoints.append(ev.checkpoint)
    out, last = str(tmp_path), str(tmp_path / "last")
    assert best_epochs == [1, 2, 2, 4]  # epoch 3 only equals the best: the checkpoint stays at epoch 2
    assert checkpoints == [out, out, last, out]
    assert _meta(tmp_path)["best_val"] == 1.0 and _meta(tmp_path)["step"] == 0
    assert ev.kind == "done" and ev.message == "best validation loss 1"
    assert not (tmp_path / "training_state.pt").exists()  # the best checkpoint has no training state


def test_nan_validation_loss_message(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "_validate", lambda *a: {"loss": math.inf, "recon": 0.5, "kl": 0.25})
    # nothing was saved: the message must not point at a folder that does not exist (#12, defect 8)
    msg = ("validation loss became inf after epoch 1; training stopped. Nothing was saved before it diverged: "
           "start the run again with a lower learning rate (now 0.003) or a smaller reconstruction weight.")
    with pytest.raises(TrainingError) as e:
        _run(tiny_store, tmp_path, epochs=2)
    assert str(e.value) == msg
    assert not (tmp_path / "last").exists() and not (tmp_path / "config.json").exists()


def test_default_architecture_latent_dim_and_meta(tiny_store, tmp_path):
    """Without a model config the architecture preset is sized for the store; ``latent_dim`` patches it."""
    events = list(train(tiny_store.path, tmp_path, epochs=1, batch_size=24, latent_dim=3, device="cpu"))
    assert events[-1].kind == "done"
    ck = load_checkpoint(tmp_path)
    assert ck.model_cfg == model_config("default", (32, 64), latent_dim=3)
    assert ck.train_cfg == train_config("default", (32, 64)).replace(epochs=1, batch_size=24, device="cpu")
    meta = ck.meta
    assert meta["arch"] == "default" and meta["store"] == str(tiny_store.path.resolve())
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__


def test_resume_keeps_the_architecture_and_history(tiny_store, tmp_path):
    _run(tiny_store, tmp_path, epochs=1, arch="study")
    assert _meta(tmp_path / "last")["arch"] == "study"
    list(train(tiny_store.path, tmp_path, resume=True, epochs=2))
    meta = _meta(tmp_path / "last")
    assert meta["arch"] == "study" and [h["epoch"] for h in meta["history"]] == [1, 2]
    # a last/ whose meta lacks them (hand-edited or foreign): the given arch, a fresh history
    cfg = json.loads((tmp_path / "last" / "config.json").read_text())
    del cfg["meta"]["arch"], cfg["meta"]["history"]
    (tmp_path / "last" / "config.json").write_text(json.dumps(cfg))
    list(train(tiny_store.path, tmp_path, arch="mine", resume=True, epochs=3))
    meta = _meta(tmp_path / "last")
    assert meta["arch"] == "mine" and [h["epoch"] for h in meta["history"]] == [3]


def test_resume_on_a_store_of_another_shape(tiny_store, fsdd_dir, tmp_path):
    _run(tiny_store, tmp_path / "run", epochs=1)
    build_store(fsdd_dir, tmp_path / "wide", TINY.replace(hop_length=16))
    with pytest.raises(TrainingError, match=r"^cannot resume: checkpoint expects \(32, 64\) spectrograms, "
                                            r"store has \(32, 128\)$"):
        next(train(tmp_path / "wide", tmp_path / "run", resume=True))


def test_store_without_training_clips(tmp_path):
    src = tmp_path / "in"
    for p in write_fsdd_like(src):
        if int(p.stem.split("_")[2]) >= 5:
            p.unlink()
    build_store(src, tmp_path / "store", TINY)
    with pytest.raises(TrainingError, match=f"^store {re.escape(str(tmp_path / 'store'))} has no training clips$"):
        next(train(tmp_path / "store", tmp_path / "out", model_cfg=tiny_model_cfg(), device="cpu"))


def test_model_and_store_shapes_disagree_message(tiny_store, tmp_path):
    wrong = ModelConfig(n_freq=64, n_frames=64, channels=(8,), strides=((2, 2),), decoder_channels=(), latent_dim=2)
    store = re.escape(str(tiny_store.path))
    with pytest.raises(TrainingError, match=f"^model expects 64x64 spectrograms, store {store} has 32x64$"):
        next(train(tiny_store.path, tmp_path, model_cfg=wrong))


def test_pick_device_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("mps")
    assert pick_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(TrainingError, match=r"^device 'mps' requested but not available; use --device cpu or auto$"):
        pick_device("mps")


@pytest.mark.parametrize("room", [0, -1], ids=["fits", "one-byte-over"])
def test_batches_preload_up_to_the_limit(tiny_store, monkeypatch, room):
    """A store of at most PRELOAD_BYTES (all its splits together) is copied to RAM, a larger one read from the
    store batch by batch with explicit reads (Store.rows); the batches are the same either way."""
    idx = tiny_store.indices("train")
    nbytes = len(tiny_store) * 32 * 64 * 4
    monkeypatch.setattr(train_module, "PRELOAD_BYTES", nbytes + room)
    b = train_module._Batches(tiny_store, list(reversed(idx)), 10)
    if room == 0:
        assert b.preloaded and isinstance(b.data, np.ndarray) and b.data.shape == (len(idx), 32, 64)
    else:
        assert not b.preloaded and b.data is tiny_store.rows
    assert len(b) == 3
    got = list(b.epoch(0, 1))
    order = np.random.default_rng([0, 1]).permutation(len(idx))
    for s, batch in enumerate(got):
        rows = sorted(np.asarray(idx)[order[s * 10:(s + 1) * 10]])
        torch.testing.assert_close(batch, torch.from_numpy(np.array(tiny_store.specs[rows])).unsqueeze(1))


@pytest.mark.parametrize("world", [1, 3])
def test_a_large_store_gives_the_batches_of_a_preloaded_one(tiny_store, monkeypatch, world):
    """The read path for stores over PRELOAD_BYTES (forced here with a limit of 0) yields exactly the batches of
    the preloaded path: every epoch, shuffled or not, from any start, for every rank's slice under torchrun,
    for the training and the validation split."""
    from vae.distributed import Dist

    def batches(preload: int, d: Dist, split: str, size: int) -> list[list[torch.Tensor]]:
        monkeypatch.setattr(train_module, "PRELOAD_BYTES", preload)
        b = train_module._Batches(tiny_store, tiny_store.indices(split), size, d)
        assert b.preloaded == (preload > 0)
        return [list(b.epoch(seed, epoch, shuffle, start)) for seed, epoch, shuffle, start in
                ((0, 0, True, 0), (0, 1, True, 0), (7, 2, True, 1), (0, 0, False, 0), (3, 5, True, len(b) - 1))]

    for rank in range(world):
        for split, size in (("train", 5), ("test", 4)):
            d = Dist(rank, world)
            fast, bounded = batches(2 << 30, d, split, size), batches(0, d, split, size)
            assert [len(e) for e in fast] == [len(e) for e in bounded] and all(len(e) for e in fast[:4])
            for e_fast, e_bounded in zip(fast, bounded):
                for x, y in zip(e_fast, e_bounded):
                    assert x.dtype == y.dtype == torch.float32 and torch.equal(x, y)


def test_reading_a_large_store_leaves_no_pages_mapped(tiny_store, monkeypatch):
    """The bounded read path reads with pread, not through the memory map (whose pages would stay in RSS)."""
    monkeypatch.setattr(train_module, "PRELOAD_BYTES", 0)
    touched = []
    monkeypatch.setattr(type(tiny_store.specs), "__getitem__", lambda *a: touched.append(a) or np.zeros(0))
    b = train_module._Batches(tiny_store, tiny_store.indices("train"), 8)
    assert sum(len(x) for x in b.epoch(0, 0)) == len(tiny_store.indices("train"))
    assert touched == []


# --- the named steps: configs, one optimisation step, the ETA --------------------------------------------


def test_resolve_configs_checks_overrides(tiny_store, tmp_path, monkeypatch):
    cfg = resolve_configs(tiny_store, epochs=2, latent_dim=3, device="cpu")
    assert (cfg.arch, cfg.epochs_done, cfg.device) == ("default", 0, torch.device("cpu"))
    assert cfg.model == model_config("default", (32, 64), latent_dim=3)
    assert cfg.train == train_config("default", (32, 64)).replace(epochs=2, device="cpu")
    with pytest.raises(ConfigError, match=re.escape("unknown training parameters: ['bogus', 'epoch']")):
        resolve_configs(tiny_store, epoch=3, bogus=1)
    for kw in ({}, {"model_cfg": tiny_model_cfg()}):  # also when a model config is given
        with pytest.raises(ConfigError, match=r"^latent_dim must be at least 1, got 0$"):
            resolve_configs(tiny_store, latent_dim=0, **kw)
    with pytest.raises(ConfigError, match="lr must be positive"):
        resolve_configs(tiny_store, lr=0.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="CUDA is not available"):
        resolve_configs(tiny_store, device="cuda")
    with pytest.raises(ConfigError, match=re.escape("unknown training parameters: ['epoch']")):
        next(train(tiny_store.path, tmp_path / "out", epoch=3))
    assert not (tmp_path / "out").exists()


def test_resolve_configs_on_resume_keeps_the_model(trained, tiny_store):
    last = load_config(trained[0] / "last")
    cfg = resolve_configs(tiny_store, "study", last=last, epochs=6, latent_dim=9)
    assert (cfg.arch, cfg.model, cfg.epochs_done) == ("default", tiny_model_cfg(), 4)
    assert cfg.train == last.train_cfg.replace(epochs=6)


def test_train_step_is_one_clipped_adam_step(tiny_store):
    """Forward, loss (KL weight scaled), backward, clipping, Adam: the same as written out here, bit for bit;
    a non-finite loss raises Diverged before the weights change."""
    tc = TrainConfig(lr=1e-3, recon_weight=10.0, kl_weight=0.5, grad_clip=1.0)
    x = _specs(tiny_store, tiny_store.indices("train")[:8])
    torch.manual_seed(0)
    a = VAE(tiny_model_cfg()).train()
    b = copy.deepcopy(a)
    opt_a, opt_b = torch.optim.Adam(a.parameters(), lr=1e-3), torch.optim.Adam(b.parameters(), lr=1e-3)
    torch.manual_seed(1)
    losses = train_step(a, opt_a, x, tc, kl_scale=0.5)
    torch.manual_seed(1)
    x_hat, mu, logvar = b(x)
    loss, recon, kl = vae_loss(x_hat, x, mu, logvar, 10.0, 0.25)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(b.parameters(), 1.0)
    opt_b.step()
    assert losses == {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}
    for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), name
    before = {k: v.detach().clone() for k, v in a.named_parameters()}  # (batch-norm statistics do move)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(Diverged, match=r"^loss became nan$"):
        train_step(a, opt_a, bad, tc)
    assert all(torch.equal(v, before[k]) for k, v in a.named_parameters())


def test_eta_uses_the_whole_run_not_the_epochs_first_step(tiny_store, tmp_path, monkeypatch):
    """Steps of 1 s but a slow (10 s) first step in epoch 2: the speed and ETA come from all of the run's
    steps, so that one step moves the ETA little; no ETA before the run's 3rd step."""
    _Clock(monkeypatch, [1.0, 1.0, 1.0, 10.0, 1.0, 1.0])
    events = _run(tiny_store, tmp_path, epochs=2, batch_size=10, preview_every=0)
    steps = [e for e in events if e.kind == "step"]
    assert [(e.epoch, e.step) for e in steps] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    # remaining steps x wall time so far / steps so far
    assert [e.eta_s for e in steps] == pytest.approx([0, 0, 3 * 3 / 3, 2 * 13 / 4, 1 * 14 / 5, 0], rel=1e-12)
    assert [e.samples_per_s for e in steps] == pytest.approx([10, 10, 8, 34 / 13, 44 / 14, 48 / 15], rel=1e-12)
    assert all(isinstance(e.kind, str) and e.kind in typing.get_args(EventKind) for e in events)
