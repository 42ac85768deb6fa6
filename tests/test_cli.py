"""The command line, `python -m vae <verb>` (vae.cli), run in-process except for one subprocess check."""

import json
import signal
import subprocess
import sys

import pytest
import soundfile as sf
from conftest import ROOT, SR, tone, write_wav

from vae.checkpoint import load_checkpoint
from vae.cli import main

TINY_ARGS = ["--sample-rate", "8000", "--duration", "0.254", "--n-fft", "64", "--hop", "32"]
VERBS = ["preprocess", "train", "reconstruct", "sample", "evaluate", "export"]


@pytest.fixture(autouse=True)
def _keep_sigint_handler():
    """`train` installs a Ctrl-C handler; give pytest its own back afterwards."""
    old = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, old)


def _error_line(err: str) -> str:
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert sum(ln.startswith("error: ") for ln in lines) == 1 and "Traceback" not in err
    assert lines[-1].startswith("error: ")
    return lines[-1]


@pytest.mark.parametrize("verb", [*VERBS, None])
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"] if verb else ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: python -m vae" in out
    if verb is None:
        assert all(v in out for v in VERBS)


@pytest.fixture(scope="module")
def cli_run(fsdd_dir, tmp_path_factory):
    """preprocess + train through the CLI; returns (store dir, checkpoint dir)."""
    tmp = tmp_path_factory.mktemp("cli")
    old = signal.getsignal(signal.SIGINT)
    try:
        assert main(["preprocess", "--input", str(fsdd_dir), "--output", str(tmp / "store"), *TINY_ARGS]) == 0
        assert main(["train", "--data", str(tmp / "store"), "--output", str(tmp / "ck"), "--epochs", "2",
                     "--batch-size", "8", "--latent-dim", "4", "--device", "cpu", "--seed", "1"]) == 0
    finally:
        signal.signal(signal.SIGINT, old)
    return tmp / "store", tmp / "ck"


