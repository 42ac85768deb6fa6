"""Shared helpers for the benchmarks: machine description, isolated measured cases, writers.

Peak memory: every measured case can run in its own Python process (:func:`run_case`), which
reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident memory of that process, MB;
it includes the ~0.3-0.5 GB of importing torch, reported separately as ``baseline_rss_mb``) and,
on CUDA, ``torch.cuda.max_memory_allocated`` (MB).

    python -m benchmarks.common --case MODULE:FUNCTION --kwargs JSON   # what run_case spawns
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA = ROOT.parent / "shared" / "data"  # holds fsdd/recordings and music/<genre>/
DEFAULT_OUT = ROOT / "benchmarks" / "results"
RESULT_MARK = "BENCH_RESULT "  # prefix of the child's JSON result line on stdout
COMMAND: str | None = None  # the command line of this run, set by run_all (recorded in every result)
THREADS_ENV = "BENCH_TORCH_THREADS"  # torch intra-op threads for every case (unset: torch's default)


# ---------------------------------------------------------------- machine and load


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    """Total RAM in GB (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    return None


def load_avg() -> list[float]:
    """1, 5 and 15 minute load averages (runnable processes; compare with the core count)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch
    import torchaudio

    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if cuda else None,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
    }


def machine_text(m: dict[str, Any]) -> str:
    gpu = f"; GPU {m['cuda_device']} (CUDA {m['cuda']})" if m.get("cuda_device") else "; no CUDA device"
    return (f"{m['cpu']}, {m['cores']} cores, {m.get('memory_gb')} GB RAM, {m['os']}, Python {m['python']}, "
            f"torch {m['torch']} / torchaudio {m['torchaudio']} ({m['torch_threads']} threads){gpu}")


def invocation() -> list[str]:
    """This process's command line after the interpreter: ``-m benchmarks.x ...`` when run as a module."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return [*(["-m", spec.name] if spec else sys.argv[:1]), *sys.argv[1:]]


def begin(name: str, quick: bool, **params: Any) -> dict[str, Any]:
    """The envelope of a benchmark result: what, when, where, and the load at the start."""
    cmd = COMMAND or " ".join([".venv/bin/python", *invocation()])
    return {"benchmark": name, "quick": quick, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": cmd, "machine": machine(), "load_start": load_avg(), "params": params,
            "_t0": time.perf_counter()}


def finish(res: dict[str, Any]) -> dict[str, Any]:
    """Record the load at the end and the benchmark's wall time (s)."""
    res["load_end"] = load_avg()
    res["wall_s"] = round(time.perf_counter() - res.pop("_t0"), 1)
    return res


def load_text(res: dict[str, Any]) -> str:
    cores = res["machine"]["cores"] or 1
    start, end = res.get("load_start") or [float("nan")], res.get("load_end") or [float("nan")]
    busy = " (shared machine: other work was running)" if max(start[0], end[0]) > 0.5 * cores else ""
    return f"load average {start[0]:.2f} at start, {end[0]:.2f} at end on {cores} cores{busy}"


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, 95th percentile and mean of durations given in seconds, in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    return {"median_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
            "mean_ms": round(sum(ms) / len(ms), 2) if ms else float("nan"), "n": len(ms)}


# ---------------------------------------------------------------- isolated cases


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports KB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / (1024**2 if sys.platform == "darwin" else 1024), 1)


