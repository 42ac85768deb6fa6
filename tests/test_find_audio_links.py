"""Issue #12, smaller defects: ``find_audio`` left out unreadable folders and looping or dangling links
without a word. Each must be listed among the skipped files with its path and a reason, like every other
file that is not used; the readable audio beside them is still found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import tone, write_wav

from preprocessing.store import find_audio


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "in"
    write_wav(root / "good.wav", tone(440))
    write_wav(root / "locked" / "hidden_from_us.wav", tone(330))
    (root / "dangling.wav").symlink_to(root / "gone.wav")
    (root / "loop.wav").symlink_to(root / "loop.wav")
    (root / "sub").mkdir()
    (root / "sub" / "again").symlink_to(root, target_is_directory=True)  # a folder link back up: a loop
    return root


def skipped_reasons(skipped) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in skipped}


def test_dangling_and_looping_links_are_reported(folder):
    _, audio, skipped = find_audio(folder)
    assert [p.name for p in audio] == ["good.wav", "hidden_from_us.wav"]
    reasons = skipped_reasons(skipped)
    assert "dangling.wav" in reasons and "loop.wav" in reasons, reasons
    assert "link" in reasons["dangling.wav"].lower() and "link" in reasons["loop.wav"].lower()
    assert "again" in reasons, reasons  # the folder link that leads back to an ancestor


def test_unreadable_folders_are_reported(folder, monkeypatch):
    """A folder that cannot be listed (as if chmod 000; a test running as root could still read one)."""
    locked = folder / "locked"
    real = os.scandir

    def scandir(path=".", *args, **kwargs):
        if Path(os.fsdecode(path)).resolve() == locked.resolve():
            raise PermissionError(13, "Permission denied", str(locked))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    _, audio, skipped = find_audio(folder)
    assert [p.name for p in audio] == ["good.wav"]
    reasons = skipped_reasons(skipped)
    assert "locked" in reasons, reasons
    assert any(word in reasons["locked"].lower() for word in ("read", "permission")), reasons["locked"]
