"""Checkpoints: safetensors + JSON round trip, and helpful errors for malformed ones (vae.checkpoint)."""

import dataclasses
import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_model_cfg
from safetensors import SafetensorError

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
    assert str(e.value) == (f"{d / 'model.safetensors'} does not match the architecture in config.json: "
                            "encoder.mu.weight is (6, 1024), expected (4, 1024); "
                            "encoder.mu.bias is (6,), expected (4,); "
                            "encoder.logvar.weight is (6, 1024), expected (4, 1024)")


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
    with pytest.raises(CheckpointError, match="holds objects other than tensors and plain values") as e:
        load_training_state(d)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)  # never PyTorch's advice to unpickle
    assert not marker.exists()
    load_checkpoint(d)  # the model itself needs no pickle at all
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x80\x02garbage"])
def test_a_damaged_training_state_is_one_line(saved, content):
    _, d = saved
    (d / "training_state.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"is unreadable or damaged|holds objects other than") as e:
        load_training_state(d)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)


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
    """A save that fails at any point changes none of the set's files: the weights, training state and
    config on disk stay those of one save (before #12 the weights were replaced when the state failed)."""
    ck, d = saved
    before = {k: v.clone() for k, v in load_checkpoint(d).model.state_dict().items()}
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    other = VAE(tiny_model_cfg())  # different weights

    def unchanged():
        assert {p.name: p.read_bytes() for p in d.iterdir()} == files  # file for file, no leftovers
        loaded = load_checkpoint(d)
        assert loaded.meta == {"arch": "tiny"} and load_training_state(d)["epoch"] == 3
        for k, v in loaded.model.state_dict().items():
            assert torch.equal(v, before[k]), k

    def crash(*args, **kwargs):
        raise _Crash("serialising failed")

    # the training state fails after the weights were written: neither is replaced
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(_Crash):
        save_checkpoint(d, other, ck.spec, ck.train_cfg, {"arch": "new"}, training_state={"epoch": 9})
    monkeypatch.undo()
    unchanged()
    # each file of the set failing half-way through its write, and the commit marker's
    real = checkpoint_module._write_bytes
    for name in [*files, ".commit.json"]:
        def write(path, data, name=name):
            (_half_then_crash(data) if path.name.startswith(f".{name}.") else real)(path, data)

        monkeypatch.setattr(checkpoint_module, "_write_bytes", write)
        with pytest.raises(_Crash):
            save_checkpoint(d, other, ck.spec, ck.train_cfg, {"arch": "new"}, training_state={"epoch": 9})
        monkeypatch.undo()
        unchanged()


class _Kill(BaseException):
    """Stands in for kill -9: no ``except Exception`` handler runs (the journal's own cleanup may)."""


def _names(d):
    return {p.name: p.read_bytes() for p in d.iterdir()}


OLD = {"a.bin": b"old a", "b.json": b"old b", "c.pt": b"old c", "stats": b"stats of old a"}
NEW = {"a.bin": b"new a", "b.json": b"new b", "c.pt": b"new c"}


