"""Labels and train/test split from file paths.

- FSDD names ``{digit}_{speaker}_{take}.wav`` give digit, speaker and take; takes 0-4 are the
  test set (the dataset authors' convention).
- Otherwise a file inside a class folder (``<class>/<file>``, as GTZAN's
  ``genres_original/<genre>/...``) is labelled with that folder's name.
- Otherwise the file is unlabelled.
Files without an FSDD take are split deterministically by file: the test set is the
``test_fraction`` of files whose path hashes lowest (at least one when there are two or more),
so every window of one file lands in the same split.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")
FSDD_TEST_TAKES = range(0, 5)


@dataclass(frozen=True)
class ClipLabel:
    label: str | None
    speaker: str | None = None
    take: int | None = None


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as posix text, without following symbolic links (a folder of
    links to audio stored elsewhere is a valid input)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def parse_label(path: Path, root: Path) -> ClipLabel:
    """Label of ``path`` found under the input folder ``root``."""
    m = FSDD_NAME.match(path.stem)
    if m:
        return ClipLabel(label=m.group(1), speaker=m.group(2).lower(), take=int(m.group(3)))
    parent = path.parent.resolve()
    if parent != root.resolve():
        return ClipLabel(label=parent.name)
    return ClipLabel(label=None)


def assign_splits(paths: list[Path], labels: list[ClipLabel], root: Path,
                  test_fraction: float = 0.1) -> list[str]:
    """"train" or "test" for each file (FSDD takes 0-4 are test; others by path hash)."""
    splits = ["train"] * len(paths)
    others = []
    for i, lab in enumerate(labels):
        if lab.take is not None:
            splits[i] = "test" if lab.take in FSDD_TEST_TAKES else "train"
        else:
            others.append(i)
    if len(others) >= 2:
        n_test = max(1, round(test_fraction * len(others)))
        key = {i: zlib.crc32(relative_name(paths[i], root).encode()) for i in others}
        for i in sorted(others, key=lambda i: key[i])[:n_test]:
            splits[i] = "test"
    return splits
