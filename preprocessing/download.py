"""Downloading the Free Spoken Digit Dataset (FSDD), for people without audio of their own at hand.

:func:`download_fsdd` fetches the release archive (about 16 MB, 3,000 WAVs at 8 kHz), checks it,
and extracts only its ``recordings/*.wav`` into ``<dest_dir>/fsdd/recordings``. It never writes
outside ``dest_dir``. Every failure (offline, HTTP error, timeout, an archive that is not FSDD)
raises :class:`DownloadError`, which says what went wrong and how to get the data by hand.
FSDD is licensed CC BY-SA 4.0 (https://github.com/Jakobovski/free-spoken-digit-dataset).
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import UserError
from .labels import FSDD_NAME
from .progress import ProgressFn

log = logging.getLogger(__name__)

# The v1.0.10 release: 6 speakers x 10 digits x 50 takes; extracts to free-spoken-digit-dataset-1.0.10/.
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.zip"
FSDD_URL_ENV = "FSDD_URL"  # environment variable that overrides the default URL (e.g. a local mirror)
EXPECTED_RECORDINGS = 3000
MIN_RECORDINGS = 10  # fewer than this and the archive is not FSDD
MAX_BYTES = 2 * 1024**3  # bound on the download and on the extracted size
CHUNK = 1 << 16


class DownloadError(UserError):
    """The dataset could not be downloaded or used; the message says why and what to do instead."""

    def __init__(self, reason: str, url: str = FSDD_URL):
        self.reason = reason
        self.url = url
        super().__init__(
            f"Downloading FSDD failed: {reason}. To proceed without this download: download the archive "
            f"from {url} on a machine with internet, unzip it, and build a dataset store from its recordings/ "
            f"folder (`sound-vae preprocess --input <folder>/recordings`, or the app's folder source)."
        )

    def __reduce__(self):  # pickles (e.g. across processes) with its reason and URL, not the whole message
        return (type(self), (self.reason, self.url))


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a zip member may be extracted to, or None if its name is unsafe."""
    name = name.replace("\\", "/")
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None  # absolute (POSIX or a Windows drive)
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return PurePosixPath(*parts)


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def default_url() -> str:
    """``$FSDD_URL`` when set, else :data:`FSDD_URL`."""
    return os.environ.get(FSDD_URL_ENV) or FSDD_URL


def recordings_dir(dest_dir: str | Path) -> Path:
    """Where :func:`download_fsdd` puts the WAVs: ``<dest_dir>/fsdd/recordings``."""
    return Path(dest_dir) / "fsdd" / "recordings"


def count_recordings(folder: str | Path) -> int:
    """How many FSDD-named WAVs (``{digit}_{speaker}_{index}.wav``) are directly in ``folder`` (0 if unreadable)."""
    folder = Path(folder)
    try:
        return sum(1 for p in folder.iterdir() if _is_recording_name(p.name) and p.is_file())
    except OSError:  # no such folder, or not readable
        return 0


def download_fsdd(dest_dir: str | Path, url: str | None = None, progress: ProgressFn | None = None,
                  timeout: float = 30, min_files: int = MIN_RECORDINGS) -> Path:
    """Download and extract FSDD's recordings into ``<dest_dir>/fsdd/recordings``; return that folder.

    A folder that already holds at least ``min_files`` recordings is returned without downloading.
    ``url`` defaults to ``$FSDD_URL`` or :data:`FSDD_URL`. ``progress(done, total, what)`` is called
    with bytes while downloading (``total`` is 0 when the server does not say) and with files
    while extracting. ``timeout`` (seconds) bounds connecting and each wait for data. Raises
    :class:`DownloadError`.
    """
    url = url or default_url()
    _check_url(url)
    target = recordings_dir(dest_dir)
    n = count_recordings(target)
    if n >= min_files:
        if progress:
            progress(n, n, f"already downloaded: {n} recordings in {target}")
        return target
    fsdd_dir = target.parent
    try:
        fsdd_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the folder {fsdd_dir} ({e.strerror or e})", url) from None

    archive = _fetch(url, fsdd_dir, progress, timeout)
    try:
        return _extract(archive, target, url, progress, min_files)
    finally:
        archive.unlink(missing_ok=True)


def _check_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError as e:
        raise DownloadError(f"invalid URL {url!r} ({e})", url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"invalid URL {url!r} (expected http://host/... or https://host/...)", url)


