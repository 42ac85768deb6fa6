"""Checkpoints: safetensors + JSON round trip, and helpful errors for malformed ones (vae.checkpoint)."""

import json
import shutil

import pytest
import torch
from conftest import tiny_model_cfg

from vae.checkpoint import (
    FORMAT,
    CheckpointError,
    export_checkpoint,
    find_checkpoints,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)
from vae.generate import decode
from vae.model import VAE


@pytest.fixture
def saved(tiny_ckpt, tmp_path):
    d = save_checkpoint(tmp_path / "ck", tiny_ckpt.model, tiny_ckpt.spec, tiny_ckpt.train_cfg, {"arch": "tiny"},
                        training_state={"epoch": 3, "step": 0, "w": torch.ones(2)})
    return tiny_ckpt, d


def test_round_trip_gives_identical_outputs(saved):
    ck, d = saved
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors", "training_state.pt"]
    loaded = load_checkpoint(d)
    assert loaded.spec == ck.spec and loaded.model_cfg == ck.model_cfg and loaded.train_cfg == ck.train_cfg
    assert loaded.meta == {"arch": "tiny"} and loaded.path == d and not loaded.model.training
    z = torch.randn(5, ck.model_cfg.latent_dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(decode(loaded, z), decode(ck, z), rtol=0, atol=0)
    state = load_training_state(d)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.ones(2))
    assert json.loads((d / "config.json").read_text())["format"] == FORMAT


def _rewrite_config(d, change):
    cfg = json.loads((d / "config.json").read_text())
    change(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def test_missing_directory_or_config(tmp_path, saved):
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint(tmp_path / "nowhere")
    _, d = saved
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"not a checkpoint: no config\.json"):
        load_checkpoint(d)


def test_bad_json(saved):
    _, d = saved
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(d)


@pytest.mark.parametrize("content", [{"format": "keras/2"}, {"no": "format"}, ["a", "list"]])
def test_wrong_format_tag(saved, content):
    _, d = saved
    (d / "config.json").write_text(json.dumps(content))
    with pytest.raises(CheckpointError, match="not a sound-vae checkpoint"):
        load_checkpoint(d)


@pytest.mark.parametrize("change", [
    lambda c: c.pop("model"),
    lambda c: c["model"].pop("channels"),
    lambda c: c.update(model="not a dict"),
    lambda c: c["model"].update(latent_dim=0),
    lambda c: c["spectrogram"].update(hop_length=-1),
    lambda c: c["spectrogram"].update(unknown_field=1),
], ids=["no-model", "no-channels", "model-string", "latent-0", "bad-hop", "unknown-field"])
def test_bad_config_entries(saved, change):
    _, d = saved
    _rewrite_config(d, change)
    with pytest.raises(CheckpointError, match="bad or missing entry"):
        load_checkpoint(d)


def test_model_and_spectrogram_shapes_disagree(saved):
    _, d = saved
    _rewrite_config(d, lambda c: c["spectrogram"].update(hop_length=16))
    with pytest.raises(CheckpointError, match="model expects 32x64"):
        load_checkpoint(d)


def test_weights_of_a_different_architecture(saved, tmp_path):
    ck, d = saved
    other = VAE(tiny_model_cfg(latent_dim=6))
    save_checkpoint(tmp_path / "other", other, ck.spec, ck.train_cfg, {})
    shutil.copy(tmp_path / "other" / "model.safetensors", d / "model.safetensors")
    with pytest.raises(CheckpointError, match="does not match the architecture") as e:
        load_checkpoint(d)
    assert "size mismatch" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"garbage" * 100, b"\xff" * 16 + b"{}"])
def test_garbage_weights(saved, content):
    _, d = saved
    (d / "model.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(d)


def test_missing_weights(saved):
    _, d = saved
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        load_checkpoint(d)


class _Boom:
    """Unpickling this would create a file: proof that a loader ran arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_training_state_is_never_unpickled(saved, tmp_path):
    _, d = saved
    marker = tmp_path / "pwned"
    torch.save({"epoch": 1, "evil": _Boom(marker)}, d / "training_state.pt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        load_training_state(d)
    assert not marker.exists()
    load_checkpoint(d)  # the model itself needs no pickle at all
    assert not marker.exists()


def test_missing_training_state(saved):
    _, d = saved
    (d / "training_state.pt").unlink()
    with pytest.raises(CheckpointError, match="cannot resume"):
        load_training_state(d)


def test_find_checkpoints(saved, tmp_path):
    ck, d = saved
    save_checkpoint(d / "last", ck.model, ck.spec, ck.train_cfg, {})
    save_checkpoint(tmp_path / "runs" / "b", ck.model, ck.spec, ck.train_cfg, {})
    (tmp_path / "runs" / "junk").mkdir()
    (tmp_path / "runs" / "junk" / "config.json").write_text("{}")
    assert find_checkpoints(tmp_path, tmp_path / "missing") == [d, tmp_path / "runs" / "b"]


def test_no_temporary_files_left(saved):
    _, d = saved
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("half", [False, True])
def test_export_drops_training_state_and_can_halve_weights(saved, tmp_path, half):
    ck, d = saved
    save_checkpoint(d / "last", ck.model, ck.spec, ck.train_cfg, {})
    (d / "README.md").write_text("card")
    out = export_checkpoint(d, tmp_path / "shipped", half=half)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(out) < 0.6 * size(d) if half else size(out) == size(d)
    loaded = load_checkpoint(out)
    assert loaded.meta["weights_dtype"] == ("float16" if half else "float32") and loaded.meta["arch"] == "tiny"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    z = torch.randn(4, ck.model_cfg.latent_dim, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(decode(loaded, z), decode(ck, z), rtol=0, atol=2e-3 if half else 0)


def test_export_refuses_to_overwrite_its_source(saved):
    _, d = saved
    with pytest.raises(CheckpointError, match="other than its source"):
        export_checkpoint(d, d, half=True)


def test_export_half_refuses_weights_beyond_float16(saved, tmp_path):
    ck, d = saved
    name = next(k for k, v in ck.model.state_dict().items() if v.is_floating_point())
    with torch.no_grad():
        ck.model.state_dict()[name].view(-1)[0] = 1e6  # state_dict tensors share storage with the model
    save_checkpoint(d, ck.model, ck.spec, ck.train_cfg, {})
    with pytest.raises(CheckpointError, match="do not fit in float16"):
        export_checkpoint(d, tmp_path / "out", half=True)
    assert not (tmp_path / "out").exists()
    export_checkpoint(d, tmp_path / "out")  # float32 keeps them
