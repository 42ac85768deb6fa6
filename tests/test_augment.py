"""Spectrogram-domain augmentation of training batches (vae.augment) and its use in training (vae.train)."""

import importlib
import threading

import numpy as np
import pytest
import torch
from conftest import TRAIN_KW, tiny_model_cfg

from vae.augment import add_gain, add_noise, augment_batch, batch_generator, resample_axis
from vae.checkpoint import load_checkpoint
from vae.config import TrainConfig, train_config
from vae.train import train

train_module = importlib.import_module("vae.train")
TOP_DB = 80.0


def _bright(f: int, t: int, k: int, axis: int) -> torch.Tensor:
    """(1, 1, F, T) zeros with index ``k`` of ``axis`` (-2: a frequency bin, -1: a frame) at 1."""
    x = torch.zeros(1, 1, f, t)
    x.select(axis, k).fill_(1.0)
    return x


def _random(b: int = 6, f: int = 32, t: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, f, t, generator=torch.Generator().manual_seed(seed))  # (B, 1, F, T)


# --- the transforms, one at a time ----------------------------------------------------------------


@pytest.mark.parametrize("g", [6.0, -6.0, 2.5])
def test_gain_shifts_by_g_over_top_db_and_clamps(g):
    x = torch.tensor([0.0, 0.02, 0.5, 0.97, 1.0]).reshape(1, 1, 5, 1)
    y = add_gain(x, torch.tensor([g]), TOP_DB)
    assert torch.allclose(y, (x + g / TOP_DB).clamp(0, 1), atol=1e-7)
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("alpha, k", [(1.1, 40), (0.9, 40), (1.07, 37), (0.93, 100), (1.0, 64)])
def test_warp_moves_a_bright_bin_from_k_to_alpha_k(alpha, k):
    x = _bright(128, 5, k, -2)
    y = resample_axis(x, torch.tensor([alpha]), -2)
    assert (y[0, 0].argmax(0) == round(alpha * k)).all()  # every frame


def test_warp_down_leaves_the_top_bins_at_the_lowest_level():
    y = resample_axis(torch.ones(2, 1, 128, 4), torch.tensor([0.9, 1.1]), -2)
    top = int(127 * 0.9) + 1  # bins above alpha * (F - 1) read past the input
    assert (y[0, 0, top:] == 0).all() and (y[0, 0, :top] == 1).all()
    assert (y[1] == 1).all()  # warping up keeps every bin in range


@pytest.mark.parametrize("s, k", [(1.1, 30), (0.9, 30), (1.05, 50), (1.0, 7)])
def test_stretch_moves_a_bright_frame_from_t_to_s_t(s, k):
    x = _bright(16, 64, k, -1)
    y = resample_axis(x, torch.tensor([s]), -1)
    assert (y[0, 0].argmax(1) == round(s * k)).all()  # every bin


def test_stretch_crops_and_pads_with_zero():
    x = torch.ones(2, 1, 4, 50)
    y = resample_axis(x, torch.tensor([0.9, 1.1]), -1)
    assert y.shape == x.shape
    top = int(49 * 0.9) + 1
    assert (y[0, ..., top:] == 0).all() and (y[0, ..., :top] == 1).all()  # faster: padded with the lowest level
    assert (y[1] == 1).all()  # slower: the end is cropped


def test_resampling_by_exactly_one_is_the_identity():
    x = _random()
    for dim in (-2, -1):
        assert torch.equal(resample_axis(x, torch.ones(len(x)), dim), x)


