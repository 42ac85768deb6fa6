"""Store parameters and sizes are bounded before any work (#12, defect 2), killed builds leave nothing
behind (#12, defect 11), and a store cannot be rebuilt under a run that trains on it (#12, defect 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, TINY, tone, write_wav

from preprocessing import audio as audio_module
from preprocessing.audio import AudioError, load_audio
from preprocessing.config import ConfigError
from preprocessing.store import PreprocessError, Store, build_store, check_store_size, find_audio
from vae.cli import main


@pytest.mark.parametrize("fraction", [float("nan"), 2.0, -1.0, 1.0, float("inf")])
def test_test_fraction_outside_0_to_1_is_refused(fsdd_dir, tmp_path, fraction):
    with pytest.raises(ConfigError, match=r"test fraction must be a number from 0 \(no test split\) to below 1"):
        build_store(fsdd_dir, tmp_path / "s", TINY, test_fraction=fraction)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--duration", "inf"], "duration must be above 0.0 and at most 60.0, got inf"),
    (["--duration", "100000"], "duration must be above 0.0 and at most 60.0, got 100000.0"),
    (["--test-fraction", "nan"], "test fraction must be a number from 0"),
    (["--test-fraction", "2"], "test fraction must be a number from 0"),
    (["--test-fraction", "-1"], "test fraction must be a number from 0"),
    (["--sample-rate", "10000000"], "sample_rate must be a whole number from 1000 to 192000"),
    (["--max-store-gb", "nan"], "--max-store-gb must be a positive number of GB"),
])
def test_cli_preprocess_refuses_out_of_range_values_in_one_line(fsdd_dir, tmp_path, capsys, args, message):
    out = tmp_path / "s"
    assert main(["preprocess", "--preset", "digits", "--input", str(fsdd_dir), "--output", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".s.tmp-*"))


def test_a_store_over_the_size_limit_is_refused_before_any_work(fsdd_dir, tmp_path, monkeypatch, capsys):
    files = find_audio(fsdd_dir)[1]
    size = len(files) * TINY.n_freq * TINY.n_frames * 4  # the digits-style "first" windowing: one clip a file
    assert check_store_size(files, TINY, tmp_path / "s", max_bytes=size) == size
    analysed = []
    monkeypatch.setattr("preprocessing.store._analyse", lambda *a: analysed.append(a))
    with pytest.raises(PreprocessError, match=r"this store would take about 0\.00 GiB \(\d+ clips of 32 x 64\); the "
                                              r"limit is 0 GiB\. Raise it with `sound-vae preprocess --max-store-gb"):
        build_store(fsdd_dir, tmp_path / "s", TINY, max_bytes=size - 1)
    assert analysed == [] and not (tmp_path / "s").exists()


def test_long_files_count_every_window_and_the_free_disk_is_checked(tmp_path, monkeypatch):
    cfg = TINY.replace(windowing="all")
    write_wav(tmp_path / "in" / "long.wav", tone(440, dur=10 * cfg.duration))
    files = find_audio(tmp_path / "in")[1]
    assert check_store_size(files, cfg, tmp_path / "s") == 10 * cfg.n_freq * cfg.n_frames * 4
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 1000))
    with pytest.raises(PreprocessError, match=r"building it needs twice that, but .* has 0\.00 GiB free"):
        check_store_size(files, cfg, tmp_path / "s")


def test_audio_files_over_the_length_limit_are_skipped_with_the_reason(tmp_path, monkeypatch):
    path = write_wav(tmp_path / "long.wav", tone(440, dur=2.0))
    monkeypatch.setattr(audio_module, "MAX_FILE_S", 1.0)
    read = []
    monkeypatch.setattr(sf, "read", lambda *a, **k: read.append(a))
    with pytest.raises(AudioError, match=r"too large: 1 channels, 2 s; the limits are 64 channels and 0 minutes"):
        load_audio(path, SR)
    assert read == []  # refused from the header, before the samples are read


def test_a_killed_build_leaves_its_temporary_folder_and_the_next_build_removes_it(fsdd_dir, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale = tmp_path / f".s.tmp-{dead.pid}"
    (stale / "spectrograms.f32").parent.mkdir(parents=True)
    (stale / "spectrograms.f32").write_bytes(b"\0" * 1024)
    running = tmp_path / f".s.tmp-{os.getppid()}"  # a running process's build: left alone
    running.mkdir()
    build_store(fsdd_dir, tmp_path / "s", TINY)
    assert not stale.exists() and running.exists()


def test_a_store_cannot_be_rebuilt_while_a_run_holds_it(fsdd_dir, tmp_path):
    out = tmp_path / "s"
    build_store(fsdd_dir, out, TINY)
    before = np.array(Store(out).specs)
    with Store(out).hold():
        with pytest.raises(PreprocessError, match=f"the store {out} is in use by a training run"):
            build_store(fsdd_dir, out, TINY.replace(hop_length=32), reuse=False)
        np.testing.assert_array_equal(Store(out).specs, before)  # untouched
    summary = build_store(fsdd_dir, out, TINY.replace(hop_length=32), reuse=False)  # released: rebuilt
    assert summary.shape == TINY.replace(hop_length=32).shape


def test_the_hold_of_another_process_blocks_a_rebuild_until_it_ends(fsdd_dir, tmp_path):
    out = tmp_path / "s"
    build_store(fsdd_dir, out, TINY)
    code = ("import sys, time; from preprocessing.store import Store\n"
            f"with Store({str(out)!r}).hold():\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PreprocessError, match="in use by a training run"):
            build_store(fsdd_dir, out, TINY, reuse=False)
    finally:
        holder.kill()
        holder.wait()
    build_store(fsdd_dir, out, TINY, reuse=False)  # the lock died with its process


def test_training_holds_its_store_until_it_ends(fsdd_dir, tmp_path):
    """The probe of #12, defect 5: a store rebuilt with another preset under a run training on it."""
    from conftest import tiny_model_cfg

    from vae.train import train

    out = tmp_path / "s"
    build_store(fsdd_dir, out, TINY)
    run = train(out, tmp_path / "run", model_cfg=tiny_model_cfg(), epochs=2, batch_size=8, device="cpu")
    assert next(run).kind == "step"  # training has started
    with pytest.raises(PreprocessError, match="in use by a training run"):
        build_store(fsdd_dir, out, TINY.replace(hop_length=32), reuse=False)
    assert [ev.kind for ev in run][-1] == "done"  # and it finishes on the store it started with
    build_store(fsdd_dir, out, TINY.replace(hop_length=32), reuse=False)
