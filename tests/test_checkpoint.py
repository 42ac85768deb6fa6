"""Checkpoints: safetensors + JSON round trip, and helpful errors for malformed ones (vae.checkpoint)."""

import dataclasses
import json
import shutil

import pytest
import torch
from conftest import tiny_model_cfg
from safetensors.torch import load_file

from vae import checkpoint as checkpoint_module
from vae.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_write,
    export_checkpoint,
    find_checkpoints,
    load_checkpoint,
    load_config,
    load_training_state,
    save_checkpoint,
)
from vae.config import TrainConfig
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


class _Crash(Exception):
    pass


def _half_then_crash(data: bytes):
    """A writer that writes the first half of ``data`` to the path it is given, then fails."""
    def write(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise _Crash("disk full")
    return write


def test_atomic_write_failing_half_way_keeps_the_previous_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda p: p.write_bytes(b"old contents"))
    assert path.read_bytes() == b"old contents"
    with pytest.raises(_Crash):
        atomic_write(path, _half_then_crash(b"new contents that never completes"))
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # the partial temporary file is gone
    with pytest.raises(_Crash):  # no previous file: none appears
        atomic_write(tmp_path / "g.bin", _half_then_crash(b"0123456789"))
    assert not (tmp_path / "g.bin").exists()
    atomic_write(path, lambda p: p.write_bytes(b"new"))
    assert path.read_bytes() == b"new"


def test_failed_save_leaves_the_previous_checkpoint_loadable(saved, monkeypatch):
    ck, d = saved
    before = {k: v.clone() for k, v in load_checkpoint(d).model.state_dict().items()}
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    other = VAE(tiny_model_cfg())  # different weights

    # the weights fail half-way: the old checkpoint is untouched, file for file
    monkeypatch.setattr(checkpoint_module, "save_file",
                        lambda tensors, path: _half_then_crash(files["model.safetensors"])(path))
    with pytest.raises(_Crash):
        save_checkpoint(d, other, ck.spec, ck.train_cfg, {"arch": "new"}, training_state={"epoch": 9})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in d.iterdir()} == files
    loaded = load_checkpoint(d)
    assert loaded.meta == {"arch": "tiny"} and load_training_state(d)["epoch"] == 3
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, before[k]), k

    # the weights are written, then the training state fails half-way: the old state and config remain
    monkeypatch.setattr(torch, "save", lambda obj, path: _half_then_crash(files["training_state.pt"])(path))
    with pytest.raises(_Crash):
        save_checkpoint(d, other, ck.spec, ck.train_cfg, {"arch": "new"}, training_state={"epoch": 9})
    monkeypatch.undo()
    assert sorted(p.name for p in d.iterdir()) == sorted(files)  # no temporary leftovers
    assert (d / "training_state.pt").read_bytes() == files["training_state.pt"]
    assert (d / "config.json").read_bytes() == files["config.json"]
    assert load_training_state(d)["epoch"] == 3
    assert load_checkpoint(d).meta == {"arch": "tiny"}


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


