"""The leave-one-recording-out music benchmark on small synthetic genre folders (TINY spectrograms, latent 4,
1 epoch); one check on the real shared tracks, skipped when ../shared/data/music is absent."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, chirp, noise, tiny_model_cfg, tone, write_wav

from benchmarks import bench_music_holdout as bmh
from benchmarks import holdout

KW = dict(epochs=1, batch_size=8, griffinlim_iters=2, device="cpu", spec_cfg=TINY, model_cfg=tiny_model_cfg())
MUSIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "music"


def _track(kind: str, dur: float) -> np.ndarray:
    if kind == "tone":
        return tone(330, dur) + tone(990, dur, amp=0.2)
    if kind == "chirp":
        return chirp(200, 2000, dur)
    return noise(dur, amp=0.3, seed=int(dur * 10)) * (tone(4, dur, amp=1.0) > 0)


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    """Four tracks in three genre folders (1-2 s each, 8 kHz): TINY windows of 0.25 s."""
    folder = tmp_path_factory.mktemp("music")
    write_wav(folder / "jazz" / "alpha.wav", _track("tone", 1.5))
    write_wav(folder / "jazz" / "beta.wav", _track("chirp", 2.0))
    write_wav(folder / "piano" / "gamma.wav", _track("noise", 1.0))
    write_wav(folder / "folk" / "delta.wav", _track("chirp", 1.2)[::-1].copy())
    (folder / "README.txt").write_text("not audio")
    return folder


@pytest.fixture(scope="module")
def done(music, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(results folder, work folder, result) of one run over every track."""
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    return out, work, bmh.run(music, out, work=work, **KW)


def test_held_out_track_is_never_in_its_training_store(done, music):
    _, work, res = done
    tracks = {"alpha": "jazz", "beta": "jazz", "gamma": "piano", "delta": "folk"}
    assert set(res["tracks"]) == set(tracks)
    for t, r in res["tracks"].items():
        others = sorted(set(tracks) - {t})
        links = sorted((work / t / "train_clips").rglob("*.wav"))
        assert [f"{p.parent.name}/{p.stem}" for p in links] == sorted(f"{tracks[o]}/{o}" for o in others)
        assert all(p.is_symlink() and p.resolve().parent.parent == music.resolve() for p in links)
        clips = json.loads((work / t / "store" / "manifest.json").read_text())
        assert {Path(c["source"]).stem for c in clips} == set(others)
        assert all(c["label"] == tracks[Path(c["source"]).stem] for c in clips)  # genre folders kept
        assert sorted(r["train_tracks"] + r["val_tracks"]) == others and len(r["val_tracks"]) == 1
        assert r["own"]["track"] == r["train_tracks"][0] and r["genre"] == tracks[t]
        assert r["extra_files"] == 0 and r["train"]["epochs"] == 1 and r["train"]["latent_dim"] == 4


def test_each_track_has_finite_metrics_and_the_mean_is_their_mean(done):
    out, _, res = done
    saved = json.loads((out / "music_holdout.json").read_text())
    assert saved["tracks"] == res["tracks"] and {"date", "machine", "command", "params", "wall_s"} <= set(saved)
    rs = list(res["tracks"].values())
    for r in rs:
        for part in ("held_out", "own", "phase_only"):
            assert all(math.isfinite(r[part][k]) for k in ("lsd_db", "spectral_convergence"))
        assert r["held_out"]["n_windows"] == r["phase_only"]["n_windows"] >= 4
        assert r["lsd_ratio"] == pytest.approx(r["held_out"]["lsd_db"] / r["own"]["lsd_db"], rel=1e-3)
    s = res["summary"]
    for part in ("held_out", "own", "phase_only"):
        for k in ("lsd_db", "spectral_convergence"):
            assert s["mean"][part][k] == pytest.approx(sum(r[part][k] for r in rs) / len(rs), abs=1e-4)
    assert s["meets"]["lsd_db"] == (s["mean"]["held_out"]["lsd_db"] <= 5.0)
    assert s["targets"] == {"lsd_db_max": 5.0, "spectral_convergence_max": 0.35}
    md = (out / "music_holdout.md").read_text()
    assert md.startswith("## Held-out music") and "| **mean** |" in md and "Targets (issue #11)" in md


def test_second_run_skips_done_tracks_and_refuses_other_settings(done, music, monkeypatch, capsys):
    out, work, res = done
    calls: list[str] = []
    monkeypatch.setattr(bmh, "one_track", lambda t, *a, **k: calls.append(t))
    for change in ({}, {"device": "auto"}):  # the device may differ between the runs of one results file
        assert bmh.run(music, out, work=work, tracks=["beta", "gamma"], **{**KW, **change})["tracks"] == res["tracks"]
    assert not calls and capsys.readouterr().err.count(": result already in") == 4
    for change in ({"griffinlim_iters": 3}, {"sets": {"kl_weight": 0.5}}, {"with_phase_only": False}):
        with pytest.raises(ValueError, match=r"holds results for other settings.*--force"):
            bmh.run(music, out, work=work, tracks=["beta"], **{**KW, **change})
    assert not calls


