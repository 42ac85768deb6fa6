"""Building a store in worker processes (issue #13, item 4): the same bytes as in one process, bad files
skipped with their reasons, progress in file order, bounded worker counts, no half store after a killed
worker or Ctrl-C; and the explicit-read path (Store.rows) that keeps training's memory bounded."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import pickle
import signal

import numpy as np
import pytest
from conftest import TINY, chirp, noise, tone, write_fsdd_like, write_wav

from preprocessing import parallel
from preprocessing import store as store_module
from preprocessing.config import ConfigError
from preprocessing.parallel import MAX_WORKERS, WorkerDied
from preprocessing.rows import RowsError
from preprocessing.store import PARALLEL_MIN_BYTES, Store, auto_workers, build_store
from vae.cli import main


def _corpus(root):
    """Short FSDD-named clips, long files of several windows in genre folders (one with a silent stretch), and
    files that cannot be used; returns {file name: reason} for those."""
    write_fsdd_like(root / "digits")
    for g, f0 in (("jazz", 200.0), ("rock", 300.0)):
        for i in range(3):
            write_wav(root / "genres" / g / f"{g}.{i:05d}.wav",
                      chirp(f0 + 40 * i, 3000, dur=1.1) + noise(1.1, amp=0.05, seed=i))
    half = np.concatenate([tone(440, dur=0.6), np.zeros(4800, np.float32), tone(660, dur=0.3)])
    write_wav(root / "genres" / "jazz" / "jazz.00099.wav", half)
    (root / "genres" / "rock" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    write_wav(root / "silent.wav", np.zeros(2400, np.float32))
    return {"corrupt.wav": "not readable as audio", "silent.wav": "all-silent audio (peak below -80 dBFS)"}


def _build(src, out, workers, cfg=TINY):
    calls = []
    summary = build_store(src, out, cfg, progress=lambda *a: calls.append(a), workers=workers)
    return summary, calls


def _config(path):
    meta = json.loads((path / "config.json").read_text())
    meta.pop("created")
    return meta


@pytest.mark.parametrize("normalisation", ["global", "clip"])
def test_workers_build_the_same_store_byte_for_byte(tmp_path, normalisation):
    bad = _corpus(tmp_path / "in")
    cfg = TINY.replace(normalisation=normalisation)
    one, calls_one = _build(tmp_path / "in", tmp_path / "one", 1, cfg)
    two, calls_two = _build(tmp_path / "in", tmp_path / "two", 2, cfg)
    for name in ("spectrograms.npy", "manifest.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert _config(tmp_path / "one") == _config(tmp_path / "two")
    assert sorted(os.listdir(tmp_path / "two")) == ["config.json", "manifest.json", "spectrograms.npy"]
    # the unusable files are skipped with their reasons, the silent stretch counted, in both
    for s in (one, two):
        assert {os.path.basename(k.path): k.reason.split(" (")[0] for k in s.skipped} == \
            {k: v.split(" (")[0] for k, v in bad.items()}
        assert s.silent_windows >= 1 and s.n_files == 36 + 7
    # progress: every file once, in order, the same in both
    assert calls_two == calls_one and [c[0] for c in calls_two] == list(range(1, 46))
    assert {c[1] for c in calls_two} == {45} and calls_two[-1][2] == "silent.wav"
    assert multiprocessing.active_children() == []  # the workers have ended


def test_killed_workers_leave_no_store(fsdd_dir, tmp_path):
    def kill_the_workers(done, total, name):  # at the first file: most files are still to do
        if done == 1:
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGKILL)

    with pytest.raises(WorkerDied, match="a preprocessing worker process ended before its work was done"):
        build_store(fsdd_dir, tmp_path / "s", TINY, progress=kill_the_workers, workers=2)
    assert os.listdir(tmp_path) == [] and multiprocessing.active_children() == []


def test_ctrl_c_stops_the_workers_and_leaves_no_store(fsdd_dir, tmp_path):
    def interrupt(done, total, name):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_store(fsdd_dir, tmp_path / "s", TINY, progress=interrupt, workers=2)
    assert os.listdir(tmp_path) == [] and multiprocessing.active_children() == []


@pytest.mark.parametrize("workers", [0, -1, MAX_WORKERS + 1, 1.5, True, "2"])
def test_worker_counts_outside_1_to_256_are_refused_before_any_work(fsdd_dir, tmp_path, workers):
    with pytest.raises(ConfigError, match=rf"^workers must be a whole number from 1 to {MAX_WORKERS}, got "):
        build_store(fsdd_dir, tmp_path / "s", TINY, workers=workers)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", ["0", "257", "-3"])
def test_cli_refuses_a_bad_worker_count_in_one_line(fsdd_dir, tmp_path, capsys, value):
    out = tmp_path / "s"
    assert main(["preprocess", "--input", str(fsdd_dir), "--output", str(out), "--workers", value]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --workers must be a whole number from 1 to 256, got {int(value)}\n"
    assert not out.exists()


def test_cli_workers_build_the_store(fsdd_dir, tmp_path, capsys, monkeypatch):
    used = []
    real = store_module._write_store
    monkeypatch.setattr(store_module, "_write_store", lambda *a: used.append(a[-1]) or real(*a))
    assert main(["preprocess", "--input", str(fsdd_dir), "--output", str(tmp_path / "a"), "--preset", "digits",
                 "--workers", "1"]) == 0
    assert main(["preprocess", "--input", str(fsdd_dir), "--output", str(tmp_path / "b"), "--preset", "digits"]) == 0
    assert used == [1, 1]  # the default for a small store: this process (starting workers would cost more)
    assert Store(tmp_path / "a").summary().n_clips == Store(tmp_path / "b").summary().n_clips == 36


def test_auto_workers_start_at_the_size_threshold(monkeypatch):
    monkeypatch.setattr(store_module, "usable_cpus", lambda: 6)
    assert auto_workers(PARALLEL_MIN_BYTES - 1) == 1
    assert auto_workers(PARALLEL_MIN_BYTES) == 6


def test_usable_cpus_follow_the_affinity(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert parallel.usable_cpus() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert parallel.usable_cpus() == 1


# --- reading rows with explicit reads -------------------------------------------------------------------


def test_rows_read_what_the_memory_map_holds(tiny_store):
    rows, specs = tiny_store.rows, tiny_store.specs
    n = len(tiny_store)
    assert (len(rows), rows.shape, rows.nbytes) == (n, specs.shape, specs.nbytes)
    for idx in ([0], [3, 4, 5], [5, 1, 1, n - 1], list(range(n)), [-1, -n], np.array([2, 7]), []):
        got = rows[idx]
        assert got.shape == (len(idx), *specs.shape[1:]) and got.dtype == np.float32 and got.flags.writeable
        np.testing.assert_array_equal(got, specs[np.asarray(idx, dtype=np.int64)])
    np.testing.assert_array_equal(rows[2], specs[2])
    for bad in ([n], [-n - 1], [[0, 1]]):
        with pytest.raises(IndexError):
            rows[bad]


def test_rows_survive_pickling_and_refuse_a_changed_file(tiny_store, tmp_path):
    import shutil

    shutil.copytree(tiny_store.path, tmp_path / "s")
    s = Store(tmp_path / "s")
    first = s.rows[[0, 1]]
    for twin in (pickle.loads(pickle.dumps(s.rows)), copy.deepcopy(s.rows)):
        np.testing.assert_array_equal(twin[[0, 1]], first)
    later = Store(tmp_path / "s")
    with open(tmp_path / "s" / "spectrograms.npy", "ab") as f:
        f.write(b"\0" * 16)  # as if rebuilt with other contents after the store was opened
    with pytest.raises(RowsError, match=r"spectrograms\.npy changed since it was opened"):
        later.rows[[0]]
    np.testing.assert_array_equal(s.rows[[0, 1]], first)  # a reader already reading keeps its file


def test_latent_statistics_read_the_store_with_explicit_reads(tiny_store, tiny_ckpt, monkeypatch):
    """Encoding a store's clips (latent statistics, the map, the prior's codes) does not go through the memory
    map, whose pages would stay in the process's RSS."""
    from vae import latents

    monkeypatch.setattr(type(tiny_store.specs), "__getitem__", lambda *a: pytest.fail("read through the memmap"))
    stats = latents.compute_latent_stats(tiny_ckpt.model, tiny_store, tiny_store.indices("train"))
    assert len(stats.codes) == len(tiny_store.indices("train"))

