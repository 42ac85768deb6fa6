"""Run every benchmark side by side on this machine and write the results.

    python -m benchmarks.run_all                      # the full run (~25 min on 2 CPU cores)
    python -m benchmarks.run_all --quick              # small but real (a few minutes)
    python -m benchmarks.run_all --only phase latency # some of them

Run them from the repository root (``benchmarks`` is not part of the installed package).

Writes ``<out>/<name>.json`` and ``.md`` per benchmark, PNG plots, and ``<out>/summary.md``. When
``--out`` is the default ``benchmarks/results``, BENCHMARKS.md at the repository root is rebuilt
from the results there (so it always matches them). ``--quick`` writes to
``benchmarks/results/tmp/quick`` unless ``--out`` is given, so a quick check never replaces the
published figures. Scratch stores and checkpoints go to ``<out>/tmp/bench`` and are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_latency,
    bench_phase,
    bench_preprocess,
    bench_time_to_quality,
    bench_training,
    common,
)

BENCHMARKS = {  # name -> module, in running order
    "preprocess": bench_preprocess, "training": bench_training, "time_to_quality": bench_time_to_quality,
    "latency": bench_latency, "phase": bench_phase,
}
REPORT = common.ROOT / "BENCHMARKS.md"
# Long held-out runs (bench_music_holdout, bench_unseen_speaker), not run by run_all: each run's report,
# copied here as <benchmark>_<arm>.md beside its JSON, is appended to BENCHMARKS.md as it is.
HELD_OUT = common.ROOT / "benchmarks" / "results" / "held_out"
LOAD = common.ROOT / "benchmarks" / "results" / "load.md"  # bench_load's last report, appended the same way
SCALE = common.ROOT / "benchmarks" / "results" / "scale.md"  # bench_scale's last full run, appended the same way
CONDITIONAL = common.ROOT / "benchmarks" / "results" / "conditional.md"  # bench_conditional's last report, the same


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small but real inputs (a few minutes in all)")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                   help=f"run only these: {', '.join(BENCHMARKS)}")
    p.add_argument("--out", help="results folder (default benchmarks/results; with --quick "
                                 "benchmarks/results/tmp/quick)")
    p.add_argument("--data", default=str(common.DEFAULT_DATA),
                   help="shared data folder with fsdd/recordings and music/")
    p.add_argument("--threads", type=int, help="torch intra-op threads for every case (default: torch's, one per "
                                               "core); 1 gives steadier figures on a machine shared with other work")
    p.add_argument("--keep-tmp", action="store_true", help="keep the scratch stores and checkpoints")
    p.add_argument("--report-only", action="store_true", help="run nothing: rebuild summary.md (and BENCHMARKS.md) "
                                                              "from the results already in the results folder")
    return p.parse_args(argv)


def command(argv: list[str]) -> str:
    return " ".join([".venv/bin/python -m benchmarks.run_all", *argv]).strip()


def load_results(out: Path) -> dict[str, dict[str, Any]]:
    """The latest result of each benchmark found in ``out``."""
    found = {}
    for name in BENCHMARKS:
        p = out / f"{name}.json"
        if p.is_file():
            found[name] = json.loads(p.read_text())
    return found


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "n/a"


def headlines(results: dict[str, dict[str, Any]]) -> list[str]:
    """A few sentences of key figures, computed from the results (skipping what is missing)."""
    out = []
    if "training" in results:
        by = {(c["preset"], c["arch"]): c["cpu"]["samples_per_s"] for c in results["training"]["cases"]}
        d, s = by.get(("digits", "default")), by.get(("study-digits", "study"))
        same = by.get(("digits", "study"))
        out.append(f"Training (CPU): the default model on the digits preset trains at {common.fmt(d, 1)} samples/s, "
                   f"the study's model on its own preset at {common.fmt(s, 1)} samples/s ({_ratio(d, s)}); on the "
                   f"same 128x96 input the default is {_ratio(d, same)} the study's speed.")
    if "time_to_quality" in results:
        r = results["time_to_quality"]["summary"]
        t = r["targets_db"]["study's best within budget"]
        tt = r["time_to_target_s"]["study's best within budget"]
        eq = r["equal_time"]
        out.append(f"Time to quality (FSDD test takes): the study's best LSD within the budget is "
                   f"{common.fmt(t, 2)} dB, "
                   f"reached after {common.fmt(tt.get('study'), 0)} s of training; the default reaches it after "
                   f"{common.fmt(tt.get('default'), 0)} s. In equal time the default reaches "
                   f"{common.fmt(eq['default']['lsd_db'], 2)} dB (STOI {common.fmt(eq['default']['stoi'], 3)}), the "
                   f"study {common.fmt(eq['study']['lsd_db'], 2)} dB (STOI {common.fmt(eq['study']['stoi'], 3)}).")
    if "phase" in results:
        rows = results["phase"]["presets"].get("digits", [])
        zero = next((r for r in rows if r["phase"] == "zero"), None)
        gl = next((r for r in rows if r["n_iter"] == 64), None)
        if zero and gl:
            out.append(f"Phase (digits preset, original spectrograms): zero phase gives spectral convergence "
                       f"{zero['spectral_convergence']:.3f} and STOI {zero['stoi_joined']:.3f}; Griffin-Lim 64 gives "
                       f"{gl['spectral_convergence']:.3f} and {gl['stoi_joined']:.3f} in "
                       f"{gl['time_ms']['median_ms']:.0f} ms per clip.")
    if "latency" in results:
        parts = []
        for name, m in results["latency"]["models"].items():
            r = m["runs"][0]
            parts.append(f"{name} slider update {r['slider_fast']['total']['median_ms']:.0f} ms median "
                         f"({r['slider_fast']['total']['p95_ms']:.0f} ms p95), reconstruction "
                         f"{r['reconstruction']['total']['median_ms']:.0f} ms")
        out.append(f"Interactive latency ({results['latency']['models']['digits']['runs'][0]['threads']} torch "
                   "thread(s)): " + "; ".join(parts) + ".")
    if "preprocess" in results:
        c = next((c for c in results["preprocess"]["cases"] if c["preset"] == "digits"), None)
        if c:
            out.append(f"Preprocessing: {c['cold']['n_files']} FSDD files in {c['cold']['seconds']:.1f} s cold "
                       f"({c['cold']['files_per_s']:.0f} files/s), {c['reused']['seconds'] * 1000:.0f} ms when "
                       "the store is reused.")
    return out


def _relink(md: str, prefix: str) -> str:
    """Point bare image links (``](x.png)``) at ``prefix/x.png``."""
    return re.sub(r"\]\(([^)/]+\.png)\)", lambda m: f"]({prefix}/{m.group(1)})", md)


def report(results: dict[str, dict[str, Any]], link_prefix: str = "", where: str = "benchmarks/results") -> str:
    """BENCHMARKS.md / summary.md: machine, date, command, headlines, then each benchmark's section."""
    if not results:
        return "# Benchmarks\n\nNo results yet: run `python -m benchmarks.run_all`.\n"
    first = next(iter(results.values()))
    dates = sorted(r["date"] for r in results.values())
    loads = [x for r in results.values() for x in (r.get("load_start") or [])[:1] + (r.get("load_end") or [])[:1]]
    cores = first["machine"]["cores"] or 1
    threads = {r["machine"]["torch_threads"] for r in results.values()}
    lines = ["# Benchmarks", "",
             f"Generated by `python -m benchmarks.run_all` from the results in `{where}/` (do not edit by hand).",
             "Every figure below was measured side by side in one run on one machine.", "",
             f"- Machine: {common.machine_text(first['machine'])}",
             f"- Date: {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else ""),
             f"- Command: `{first.get('command', command([]))}`",
             f"- torch intra-op threads: {', '.join(map(str, sorted(threads)))}" +
             (" (`--threads 1`: on a machine busy with other work, two threads per process contend for the cores "
              "and made small-tensor work several times slower and erratic; the latency table also shows one "
              "thread per core)" if threads == {1} and cores > 1 else "")]
    if loads:
        shared = max(loads) > 0.5 * cores
        lines.append(f"- Machine load (1-minute load average at the start and end of each benchmark): "
                     f"{min(loads):.1f} to {max(loads):.1f} on {cores} cores" +
                     (". **Measured on a shared, loaded machine** (other work, such as training and tests, ran at the "
                      "same time): absolute times are pessimistic and noisy; comparisons within one table were "
                      "measured under the same conditions." if shared else "."))
    if any(r.get("quick") for r in results.values()):
        lines.append("- **Quick run**: small inputs, for checking the benchmarks work; not representative.")
    lines += ["", "## Headline figures", ""] + [f"- {h}" for h in headlines(results)] + [""]
    lines.append(f"Per-benchmark JSON (every number, per case) is in `{where}/<name>.json`, plots beside it.")
    lines.append("**GPU:** no figure here was measured on a GPU yet (issue #13): the training step on an H200 is "
                 "in the issue; the code path (bf16 with channels-last, the split kept on the GPU, `--batch-size "
                 "auto`, torchrun with NCCL) is tested on the CPU. `benchmarks/gpu_session.sh` is the prepared run "
                 "for a session that is lent a GPU.")
    arch = common.ROOT / "benchmarks" / "results" / "arch_comparison.md"
    if link_prefix and arch.is_file():
        lines.append("The lead's longer architecture comparison (equal training time, full evaluation) is in "
                     "[benchmarks/results/arch_comparison.md](benchmarks/results/arch_comparison.md).")
    lines.append("")
    for name, res in results.items():
        md = BENCHMARKS[name].markdown(res)
        lines.append(_relink(md, link_prefix) if link_prefix else md)
    return ("\n".join(lines).rstrip() + "\n" + held_out_sections() + load_section() + scale_section()
            + conditional_section())


