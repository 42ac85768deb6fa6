"""Labels and the train/test split from file paths (preprocessing.labels)."""

import random
import zlib
from pathlib import Path

import pytest

from preprocessing.labels import ClipLabel, assign_splits, parse_label


@pytest.mark.parametrize(("rel", "expected"), [
    ("7_jackson_32.wav", ClipLabel("7", "jackson", 32)),
    ("sub/0_George_0.wav", ClipLabel("0", "george", 0)),  # FSDD names win over folders
    ("genres_original/jazz/jazz.00001.wav", ClipLabel("jazz")),
    ("jazz/solo_trumpet.ogg", ClipLabel("jazz")),
    ("loose_file.wav", ClipLabel(None)),
    ("12_jackson_3.wav", ClipLabel(None)),  # two-digit "digit": not an FSDD name
    ("7_jackson.wav", ClipLabel(None)),
])
def test_parse_label(tmp_path, rel, expected):
    assert parse_label(tmp_path / rel, tmp_path) == expected


def test_fsdd_takes_0_to_4_are_test(tmp_path):
    paths = [tmp_path / f"3_lucas_{t}.wav" for t in range(10)]
    splits = assign_splits(paths, [parse_label(p, tmp_path) for p in paths], tmp_path)
    assert splits == ["test"] * 5 + ["train"] * 5


def _genre_files(root: Path) -> list[Path]:
    return [root / g / f"{g}.{i:05d}.wav" for g in ("jazz", "rock") for i in range(20)]


def test_other_files_split_by_file_deterministically(tmp_path):
    paths = _genre_files(tmp_path)
    labels = [parse_label(p, tmp_path) for p in paths]
    first = assign_splits(paths, labels, tmp_path, test_fraction=0.25)
    assert first.count("test") == 10
    assert assign_splits(paths, labels, tmp_path, test_fraction=0.25) == first  # same result twice
    # the split is a property of the file, not of the order of the list
    order = list(range(len(paths)))
    random.Random(0).shuffle(order)
    shuffled = assign_splits([paths[i] for i in order], [labels[i] for i in order], tmp_path, 0.25)
    assert {paths[i]: s for i, s in zip(order, shuffled)} == dict(zip(paths, first))


def test_split_holds_at_least_one_test_file_but_not_for_one(tmp_path):
    two = [tmp_path / "a.wav", tmp_path / "b.wav"]
    assert sorted(assign_splits(two, [ClipLabel(None)] * 2, tmp_path, 0.1)) == ["test", "train"]
    assert assign_splits(two[:1], [ClipLabel(None)], tmp_path, 0.1) == ["train"]


def test_mixed_fsdd_and_other_files(tmp_path):
    paths = [tmp_path / "1_bob_2.wav", tmp_path / "1_bob_9.wav", *_genre_files(tmp_path)[:10]]
    splits = assign_splits(paths, [parse_label(p, tmp_path) for p in paths], tmp_path, 0.2)
    assert splits[:2] == ["test", "train"]
    assert splits[2:].count("test") == 2


def test_relative_paths_with_absolute_root(tmp_path, monkeypatch):
    """A list of relative file paths (root resolved from them) splits like the same absolute paths."""
    monkeypatch.chdir(tmp_path)
    rel = [Path("music") / f"x{i}.wav" for i in range(6)]
    root = (tmp_path / "music").resolve()
    labels = [ClipLabel(None)] * 6
    assert assign_splits(rel, labels, root, 0.5) == assign_splits([tmp_path / p for p in rel], labels, root, 0.5)


def test_test_files_are_those_whose_relative_path_hashes_lowest(tmp_path):
    """By default a tenth of the files (2 of 20) are test: the two with the lowest CRC-32 of their path
    relative to the input folder, so the split does not depend on where the folder lives."""
    paths = _genre_files(tmp_path)[10:30]
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    lowest = sorted(rel, key=lambda r: zlib.crc32(r.encode()))[:2]
    splits = assign_splits(paths, [ClipLabel(r.split("/")[0]) for r in rel], tmp_path)
    assert [r for r, s in zip(rel, splits) if s == "test"] == sorted(lowest, key=rel.index)