def _fetch(url: str, folder: Path, progress: ProgressFn | None, timeout: float) -> Path:
    """Stream ``url`` to a temporary file in ``folder``, renamed to ``fsdd-download.zip`` when complete."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=".fsdd-", suffix=".part", dir=folder)
    except OSError as e:
        raise DownloadError(f"cannot write in the folder {folder} ({e.strerror or e})", url) from None
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "sound-vae (FSDD download)"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_BYTES:
                raise DownloadError(f"the server offers {_size(total)}, more than the {_size(MAX_BYTES)} "
                                    f"limit; {url} is not the FSDD archive", url)
            done = 0
            if progress:
                progress(0, total or 0, "downloading")
            while chunk := response.read(CHUNK):
                done += len(chunk)
                if done > MAX_BYTES:
                    raise DownloadError(f"the download exceeds the {_size(MAX_BYTES)} limit", url)
                out.write(chunk)
                if progress:
                    progress(done, total or 0, "downloading")
        if total is not None and done < total:
            raise DownloadError(f"the connection closed after {done} of {total} bytes", url)
        final = folder / "fsdd-download.zip"
        os.replace(tmp, final)
        return final
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise DownloadError(f"the server answered HTTP {e.code} {e.reason} for {url}", url) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise DownloadError(f"no answer from the server for {timeout:g} s (timed out)", url) from None
        text = getattr(reason, "strerror", None) or str(reason)
        raise DownloadError(f"cannot reach {urllib.parse.urlsplit(url).netloc} ({text}): this computer "
                            "may be offline, or a firewall or proxy blocks it", url) from None
    except TimeoutError:
        raise DownloadError(f"no answer from the server for {timeout:g} s (timed out)", url) from None
    except http.client.HTTPException as e:  # e.g. the connection closed mid-body
        raise DownloadError(f"the transfer broke off ({type(e).__name__}: {e})", url) from None
    except ValueError as e:  # a URL that urllib rejects after all
        raise DownloadError(f"invalid URL {url!r} ({e})", url) from None
    except OSError as e:  # connection reset, disk full, ...
        raise DownloadError(f"{type(e).__name__}: {e.strerror or e}", url) from None
    finally:
        tmp.unlink(missing_ok=True)


def _is_recording_name(name: str) -> bool:
    p = PurePosixPath(name)
    return p.suffix.lower() == ".wav" and FSDD_NAME.match(p.stem) is not None


def _extract(archive: Path, target: Path, url: str, progress: ProgressFn | None, min_files: int) -> Path:
    """Check ``archive`` and write its ``recordings/*.wav`` into ``target`` (via a temporary sibling)."""
    with _open_zip(archive, url) as zf:
        members = _recordings(zf, url, min_files)
        try:
            return _write_recordings(zf, members, target, url, progress, min_files)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, RuntimeError) as e:
            raise DownloadError(f"the archive is damaged or cannot be extracted ({e})", url) from None


def _open_zip(archive: Path, url: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        with open(archive, "rb") as f:
            head = f.read(64)
        hint = " (it looks like a web page)" if b"<" in head[:16] else ""
        raise DownloadError(f"the downloaded file ({archive.stat().st_size} bytes) is not a zip archive{hint}",
                            url) from None
    except OSError as e:
        raise DownloadError(f"cannot read the downloaded file {archive} ({e.strerror or e})", url) from None


def _recordings(zf: zipfile.ZipFile, url: str, min_files: int) -> list[zipfile.ZipInfo]:
    """The archive's ``recordings/*.wav`` members, after checking the archive is safe and is FSDD."""
    infos = zf.infolist()
    bad = [i.filename for i in infos if safe_member_path(i.filename) is None]
    if bad:
        raise DownloadError(f"the archive contains unsafe paths (e.g. {bad[0]!r}) and was not extracted", url)
    # The recordings folder: <top>/recordings/ (a release archive) or recordings/ (a plain zip).
    by_folder: dict[str, list[zipfile.ZipInfo]] = {}
    for info in infos:
        p = PurePosixPath(info.filename)
        if not info.is_dir() and p.parent.name == "recordings" and len(p.parts) <= 3 \
                and _is_recording_name(p.name):
            by_folder.setdefault(str(p.parent), []).append(info)
    if not by_folder:
        raise DownloadError("the archive has no recordings/ folder of {digit}_{speaker}_{index}.wav files; "
                            "it is not the FSDD archive", url)
    members = max(by_folder.values(), key=len)
    if len(members) < min_files:
        raise DownloadError(f"the archive holds only {len(members)} recordings (at least {min_files} "
                            "expected); it is not the FSDD archive or is incomplete", url)
    if len(members) < EXPECTED_RECORDINGS // 2:
        log.warning("%s holds %d recordings; the FSDD release has about %d", url, len(members),
                    EXPECTED_RECORDINGS)
    declared = sum(i.file_size for i in members)
    if declared > MAX_BYTES:
        raise DownloadError(f"the recordings would take {_size(declared)}, more than the "
                            f"{_size(MAX_BYTES)} limit", url)
    return members


def _write_recordings(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], target: Path, url: str,
                      progress: ProgressFn | None, min_files: int) -> Path:
    """Extract ``members`` (bare file names only) into a temporary folder renamed to ``target``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".recordings-", dir=target.parent))
    except OSError as e:
        raise DownloadError(f"cannot write in the folder {target.parent} ({e.strerror or e})", url) from None
    try:
        written = 0
        for k, info in enumerate(members, 1):
            out_path = tmp / PurePosixPath(info.filename).name  # a bare file name: cannot leave tmp
            with zf.open(info) as src, open(out_path, "wb") as dst:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > MAX_BYTES:  # sizes in the zip header can lie
                        raise DownloadError(f"the recordings exceed the {_size(MAX_BYTES)} limit "
                                            "when extracted", url)
                    dst.write(chunk)
            if progress and (k % 100 == 0 or k == len(members)):
                progress(k, len(members), "extracting")
        if target.exists():  # an earlier incomplete download, or another one that finished first
            if count_recordings(target) >= min_files:
                return target
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
