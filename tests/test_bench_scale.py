"""benchmarks/bench_scale.py runs end to end on a tiny corpus: the generated corpus, both preprocessing cases
(identical stores from 1 and 2 workers), an epoch of training as a child process, and its report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from benchmarks import bench_scale, run_all, synth_corpus

SPEC = {"sample_rate": 8000, "duration": 0.5, "n_fft": 128, "hop_length": 64}  # 64 x 63 spectrograms


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    res = bench_scale.run(out, work, quick=True, clips=4, seconds=2.0, workers=2, devices=["cpu"], isolate=False,
                          spec=SPEC, train_args=["--batch-size", "8"])
    return out, work, res


def test_quick_run_structure(quick):
    out, work, res = quick
    assert json.loads((out / "scale.json").read_text())["benchmark"] == "scale"
    one, two = res["preprocess"]["cases"]
    assert (one["workers"], two["workers"]) == (1, 2)
    for c in (one, two):
        assert (c["n_files"], c["n_clips"], c["skipped"]) == (4, 16, 0)
        assert c["files_per_s"] > 0 and c["seconds"] > 0 and c["peak_rss_mb"] > 0 and c["cpu_s"] >= 0
        assert c["store_bytes"] == 16 * 64 * 63 * 4 + 128  # the rows and the .npy header
    assert two["worker_peak_rss_mb"] > 0
    assert res["preprocess"]["identical"] and one["digest"] == two["digest"]
    assert res["store"]["clips"] == 16 and not res["store"]["at_least_10_gb"]
    assert [r["method"] for r in res["reads"]] == list(bench_scale.READ_METHODS)
    for r in res["reads"]:
        assert r["batches"] == 5 and r["batch_ms"]["n"] == 5 and r["peak_mb"]["VmRSS"] > 0
    cpu, cuda = res["training"]
    assert cpu["device"] == "cpu" and cpu["n_train"] + cpu["n_val"] == 16 and cpu["steps"] >= 1
    assert cpu["epoch_s"] > 0 and cpu["total_s"] >= cpu["epoch_s"] and cpu["peak_rss_mb"] > 0
    assert cpu["sampled_peak_mb"]["VmRSS"] <= cpu["peak_rss_mb"] + 1 and cpu["under_2_gb"] in (True, False)
    if "skipped" in cuda:
        assert cuda["skipped"] == bench_scale.NO_CUDA
    md = (out / "scale.md").read_text()
    assert "the two stores are **identical**" in md and bench_scale.NO_CUDA in md and "memmap+madvise" in md
    # the corpus is kept for the next run; the stores and the run are not
    assert (work / "corpus-2s-8000hz-seed0" / synth_corpus.MARKER).is_file()
    assert not (work / "stores").exists() and not (work / "runs").exists()


def test_the_corpus_is_deterministic_and_gtzan_shaped(quick, tmp_path):
    _, work, _ = quick
    made = work / "corpus-2s-8000hz-seed0"
    files = sorted(made.glob("*/*.wav"))
    names = [f.relative_to(made).as_posix() for f in files]
    assert names == ["blues/blues.00000.wav", "classical/classical.00001.wav", "country/country.00002.wav",
                     "disco/disco.00003.wav"]
    info = sf.info(str(files[0]))
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (8000, 16000, 1, "PCM_16")
    again = synth_corpus.make_corpus(tmp_path / "c", 4, 2.0, 8000)
    assert not again["reused"] and synth_corpus.make_corpus(tmp_path / "c", 4, 2.0, 8000)["reused"]
    for f in files:
        assert (tmp_path / "c" / f.relative_to(made)).read_bytes() == f.read_bytes()
    wave = synth_corpus.clip(3, 2.0, 8000)
    assert wave.dtype == np.float32 and 0.5 <= np.abs(wave).max() <= 0.9
    assert not np.array_equal(wave, synth_corpus.clip(3, 2.0, 8000, seed=1))


def test_scale_section_is_appended_to_the_report(tmp_path):
    assert run_all.scale_section(tmp_path / "none.md") == ""
    md = tmp_path / "scale.md"
    md.write_text("## Data at scale\n\nbody\n")
    assert run_all.scale_section(md) == ("\n# Data at scale (`python -m benchmarks.bench_scale`, not part of run_all)"
                                         "\n\nbody\n")
