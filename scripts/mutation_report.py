"""Summarise a `mutmut run` (``make mutation``): the score per module, and every survivor with its reason.

Reads the results of the last run from ``mutants/`` (through ``mutmut results --all true``) and the
reviewed equivalent mutants from ``tests/mutation_equivalents.txt`` (one per line: the mutant's name,
then why it cannot change behaviour). Prints a Markdown report; ``--write`` also puts it into
TESTING.md between its ``mutation-report`` markers. Exits 1 when a survivor has no reason given.

Score = killed / (mutants checked). "Score without equivalents" leaves the reviewed equivalent
mutants out of the denominator, since no test can tell them apart from the original. Survivors whose
reason starts with "device-only:" are not equivalent (they only show on an accelerator, which a CPU
run cannot see): they are explained but stay in the denominator.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.txt"
TESTING = ROOT / "TESTING.md"
BEGIN, END = "<!-- mutation-report:begin -->", "<!-- mutation-report:end -->"
KILLED = {"killed", "timeout", "caught by type check", "segfault"}  # the tests noticed the change
UNCHECKED = {"not checked", "skipped", "check was interrupted by user"}


def read_results() -> dict[str, str]:
    """mutant name -> status, from the last `mutmut run`."""
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return dict(m.groups() for m in re.finditer(r"^\s*(\S+): (.+)$", out, re.M))


DEVICE_ONLY = "device-only:"


def read_equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    """mutant name -> why it is equivalent (lines `name  reason`; '#' starts a comment line)."""
    if not path.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}


def module_of(name: str) -> str:
    """'vae.model.x_vae_loss__mutmut_3' -> 'vae/model.py'."""
    parts = name.split(".")
    return "/".join(parts[:2]) + ".py"


def equivalent_names(equivalents: dict[str, str]) -> set[str]:
    """The reviewed mutants that are truly equivalent (not the device-only ones)."""
    return {n for n, why in equivalents.items() if not why.startswith(DEVICE_ONLY)}


def tally(results: dict[str, str], equivalents: dict[str, str]) -> tuple[int, int, int]:
    """(killed, checked, checked less the equivalent survivors) over all of ``results``."""
    equivalent = equivalent_names(equivalents)
    checked = [k for k, v in results.items() if v not in UNCHECKED]
    killed = sum(results[k] in KILLED for k in checked)
    return killed, len(checked), sum(1 for k in checked if results[k] in KILLED or k not in equivalent)


def report(results: dict[str, str], equivalents: dict[str, str]) -> tuple[str, list[str]]:
    """(Markdown report, survivors with no reason)."""
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in results.items():
        by_module[module_of(name)][status] += 1
    survivors = sorted(n for n, s in results.items() if s not in KILLED | UNCHECKED)
    unexplained = [n for n in survivors if not equivalents.get(n)]
    equivalent = equivalent_names(equivalents)

    def score(c: Counter, n_equiv: int = 0) -> str:
        checked = sum(v for k, v in c.items() if k not in UNCHECKED) - n_equiv
        killed = sum(v for k, v in c.items() if k in KILLED)
        return f"{100 * killed / checked:.1f}%" if checked else "n/a"

    lines = ["| module | mutants checked | killed | survived | no tests | score | without equivalents |",
             "|---|---|---|---|---|---|---|"]
    total: Counter = Counter()
    for module in sorted(by_module):
        c = by_module[module]
        total.update(c)
        n_eq = sum(1 for n in survivors if module_of(n) == module and n in equivalent)
        checked = sum(v for k, v in c.items() if k not in UNCHECKED)
        lines.append(f"| `{module}` | {checked} | {sum(c[k] for k in KILLED)} | {c['survived']} | "
                     f"{c['no tests']} | {score(c)} | {score(c, n_eq)} |")
    n_eq_all = sum(1 for n in survivors if n in equivalent)
    checked_all = sum(v for k, v in total.items() if k not in UNCHECKED)
    lines.append(f"| **all** | {checked_all} | {sum(total[k] for k in KILLED)} | {total['survived']} | "
                 f"{total['no tests']} | **{score(total)}** | **{score(total, n_eq_all)}** |")
    lines += ["", f"Survivors ({len(survivors)}; {n_eq_all} reviewed as equivalent, "
                  f"{len(unexplained)} not explained):", ""]
    for n in survivors:
        lines.append(f"- `{n}` ({results[n]}): {equivalents.get(n) or '**not explained: add a test or a reason**'}")
    return "\n".join(lines) + "\n", unexplained


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="also update the report section of TESTING.md")
    a = ap.parse_args(argv)
    results = read_results()
    if not results:
        print("no mutation results: run `make mutation` (or `mutmut run`) first", file=sys.stderr)
        return 1
    text, unexplained = report(results, read_equivalents())
    print(text)
    if a.write:
        doc = TESTING.read_text()
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        TESTING.write_text(doc[:start] + "\n" + text + doc[end:])
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
