"""Smoke tests for benchmarks/: every benchmark runs on tiny synthetic data and writes its results.

Benchmarks are not tests: nothing here checks a timing. The point is that they cannot rot.
Each benchmark runs once (module fixture) in quick mode with tiny settings, in this process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_wav

from benchmarks import (
    bench_latency,
    bench_phase,
    bench_preprocess,
    bench_time_to_quality,
    bench_training,
    common,
    run_all,
)

SR = 8000
CLIP_S = 0.6  # long enough for STOI (about 0.4 s of sound)


def _digit(d: int, speaker: int, take: int) -> np.ndarray:
    t = np.arange(int(CLIP_S * SR)) / SR
    f = (300, 700)[d] * (1 + 0.1 * speaker + 0.02 * take)
    noise = np.random.default_rng(100 * speaker + take).normal(0, 0.02, len(t))
    return (0.5 * np.sin(2 * np.pi * f * t) * np.hanning(len(t)) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A shared-data folder in miniature: fsdd/recordings (FSDD names) and music/<genre>/."""
    root = tmp_path_factory.mktemp("shared_data")
    for d in (0, 1):
        for k, s in enumerate(("ann", "bob")):
            for take in (0, 1, 5, 6, 7):  # takes 0-4: test split
                write_wav(root / "fsdd" / "recordings" / f"{d}_{s}_{take}.wav", _digit(d, k, take))
    t = np.arange(4 * SR) / SR
    for genre, f in (("jazz", 220.0), ("folk", 330.0)):
        write_wav(root / "music" / genre / f"{genre}.wav", (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def results(data_dir, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("bench_out")
    res = {
        "preprocess": bench_preprocess.run(out, data_dir, quick=True, isolate=False),
        "training": bench_training.run(out, data_dir, quick=True, isolate=False, presets=("digits",), steps=1,
                                       max_s=0.01, batch_cap=2),
        "time_to_quality": bench_time_to_quality.run(out, data_dir, quick=True, isolate=False, points_s=(0.01,),
                                                     n_eval=2, n_iter=2),
        "latency": bench_latency.run(out, data_dir, quick=True, isolate=False, repeats=2, train_s=0.01,
                                     checkpoints_dir=out / "no_checkpoints"),
        "phase": bench_phase.run(out, data_dir, quick=True, n_clips=2, iters=(2, 4)),
    }
    common.clean_tmp(out)
    return out, res


def _numbers(x) -> list[float]:
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [v for k, v in x.items() for v in _numbers(v) if k not in ("stoi", "stoi_joined")]
    if isinstance(x, list):
        return [v for item in x for v in _numbers(item)]
    return []


@pytest.mark.parametrize("name", list(run_all.BENCHMARKS))
def test_each_benchmark_writes_json_and_markdown(results, name):
    out, _ = results
    saved = json.loads((out / f"{name}.json").read_text())
    assert saved["benchmark"] == name and saved["quick"] is True
    assert {"date", "machine", "load_start", "load_end", "wall_s", "command"} <= set(saved)
    assert {"cpu", "cores", "torch", "torch_threads", "cuda_device"} <= set(saved["machine"])
    assert all(math.isfinite(v) for v in _numbers(saved)), "non-finite number (STOI may be NaN: too short)"
    md = (out / f"{name}.md").read_text()
    assert md.startswith("## ") and "|---|" in md
    assert not (out / "tmp" / "bench").exists()


def test_result_contents(results):
    out, res = results
    pre = res["preprocess"]["cases"]
    assert {(c["dataset"], c["preset"]) for c in pre} == {("fsdd", "digits"), ("music", "music")}
    assert all(not c["cold"]["reused"] and c["reused"]["reused"] and c["cold"]["peak_rss_mb"] > 0 for c in pre)
    assert pre[0]["cold"]["n_files"] == 20

    tr = res["training"]["cases"]
    assert {c["arch"] for c in tr} == {"default", "study"}
    assert all(c["cpu"]["samples_per_s"] > 0 and c["cpu"]["batch_size"] == 2 for c in tr)
    if not res["training"]["machine"]["cuda_device"]:
        assert all(v == bench_training.NO_CUDA for c in tr for v in c["cuda"].values())

    ttq = res["time_to_quality"]
    assert set(ttq["arms"]) == {"default", "study"}
    assert all(a["curve"] and a["curve"][0]["lsd_db"] > 0 for a in ttq["arms"].values())
    assert set(ttq["summary"]["equal_time"]) == {"default", "study"}
    assert (out / ttq["plot"]).is_file()

    lat = res["latency"]["models"]
    assert set(lat) == {"digits", "music"} and all("trained" in m["source"] for m in lat.values())
    run = lat["digits"]["runs"][0]
    assert run["slider_fast"]["total"]["n"] == 2
    assert {"decode", "phase", "image", "wav"} == set(run["slider_fast"]["stages_median_ms"])
    assert {"analyse", "encode_decode", "phase", "images", "wav"} == set(run["reconstruction"]["stages_median_ms"])

    ph = res["phase"]["presets"]
    assert set(ph) == {"digits", "study-digits"}
    assert [r["method"] for r in ph["digits"]] == ["zero phase (study)", "Griffin-Lim 2", "Griffin-Lim 4"]
    assert all(0 <= r["spectral_convergence"] for rs in ph.values() for r in rs)
    assert (out / res["phase"]["plot"]).is_file()


def test_phase_is_repeatable(data_dir):
    files = common.spread(common.fsdd_files(data_dir, "test"), 2)
    a = bench_phase.measure_preset(files, "digits", iters=(3,))
    b = bench_phase.measure_preset(files, "digits", iters=(3,))
    assert [r["spectral_convergence"] for r in a] == [r["spectral_convergence"] for r in b]


def test_report_lists_every_benchmark(results):
    out, _ = results
    text = run_all.report(run_all.load_results(out), link_prefix="benchmarks/results")
    for title in ("Preprocessing throughput", "Training throughput", "Time to quality", "Interactive latency",
                  "Phase estimation", "Headline figures"):
        assert title in text
    assert "](benchmarks/results/phase.png)" in text and "Quick run" in text


def test_run_all_cli_writes_summary_but_not_the_published_report(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "REPORT", tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(common, "COMMAND", None)  # main() sets it for the run
    monkeypatch.setattr(bench_phase, "QUICK_CLIPS", 1)
    out = tmp_path / "out"
    assert run_all.main(["--quick", "--only", "phase", "--out", str(out), "--data", str(data_dir)]) == 0
    assert (out / "phase.json").is_file() and "Phase estimation" in (out / "summary.md").read_text()
    assert not (tmp_path / "BENCHMARKS.md").exists()  # only a run into benchmarks/results rewrites it
    (out / "summary.md").unlink()
    assert run_all.main(["--report-only", "--out", str(out), "--data", str(data_dir)]) == 0
    assert "Phase estimation" in (out / "summary.md").read_text()
    assert run_all.main(["--only", "phase", "--data", str(tmp_path / "missing")]) == 2


def test_isolated_case_reports_peak_memory():
    r = common.run_case("benchmarks.common:machine", {})
    assert r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0 and r["cores"] >= 1


def test_helpers():
    assert common.percentile([1, 2, 3, 4], 50) == 2.5 and common.percentile([5], 95) == 5
    assert math.isnan(common.percentile([], 50))
    s = common.summary_ms([0.001, 0.002, 0.003])
    assert s["median_ms"] == 2.0 and s["n"] == 3
    assert common.spread(list(range(10)), 3) == [0, 3, 6] and common.spread([1, 2], 5) == [1, 2]
    assert common.fmt(None) == "n/a" and common.fmt(float("nan")) == "n/a" and common.fmt(1234.5, 0) == "1,234"


def test_slider_latency_through_the_app_callback(tmp_path):
    """The app-level slider benchmark (StudioApp.explore_move plus Gradio's post-processing) still runs."""
    from benchmarks import slider_latency

    ckpt = slider_latency.untrained_digits_checkpoint(tmp_path / "ck")
    r = slider_latency.main(["--checkpoint", str(ckpt), "--n", "3", "--no-server"])
    assert r["sliders"] >= 1 and r["callback_ms"]["n"] == 3
    # server side = callback + post-processing, call by call
    assert 0 < r["callback_ms"]["median_ms"] <= r["server_side_ms"]["median_ms"]
    assert r["machine"]["cores"] >= 1 and "server_round_trip_ms" not in r


def test_report_appends_the_held_out_runs(tmp_path):
    """Long held-out runs copied into results/held_out/ are appended, each with its arm and command."""
    from benchmarks.run_all import held_out_sections

    assert held_out_sections(tmp_path / "none") == ""
    folder = tmp_path / "held_out"
    folder.mkdir()
    (folder / "music_holdout_temporal.md").write_text("## Held-out music\n\nmachine line\n\n| a |\n|---|\n| 1 |\n")
    (folder / "music_holdout_temporal.json").write_text(json.dumps({"command": "python -m benchmarks.x --y"}))
    (folder / "unseen_speaker_default.md").write_text("## Unseen speakers\n\nother machine\n")
    text = held_out_sections(folder)
    assert text.index("## Held-out music: temporal") < text.index("## Unseen speakers: default")
    assert "Command: `python -m benchmarks.x --y`" in text and "| 1 |" in text
    assert text.count("Command:") == 1  # a report without its JSON has no command line
