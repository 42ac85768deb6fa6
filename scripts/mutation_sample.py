"""Mutation testing on a seeded random sample of the mutants (``make mutation-sample``).

A full ``mutmut run`` over the core (about 3,900 mutants) takes hours on a 2-core machine, because
every surviving mutant runs all the tests that reach its function. A uniform random sample gives an
unbiased estimate of the score with a known margin: this script generates the mutants, draws
``--n`` of them with ``--seed``, runs only those, and prints the report (scripts/mutation_report.py)
with a 95% Wilson interval for the score. Results accumulate in ``mutants/`` like any mutmut run,
so ``make mutation`` afterwards only runs the rest.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))


def all_mutants() -> list[str]:
    """Every mutant name; generates the mutants (and collects test stats) first when needed."""
    names = _listed()
    if not names:
        # `mutmut run` with a pattern that matches nothing generates everything and then stops.
        subprocess.run([MUTMUT, "run", "--max-children", "1", "__generate_only__"], cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        names = _listed()
    return names


def _listed() -> list[str]:
    out = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True).stdout
    return sorted(m.group(1) for m in re.finditer(r"^\s*(\S+): ", out, re.M))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="mutants to draw (default 600)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-children", type=int, default=2)
    a = ap.parse_args(argv)
    names = all_mutants()
    if not names:
        print("mutmut generated no mutants; see `mutmut run` output", file=sys.stderr)
        return 1
    sample = sorted(random.Random(a.seed).sample(names, min(a.n, len(names))))
    print(f"running {len(sample)} of {len(names)} mutants (seed {a.seed})", flush=True)
    subprocess.run([MUTMUT, "run", "--max-children", str(a.max_children), *sample], cwd=ROOT)

    # `python scripts/mutation_sample.py` puts scripts/ first on sys.path, so its sibling imports as is
    from mutation_report import read_equivalents, read_results, report, tally

    results = {k: v for k, v in read_results().items() if k in set(sample)}
    equivalents = read_equivalents()
    killed, checked, not_equiv = tally(results, equivalents)
    text, unexplained = report(results, equivalents)
    print(text)
    (lo, hi), (lo_eq, hi_eq) = wilson(killed, checked), wilson(killed, not_equiv)
    print(f"sample of {len(sample)} (seed {a.seed}) out of {len(names)} mutants: {killed} killed of {checked} "
          f"checked = {100 * killed / max(1, checked):.1f}% (95% interval {100 * lo:.1f}-{100 * hi:.1f}%); "
          f"without equivalents {100 * killed / max(1, not_equiv):.1f}% ({100 * lo_eq:.1f}-{100 * hi_eq:.1f}%)")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