def set_threads(n: int | None) -> int:
    """Use ``n`` torch intra-op threads here and in every case process started later; return the count."""
    import torch

    if n:
        os.environ[THREADS_ENV] = str(n)
    elif os.environ.get(THREADS_ENV):
        n = int(os.environ[THREADS_ENV])
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def call_case(target: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` here; add baseline and peak memory to its result dict."""
    module, func = target.split(":")
    fn = getattr(importlib.import_module(module), func)
    import torch

    set_threads(None)  # the parent's choice, passed on in the environment

    baseline = peak_rss_mb()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    out = dict(fn(**kwargs))
    out["baseline_rss_mb"] = baseline
    out["peak_rss_mb"] = peak_rss_mb()
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 1024**2, 1)
    return out


def run_case(target: str, kwargs: dict[str, Any] | None = None, isolate: bool = True,
             timeout_s: float | None = None, first_path: str | None = None) -> dict[str, Any]:
    """Run one measured case, by default in a fresh Python process so its peak memory is its own.

    ``target`` is ``"benchmarks.module:function"``; the function takes JSON-able keyword
    arguments and returns a JSON-able dict. With ``isolate=False`` it runs in this process (the
    smoke tests do this; then ``peak_rss_mb`` is this process's peak, not the case's).
    """
    kwargs = kwargs or {}
    if not isolate:
        return call_case(target, kwargs)
    # ``first_path``: a folder searched before the repository (another version's packages, to compare with).
    # It is the working folder too: `python -m` puts that first on the path, before PYTHONPATH.
    paths = [first_path, str(ROOT), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    cmd = [sys.executable, "-m", "benchmarks.common", "--case", target, "--kwargs", json.dumps(kwargs)]
    p = subprocess.run(cmd, cwd=first_path or ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark case {target} failed (exit {p.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_MARK):])


@contextlib.contextmanager
def without_latent_stats() -> Iterator[Any]:
    """vae.train without the latent statistics it computes when it stops (yields the module).

    They are for the Explore tab, not training, and for the study's model on CPU they take minutes
    at every stop. The module is restored afterwards, so in-process (smoke-test) runs leave it as it was.
    """
    vt = importlib.import_module("vae.train")  # the module: the vae package exports a function named train
    saved = getattr(vt, "_save_stats", None)
    if saved is None:  # the training loop changed: nothing to switch off
        yield vt
        return
    vt._save_stats = lambda *a, **k: None
    try:
        yield vt
    finally:
        vt._save_stats = saved


# ---------------------------------------------------------------- files and writers


def tmp_dir(out_dir: str | Path, *parts: str) -> Path:
    """A scratch folder under ``<out>/tmp/bench`` (gitignored; run_all deletes it at the end)."""
    p = Path(out_dir, "tmp", "bench", *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def clean_tmp(out_dir: str | Path) -> None:
    """Delete the benchmarks' scratch folder (not the rest of ``<out>/tmp``, which others may use)."""
    shutil.rmtree(Path(out_dir) / "tmp" / "bench", ignore_errors=True)
    with contextlib.suppress(OSError):  # only if empty
        (Path(out_dir) / "tmp").rmdir()


def fsdd_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "fsdd" / "recordings"


def music_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "music"


def fsdd_files(data_dir: str | Path, split: str = "all") -> list[Path]:
    """FSDD recordings ({digit}_{speaker}_{take}.wav) sorted; ``split`` "test" = takes 0-4."""
    files = sorted(fsdd_dir(data_dir).glob("*.wav"))
    if split == "all":
        return files
    test = [int(f.stem.split("_")[2]) < 5 for f in files]
    return [f for f, t in zip(files, test) if t == (split == "test")]


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """``n`` items spread evenly over ``items`` (all of them if n >= len)."""
    if n >= len(items):
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


def link_files(files: Iterable[Path], folder: Path) -> Path:
    """A folder of symlinks to ``files`` (nothing is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = folder / f.name
        if not link.exists():
            link.symlink_to(Path(f).resolve())
    return folder


def fmt(x: Any, nd: int = 1) -> str:
    """A number for a table cell ('n/a' for None/NaN); strings pass through."""
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return "n/a"
    return f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def header_md(res: dict[str, Any], title: str) -> str:
    mode = " (quick run: small inputs, not representative)" if res.get("quick") else ""
    return (f"## {title}{mode}\n\n{res['date']}, {res['wall_s']} s; {machine_text(res['machine'])}; "
            f"{load_text(res)}.\n\n")


def write_result(out_dir: str | Path, name: str, res: dict[str, Any], markdown: str) -> dict[str, Any]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; return ``res``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=2, allow_nan=True) + "\n")
    (out / f"{name}.md").write_text(markdown)
    return res


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> str:
    """Lay out, write (PNG, 110 dpi) and close a figure; returns the file name for the markdown."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path.name


def bench_args(description: str) -> argparse.Namespace:
    """The command line shared by every ``benchmarks/bench_*.py`` run alone."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a small but real run (seconds to a few minutes)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (default benchmarks/results)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder with fsdd/recordings and music/")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    a = p.parse_args()
    set_threads(a.threads)
    return a


def _child_main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True)
    p.add_argument("--kwargs", default="{}")
    a = p.parse_args()
    out = call_case(a.case, json.loads(a.kwargs))
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    _child_main()