def test_noise_never_lowers_a_value_and_raises_silence_to_the_noise_level():
    x = torch.zeros(2, 1, 32, 24)
    x[:, :, 5, 5] = 1.0  # peak at 80 dB above the floor
    x[1, :, 10:20, :] = 0.9  # loud cells in clip 1
    below = torch.tensor([30.0, 20.0])
    y = add_noise(x, below, torch.ones_like(x), TOP_DB)  # the noise at its mean power everywhere
    assert (y >= x).all() and y.max() <= 1
    for b, level_db in enumerate((80 - 30, 80 - 20)):
        expected = 10 * np.log10(1 + 10 ** (level_db / 10)) / TOP_DB  # the floor (0 dB) plus the noise
        assert y[b, 0, 0, 0].item() == pytest.approx(expected, abs=1e-5)
    # loud cells: their power plus the noise's (72 dB and 60 dB), hardly changed 50 dB above it
    assert y[1, 0, 12, 0].item() == pytest.approx(10 * np.log10(10**7.2 + 10**6) / TOP_DB, abs=1e-5)
    assert y[0, 0, 5, 5].item() == pytest.approx(1.0, abs=1e-5)


def test_white_noise_power_averages_to_the_noise_level():
    x = torch.zeros(1, 1, 128, 96)
    x[0, 0, 0, 0] = 1.0
    noise = torch.empty(x.shape).exponential_(1.0, generator=torch.Generator().manual_seed(1))
    y = add_noise(x, torch.tensor([40.0]), noise, TOP_DB)
    power = 10 ** (y[0, 0, 1:].double() * TOP_DB / 10) - 1  # noise power, silent cells
    assert 10 * torch.log10(power.mean()).item() == pytest.approx(80 - 40, abs=0.2)


# --- the batch: randomness, probabilities, shapes -------------------------------------------------


def test_same_seed_same_batch_other_seed_or_position_another():
    x = _random()
    a = augment_batch(x, batch_generator(0, 1, 2), TOP_DB)
    assert torch.equal(a, augment_batch(x, batch_generator(0, 1, 2), TOP_DB))
    for other in ((1, 1, 2), (0, 2, 2), (0, 1, 3)):
        assert not torch.equal(a, augment_batch(x, batch_generator(*other), TOP_DB))
    assert not torch.equal(a, x)


def test_probability_zero_is_the_identity_and_one_changes_every_clip():
    x = _random()
    assert torch.equal(augment_batch(x, batch_generator(0, 0, 0), TOP_DB, p=0.0), x)
    y = augment_batch(x, batch_generator(0, 0, 0), TOP_DB, p=1.0)
    assert all(not torch.equal(y[b], x[b]) for b in range(len(x)))


def test_skipped_clips_are_left_exactly_as_they_were():
    """With p = 0.5 over many clips, some clips draw no transform at all; those are unchanged, bit for bit."""
    x = _random(b=64)
    y = augment_batch(x, batch_generator(3, 0, 0), TOP_DB, p=0.5)
    same = [b for b in range(len(x)) if torch.equal(y[b], x[b])]
    assert 0 < len(same) < len(x)  # about 1/16 of them


def test_shape_dtype_range_and_input_kept():
    x = _random()
    x[0] = 1.0  # extremes
    x[1] = 0.0
    before = x.clone()
    for dtype in (torch.float32, torch.float64):
        y = augment_batch(x.to(dtype), batch_generator(0, 0, 0), TOP_DB, p=1.0)
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(x, before)  # the input is not modified


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_augmentation_on_cuda():
    x = _random()
    y = augment_batch(x.cuda(), batch_generator(0, 0, 0), TOP_DB)
    assert y.device.type == "cuda"
    assert torch.allclose(y.cpu(), augment_batch(x, batch_generator(0, 0, 0), TOP_DB), atol=1e-5)


# --- in training ----------------------------------------------------------------------------------


def test_augmentation_is_off_by_default_and_in_the_study_preset():
    assert TrainConfig().augment is False
    assert train_config("study", (256, 64)).augment is False and train_config("default", (128, 96)).augment is False
    assert TrainConfig.from_dict({"epochs": 3}).augment is False  # checkpoints saved before the field existed
    assert "augment" not in TrainConfig().to_dict()  # such checkpoints still write the config of before
    on = TrainConfig(augment=True)
    assert on.to_dict()["augment"] is True and TrainConfig.from_dict(on.to_dict()) == on


