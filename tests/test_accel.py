"""The step's precision, memory format and batch for its device (vae.accel): on the CPU nothing changes
unless asked; on CUDA ``auto`` means bf16 + channels-last and a larger batch. The CUDA choices are checked
as decisions here (no GPU in CI); each code path they select runs on the CPU."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch
from conftest import TINY, TRAIN_KW, tiny_model_cfg

from preprocessing.config import ConfigError
from vae.accel import GPU_BATCH, MIN_STEPS, Accel, auto_batch, choose
from vae.cli import main
from vae.config import TrainConfig
from vae.model import VAE
from vae.train import resolve_configs, train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _train(store, out, **kw):
    events = list(train(store.path, out, model_cfg=tiny_model_cfg(), **{**TRAIN_KW, "epochs": 2, **kw}))
    return [e.losses["loss"] for e in events if e.kind == "epoch"], json.loads((out / "config.json").read_text())


def test_auto_changes_nothing_on_the_cpu_and_bf16_is_on_cuda(monkeypatch):
    assert choose("auto", CPU) == Accel(CPU, bf16=False, channels_last=False)
    assert choose("fp32", CUDA) == Accel(CUDA, bf16=False, channels_last=False)
    assert choose("bf16", CPU) == Accel(CPU, bf16=True, channels_last=False)  # CPU autocast, asked for
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose("auto", CUDA) == Accel(CUDA, bf16=True, channels_last=True)
    assert choose("bf16", CUDA).channels_last
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert choose("auto", CUDA) == Accel(CUDA, bf16=False, channels_last=False)
    with pytest.raises(ConfigError, match="precision must be one of"):
        choose("fp16", CPU)
    with pytest.raises(ConfigError, match="precision must be"):
        TrainConfig(precision="half").validate()


def test_auto_batch_is_larger_on_cuda_with_the_rate_scaled_and_unchanged_elsewhere():
    assert auto_batch(32, 1e-3, CPU, 2250) == (32, 1e-3)
    assert auto_batch(32, 1e-3, torch.device("mps"), 2250) == (32, 1e-3)
    batch, lr = auto_batch(32, 1e-3, CUDA, 2250)  # FSDD's training split
    assert batch == GPU_BATCH and lr == pytest.approx(1e-3 * math.sqrt(GPU_BATCH / 32))
    batch, _ = auto_batch(32, 1e-3, CUDA, 400)  # a small store keeps MIN_STEPS steps an epoch
    assert batch == 400 // MIN_STEPS and 400 // batch >= MIN_STEPS
    assert auto_batch(32, 1e-3, CUDA, 40) == (32, 1e-3)  # never below the architecture's


def test_channels_last_and_bf16_paths_compute_the_same_model():
    torch.manual_seed(0)
    model = VAE(tiny_model_cfg()).eval()
    x = torch.rand(3, 1, *TINY.shape)
    with torch.no_grad():
        ref = model.decode(model.encode(x)[0])
        fast = Accel(CPU, channels_last=True)
        cl = fast.model(VAE(tiny_model_cfg()).eval())
        cl.load_state_dict(model.state_dict())
        out = cl.decode(cl.encode(fast.batch(x))[0])
        with Accel(CPU, bf16=True).autocast():
            half = model.decode(model.encode(x)[0])
    assert torch.allclose(out, ref, atol=1e-5)
    assert half.dtype == torch.bfloat16 and (half.float() - ref).abs().max() < 0.05  # bf16: ~3 digits


def test_cpu_training_is_unchanged_by_auto_and_records_what_ran(tiny_store, tmp_path):
    auto, cfg_auto = _train(tiny_store, tmp_path / "auto")
    fp32, _ = _train(tiny_store, tmp_path / "fp32", precision="fp32")
    assert auto == fp32  # bit for bit: auto is fp32 on the CPU
    assert "precision" not in cfg_auto["training"]  # config.json as before the field
    assert (cfg_auto["meta"]["precision"], cfg_auto["meta"]["channels_last"]) == ("fp32", False)


def test_bf16_trains_on_the_cpu_and_a_resume_keeps_it(tiny_store, tmp_path):
    losses, cfg = _train(tiny_store, tmp_path / "bf16", precision="bf16")
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert cfg["training"]["precision"] == "bf16" and cfg["meta"]["precision"] == "bf16"
    _, cfg = _train(tiny_store, tmp_path / "bf16", epochs=3, resume=True)
    assert cfg["meta"]["precision"] == "bf16" and cfg["meta"]["epoch"] == 3


def test_batch_size_auto_on_the_cpu_is_the_architectures(tiny_store, tmp_path):
    run = resolve_configs(tiny_store, "default", batch_size="auto", device="cpu")
    assert run.train.batch_size == TrainConfig().batch_size and run.train.lr == TrainConfig().lr
    run = resolve_configs(tiny_store, "default", batch_size="auto", lr=5e-4, device="cpu")
    assert run.train.lr == 5e-4  # a rate given with it is kept


def test_cli_batch_size_and_precision(tiny_store, tmp_path, capsys):
    base = ["train", "--data", str(tiny_store.path), "--output", str(tmp_path / "ck"), "--epochs", "1",
            "--latent-dim", "2", "--device", "cpu"]
    assert main([*base, "--batch-size", "auto", "--precision", "bf16"]) == 0
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert saved["meta"]["precision"] == "bf16" and saved["training"]["batch_size"] == TrainConfig().batch_size
    with pytest.raises(SystemExit):
        main([*base, "--batch-size", "many"])
    assert "expected a whole number or auto, got 'many'" in capsys.readouterr().err


def test_a_split_kept_on_the_device_gives_the_same_batches(tiny_store, monkeypatch):
    from vae.accel import fits_on_device
    from vae.distributed import Dist

    train_mod = importlib.import_module("vae.train")  # the module (vae.train is also a function)
    assert not fits_on_device(1, CPU)  # the CPU keeps the split in RAM as it is
    idx = tiny_store.indices("train")
    host = train_mod._Batches(tiny_store, idx, 4, Dist(), CPU)
    monkeypatch.setattr(train_mod, "fits_on_device", lambda nbytes, device: True)  # as on a GPU with room
    resident = train_mod._Batches(tiny_store, idx, 4, Dist(), CPU)
    assert isinstance(resident.data, torch.Tensor) and not isinstance(host.data, torch.Tensor)
    for a, b in zip(host.epoch(3, 1, start=1), resident.epoch(3, 1, start=1), strict=True):
        assert torch.equal(a, b)
