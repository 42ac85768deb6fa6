"""Bounded handling of audio that people upload: plain files and zip archives of them.

Everything that arrives from a browser is checked before it touches the disk outside a staging
folder: for zip archives, every member's path (no absolute paths, no ``..``, no links: "zip slip").
Sizes and counts are checked twice. First, before anything is written, from the file sizes and the
archives' directories: each file or member, the number of audio files and the total on disk across
the whole upload, and how much an archive or member claims to grow ("zip bombs"). Then, while
extracting, the real decompressed bytes are counted against the same limits (an archive's directory
may lie).
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from preprocessing.audio import is_audio_path
from preprocessing.download import safe_member_path
from preprocessing.errors import InputError

MB = 1 << 20
RAISE = "whoever runs the app can raise it with"  # the limits are the app's options (app.py)


class UploadError(InputError):
    """An upload was refused; the message says which file and why."""


@dataclass(frozen=True)
class UploadLimits:
    """Upper bounds on one batch of uploads (all files of one request together)."""

    max_upload_bytes: int = 500 * MB  # everything uploaded at once, as uploaded (zips still compressed)
    max_files: int = 20000  # audio files after extracting archives (--upload-max-files)
    max_extracted_bytes: int = 2048 * MB  # disk space of the staged audio: files and members (--upload-limit-mb)
    max_member_bytes: int = 512 * MB  # one file or decompressed archive member (--upload-file-limit-mb)
    max_ratio: float = 200.0  # decompressed / compressed size of a member or an archive (zip bomb guard)
    min_ratio_bytes: int = 1 * MB  # members smaller than this are never refused for their ratio
    min_archive_ratio_bytes: int = 64 * MB  # nor archives that decompress to less than this in all


DEFAULT_LIMITS = UploadLimits()


def _size(n: int) -> str:
    return f"{n / MB:.0f} MB" if n >= MB else f"{n / 1024:.0f} kB" if n >= 1024 else f"{n} bytes"


def _total_limit(limits: UploadLimits) -> str:
    return f"limit {_size(limits.max_extracted_bytes)}; {RAISE} --upload-limit-mb"


def _member_limit(limits: UploadLimits) -> str:
    return f"limit {_size(limits.max_member_bytes)}; {RAISE} --upload-file-limit-mb"


def _files_limit(limits: UploadLimits) -> str:
    return f"limit {limits.max_files} files; {RAISE} --upload-max-files"


class _Budget:
    """What one upload has used so far of its limits: audio files and bytes on disk."""

    def __init__(self, limits: UploadLimits):
        self.limits, self.files, self.bytes = limits, 0, 0

    def add_files(self, n: int, where: str = "") -> None:
        self.files += n
        if self.files > self.limits.max_files:
            raise UploadError(f"{where}more than {self.limits.max_files} audio files in one upload "
                              f"({_files_limit(self.limits)}); upload fewer files at once")

    def add_bytes(self, n: int, where: str = "") -> None:
        self.bytes += n
        if self.bytes > self.limits.max_extracted_bytes:
            raise UploadError(f"{where}the upload takes more than {_size(self.limits.max_extracted_bytes)} once "
                              f"extracted ({_total_limit(self.limits)}); upload fewer files at once")


def _is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UploadError(f"{zip_path.name}: not a readable zip archive ({e})") from None


def _plan(zf: zipfile.ZipFile, audio_only: bool) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]],
                                                          list[tuple[str, str]]]:
    """(members to extract with their safe relative paths, (member, reason) refused), from the
    archive's directory alone: nothing is decompressed."""
    take: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    refused: list[tuple[str, str]] = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        rel = safe_member_path(info.filename)
        if rel is None:
            refused.append((info.filename, "unsafe path (absolute or containing '..'); not extracted"))
        elif _is_link(info):
            refused.append((info.filename, "symbolic link; not extracted"))
        elif any(p.startswith(".") or p == "__MACOSX" for p in rel.parts):
            continue  # hidden files and macOS resource forks: not content
        elif audio_only and not is_audio_path(rel.name):
            refused.append((info.filename, f"not an audio file ({rel.suffix or 'no extension'})"))
        else:
            take.append((info, rel))
    return take, refused