@pytest.mark.parametrize("crash_at", range(5))
def test_a_kill_at_any_step_of_a_commit_recovers_to_one_whole_set(tmp_path, monkeypatch, crash_at):
    """The crash_at-th rename of a commit is killed (0: the marker's, 1-3: each file's, 4: none, the marker is
    left behind). ``recover`` then gives the whole old set when the marker was not in place, otherwise the
    whole new one, with ``stats`` deleted in it; no pending, temporary or marker file is left."""
    d = tmp_path / "d"
    checkpoint_module.commit_files(d, OLD)
    real, calls = checkpoint_module.os.replace, []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if len(calls) > crash_at:
            raise _Kill
        real(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    if crash_at == 4:  # every file renamed: killed at the flush before the marker is removed (the 2nd flush)
        real_fsync, flushes = checkpoint_module._fsync_dir, []

        def fsync_dir(directory):
            flushes.append(directory)
            if len(flushes) == 2:
                raise _Kill
            real_fsync(directory)

        monkeypatch.setattr(checkpoint_module, "_fsync_dir", fsync_dir)
    with pytest.raises(_Kill):
        checkpoint_module.commit_files(d, NEW, delete=["stats"])
    monkeypatch.undo()
    assert calls == [".commit.json", "a.bin", "b.json", "c.pt"][: crash_at + 1]
    mixed = _names(d)
    if crash_at in (2, 3):  # the kill really left a mix of old and new files behind
        assert (mixed["a.bin"], mixed["c.pt"]) == (b"new a", b"old c")
    assert checkpoint_module.recover(d) is (crash_at > 0)
    assert _names(d) == (OLD if crash_at == 0 else NEW)
    assert checkpoint_module.recover(d) is False and _names(d) == (OLD if crash_at == 0 else NEW)


def test_recover_drops_uncommitted_files_and_dead_writers_leftovers(tmp_path):
    """No marker: pending files go. Temporary files of processes that are gone go; a live one's stay. A marker
    that is not ours (bad JSON, other format, a name outside the folder) counts as no marker."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(gone.stdout), os.getppid()
    d = tmp_path / "d"
    checkpoint_module.commit_files(d, OLD)
    (tmp_path / "outside").write_text("keep me")
    for marker in ("{not json", json.dumps({"format": "x", "files": ["a.bin"]}),
                   json.dumps({"format": "sound-vae-commit/1", "files": ["a.bin"], "delete": ["../outside"]})):
        (d / ".commit.json").write_text(marker)
        (d / ".a.bin.pending").write_bytes(b"uncommitted")
        (d / f".b.json.tmp-{dead}").write_bytes(b"half")
        (d / f".c.pt.tmp-{dead}").mkdir()
        (d / f".c.pt.tmp-{alive}").write_bytes(b"being written")
        assert checkpoint_module.recover(d) is False
        assert _names(d) == {**OLD, f".c.pt.tmp-{alive}": b"being written"}
        assert (tmp_path / "outside").read_text() == "keep me"
    assert checkpoint_module.recover(tmp_path / "missing") is False and not (tmp_path / "missing").exists()


def test_resumable_reads_only_and_counts_a_committed_set(tiny_ckpt, tmp_path):
    ck = tiny_ckpt
    run = tmp_path / "run"
    assert not checkpoint_module.resumable(run)
    save_checkpoint(run / "last", ck.model, ck.spec, ck.train_cfg, {})  # no training state: cannot resume
    assert not checkpoint_module.resumable(run)
    save_checkpoint(run / "last", ck.model, ck.spec, ck.train_cfg, {}, training_state={"epoch": 1})
    assert checkpoint_module.resumable(run)
    (run / "last" / "training_state.pt").rename(run / "last" / ".training_state.pt.pending")
    assert not checkpoint_module.resumable(run)
    (run / "last" / ".commit.json").write_text(json.dumps({"format": "sound-vae-commit/1",
                                                           "files": ["training_state.pt"]}))
    before = _names(run / "last")
    assert checkpoint_module.resumable(run) and _names(run / "last") == before  # nothing written


def test_a_full_disk_is_a_checkpoint_error_naming_the_folder(saved, monkeypatch, tmp_path):
    """ENOSPC while writing the set: a :class:`CheckpointError` (one ``error:`` line in the CLI) that says the
    disk is full and names the folder; the old set is intact and nothing is left behind. The latent
    statistics and prior go through ``atomic_write``, whose safetensors writer reports it as an os error 28."""
    ck, d = saved
    files = _names(d)

    def full(path, data):
        path.write_bytes(data[:3])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint_module, "_write_bytes", full, raising=False)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(d, VAE(tiny_model_cfg()), ck.spec, ck.train_cfg, {}, training_state={"epoch": 9})
    assert str(e.value) == (f"the disk is full: cannot write the checkpoint in {d}; free some space, then resume "
                            "the run (the checkpoint saved before is unchanged)")
    assert _names(d) == files

    def safetensors_full(path):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(CheckpointError) as e:
        atomic_write(tmp_path / "latents.safetensors", safetensors_full)
    assert str(e.value) == (f"the disk is full: cannot write latents.safetensors in {tmp_path}; free some space, "
                            "then try again (the latents.safetensors there before is unchanged)")
    with pytest.raises(CheckpointError, match=r"^cannot write f in .* \(Read-only file system\); make the folder"):
        atomic_write(tmp_path / "f", lambda p: (_ for _ in ()).throw(OSError(errno.EROFS, "read-only")))
    with pytest.raises(OSError, match="a bug"):  # other errors are not the user's to fix: they propagate
        atomic_write(tmp_path / "f", lambda p: (_ for _ in ()).throw(OSError(errno.EBADF, "a bug")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


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


def test_architecture_mismatch_names_missing_and_unexpected_tensors(saved, tmp_path):
    """Compared from the file's header before the model is built: missing and unexpected names, three each."""
    ck, d = saved
    deeper = dataclasses.replace(ck.model_cfg, channels=(8, 16, 32, 32), strides=((2, 2),) * 4,
                                 decoder_channels=(32, 16, 8))
    save_checkpoint(tmp_path / "other", VAE(deeper), ck.spec, ck.train_cfg, {})
    shutil.copy(tmp_path / "other" / "model.safetensors", d / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    message = str(e.value)
    assert message.startswith(f"{d / 'model.safetensors'} does not match the architecture in config.json: missing "
                              "decoder.convs.2.bias, decoder.convs.2.weight; unexpected ")
    assert len(message.split("; ")) == 5 and "\n" not in message  # missing, unexpected, three wrong shapes


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


@pytest.mark.parametrize(("section", "changes", "message"), [
    ("model", {"latent_dim": 2_000_000_000}, "latent_dim must be at most 4,096, got 2,000,000,000"),
    ("model", {"channels": [2_000_000_000, 8, 16]},
     "channels and decoder_channels must be whole numbers from 1 to 4096"),
    ("model", {"latent_dim": 2e9}, "latent_dim must be a whole number, got 2000000000.0"),
    ("model", {"kernel": 10**9}, "kernel must be at most 31, got 1,000,000,000"),
    ("spectrogram", {"griffinlim_iters": 10**9}, "griffinlim_iters must be a whole number from 1 to 1000"),
    ("spectrogram", {"duration": 1e308}, "duration must be above 0.0 and at most 60.0"),
    ("training", {"batch_size": 10**12}, "batch_size must be at most 65,536"),
])
def test_hostile_config_sizes_are_refused_before_anything_is_built(saved, section, changes, message):
    _, d = saved
    config = json.loads((d / "config.json").read_text())
    config[section].update(changes)
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(d)


def test_a_model_too_large_to_build_is_refused_from_its_parameter_count(saved, monkeypatch):
    """Every field within its bounds, but the whole asks for billions of parameters: counted on the meta
    device (no memory), refused before the real model or the weights are touched."""
    _, d = saved
    config = json.loads((d / "config.json").read_text())
    config["model"].update(channels=[4096, 4096, 4096], decoder_channels=[4096, 4096], latent_dim=4096)
    (d / "config.json").write_text(json.dumps(config))
    built = []
    monkeypatch.setattr(checkpoint_module, "load_file", lambda *a: built.append(a))
    with pytest.raises(CheckpointError, match=r"asks for [\d,]+ parameters, more than the limit of 200,000,000"):
        load_checkpoint(d)
    assert built == []


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


def test_exported_files_are_readable_by_others(saved, tmp_path):
    """safetensors creates its files 0600; a shared or shipped checkpoint must be loadable by other users."""
    _, d = saved
    out = export_checkpoint(d, tmp_path / "shared")
    for f in out.iterdir():
        assert f.stat().st_mode & 0o044 == 0o044, f.name


def test_an_export_over_an_earlier_one_is_one_set(saved, tmp_path, monkeypatch):
    """An export writes its files as one set (vae.checkpoint.commit_files): a failure part-way leaves the
    earlier export whole, and files the new source lacks (its statistics, a prior) do not linger."""
    _, d = saved
    (d / "latents.safetensors").write_bytes(b"statistics")  # copied as they are
    out = export_checkpoint(d, tmp_path / "shared")
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert before["latents.safetensors"] == b"statistics"
    (out / "prior.json").write_text("{}")  # as if the earlier export was of a temporal model
    before["prior.json"] = b"{}"
    real, written = checkpoint_module._write_bytes, []

    def fail_on_third(path, data):
        written.append(path)
        if len(written) == 3:
            raise OSError(5, "Input/output error", str(path))
        real(path, data)

    monkeypatch.setattr(checkpoint_module, "_write_bytes", fail_on_third)
    with pytest.raises(OSError):
        export_checkpoint(d, out, half=True)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # the earlier export, whole
    monkeypatch.undo()
    (d / "latents.safetensors").unlink()
    export_checkpoint(d, out)
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "model.safetensors"]