def test_config_json_is_indented_for_reading(saved, tmp_path):
    """config.json is written indented by two spaces (people read and diff it), also when exported."""
    _, d = saved
    text = (d / "config.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2)
    out = export_checkpoint(d, tmp_path / "shipped")
    text = (out / "config.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2)


def test_export_into_new_nested_or_existing_folders(saved, tmp_path):
    _, d = saved
    nested = export_checkpoint(d, tmp_path / "a" / "b" / "c")
    assert (nested / "model.safetensors").is_file()
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("keep")
    out = export_checkpoint(d, tmp_path / "existing")
    assert load_checkpoint(out).meta["weights_dtype"] == "float32"
    assert (out / "notes.txt").read_text() == "keep"


def test_export_of_a_config_without_meta(saved, tmp_path):
    _, d = saved
    _rewrite_config(d, lambda c: c.pop("meta"))
    assert load_checkpoint(d).meta == {}
    out = export_checkpoint(d, tmp_path / "out", half=True)
    assert load_checkpoint(out).meta == {"weights_dtype": "float16"}


def test_export_half_names_the_first_three_overflowing_tensors(saved, tmp_path):
    ck, d = saved
    sd = ck.model.state_dict()
    names = [k for k, v in sd.items() if v.is_floating_point()][:4]
    with torch.no_grad():
        for k in names:
            sd[k].view(-1)[0] = 1e6
    save_checkpoint(d, ck.model, ck.spec, ck.train_cfg, {})
    msg = f"{d}: {names[0]}, {names[1]}, {names[2]} do not fit in float16; export without --half"
    with pytest.raises(CheckpointError) as e:
        export_checkpoint(d, tmp_path / "out", half=True)
    assert str(e.value) == msg


def test_error_messages_say_what_to_do(saved, tmp_path):
    _, d = saved
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "nowhere")
    assert str(e.value) == (f"{tmp_path / 'nowhere'} is not a checkpoint: no config.json (train one with "
                            "`python -m vae train` or pick a folder under checkpoints/)")
    _rewrite_config(d, lambda c: c["spectrogram"].update(hop_length=16))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    assert str(e.value) == f"{d}: model expects 32x64 spectrograms but its spectrogram config gives 32x128"


def test_architecture_mismatch_message_is_the_first_three_lines_capped(saved, tmp_path):
    ck, d = saved
    deeper = dataclasses.replace(ck.model_cfg, channels=(8, 16, 32, 32), strides=((2, 2),) * 4,
                                 decoder_channels=(32, 16, 8))
    other = VAE(deeper)  # an extra block: long lines of unexpected keys
    save_checkpoint(tmp_path / "other", other, ck.spec, ck.train_cfg, {})
    shutil.copy(tmp_path / "other" / "model.safetensors", d / "model.safetensors")
    try:
        VAE(ck.model_cfg).load_state_dict(load_file(str(d / "model.safetensors")))
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
    detail = " ".join(lines[:3])
    assert len(lines) > 3 and len(detail) > 400  # guards: both limits apply here
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    prefix = f"{d / 'model.safetensors'} does not match the architecture in config.json: "
    assert str(e.value) == prefix + detail[:400]


def test_training_config_round_trips_and_defaults_when_absent(tiny_ckpt, tmp_path):
    tc = TrainConfig(epochs=3, lr=2e-4, kl_weight=0.5)
    d = save_checkpoint(tmp_path / "ck", tiny_ckpt.model, tiny_ckpt.spec, tc, {})
    assert load_checkpoint(d).train_cfg == tc
    _rewrite_config(d, lambda c: c.pop("training"))  # an older or hand-made checkpoint
    assert load_checkpoint(d).train_cfg == TrainConfig()


def test_load_onto_a_device(saved):
    _, d = saved
    ck = load_checkpoint(d, device="meta")  # no memory or compute needed
    assert ck.device.type == "meta" and not ck.model.training


def test_architecture_mismatch_message_joins_three_lines(saved, tmp_path):
    ck, d = saved
    save_checkpoint(tmp_path / "other", VAE(tiny_model_cfg(latent_dim=6)), ck.spec, ck.train_cfg, {})
    shutil.copy(tmp_path / "other" / "model.safetensors", d / "model.safetensors")
    try:
        VAE(ck.model_cfg).load_state_dict(load_file(str(d / "model.safetensors")))
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
    assert len(lines) > 3 and len(" ".join(lines[:3])) < 400  # guard: the fourth line would fit
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    assert str(e.value).endswith(": " + " ".join(lines[:3]))


def test_find_checkpoints_skips_missing_roots_anywhere(saved, tmp_path):
    _, d = saved
    assert find_checkpoints(tmp_path / "missing", tmp_path) == [d]


def test_load_config_reads_no_weights(saved):
    """The configs alone (resuming checks them before any work): the same as a full load's, without weights."""
    ck, d = saved
    (d / "model.safetensors").unlink()
    cc = load_config(d)
    assert (cc.spec, cc.model_cfg, cc.train_cfg, cc.meta) == (ck.spec, ck.model_cfg, ck.train_cfg, {"arch": "tiny"})
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors"):
        load_checkpoint(d)
    _rewrite_config(d, lambda c: c["model"].update(activation="gelu"))
    with pytest.raises(CheckpointError, match="bad or missing entry: activation must be"):
        load_config(d)