def test_force_redoes_only_the_chosen_tracks(done, music, monkeypatch, tmp_path):
    out, work, res = done
    (tmp_path / "music_holdout.json").write_text((out / "music_holdout.json").read_text())
    monkeypatch.setattr(bmh, "one_track", lambda t, *a, **k: {**res["tracks"][t], "redone": True})
    again = bmh.run(music, tmp_path, work=work, tracks=["gamma"], force=True, **KW)
    assert [k for k, r in again["tracks"].items() if r.get("redone")] == ["gamma"]
    assert set(again["tracks"]) == {"alpha", "beta", "gamma", "delta"}


def test_extra_folders_are_linked_into_every_training_store(music, tmp_path):
    corpus = tmp_path / "corpus"
    write_wav(corpus / "march" / "m1.wav", _track("tone", 1.0))
    write_wav(corpus / "chorale" / "c1.wav", _track("chirp", 1.0))
    (corpus / "corpus.json").write_text("{}")
    res = bmh.run(music, tmp_path / "out", work=tmp_path / "work", tracks=["gamma"], extra=[corpus], **KW)
    links = sorted(str(p.relative_to(tmp_path / "work" / "gamma" / "train_clips"))
                   for p in (tmp_path / "work" / "gamma" / "train_clips").rglob("*.wav"))
    assert links == ["chorale/c1.wav", "folk/delta.wav", "jazz/alpha.wav", "jazz/beta.wav", "march/m1.wav"]
    labels = {c["label"] for c in json.loads((tmp_path / "work" / "gamma" / "store" / "manifest.json").read_text())}
    assert labels == {"chorale", "folk", "jazz", "march"}
    assert res["params"]["extra"] == [{"folder": str(corpus.resolve()), "files": 2}]
    assert res["tracks"]["gamma"]["extra_files"] == 2
    assert "extra folders" in (tmp_path / "out" / "music_holdout.md").read_text()


def test_a_link_name_clash_and_an_empty_extra_folder_are_refused(music, tmp_path):
    clash = tmp_path / "clash"
    write_wav(clash / "jazz" / "alpha.wav", _track("tone", 0.5))
    with pytest.raises(ValueError, match=r"both be linked as jazz/alpha\.wav"):
        holdout.links([music / "jazz" / "alpha.wav", clash / "jazz" / "alpha.wav"], tmp_path / "l", keep_parent=True)
    with pytest.raises(ValueError, match="rename one"):  # before any fold runs
        bmh.run(music, tmp_path / "out", work=tmp_path / "w", extra=[clash], **KW)
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        bmh.extra_files([tmp_path / "empty"])


def test_set_values_are_read_as_json():
    assert bmh.parse_sets(["spectral_weight=1.0", "augment=true", "epochs=3", "device=cpu", "lr=1e-3"]) == \
        {"spectral_weight": 1.0, "augment": True, "epochs": 3, "device": "cpu", "lr": 0.001}
    assert bmh.parse_sets(None) == {}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        bmh.parse_sets(["augment"])
    a = bmh.parse_args(["--set", "augment=true", "--set", "kl_weight=0.5", "--extra", "a", "--extra", "b",
                        "--tracks", "x", "y", "--arch", "temporal"])
    assert a.sets == ["augment=true", "kl_weight=0.5"] and a.extra == ["a", "b"] and a.tracks == ["x", "y"]


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "nope=1"], "unknown training parameters: ['nope']"),
    (["--set", "spectral_weight=-1"], "spectral_weight must be non-negative"),
    (["--set", "augment"], "expected KEY=VALUE"),
    (["--arch", "nope"], "unknown architecture 'nope'"),
])
def test_a_bad_training_parameter_stops_before_any_work(music, tmp_path, capsys, args, message):
    assert bmh.main(["--music", str(music), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench_music_holdout: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not any((tmp_path / "w").glob("*"))


def test_bad_track_name_is_refused(music, tmp_path, capsys):
    assert bmh.main(["--music", str(music), "--out", str(tmp_path), "--tracks", "alpha", "zed"]) == 2
    err = capsys.readouterr().err
    assert "unknown track(s) 'zed'" in err and "alpha, beta, delta, gamma" in err
    assert not any(tmp_path.iterdir())


def test_quick_holds_out_the_shortest_tracks_and_presets_follow_the_architecture(music):
    found = bmh.find_tracks(music)
    assert bmh.choose_tracks(found, None, music, quick=True) == ["delta", "gamma"]  # 1.2 s and 1.0 s
    assert bmh.choose_tracks(found, None, music) == ["alpha", "beta", "delta", "gamma"]
    assert bmh.choose_tracks(found, ["beta", "beta"], music) == ["beta"]
    assert [bmh.preset_for(a) for a in ("default", "study", "temporal", "new")] == \
        ["music", "study-music", "music", "music"]


def test_real_tracks_are_found_with_their_genres(tmp_path):
    if not MUSIC.is_dir():
        pytest.skip(f"real music not found at {MUSIC} (a checkout without ../shared/data)")
    found = bmh.find_tracks(MUSIC)
    assert len(found) >= 2 and all(p.parent.parent == MUSIC for p in found.values())
    others = [p for t, p in sorted(found.items()) if t != "solo_trumpet"]
    folder = holdout.links(others, tmp_path / "links", keep_parent=True)
    linked = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_symlink())
    assert linked == sorted(p.relative_to(MUSIC) for p in others)
    assert bmh.choose_tracks(found, ["solo_trumpet"], MUSIC) == ["solo_trumpet"]