def test_cli_and_benchmark_flags():
    from benchmarks.bench_unseen_speaker import parse_args
    from vae.cli import build_parser

    args = ["train", "--data", "d", "--output", "o"]
    assert build_parser().parse_args(args).augment is None  # a resumed run keeps its checkpoint's setting
    assert build_parser().parse_args([*args, "--augment"]).augment is True
    assert build_parser().parse_args([*args, "--no-augment"]).augment is False
    assert parse_args(["--augment"]).augment is True and parse_args([]).augment is False


def _spy(monkeypatch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(training batches given to train_step, validation batches given to vae_loss without gradients)."""
    steps, val = [], []
    real_step, real_loss = train_module.train_step, train_module.vae_loss

    def step(model, opt, x, *args, **kw):
        steps.append(x.detach().clone())
        return real_step(model, opt, x, *args, **kw)

    def loss(x_hat, x, *args):
        if not torch.is_grad_enabled():
            val.append(x.detach().clone())
        return real_loss(x_hat, x, *args)

    monkeypatch.setattr(train_module, "train_step", step)
    monkeypatch.setattr(train_module, "vae_loss", loss)
    return steps, val


def test_training_augments_its_batches_and_validates_on_the_stored_clips(tiny_store, tmp_path, monkeypatch):
    steps, val = _spy(monkeypatch)
    list(train(tiny_store.path, tmp_path / "plain", model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 1}))
    plain, plain_val = list(steps), list(val)
    steps.clear(), val.clear()
    list(train(tiny_store.path, tmp_path / "aug", model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 1},
               augment=True))
    assert len(steps) == len(plain) == 3
    top_db = tiny_store.config.top_db
    for i, (a, p) in enumerate(zip(steps, plain)):
        assert not torch.equal(a, p)
        assert torch.equal(a, augment_batch(p, batch_generator(TRAIN_KW["seed"], 0, i), top_db))
    assert len(val) == len(plain_val) and all(torch.equal(a, b) for a, b in zip(val, plain_val))
    stored = torch.from_numpy(np.array(tiny_store.specs[sorted(tiny_store.indices("test"))]))
    assert torch.equal(torch.cat(val)[:, 0], stored)  # the test clips, as stored
    assert load_checkpoint(tmp_path / "aug").train_cfg.augment is True


def test_stopped_and_resumed_augmented_run_ends_where_an_uninterrupted_one_does(tiny_store, tmp_path):
    kw = {**TRAIN_KW, "epochs": 2, "augment": True}
    straight = list(train(tiny_store.path, tmp_path / "a", model_cfg=tiny_model_cfg(), **kw))
    stop = threading.Event()
    for ev in train(tiny_store.path, tmp_path / "b", model_cfg=tiny_model_cfg(), stop=stop, **kw):
        if ev.kind == "step" and (ev.epoch, ev.step) == (0, 2):
            stop.set()
    resumed = list(train(tiny_store.path, tmp_path / "b", resume=True))
    assert [(e.epoch, e.step) for e in resumed if e.kind == "step"] == [(0, 3), (1, 1), (1, 2), (1, 3)]
    a, b = load_checkpoint(tmp_path / "a" / "last").model, load_checkpoint(tmp_path / "b" / "last").model
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert resumed[-1].val == straight[-1].val


def test_benchmark_results_of_before_the_flag_count_as_unaugmented(tmp_path):
    import json

    from benchmarks import bench_unseen_speaker as bus

    params = {"arch": "default", "seed": 0, "device": "cpu"}
    (tmp_path / "unseen_speaker.json").write_text(json.dumps({"params": params, "speakers": {"bob": {}}}))
    assert bus.previous(tmp_path, {**params, "augment": False}, False) == {"bob": {}}
    with pytest.raises(ValueError, match="other settings"):
        bus.previous(tmp_path, {**params, "augment": True}, False)
