"""Data at GTZAN's scale (issue #13, item 4): preprocessing in one process and in several, and training an epoch
from a store of 10 GB or more with bounded memory.

1. Corpus: ``--clips`` generated music clips of 30 s at 22,050 Hz (benchmarks/synth_corpus.py: GTZAN's layout and
   format), written to ``--work`` (default: /tmp/sound-vae-scale, outside the repository) and reused from there.
   2,100 clips, not GTZAN's 1,000: the music preset cuts a 30 s clip into 10 windows of 512 x 256 float32
   (512 KiB each), so 1,000 clips make a 5.0 GiB store and 2,100 make 10.25 GiB (11.0 GB), over the 10 GB asked.
2. Preprocessing (music preset) with ``--workers 1`` (today's path: everything in one process), then with
   ``--workers N`` (default: the usable CPUs), each in its own process (its peak RSS, and its largest worker's);
   files/s and wall time of ``build_store`` (the OS file cache is warm: the corpus was just written or read;
   dirty pages are synced before each build). The stores are compared by digest (spectrograms.npy,
   manifest.json, and config.json without its date); the first is deleted before the second is built (disk).
3. Training: ``python -m vae train --data STORE --epochs 1 --device D`` as a child process on each device of
   ``--devices`` (default: cpu, and cuda when there is one): the epoch's time (steps, validation, checkpoint),
   the whole command's, its peak RSS (``ru_maxrss`` from wait4) and its RSS sampled every 0.5 s from
   /proc/PID/status (VmRSS, and its file-backed part RssFile: pages of the store left mapped would show there).

    python -m benchmarks.bench_scale [--quick] [--work DIR] [--clips N] [--workers N] [--devices cpu cuda]
                                     [--keep] [--out DIR]

``--quick``: 6 clips of 6 s, a smoke run of every step (about a minute), written to benchmarks/results/tmp/quick
unless ``--out``. Writes ``<out>/scale.json`` and ``scale.md``; BENCHMARKS.md appends the last full run's
(benchmarks/results/scale.md: run_all's ``scale_section``; not run by run_all, it takes about an hour).
Needs twice the store's size free in ``--work`` while a store is built, plus the corpus (1.3 MB a clip).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

NAME = "scale"
PRESET = "music"
FULL = {"clips": 2100, "seconds": 30.0, "read_batches": 400}
QUICK = {"clips": 6, "seconds": 6.0, "read_batches": 5}
MIN_STORE_BYTES = 10**10  # the "10 GB or more"
RSS_LIMIT_MB = 2000.0  # the "RSS under 2 GB" while training from such a store
DEFAULT_WORK = Path(tempfile.gettempdir()) / "sound-vae-scale"
SAMPLE_S = 0.5
NO_CUDA = "not measured: no CUDA device on this machine"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK['clips']} clips of {QUICK['seconds']:g} s")
    p.add_argument("--clips", type=int, help=f"clips to generate (default {FULL['clips']})")
    p.add_argument("--seconds", type=float, help=f"seconds a clip (default {FULL['seconds']:g})")
    p.add_argument("--workers", type=int, help="the parallel case's workers (default: the usable CPUs, at least 2)")
    p.add_argument("--devices", nargs="+", help="devices to train an epoch on (default: cpu, and cuda if present)")
    p.add_argument("--work", default=str(DEFAULT_WORK), help=f"corpus, stores and runs (default {DEFAULT_WORK})")
    p.add_argument("--baseline", metavar="GIT_REF", help="also build with the preprocessing code of this git revision "
                   "(e.g. the commit before parallel builds, bb89db3), in one process: today's against that")
    p.add_argument("--keep", action="store_true", help="keep the store and the run (the corpus is always kept)")
    p.add_argument("--out", help="results folder (default benchmarks/results; --quick: benchmarks/results/tmp/quick)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- measured cases (each in its own process)


def digest(store: str | Path) -> dict[str, str]:
    """BLAKE2b of a store's spectrograms.npy and manifest.json, and of its config.json without the build date."""
    store = Path(store)
    out = {}
    for name in ("spectrograms.npy", "manifest.json"):
        h = hashlib.blake2b(digest_size=16)
        with open(store / name, "rb") as f:
            while chunk := f.read(16 << 20):
                h.update(chunk)
        out[name] = h.hexdigest()
    config = json.loads((store / "config.json").read_text())
    config.pop("created", None)
    out["config.json (without created)"] = hashlib.blake2b(json.dumps(config, sort_keys=True).encode(),
                                                           digest_size=16).hexdigest()
    return out


