"""Bounded uploads and safe zip extraction (studio.uploads)."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest
from conftest import tone, write_wav

from studio.uploads import UploadError, UploadLimits, safe_extract_zip, stage_uploads


@pytest.fixture
def wav(tmp_path) -> Path:
    return write_wav(tmp_path / "src" / "0_alice_0.wav", tone(440))


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_extracts_audio_members_keeping_folders(tmp_path, wav):
    z = make_zip(tmp_path / "a.zip", {"jazz/a.wav": wav.read_bytes(), "rock/b.wav": wav.read_bytes(),
                                      "readme.txt": b"hi", "__MACOSX/._a.wav": b"x", "dir/.hidden.wav": b"x"})
    files, refused = safe_extract_zip(z, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == ["jazz/a.wav", "rock/b.wav"]
    assert refused == [("readme.txt", "not an audio file (.txt)")]


@pytest.mark.parametrize("name", ["../evil.wav", "a/../../evil.wav", "/abs/evil.wav", "C:/win/evil.wav",
                                  "..\\evil.wav"])
def test_zip_slip_members_are_refused(tmp_path, name):
    z = make_zip(tmp_path / "slip.zip", {name: b"RIFF", "ok.wav": b"RIFF"})
    out = tmp_path / "deep" / "out"
    files, refused = safe_extract_zip(z, out)
    assert [p.name for p in files] == ["ok.wav"]
    assert refused and "unsafe path" in refused[0][1]
    assert not (tmp_path / "deep" / "evil.wav").exists() and not (tmp_path / "evil.wav").exists()
    assert all(out.resolve() in p.resolve().parents for p in out.rglob("*"))


def test_symlink_members_are_refused(tmp_path):
    z = make_zip(tmp_path / "link.zip", {"ok.wav": b"RIFF"}, links={"link.wav": "/etc/passwd"})
    files, refused = safe_extract_zip(z, tmp_path / "out")
    assert [p.name for p in files] == ["ok.wav"]
    assert refused == [("link.wav", "symbolic link; not extracted")]
    assert not (tmp_path / "out" / "link.wav").exists()


def test_zip_bomb_is_refused_by_ratio_and_cleaned_up(tmp_path):
    z = make_zip(tmp_path / "bomb.zip", {"bomb.wav": b"\0" * (8 << 20)})  # 8 MB of zeros -> a few KB
    with pytest.raises(UploadError, match="zip bomb"):
        safe_extract_zip(z, tmp_path / "out", UploadLimits(max_ratio=50, min_ratio_bytes=1 << 20))
    assert not (tmp_path / "out").exists()


def test_total_extracted_size_is_bounded(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MB, compresses poorly enough to pass the ratio check
    z = make_zip(tmp_path / "big.zip", {f"{i}.wav": data for i in range(3)})
    with pytest.raises(UploadError, match="more than 2 MB"):
        safe_extract_zip(z, tmp_path / "out", UploadLimits(max_extracted_bytes=2 << 20, max_ratio=1e9))


def test_member_size_limit(tmp_path):
    z = make_zip(tmp_path / "m.zip", {"a.wav": b"x" * (3 << 20)})
    with pytest.raises(UploadError, match="uncompressed"):
        safe_extract_zip(z, tmp_path / "out", UploadLimits(max_member_bytes=1 << 20, max_ratio=1e9))


def test_not_a_zip_is_a_readable_error(tmp_path):
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UploadError, match="not a readable zip"):
        safe_extract_zip(bad, tmp_path / "out")


def test_stage_uploads_mixes_files_and_zips(tmp_path, wav):
    z = make_zip(tmp_path / "more.zip", {"x/1_bob_5.wav": wav.read_bytes()})
    txt = tmp_path / "notes.txt"
    txt.write_text("hi")
    dest, refused = stage_uploads([wav, z, txt], tmp_path / "staged")
    assert (dest / "0_alice_0.wav").is_file()
    # an archive holding one folder is that folder (not more/x/...)
    assert (dest / "x" / "1_bob_5.wav").is_file() and not (dest / "more").exists()
    assert refused == [("notes.txt", "not an audio file or zip (.txt)")]


def test_zip_of_a_folder_is_not_nested_twice(tmp_path, wav):
    """few.zip holding few/... is listed as few/..., not few/few/...; an archive with several top
    entries keeps its own folder."""
    few = make_zip(tmp_path / "few.zip", {"few/0_alice_0.wav": wav.read_bytes(), "few/a/1_bob_5.wav": wav.read_bytes()})
    two = make_zip(tmp_path / "two.zip", {"a/0_alice_0.wav": wav.read_bytes(), "b/1_bob_5.wav": wav.read_bytes()})
    dest, _ = stage_uploads([few, two], tmp_path / "staged")
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.wav"))
    assert files == ["few/0_alice_0.wav", "few/a/1_bob_5.wav", "two/a/0_alice_0.wav", "two/b/1_bob_5.wav"]


def test_stage_uploads_renames_duplicates(tmp_path, wav):
    other = write_wav(tmp_path / "other" / "0_alice_0.wav", tone(220))
    dest, _ = stage_uploads([wav, other], tmp_path / "staged")
    assert sorted(p.name for p in dest.iterdir()) == ["0_alice_0-2.wav", "0_alice_0.wav"]


def test_stage_uploads_errors(tmp_path, wav):
    with pytest.raises(UploadError, match="no files"):
        stage_uploads([], tmp_path / "a")
    txt = tmp_path / "n.txt"
    txt.write_text("x")
    with pytest.raises(UploadError, match="no audio files"):
        stage_uploads([txt], tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(UploadError, match="limit"):
        stage_uploads([wav], tmp_path / "c", UploadLimits(max_upload_bytes=10))
    with pytest.raises(UploadError, match="more than 1 audio files"):
        stage_uploads([wav, wav], tmp_path / "d", UploadLimits(max_files=1))
