"""Defect 3 of issue #12: a 2 MB zip of 1,950 x 1 MB members of zeros extracted to 1.9 GB, and staged
uploads stayed on disk after a failed build. Sizes and counts are now checked against the limits before
anything is written, across all files of one upload, and a failed build leaves no staged files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, tone, write_wav

import app
from preprocessing.errors import UserError
from preprocessing.store import PreprocessError, Store, clip_audio
from studio.datasets import build_named_store
from studio.uploads import DEFAULT_LIMITS, MB, UploadError, UploadLimits, safe_extract_zip, stage_uploads

NOISY = np.random.default_rng(0).integers(0, 256, MB, dtype=np.uint8).tobytes()  # 1 MB that does not compress


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The archive members read (extraction writes each one it reads)."""
    names: list[str] = []
    real = zipfile.ZipFile.open

    def spy(self, name, mode="r", *args, **kwargs):
        if mode == "r":  # not the writes that make the test archives
            names.append(getattr(name, "filename", name))
        return real(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return names


def test_a_small_zip_of_zeros_is_refused_before_anything_is_written(tmp_path, opened):
    """The probe's archive, scaled down: 80 members of 1 MB of zeros each (each just under the per-member
    ratio guard), 80 KB zipped. With the default limits nothing is extracted."""
    z = make_zip(tmp_path / "zeros.zip", {f"z{i:04d}.wav": bytes(MB) for i in range(80)})
    assert z.stat().st_size < MB
    with pytest.raises(UploadError, match=r"zeros\.zip") as e:
        stage_uploads([z], tmp_path / "staged")
    assert "zip bomb" in str(e.value) and "80 MB" in str(e.value)
    assert opened == [] and not (tmp_path / "staged").exists()


def test_the_total_is_bounded_across_all_files_of_an_upload(tmp_path, opened):
    """Two archives and a plain file, each under the limit, together over it: refused before writing."""
    limits = UploadLimits(max_extracted_bytes=3 * MB, max_ratio=1e9)
    a = make_zip(tmp_path / "a.zip", {"a1.wav": NOISY, "a2.wav": NOISY})
    b = make_zip(tmp_path / "b.zip", {"b1.wav": NOISY, "b2.wav": NOISY})
    plain = tmp_path / "plain.wav"
    plain.write_bytes(NOISY * 2)
    for upload in ([a, b], [plain, a], [a, plain]):
        with pytest.raises(UploadError, match=r"more than 3 MB .*limit 3 MB; .*--upload-limit-mb"):
            stage_uploads(upload, tmp_path / "staged", limits)
        assert opened == [] and not (tmp_path / "staged").exists()
    stage_uploads([a], tmp_path / "one", limits)  # one archive alone fits


def test_member_size_and_count_are_checked_before_writing(tmp_path, opened):
    z = make_zip(tmp_path / "m.zip", {"a.wav": b"RIFF", "b.wav": NOISY * 3})
    with pytest.raises(UploadError, match=r"b\.wav is 3 MB uncompressed \(limit 1 MB; .*--upload-file-limit-mb"):
        safe_extract_zip(z, tmp_path / "out", UploadLimits(max_member_bytes=MB, max_ratio=1e9))
    many = make_zip(tmp_path / "many.zip", {f"{i}.wav": b"RIFF" for i in range(3)})
    with pytest.raises(UploadError, match=r"more than 2 audio files .*limit 2 files; .*--upload-max-files"):
        stage_uploads([many], tmp_path / "staged", UploadLimits(max_files=2))
    assert opened == [] and not (tmp_path / "out").exists() and not (tmp_path / "staged").exists()
    big = tmp_path / "big.wav"
    big.write_bytes(NOISY * 2)
    with pytest.raises(UploadError, match=r"big\.wav is 2 MB \(limit 1 MB; "):
        stage_uploads([big], tmp_path / "staged", UploadLimits(max_member_bytes=MB))


def test_the_defaults_are_stated_with_how_to_raise_them():
    assert DEFAULT_LIMITS.max_extracted_bytes == 2048 * MB and DEFAULT_LIMITS.max_files == 20000
    limits = app.upload_limits(app.parse_args(["--upload-limit-mb", "100", "--upload-file-limit-mb", "10",
                                               "--upload-max-files", "7"]))
    assert (limits.max_extracted_bytes, limits.max_member_bytes, limits.max_files) == (100 * MB, 10 * MB, 7)
    assert app.upload_limits(app.parse_args([])) == DEFAULT_LIMITS


# ---------------------------------------------------------------------------- staged files of failed builds


def silent(path: Path) -> Path:
    return write_wav(path, np.zeros(2400, dtype=np.float32))


@pytest.mark.parametrize("failure", [PreprocessError, RuntimeError, KeyboardInterrupt])
def test_a_failed_build_removes_its_staged_files_and_keeps_the_last_good_ones(tmp_path, monkeypatch, failure):
    """Whatever stops a build (the user's all-silent audio, a bug, Ctrl-C), its staged uploads go; the
    files of the earlier build under that name stay, so its store still plays from them."""
    uploads, stores = tmp_path / "uploads", tmp_path / "stores"
    good = write_wav(tmp_path / "in" / "0_alice_0.wav", tone(440))
    build_named_store(stores, "s", TINY, uploads=[good], uploads_dir=uploads)
    assert sorted(p.name for p in (uploads / "s").iterdir()) == ["0_alice_0.wav"]
    new = [silent(tmp_path / "in" / "1_bob_0.wav")]
    if failure is not PreprocessError:
        def broken(*args, **kwargs):
            raise failure("stopped")

        monkeypatch.setattr("studio.datasets.build_store", broken)
    with pytest.raises(failure):
        build_named_store(stores, "s", TINY, uploads=new, uploads_dir=uploads)
    assert sorted(p.name for p in (uploads / "s").iterdir()) == ["0_alice_0.wav"]  # the earlier build's files
    assert sorted(p.name for p in uploads.iterdir()) == ["s"]  # nothing else left behind
    assert clip_audio(Store(stores / "s"), 0)[2]  # the earlier store still plays from its source


def test_a_failed_first_build_leaves_no_upload_folder(tmp_path):
    with pytest.raises(UserError, match="all-silent"):
        build_named_store(tmp_path / "stores", "new", TINY, uploads=[silent(tmp_path / "0_a_0.wav")],
                          uploads_dir=tmp_path / "uploads")
    assert not (tmp_path / "uploads" / "new").exists()
    assert not (tmp_path / "uploads").exists() or list((tmp_path / "uploads").iterdir()) == []


def test_two_uploads_under_one_name_at_once_do_not_mix(tmp_path, monkeypatch):
    """The page runs two builds at a time: a second upload under a name being built is refused, rather
    than replacing the files the first build is reading."""
    import threading

    from preprocessing.store import build_store

    started, release = threading.Event(), threading.Event()

    def slow_build(*args, **kwargs):
        started.set()
        release.wait(30)
        return build_store(*args, **kwargs)

    monkeypatch.setattr("studio.datasets.build_store", slow_build)
    first = write_wav(tmp_path / "in" / "0_alice_0.wav", tone(440))
    second = write_wav(tmp_path / "in2" / "1_bob_0.wav", tone(220))
    kw = {"uploads_dir": tmp_path / "uploads"}
    worker = threading.Thread(target=build_named_store, args=(tmp_path / "stores", "s", TINY), daemon=True,
                              kwargs={"uploads": [first], **kw})
    worker.start()
    assert started.wait(30)
    try:
        with pytest.raises(PreprocessError, match="being built"):
            build_named_store(tmp_path / "stores", "s", TINY, uploads=[second], **kw)
    finally:
        release.set()
        worker.join(30)
    assert sorted(p.name for p in (tmp_path / "uploads" / "s").iterdir()) == ["0_alice_0.wav"]
