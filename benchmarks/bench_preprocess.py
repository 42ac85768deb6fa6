"""Preprocessing throughput: audio folder -> dataset store, cold and with the store reused.

Each case runs in its own process (peak RSS is the case's own). "Cold" deletes the store first
(the OS file cache is not dropped, so the audio is usually already in memory); "reused" runs the
same build again, which checks the fingerprint and returns the existing store.

    python -m benchmarks.bench_preprocess [--quick] [--out DIR] [--data DIR]   # from the repository root
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "preprocess"
FULL_CASES = (("fsdd", "digits"), ("fsdd", "study-digits"), ("music", "music"), ("music", "study-music"))
QUICK_CASES = (("fsdd", "digits"), ("music", "music"))
QUICK_FSDD_FILES = 200


def build_case(inputs: str | list[str], store: str, preset: str, cold: bool, repeats: int = 1) -> dict[str, Any]:
    """Build (cold) or re-open (reused) one store; wall seconds per build, median of ``repeats``."""
    import soundfile as sf

    from preprocessing.config import preset as get_preset
    from preprocessing.store import build_store, find_audio

    _, files, _ = find_audio(inputs)
    audio_s = sum(sf.info(str(f)).duration for f in files)
    if cold:
        shutil.rmtree(store, ignore_errors=True)
    times, summary = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        summary = build_store(inputs, store, get_preset(preset))
        times.append(time.perf_counter() - t0)
    seconds = common.percentile(times, 50)
    return {"seconds": round(seconds, 4), "n_files": len(files), "n_clips": summary.n_clips,
            "audio_s": round(audio_s, 1), "reused": summary.reused, "files_per_s": round(len(files) / seconds, 1),
            "clips_per_s": round(summary.n_clips / seconds, 1), "x_realtime": round(audio_s / seconds, 1)}


def run(out_dir: str | Path = common.DEFAULT_OUT, data_dir: str | Path = common.DEFAULT_DATA, quick: bool = False,
        *, isolate: bool = True, cases: tuple[tuple[str, str], ...] | None = None) -> dict[str, Any]:
    """Measure every (dataset, preset) case cold and reused; write preprocess.{json,md}."""
    cases = cases or (QUICK_CASES if quick else FULL_CASES)
    res = common.begin(NAME, quick, cases=[list(c) for c in cases])
    fsdd = [str(f) for f in common.fsdd_files(data_dir)]
    inputs = {"fsdd": common.spread(fsdd, QUICK_FSDD_FILES) if quick else str(common.fsdd_dir(data_dir)),
              "music": str(common.music_dir(data_dir))}
    rows = []
    for dataset, preset in cases:
        store = str(common.tmp_dir(out_dir, "stores") / f"{dataset}-{preset}")
        kw = {"inputs": inputs[dataset], "store": store, "preset": preset}
        print(f"[preprocess] {dataset} / {preset} ...", file=sys.stderr, flush=True)
        cold = common.run_case("benchmarks.bench_preprocess:build_case", {**kw, "cold": True}, isolate)
        reused = common.run_case("benchmarks.bench_preprocess:build_case", {**kw, "cold": False, "repeats": 3},
                                 isolate)
        rows.append({"dataset": dataset, "preset": preset, "cold": cold, "reused": reused})
    res["cases"] = rows
    common.finish(res)
    return common.write_result(out_dir, NAME, res, markdown(res))


def markdown(res: dict[str, Any]) -> str:
    f = common.fmt
    rows = []
    for r in res["cases"]:
        c, u = r["cold"], r["reused"]
        rows.append([r["dataset"], r["preset"], c["n_files"], c["n_clips"], f(c["audio_s"] / 60, 1),
                     f(c["seconds"], 1), f(c["files_per_s"], 1), f(c["x_realtime"], 0), f(c["peak_rss_mb"], 0),
                     f(u["seconds"] * 1000, 0), f(u["files_per_s"], 0), f(u["peak_rss_mb"], 0)])
    table = common.md_table(
        ["data", "preset", "files", "clips", "audio (min)", "cold (s)", "cold files/s", "cold x real-time",
         "cold peak RSS (MB)", "reused (ms)", "reused files/s", "reused peak RSS (MB)"], rows)
    return (common.header_md(res, "Preprocessing throughput") + table +
            "\nCold: the store is deleted first (the OS file cache is warm). Reused: the same command again "
            "(fingerprint check; median of 3). Peak RSS is the whole process, including about "
            f"{f(res['cases'][0]['cold']['baseline_rss_mb'], 0)} MB for Python, torch and torchaudio.\n")


if __name__ == "__main__":
    a = common.bench_args(__doc__)
    print(markdown(run(a.out, a.data, a.quick)))