def appended_section(path: Path, module: str) -> str:
    """The last report of a benchmark run_all does not run (``python -m benchmarks.<module>``), as a section
    of the report; "" when it has none."""
    if not path.is_file():
        return ""
    head, _, body = path.read_text().rstrip().partition("\n")
    return "\n".join(["", f"# {head.lstrip('# ')} (`python -m benchmarks.{module}`, not part of run_all)", body, ""])


def load_section(path: Path = LOAD) -> str:
    """The last report of bench_load (clients on the app while a job trains), or ""."""
    return appended_section(path, "bench_load")


def scale_section(path: Path = SCALE) -> str:
    """The last full run of bench_scale (a GTZAN-sized corpus: preprocessing in parallel, an epoch from a 10 GB
    store; about an hour), or ""."""
    return appended_section(path, "bench_scale")


def conditional_section(path: Path = CONDITIONAL) -> str:
    """The last report of bench_conditional (samples asked for a digit, recognised by a classifier), or ""."""
    return appended_section(path, "bench_conditional")


def held_out_sections(folder: Path = HELD_OUT) -> str:
    """The long held-out runs' reports (music leave-one-recording-out, unseen speakers), one section each,
    with the command it ran (from the JSON beside the report); "" when there are none."""
    reports = sorted(folder.glob("*.md")) if folder.is_dir() else []
    if not reports:
        return ""
    where = folder.relative_to(common.ROOT) if folder.is_relative_to(common.ROOT) else folder
    parts = ["", "# Held-out quality (long runs, not part of run_all)", "",
             f"Each section is one run of its benchmark, copied with its JSON from its results folder into "
             f"`{where}/`; the line under each title names the machine and its load.", ""]
    for md in reports:
        text = md.read_text().rstrip()
        result = md.with_suffix(".json")
        cmd = json.loads(result.read_text()).get("command") if result.is_file() else None
        head, _, body = text.partition("\n")
        head = f"{head}: {md.stem.rsplit('_', 1)[-1]}"  # <benchmark>_<arm>.md: the arm, e.g. the architecture
        parts += [head, *(["", f"Command: `{cmd}`"] if cmd else []), body, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    out = Path(a.out) if a.out else (common.DEFAULT_OUT / "tmp" / "quick" if a.quick else common.DEFAULT_OUT)
    data = Path(a.data)
    if not (common.fsdd_dir(data).is_dir() and common.music_dir(data).is_dir()):
        print(f"error: expected {common.fsdd_dir(data)} and {common.music_dir(data)}; pass --data", file=sys.stderr)
        return 2
    common.set_threads(a.threads)
    common.COMMAND = command(argv)
    names = [] if a.report_only else a.only or list(BENCHMARKS)
    failed = []
    t0 = time.perf_counter()
    try:
        for name in names:
            print(f"== {name} ==", file=sys.stderr, flush=True)
            try:
                BENCHMARKS[name].run(out, data, a.quick)
            except Exception:  # one broken benchmark should not lose the others' results
                traceback.print_exc()
                failed.append(name)
    finally:
        if names and not a.keep_tmp:
            common.clean_tmp(out)
    results = load_results(out)
    if a.report_only:  # the per-benchmark pages too, in case their layout changed since the run
        for name, res in results.items():
            (out / f"{name}.md").write_text(BENCHMARKS[name].markdown(res))
    try:
        where = out.resolve().relative_to(common.ROOT).as_posix()
    except ValueError:
        where = str(out)
    (out / "summary.md").write_text(report(results, where=where))
    if out.resolve() == common.DEFAULT_OUT.resolve():
        REPORT.write_text(report(results, link_prefix="benchmarks/results"))
        print(f"wrote {REPORT}", file=sys.stderr)
    print(f"done in {time.perf_counter() - t0:.0f} s; results in {out}" +
          (f"; FAILED: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