def build_case(corpus: str, store: str, workers: int, preset: str = PRESET,
               spec: dict[str, Any] | None = None, code: str | None = None) -> dict[str, Any]:
    """Build the store once (timed), then digest it; CPU seconds and the largest worker's peak RSS. ``code``: a
    folder holding another version's ``preprocessing`` package, which the caller put first on the path of this
    case's process (``run_case(first_path=...)``): built with it, in one process, its own way."""
    import preprocessing.store
    from preprocessing.config import preset as get_preset
    from preprocessing.store import build_store

    if code and not Path(preprocessing.store.__file__).is_relative_to(code):
        raise RuntimeError(f"the build would use {preprocessing.store.__file__}, not the code in {code}")

    cfg = get_preset(preset).replace(**(spec or {}))
    shutil.rmtree(store, ignore_errors=True)
    if hasattr(os, "sync"):
        os.sync()  # earlier work's dirty pages are written now, not during this build
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    summary = build_store(corpus, store, cfg, reuse=False, **({"workers": workers} if not code else {}))
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    size = (Path(store) / "spectrograms.npy").stat().st_size
    return {"workers": workers, "seconds": round(seconds, 2), "n_files": summary.n_files, "n_clips": summary.n_clips,
            "skipped": len(summary.skipped), "audio_s": round(summary.duration_s, 1),
            "files_per_s": round(summary.n_files / seconds, 2), "mb_per_s": round(size / 1e6 / seconds, 1),
            "cpu_s": round(cpu, 1), "store_bytes": size, "worker_peak_rss_mb": _children_peak_mb(),
            "digest": digest(store)}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its ended children (the workers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _children_peak_mb() -> float | None:
    """Peak RSS of the largest ended child (a worker), MB; None when there was none."""
    kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(kb / 1024, 1) if kb else None


READ_METHODS = ("memmap", "memmap+madvise", "pread")


def read_case(store: str, method: str, batches: int, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Read ``batches`` random batches of sorted rows from a store as training does, by ``method``: indexing the
    memory map (the pages touched stay in RSS), the same then ``madvise(MADV_DONTNEED)`` on the whole map after
    each batch (drops them from this process; the OS cache keeps them), or explicit reads (Store.rows).
    Median ms a batch, and RSS (VmRSS, RssFile) at the end and at its peak."""
    import mmap

    from preprocessing.store import Store

    st = Store(store)
    rng = np.random.default_rng(seed)
    times, peak = [], {}
    for _ in range(batches):
        rows = np.sort(rng.choice(len(st), batch_size, replace=False))
        t0 = time.perf_counter()
        if method == "pread":
            x = st.rows[rows]
        else:
            x = np.asarray(st.specs[rows])
            if method == "memmap+madvise":
                st.specs._mmap.madvise(mmap.MADV_DONTNEED)
        times.append(time.perf_counter() - t0)
        del x
        for k, v in _status(os.getpid()).items():
            peak[k] = max(peak.get(k, 0), v)
    end = _status(os.getpid())
    return {"method": method, "batches": batches, "batch_size": batch_size,
            "mb_read": round(batches * batch_size * st.rows.row_bytes / 1e6), "batch_ms": common.summary_ms(times),
            "end_mb": {k: round(v / 1024) for k, v in end.items()},
            "peak_mb": {k: round(v / 1024) for k, v in peak.items()}}


# ---------------------------------------------------------------- training as a child process


def _status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of ``pid`` (kB) from /proc (Linux); {} when it cannot be read."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    keys = ("VmRSS", "RssAnon", "RssFile")
    return {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in lines if ":" in ln) if k in keys}


def train_child(store: Path, run: Path, device: str, extra: list[str] | None = None,
                timeout_s: float | None = None) -> dict[str, Any]:
    """``python -m vae train`` on ``store`` for one epoch; its times, peak RSS and sampled RSS."""
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "vae", "train", "--data", str(store), "--output", str(run), "--epochs", "1",
           "--device", device, *(extra or [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(common.ROOT), os.environ.get("PYTHONPATH")]))}
    if os.environ.get(common.THREADS_ENV):
        cmd += ["--threads", os.environ[common.THREADS_ENV]]
    log = run.parent / f"{run.name}.log"
    run.parent.mkdir(parents=True, exist_ok=True)
    peak: dict[str, int] = {}
    series: list[list[float]] = []  # [s since start, VmRSS MB, RssFile MB]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_S):
                st = _status(p.pid)
                for k, v in st.items():
                    peak[k] = max(peak.get(k, 0), v)
                if st:
                    series.append([round(time.perf_counter() - t0, 1), round(st.get("VmRSS", 0) / 1024),
                                   round(st.get("RssFile", 0) / 1024)])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            status, usage = _wait(p, timeout_s)
        finally:
            done.set()
            sampler.join()
    wall = time.perf_counter() - t0
    if status != 0:
        tail = "\n".join(log.read_text().strip().splitlines()[-15:])
        raise RuntimeError(f"training on {device} failed (exit {status}):\n{tail}")
    return {"device": device, "command": " ".join(["python", *cmd[1:]]), "total_s": round(wall, 1),
            **_epoch(run), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "sampled_peak_mb": {k: round(v / 1024, 1) for k, v in peak.items()}, "rss_series_mb": _thin(series)}


def _wait(p: subprocess.Popen, timeout_s: float | None) -> tuple[int, Any]:
    """Wait for ``p`` with wait4 (its resource usage: ru_maxrss is its peak RSS); (exit status, usage)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            return p.returncode, usage
        if deadline is not None and time.monotonic() > deadline:
            p.kill()
        time.sleep(0.1)


def _epoch(run: Path) -> dict[str, Any]:
    """The epoch's figures from the run's event log and checkpoint: wall time from the start record to the
    epoch record (setup, steps, validation, checkpoint), step time, clips, steps, batch size."""
    recs = [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines()]
    start = next(r for r in recs if r["kind"] == "start")
    epoch = next(r for r in recs if r["kind"] == "epoch")
    meta = json.loads((run / "last" / "config.json").read_text())
    history = meta["meta"]["history"][0]
    return {"epoch_s": round(epoch["t"] - start["t"], 1), "train_steps_s": history["train_time_s"],
            "n_train": meta["meta"]["n_train"], "n_val": meta["meta"]["n_val"], "steps": epoch["steps"],
            "batch_size": meta["training"]["batch_size"], "arch": meta["meta"]["arch"],
            "samples_per_s": round(meta["meta"]["n_train"] / max(history["train_time_s"], 1e-9), 1),
            "val_loss": round(history["val"]["loss"], 4)}


def _thin(series: list[list[float]], n: int = 60) -> list[list[float]]:
    """At most about ``n`` evenly spread samples (and the peak) of an RSS series, for the JSON."""
    if len(series) <= n:
        return series
    keep = set(range(0, len(series), len(series) // n)) | {max(range(len(series)), key=lambda i: series[i][1])}
    return [series[i] for i in sorted(keep)]


# ---------------------------------------------------------------- the benchmark


def run(out_dir: str | Path = common.DEFAULT_OUT, work: str | Path = DEFAULT_WORK, quick: bool = False, *,
        clips: int | None = None, seconds: float | None = None, workers: int | None = None,
        devices: list[str] | None = None, keep: bool = False, isolate: bool = True, preset: str = PRESET,
        baseline: str | None = None,
        spec: dict[str, Any] | None = None, train_args: list[str] | None = None) -> dict[str, Any]:
    """Generate (or reuse) the corpus, build the store with 1 and ``workers`` workers, train an epoch on each
    device; write scale.{json,md}. ``spec`` (spectrogram overrides) and ``train_args`` serve the smoke test."""
    import torch

    from benchmarks.synth_corpus import make_corpus
    from preprocessing.config import preset as get_preset
    from preprocessing.parallel import usable_cpus

    size = QUICK if quick else FULL
    clips, seconds = clips or size["clips"], seconds or size["seconds"]
    workers = workers or max(2, usable_cpus())
    devices = devices or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    cfg = get_preset(preset).replace(**(spec or {}))
    work = Path(work)
    res = common.begin(NAME, quick, clips=clips, seconds=seconds, sample_rate=cfg.sample_rate, preset=preset,
                       spec=spec or {}, workers=workers, devices=devices, usable_cpus=usable_cpus(), work=str(work),
                       baseline=baseline)

    corpus_dir = work / f"corpus-{seconds:g}s-{cfg.sample_rate}hz-seed0"
    _say(f"corpus: {clips} clips of {seconds:g} s in {corpus_dir}")
    t0 = time.perf_counter()
    res["corpus"] = {**make_corpus(corpus_dir, clips, seconds, cfg.sample_rate, workers=workers),
                     "seconds_to_make": round(time.perf_counter() - t0, 1), "path": str(corpus_dir),
                     "bytes": sum(f.stat().st_size for f in corpus_dir.glob("*/*.wav"))}

    stores = work / "stores"
    kw = {"corpus": str(corpus_dir), "preset": preset, "spec": spec or {}}
    if baseline:
        code = _checkout(baseline, work / "baseline")
        _say(f"preprocessing with the code of {baseline} (one process) ...")
        base = common.run_case("benchmarks.bench_scale:build_case", {**kw, "store": str(stores / "baseline"),
                               "workers": 1, "code": str(code)}, isolate, first_path=str(code))
        base["code"] = baseline
        shutil.rmtree(stores / "baseline", ignore_errors=True)
        _say(f"  {base['files_per_s']} files/s, {base['seconds']} s, peak RSS {base['peak_rss_mb']} MB")
    cases = []
    for n in (1, workers):
        store = stores / f"w{n}"
        _say(f"preprocessing with {n} worker(s) ...")
        cases.append(common.run_case("benchmarks.bench_scale:build_case", {**kw, "store": str(store), "workers": n},
                                     isolate))
        _say(f"  {cases[-1]['files_per_s']} files/s, {cases[-1]['seconds']} s, peak RSS {cases[-1]['peak_rss_mb']} MB")
        if n == 1:
            shutil.rmtree(store, ignore_errors=True)  # disk: one store at a time
    one, many = cases
    store = stores / f"w{workers}"
    res["preprocess"] = {"cases": cases, "identical": one["digest"] == many["digest"],
                         "speedup": round(many["files_per_s"] / one["files_per_s"], 2)}
    if baseline:
        res["preprocess"]["baseline"] = {**base, "identical": base["digest"] == many["digest"],
                                         "speedup": round(many["files_per_s"] / base["files_per_s"], 2)}
    res["store"] = {"path": str(store), "bytes": many["store_bytes"], "gib": round(many["store_bytes"] / 2**30, 2),
                    "clips": many["n_clips"], "shape": list(cfg.shape),
                    "at_least_10_gb": many["store_bytes"] >= MIN_STORE_BYTES}

    res["reads"] = [common.run_case("benchmarks.bench_scale:read_case", {"store": str(store), "method": m,
                                     "batches": size["read_batches"], "batch_size": min(32, many["n_clips"])},
                                    isolate) for m in READ_METHODS]
    res["training"] = []
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            res["training"].append({"device": device, "skipped": NO_CUDA})
            continue
        _say(f"training one epoch on {device} ...")
        r = train_child(store, work / "runs" / device, device, train_args)
        r["under_2_gb"] = r["peak_rss_mb"] < RSS_LIMIT_MB
        res["training"].append(r)
        _say(f"  epoch {r['epoch_s']} s, whole command {r['total_s']} s, peak RSS {r['peak_rss_mb']} MB")
    if not any(t["device"].startswith("cuda") for t in res["training"]):
        res["training"].append({"device": "cuda", "skipped": NO_CUDA})
    if not keep:
        shutil.rmtree(stores, ignore_errors=True)
        shutil.rmtree(work / "runs", ignore_errors=True)
    common.finish(res)
    return common.write_result(out_dir, NAME, res, markdown(res))


def _checkout(ref: str, folder: Path) -> Path:
    """The ``preprocessing`` package of git revision ``ref`` in ``folder/<commit>`` (git archive; reused)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=common.ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    dest = folder / commit[:12]
    if not (dest / "preprocessing" / "store.py").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "preprocessing"], cwd=common.ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _say(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def markdown(res: dict[str, Any]) -> str:
    f, p, st = common.fmt, res["params"], res["store"]
    one, many = res["preprocess"]["cases"]
    base = res["preprocess"].get("baseline")
    rows = [[f"{c['workers']}" + (f" ({c['code']}'s code)" if c.get("code") else ""), c["n_files"], c["n_clips"],
             f(c["audio_s"] / 3600, 2), f(c["seconds"], 1), f(c["files_per_s"], 1), f(c["mb_per_s"], 0),
             f(c["cpu_s"], 0), f(c["peak_rss_mb"], 0), f(c["worker_peak_rss_mb"], 0)]
            for c in ([base] if base else []) + [one, many]]
    text = [common.header_md(res, "Data at scale (GTZAN-sized corpus)").rstrip("\n") + "\n",
            f"Corpus: {p['clips']:,} generated music clips of {p['seconds']:g} s at {p['sample_rate']:,} Hz "
            f"(benchmarks/synth_corpus.py, 16-bit WAV, {res['corpus']['bytes'] / 1e9:.1f} GB). Store: preset "
            f"`{p['preset']}`, {st['clips']:,} clips of {st['shape'][0]} x {st['shape'][1]}, {st['gib']} GiB "
            f"({st['bytes'] / 1e9:.1f} GB)" + ("" if st["at_least_10_gb"] else
                                               " (**under the 10 GB asked**: a smaller run)") + ".", "",
            "Preprocessing (`build_store`, each case its own process; the audio in the OS cache):", "",
            common.md_table(["workers", "files", "clips", "audio (h)", "wall (s)", "files/s", "MB/s of store",
                             "CPU (s)", "peak RSS (MB)", "worker peak RSS (MB)"], rows),
            f"{p['workers']} workers: {res['preprocess']['speedup']}x the files/s of one; the two stores are "
            + ("**identical**" if res["preprocess"]["identical"] else "**DIFFERENT**")
            + " (digests of spectrograms.npy, manifest.json and config.json without its date)." +
            (f" Against the one-process build of {base['code']} (before parallel builds): {base['speedup']}x its "
             f"files/s, and its store is " + ("**identical**" if base["identical"] else "**DIFFERENT**") + "."
             if base else ""), "",
            reads_markdown(res) + "Training one epoch from that store (`python -m vae train --epochs 1`, a child "
            "process):", ""]
    trows = []
    for t in res["training"]:
        if "skipped" in t:
            trows.append([t["device"], t["skipped"], "", "", "", "", "", ""])
            continue
        s = t["sampled_peak_mb"]
        trows.append([t["device"], f"{t['arch']}, batch {t['batch_size']}, {t['n_train']:,} clips, {t['steps']} steps",
                      f(t["epoch_s"], 0), f(t["samples_per_s"], 1), f(t["total_s"], 0), f(t["peak_rss_mb"], 0),
                      f"{f(s.get('VmRSS'), 0)} / {f(s.get('RssFile'), 0)}", "yes" if t["under_2_gb"] else "**no**"])
    text.append(common.md_table(["device", "run", "epoch (s)", "samples/s (steps)", "whole command (s)",
                                 "peak RSS (MB)", "sampled peak VmRSS / RssFile (MB)", "under 2 GB"], trows))
    text.append("Epoch: from the run's start record to its epoch record (setup, training steps, validation, "
                "checkpoint). Whole command: also Python's start, the latent statistics and the temporal prior "
                "fitted at the end. Peak RSS: `ru_maxrss` of the training process (wait4); RssFile is its part "
                "backed by files: torch's libraries (about 300 MB), and pages of the store read through a memory "
                "map would add to it.\n")
    return "\n".join(text)


def reads_markdown(res: dict[str, Any]) -> str:
    """The read-path table: why training reads a big store with explicit reads."""
    if not res.get("reads"):
        return ""
    f = common.fmt
    rows = [[r["method"], f"{r['batches']} x {r['batch_size']}", f(r["mb_read"]), f(r["batch_ms"]["median_ms"], 1),
             f(r["batch_ms"]["p95_ms"], 1), f"{f(r['end_mb'].get('VmRSS'))} / {f(r['end_mb'].get('RssFile'))}",
             f(r["peak_mb"].get("VmRSS"))] for r in res["reads"]]
    return ("Reading random training batches from that store, each method in its own process (the store mostly in the "
            "OS cache, as it was just written):\n\n" +
            common.md_table(["method", "batches x rows", "MB read", "median ms a batch", "p95 ms", "RSS at the end: "
                             "VmRSS / RssFile (MB)", "peak VmRSS (MB)"], rows) +
            "\nThrough the memory map, every page read stays in the process's RSS (RssFile) until the kernel needs "
            "the memory; `madvise(MADV_DONTNEED)` after each batch gives them back; explicit reads (`Store.rows`, "
            "`pread` into a new array) never map them. Training reads a store over `vae.train.PRELOAD_BYTES` "
            "(2 GiB) with explicit reads, one batch ahead in a thread.\n\n")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    for name, v in (("--clips", a.clips), ("--workers", a.workers)):
        if v is not None and v < 1:
            print(f"error: {name} must be at least 1", file=sys.stderr)
            return 2
    out = a.out or (common.DEFAULT_OUT / "tmp" / "quick" if a.quick else common.DEFAULT_OUT)
    res = run(out, a.work, a.quick, clips=a.clips, seconds=a.seconds, workers=a.workers, devices=a.devices,
              keep=a.keep, baseline=a.baseline)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