def _ratio_cap(limits: UploadLimits, compressed: int, floor: int) -> int:
    return max(floor, int(limits.max_ratio * max(1, compressed)))


def _check_declared(archive: str, size: int, members: list[zipfile.ZipInfo], limits: UploadLimits,
                    budget: _Budget) -> None:
    """Refuse an archive from what its directory declares, before any member is written."""
    for info in members:
        if info.file_size > limits.max_member_bytes:
            raise UploadError(f"{archive}: member {info.filename} is {_size(info.file_size)} uncompressed "
                              f"({_member_limit(limits)})")
        if info.file_size > _ratio_cap(limits, info.compress_size, limits.min_ratio_bytes):
            raise UploadError(f"{archive}: member {info.filename} decompresses more than {limits.max_ratio:.0f}x "
                              "its compressed size (zip bomb?); zip it without compression, or upload the files")
    total = sum(info.file_size for info in members)
    if total > _ratio_cap(limits, size, limits.min_archive_ratio_bytes):
        raise UploadError(f"{archive}: {_size(size)} of archive would decompress to {_size(total)}, more than "
                          f"{limits.max_ratio:.0f}x its size (zip bomb?); zip it without compression, or upload "
                          "the files")
    budget.add_files(len(members), f"{archive}: ")
    budget.add_bytes(total, f"{archive}: ")


def safe_extract_zip(zip_path: str | Path, dest: str | Path, limits: UploadLimits = DEFAULT_LIMITS,
                     audio_only: bool = True,
                     budget: _Budget | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Extract the (audio) members of ``zip_path`` into ``dest``; return (files, refused).

    ``refused`` lists ``(member name, reason)`` for members left out: unsafe paths, links,
    non-audio files (with ``audio_only``). Raises :class:`UploadError` when the archive is not a
    zip or exceeds ``limits``: before writing anything when its directory says so, else while
    extracting (the partial extraction is then removed). ``budget`` carries what earlier files of
    the same upload used.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    budget = budget or _Budget(limits)
    with _open_zip(zip_path) as zf:
        take, refused = _plan(zf, audio_only)
        _check_declared(zip_path.name, zip_path.stat().st_size, [info for info, _ in take], limits, _Budget(limits))
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        files: list[Path] = []
        written = 0  # by this archive
        archive_cap = _ratio_cap(limits, zip_path.stat().st_size, limits.min_archive_ratio_bytes)
        try:
            budget.add_files(len(take), f"{zip_path.name}: ")
            for info, rel in take:
                target = (root / Path(*rel.parts)).resolve()
                if root != target and root not in target.parents:  # belt and braces after the name check
                    refused.append((info.filename, "would be written outside the extraction folder"))
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                written += _copy_member(zf, info, target, limits, budget, archive_cap - written, zip_path.name)
                files.append(target)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return files, refused


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: UploadLimits,
                 budget: _Budget, archive_left: int, archive: str) -> int:
    """Stream one member to ``target`` counting the real bytes; return how many were written."""
    written = 0
    ratio_cap = _ratio_cap(limits, info.compress_size, limits.min_ratio_bytes)
    where = f"{archive}: member {info.filename} "
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 16):
                written += len(chunk)
                if written > limits.max_member_bytes:
                    raise UploadError(f"{where}decompresses to more than {_size(limits.max_member_bytes)} "
                                      f"({_member_limit(limits)})")
                if written > ratio_cap:
                    raise UploadError(f"{where}decompresses more than {limits.max_ratio:.0f}x its compressed "
                                      "size (zip bomb?); zip it without compression, or upload the files")
                if written > archive_left:
                    raise UploadError(f"{archive}: decompresses more than {limits.max_ratio:.0f}x its size "
                                      "(zip bomb?); zip it without compression, or upload the files")
                budget.add_bytes(len(chunk), f"{archive}: ")
                out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, EOFError) as e:
        # RuntimeError: encrypted members; EOFError/BadZipFile: truncated or corrupt data
        raise UploadError(f"{archive}: cannot extract {info.filename} ({e})") from None
    return written


