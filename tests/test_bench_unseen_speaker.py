"""The leave-one-speaker-out benchmark on tiny synthetic FSDD-like clips (TINY spectrograms, latent 4, 1 epoch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY, digit_sound, write_fsdd_like, write_wav

from benchmarks import bench_unseen_speaker as bus

KW = dict(epochs=1, latent_dim=4, batch_size=8, griffinlim_iters=2, device="cpu", eval_workers=1, spec_cfg=TINY)


@pytest.fixture(scope="module")
def fsdd(tmp_path_factory) -> Path:
    """alice and bob (conftest) plus carol: three speakers, 18 clips each."""
    folder = tmp_path_factory.mktemp("fsdd3")
    write_fsdd_like(folder)
    for d in (0, 1, 2):
        for t in (0, 1, 5, 6, 7, 8):
            write_wav(folder / f"{d}_carol_{t}.wav", digit_sound(d, 2, t))
    return folder


@pytest.fixture(scope="module")
def done(fsdd, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(results folder, work folder, result) of one run over every speaker."""
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    return out, work, bus.run(fsdd, out, quick=True, work=work, **KW)


def test_held_out_speaker_is_never_in_the_training_store(done):
    _, work, res = done
    assert set(res["speakers"]) == {"alice", "bob", "carol"}
    for spk, r in res["speakers"].items():
        clips = json.loads((work / spk / "store" / "manifest.json").read_text())
        assert clips and {c["speaker"] for c in clips} == set(r["train_speakers"]) == {"alice", "bob", "carol"} - {spk}
        assert not any(f"_{spk}_" in c["source"] for c in clips)
        assert r["unseen"]["n_files"] == 18  # every clip of the held-out speaker
        assert r["own_test"]["n_files"] == 12  # takes 0-1 of two speakers x 3 digits


def test_each_speaker_has_finite_metrics_and_the_mean_is_their_mean(done):
    out, _, res = done
    saved = json.loads((out / "unseen_speaker.json").read_text())
    assert saved["speakers"] == res["speakers"] and saved["quick"] is True
    assert {"date", "machine", "command", "params", "wall_s"} <= set(saved)
    rs = list(res["speakers"].values())
    for r in rs:
        for part in ("unseen", "own_test"):
            assert all(math.isfinite(r[part][k]) for k in ("lsd_db", "spectral_convergence"))
            assert r[part]["stoi"] is None or 0 <= r[part]["stoi"] <= 1  # None: clips too short for STOI
        assert r["lsd_ratio"] == pytest.approx(r["unseen"]["lsd_db"] / r["own_test"]["lsd_db"], rel=1e-3)
        assert r["train"]["epochs"] == 1 and r["train"]["latent_dim"] == 4
    m = res["summary"]["mean"]
    for part in ("unseen", "own_test"):
        for k in ("lsd_db", "spectral_convergence"):
            assert m[part][k] == pytest.approx(sum(r[part][k] for r in rs) / len(rs), abs=1e-4)
    assert m["lsd_ratio"] == pytest.approx(sum(r["lsd_ratio"] for r in rs) / len(rs), abs=1e-4)
    md = (out / "unseen_speaker.md").read_text()
    assert md.startswith("## Unseen speakers") and "| **mean** |" in md and "Targets" in md


def test_second_run_skips_done_speakers(done, fsdd, monkeypatch, capsys):
    out, work, res = done

    def fail(*a, **k):
        raise AssertionError("a done speaker was run again")

    monkeypatch.setattr(bus, "one_speaker", fail)
    again = bus.run(fsdd, out, quick=True, work=work, speakers=["bob"], **KW)
    assert again["speakers"] == res["speakers"]
    assert "bob (1/1): result already in" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"other settings.*--force"):
        bus.run(fsdd, out, quick=True, work=work, **{**KW, "griffinlim_iters": 3})


def test_force_redoes_only_the_chosen_speakers(done, fsdd, monkeypatch, tmp_path):
    out, work, res = done
    redo = tmp_path / "out"
    redo.mkdir()
    (redo / "unseen_speaker.json").write_text((out / "unseen_speaker.json").read_text())
    monkeypatch.setattr(bus, "one_speaker", lambda spk, *a, **k: {**res["speakers"][spk], "redone": True})
    again = bus.run(fsdd, redo, quick=True, work=work, speakers=["carol"], force=True, **KW)
    assert [k for k, r in again["speakers"].items() if r.get("redone")] == ["carol"]
    assert set(again["speakers"]) == {"alice", "bob", "carol"}


def test_parallel_evaluation_agrees_with_one_process(done, fsdd, tmp_path):
    _, work, _ = done
    files = bus.clips_by_speaker(fsdd)["alice"]
    ckpt = work / "bob" / "ckpt" / "last"
    one = bus.measure(ckpt, files, tmp_path / "one", 2, "cpu", workers=1)
    two = bus.measure(ckpt, files, tmp_path / "two", 2, "cpu", workers=2)
    assert one["n_files"] == two["n_files"] == 18 and one["n_windows"] == two["n_windows"]
    for k in ("lsd_db", "spectral_convergence"):  # Griffin-Lim starts from other random phases
        assert two[k] == pytest.approx(one[k], rel=0.15)


def test_combine_weights_chunks_by_their_files():
    parts = [{"lsd_db": 2.0, "spectral_convergence": 1.0, "stoi": 0.5, "stoi_files": 1, "n_files": 1, "n_windows": 1},
             {"lsd_db": 5.0, "spectral_convergence": 4.0, "stoi": None, "stoi_files": 0, "n_files": 2, "n_windows": 3}]
    assert bus.combine(parts) == {"lsd_db": 4.0, "spectral_convergence": 3.0, "stoi": 0.5, "stoi_files": 1,
                                  "n_files": 3, "n_windows": 4}


def test_mean_ignores_missing_values():
    assert bus.mean([1.0, None, 3.0, float("nan")]) == 2.0 and bus.mean([None]) is None


def test_bad_speaker_name_is_refused(fsdd, tmp_path, capsys):
    assert bus.main(["--fsdd", str(fsdd), "--out", str(tmp_path), "--speakers", "alice,zed"]) == 2
    err = capsys.readouterr().err
    assert "unknown speaker(s) 'zed'" in err and "alice, bob, carol" in err
    assert not any(tmp_path.iterdir())