def test_preprocess_and_train(cli_run, fsdd_dir, capsys):
    store, ck = cli_run
    assert (store / "spectrograms.npy").is_file()
    loaded = load_checkpoint(ck)
    assert loaded.spec.shape == (32, 64) and loaded.model_cfg.latent_dim == 4
    last = load_checkpoint(ck / "last")
    vals = [h["val"]["loss"] for h in last.meta["history"]]
    assert last.meta["epoch"] == 2 and loaded.meta["epoch"] == 1 + vals.index(min(vals))  # the best epoch
    assert (loaded.train_cfg.epochs, loaded.train_cfg.batch_size, loaded.train_cfg.seed) == (2, 8, 1)
    assert (ck / "last" / "training_state.pt").is_file()
    # same parameters again: reused
    assert main(["preprocess", "--input", str(fsdd_dir), "--output", str(store), *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    assert "36 clips from 36 files" in out and "reused" in out


def test_train_resume(cli_run, tmp_path, capsys):
    store, _ = cli_run
    base = ["train", "--data", str(store), "--output", str(tmp_path), "--batch-size", "8", "--latent-dim", "4",
            "--device", "cpu"]
    assert main([*base, "--epochs", "1"]) == 0
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "epoch 1/1: train loss" in text and "epoch 2/2: train loss" in text and "done:" in text
    assert load_checkpoint(tmp_path / "last").meta["epoch"] == 2


def test_reconstruct(cli_run, tmp_path, capsys):
    _, ck = cli_run
    src = tmp_path / "in"
    write_wav(src / "a.wav", tone(440, dur=0.5))
    write_wav(src / "b.wav", tone(880, dur=0.2))
    (src / "c.wav").write_bytes(b"")
    code = main(["reconstruct", "--checkpoint", str(ck), "--input", str(src), "--output", str(tmp_path / "out"),
                 "--griffinlim-iters", "4"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav", "b.wav"]
    info = sf.info(str(tmp_path / "out" / "a.wav"))
    assert info.samplerate == SR and info.frames == 4000
    captured = capsys.readouterr()
    assert "1 files skipped" in captured.out and "empty file" in captured.err


def test_sample(cli_run, tmp_path):
    _, ck = cli_run
    args = ["sample", "--checkpoint", str(ck), "--count", "2", "--seed", "5", "--phase", "zero"]
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    assert main([*args, "--output", str(tmp_path / "b")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["sample_000.wav", "sample_001.wav"]
    a, sr = sf.read(str(tmp_path / "a" / names[0]))
    b, _ = sf.read(str(tmp_path / "b" / names[0]))
    assert sr == SR and len(a) == 2032 and (a == b).all()  # same seed, same sound


def test_sample_decodes_a_chunk_at_a_time(cli_run, tmp_path, monkeypatch):
    """Many samples are decoded a chunk at a time, with the same sounds as all at once."""
    import vae.cli

    _, ck = cli_run
    args = ["sample", "--checkpoint", str(ck), "--count", "5", "--seed", "2", "--phase", "zero"]
    assert main([*args, "--output", str(tmp_path / "whole")]) == 0
    monkeypatch.setattr(vae.cli, "SAMPLE_CHUNK", 2)
    assert main([*args, "--output", str(tmp_path / "chunks")]) == 0
    for i in range(5):
        a, _ = sf.read(str(tmp_path / "whole" / f"sample_{i:03d}.wav"))
        b, _ = sf.read(str(tmp_path / "chunks" / f"sample_{i:03d}.wav"))
        assert (a == b).all(), i


def test_export(cli_run, tmp_path, capsys):
    _, ck = cli_run
    assert (ck / "last").is_dir()
    assert main(["export", "--checkpoint", str(ck), "--output", str(tmp_path / "out"), "--half"]) == 0
    assert "exported" in capsys.readouterr().out
    assert not (tmp_path / "out" / "last").exists() and (tmp_path / "out" / "latents.safetensors").is_file()
    assert main(["sample", "--checkpoint", str(tmp_path / "out"), "--count", "1", "--phase", "zero",
                 "--output", str(tmp_path / "wav")]) == 0


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.filterwarnings("ignore:Not enough STFT frames:RuntimeWarning")  # pystoi on a 0.3 s clip
def test_evaluate_store_and_folder(cli_run, fsdd_dir, capsys):
    store, ck = cli_run
    assert main(["evaluate", "--checkpoint", str(ck), "--input", str(store), "--no-stoi",
                 "--griffinlim-iters", "4"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert {"spectrogram_mse", "lsd_db", "spectral_convergence"} <= set(result)
    assert result["split"] == "test" and result["n_files"] == 12 and "stoi" not in result
    assert 0 < result["spectrogram_mse"] < 0.2 and result["lsd_db"] > 0
    assert main(["evaluate", "--checkpoint", str(ck), "--input", str(fsdd_dir / "1_bob_0.wav"),
                 "--phase", "zero"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["n_files"] == 1 and result["phase"] == "zero" and "stoi" in result


@pytest.mark.parametrize(("args", "match"), [
    (["preprocess", "--input", "{tmp}/missing", "--output", "{tmp}/s"], "does not exist"),
    (["preprocess", "--input", "{tmp}", "--output", "{tmp}/s", "--duration", "-1"], "duration"),
    (["preprocess", "--input", "{tmp}", "--output", "{tmp}/s", "--hop", "999"], "hop_length"),
    (["preprocess", "--input", "{tmp}", "--output", "{tmp}/s"], "no audio files"),
    (["train", "--data", "{tmp}", "--output", "{tmp}/ck"], "not a dataset store"),
    (["train", "--data", "{store}", "--output", "{tmp}/ck", "--device", "cuda:7"], "not available"),
    (["train", "--data", "{store}", "--output", "{tmp}/ck", "--latent-dim", "0"], "latent_dim"),
    (["train", "--data", "{store}", "--output", "{tmp}/ck", "--resume"], "no config.json"),
    (["reconstruct", "--checkpoint", "{tmp}", "--input", "{tmp}", "--output", "{tmp}/o"], "not a checkpoint"),
    (["sample", "--checkpoint", "{ck}", "--output", "{tmp}/o", "--count", "0"], "--count"),
    (["sample", "--checkpoint", "{ck}", "--output", "{tmp}/o", "--count", "10001"], "--count must be 1 to 10,000"),
    (["evaluate", "--checkpoint", "{ck}", "--input", "{tmp}/nothing"], "does not exist"),
])
def test_bad_input_exits_nonzero_with_one_error_line(cli_run, tmp_path, capsys, monkeypatch, args, match):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    store, ck = cli_run
    argv = [a.format(tmp=tmp_path, store=store, ck=ck) for a in args]
    assert main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    assert match in line


def test_subprocess_entry_point(tmp_path):
    run = subprocess.run([sys.executable, "-m", "vae", "preprocess", "--input", str(tmp_path / "none"),
                          "--output", str(tmp_path / "s")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert _error_line(run.stderr) == f"error: input {tmp_path / 'none'} does not exist"


def test_a_user_error_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["export", "--checkpoint", str(tmp_path), "--output", str(tmp_path / "file")]) == 2
    assert _error_line(capsys.readouterr().err) == f"error: output {tmp_path / 'file'} is a file, not a folder; " \
                                                   "choose another --output"
    assert main(["sample", "--checkpoint", str(tmp_path), "--output", str(tmp_path / "file" / "sub")]) == 2
    assert _error_line(capsys.readouterr().err) == f"error: output {tmp_path / 'file' / 'sub'} cannot be created: " \
                                                   f"{tmp_path / 'file'} is a file"


def test_every_user_error_is_caught_and_nothing_else(tmp_path, capsys, monkeypatch):
    """A UserError of any kind prints one line; any other exception is a bug and propagates (traceback)."""
    import vae.cli as cli
    from preprocessing.errors import UserError

    class Odd(UserError):
        pass

    def user_error(a):
        raise Odd("an odd user error")

    monkeypatch.setattr(cli, "cmd_export", user_error)
    assert main(["export", "--checkpoint", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert _error_line(capsys.readouterr().err) == "error: an odd user error"

    def bug(a):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_export", bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["export", "--checkpoint", str(tmp_path), "--output", str(tmp_path / "o")])
    assert "error:" not in capsys.readouterr().err


def test_a_bug_shows_its_traceback_in_a_subprocess(tmp_path):
    code = ("import sys, vae.cli as c\n"
            "def bug(a):\n    raise KeyError('a bug')\n"
            "c.cmd_export = bug\nsys.exit(c.main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", code, "export", "--checkpoint", str(tmp_path),
                          "--output", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "Traceback" in run.stderr and run.stderr.strip().endswith("KeyError: 'a bug'")
    assert "error: " not in run.stderr


def test_a_full_disk_anywhere_is_one_error_line(cli_run, tmp_path, capsys, monkeypatch):
    """Writing reconstructions to a full disk (#12, defect 6): one line naming the file, not a traceback;
    other OS errors stay bugs."""
    import errno

    import vae.cli as cli

    _, ck = cli_run
    write_wav(tmp_path / "in" / "a.wav", tone(440, dur=0.5))

    def full(path, wave, sr):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cli, "save_wav", full)
    args = ["reconstruct", "--checkpoint", str(ck), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--griffinlim-iters", "2"]
    assert main(args) == 2
    assert _error_line(capsys.readouterr().err) == (
        f"error: the disk is full writing {tmp_path / 'out' / 'a.wav'}; free some space (or choose another --output) "
        "and run again")

    def denied(path, wave, sr):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(cli, "save_wav", denied)
    with pytest.raises(OSError, match="Input/output error"):
        main(args)
