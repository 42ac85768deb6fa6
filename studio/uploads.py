"""Bounded handling of audio that people upload: plain files and zip archives of them.

Everything that arrives from a browser is checked before it touches the disk outside a staging
folder: total size, number of files, and, for zip archives, every member's path (no absolute
paths, no ``..``, no links: "zip slip") and its real decompressed size (counted while
extracting, never trusted from the archive header: "zip bombs").
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


class UploadError(InputError):
    """An upload was refused; the message says which file and why."""


@dataclass(frozen=True)
class UploadLimits:
    """Upper bounds on one batch of uploads (all files of one request together)."""

    max_upload_bytes: int = 500 * MB  # compressed size of everything uploaded at once
    max_files: int = 20000  # audio files after extracting archives
    max_extracted_bytes: int = 2048 * MB  # decompressed size of all archive members together
    max_member_bytes: int = 200 * MB  # decompressed size of one archive member
    max_ratio: float = 200.0  # decompressed / compressed size of one member (zip bomb guard)
    min_ratio_bytes: int = 1 * MB  # members smaller than this are never refused for their ratio


DEFAULT_LIMITS = UploadLimits()


def _is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def safe_extract_zip(zip_path: str | Path, dest: str | Path, limits: UploadLimits = DEFAULT_LIMITS,
                     audio_only: bool = True) -> tuple[list[Path], list[tuple[str, str]]]:
    """Extract the (audio) members of ``zip_path`` into ``dest``; return (files, refused).

    ``refused`` lists ``(member name, reason)`` for members left out: unsafe paths, links,
    non-audio files (with ``audio_only``). Raises :class:`UploadError` when the archive is not a
    zip or exceeds ``limits`` (the partial extraction is removed in that case).
    """
    zip_path, dest = Path(zip_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    files: list[Path] = []
    refused: list[tuple[str, str]] = []
    total = 0
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UploadError(f"{zip_path.name}: not a readable zip archive ({e})") from None
    try:
        with zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                rel = safe_member_path(info.filename)
                if rel is None:
                    refused.append((info.filename, "unsafe path (absolute or containing '..'); not extracted"))
                    continue
                if _is_link(info):
                    refused.append((info.filename, "symbolic link; not extracted"))
                    continue
                if any(p.startswith(".") or p == "__MACOSX" for p in rel.parts):
                    continue  # hidden files and macOS resource forks: not content
                if audio_only and not is_audio_path(rel.name):
                    refused.append((info.filename, f"not an audio file ({rel.suffix or 'no extension'})"))
                    continue
                if len(files) >= limits.max_files:
                    raise UploadError(f"{zip_path.name}: more than {limits.max_files} audio files")
                target = (root / Path(*rel.parts)).resolve()
                if root != target and root not in target.parents:  # belt and braces after the name check
                    refused.append((info.filename, "would be written outside the extraction folder"))
                    continue
                if info.file_size > limits.max_member_bytes:
                    raise UploadError(f"{zip_path.name}: member {info.filename} is {info.file_size / MB:.0f} MB "
                                      f"uncompressed (limit {limits.max_member_bytes // MB} MB)")
                target.parent.mkdir(parents=True, exist_ok=True)
                total += _copy_member(zf, info, target, limits, total, zip_path.name)
                files.append(target)
    except Exception:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return files, refused


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limits: UploadLimits,
                 total_so_far: int, archive: str) -> int:
    """Stream one member to ``target`` counting the real bytes; return how many were written."""
    written = 0
    member_cap = limits.max_member_bytes
    ratio_cap = max(limits.min_ratio_bytes, int(limits.max_ratio * max(1, info.compress_size)))
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 16):
                written += len(chunk)
                if written > member_cap:
                    raise UploadError(f"{archive}: member {info.filename} decompresses to more than "
                                      f"{member_cap // MB} MB")
                if written > ratio_cap:
                    raise UploadError(f"{archive}: member {info.filename} decompresses more than "
                                      f"{limits.max_ratio:.0f}x its compressed size (zip bomb?)")
                if total_so_far + written > limits.max_extracted_bytes:
                    raise UploadError(f"{archive}: archive decompresses to more than "
                                      f"{limits.max_extracted_bytes // MB} MB")
                out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, EOFError) as e:
        # RuntimeError: encrypted members; EOFError/BadZipFile: truncated or corrupt data
        raise UploadError(f"{archive}: cannot extract {info.filename} ({e})") from None
    return written


def stage_uploads(paths: Sequence[str | Path], dest: str | Path,
                  limits: UploadLimits = DEFAULT_LIMITS) -> tuple[Path, list[tuple[str, str]]]:
    """Copy uploaded audio files and extract uploaded zips into the empty folder ``dest``.

    Plain files keep their names (so FSDD's ``digit_speaker_take.wav`` labels survive); each
    archive goes to ``dest/<archive name>/`` (or, when it holds a single folder, to
    ``dest/<that folder>/``). Returns ``(dest, refused)`` where ``refused`` lists
    ``(name, reason)`` for files left out. Raises :class:`UploadError` for an empty upload, one
    over the size limits, or one that holds no audio at all.
    """
    paths = [Path(p) for p in paths if p]
    if not paths:
        raise UploadError("no files were uploaded; choose audio files or a zip of them")
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise UploadError(f"staging folder {dest} is not empty")
    size = sum(p.stat().st_size for p in paths if p.is_file())
    if size > limits.max_upload_bytes:
        raise UploadError(f"upload is {size / MB:.0f} MB, more than the limit of {limits.max_upload_bytes // MB} MB")
    dest.mkdir(parents=True, exist_ok=True)
    refused: list[tuple[str, str]] = []
    n_audio = 0
    try:
        for p in paths:
            if not p.is_file():
                refused.append((p.name, "missing after upload"))
                continue
            if p.suffix.lower() == ".zip":
                sub = _unique(dest / (safe_member_path(p.stem) or PurePosixPath("archive")).name)
                files, bad = safe_extract_zip(p, sub, limits)
                _hoist_single_folder(sub)
                refused += [(f"{p.name}:{name}", why) for name, why in bad]
                n_audio += len(files)
            elif is_audio_path(p):
                shutil.copyfile(p, _unique(dest / p.name))
                n_audio += 1
            else:
                refused.append((p.name, f"not an audio file or zip ({p.suffix or 'no extension'})"))
            if n_audio > limits.max_files:
                raise UploadError(f"more than {limits.max_files} audio files in one upload")
        if n_audio == 0:
            reasons = "; ".join(f"{n}: {r}" for n, r in refused[:3])
            raise UploadError("the upload holds no audio files" + (f" ({reasons})" if reasons else ""))
    except Exception:
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