def _check_upload(paths: list[Path], limits: UploadLimits) -> None:
    """Refuse an upload from its file sizes and its archives' directories, before anything is written."""
    size = sum(p.stat().st_size for p in paths if p.is_file())
    if size > limits.max_upload_bytes:
        raise UploadError(f"upload is {_size(size)}, more than the limit of {_size(limits.max_upload_bytes)}; "
                          "upload fewer files at once, or put them in a folder on the server")
    budget = _Budget(limits)
    for p in paths:
        if not p.is_file():
            continue
        if p.suffix.lower() == ".zip":
            with _open_zip(p) as zf:
                members = [info for info, _ in _plan(zf, audio_only=True)[0]]
            _check_declared(p.name, p.stat().st_size, members, limits, budget)
        elif is_audio_path(p):
            n = p.stat().st_size
            if n > limits.max_member_bytes:
                raise UploadError(f"{p.name} is {_size(n)} ({_member_limit(limits)})")
            budget.add_files(1)
            budget.add_bytes(n, f"{p.name}: ")


def stage_uploads(paths: Sequence[str | Path], dest: str | Path,
                  limits: UploadLimits = DEFAULT_LIMITS) -> tuple[Path, list[tuple[str, str]]]:
    """Copy uploaded audio files and extract uploaded zips into the empty folder ``dest``.

    Plain files keep their names (so FSDD's ``digit_speaker_take.wav`` labels survive); each
    archive goes to ``dest/<archive name>/`` (or, when it holds a single folder, to
    ``dest/<that folder>/``). Returns ``(dest, refused)`` where ``refused`` lists
    ``(name, reason)`` for files left out. Raises :class:`UploadError` for an empty upload, one
    over the limits (checked before anything is written, and again while writing), or one that holds
    no audio at all; ``dest`` is then removed.
    """
    paths = [Path(p) for p in paths if p]
    if not paths:
        raise UploadError("no files were uploaded; choose audio files or a zip of them")
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise UploadError(f"staging folder {dest} is not empty")
    _check_upload(paths, limits)
    dest.mkdir(parents=True, exist_ok=True)
    refused: list[tuple[str, str]] = []
    budget = _Budget(limits)
    try:
        for p in paths:
            if not p.is_file():
                refused.append((p.name, "missing after upload"))
            elif p.suffix.lower() == ".zip":
                sub = _unique(dest / (safe_member_path(p.stem) or PurePosixPath("archive")).name)
                _, bad = safe_extract_zip(p, sub, limits, budget=budget)
                _hoist_single_folder(sub)
                refused += [(f"{p.name}:{name}", why) for name, why in bad]
            elif is_audio_path(p):
                budget.add_files(1)
                budget.add_bytes(p.stat().st_size, f"{p.name}: ")
                shutil.copyfile(p, _unique(dest / p.name))
            else:
                refused.append((p.name, f"not an audio file or zip ({p.suffix or 'no extension'})"))
        if budget.files == 0:
            reasons = "; ".join(f"{n}: {r}" for n, r in refused[:3])
            raise UploadError("the upload holds no audio files" + (f" ({reasons})" if reasons else ""))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest, refused


def _hoist_single_folder(sub: Path) -> None:
    """An archive that holds one folder (``few.zip`` -> ``few/...``) is extracted as that folder, not
    as ``few/few/...``: clip names and labels then read as the person who zipped it named them."""
    entries = list(sub.iterdir()) if sub.is_dir() else []
    if len(entries) != 1 or not entries[0].is_dir():
        return
    moving = sub.with_name(sub.name + ".hoisting")
    entries[0].rename(moving)
    sub.rmdir()
    moving.rename(_unique(sub.parent / entries[0].name))


def _unique(path: Path) -> Path:
    """``path`` itself, or ``stem-2.ext``, ``stem-3.ext``... if it exists already."""
    if not path.exists():
        return path
    for i in range(2, 100000):
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not cand.exists():
            return cand
    raise UploadError(f"too many files named {path.name}")
