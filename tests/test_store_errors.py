"""Errors a user can cause with stores and downloads are UserErrors with a message naming the file and what
to do (preprocessing.store, preprocessing.download): never a FileNotFoundError, JSONDecodeError or other
OSError, which the CLI would show as a traceback and the app as a bug."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from test_download import fsdd_members, make_zip

from preprocessing import download, store
from preprocessing.download import DownloadError, download_fsdd
from preprocessing.errors import UserError
from preprocessing.progress import ProgressFn
from preprocessing.store import PreprocessError, Store, build_store
from vae.cli import main


@pytest.fixture
def copy(tiny_store, tmp_path) -> Path:
    """A writable copy of the tiny store."""
    out = tmp_path / "copy"
    shutil.copytree(tiny_store.path, out)
    return out


def _open_fails(path: Path, *patterns: str) -> str:
    with pytest.raises(PreprocessError) as e:
        Store(path)
    assert isinstance(e.value, UserError)
    msg = str(e.value)
    for pattern in patterns:
        assert pattern in msg, msg
    return msg


# ---------------------------------------------------------------------------- opening a store


def test_missing_manifest_is_not_a_store(copy):
    (copy / "manifest.json").unlink()
    _open_fails(copy, f"{copy} is not a dataset store (no manifest.json)", "python -m vae preprocess",
                "pick another folder")


def test_missing_config_keeps_its_message(tmp_path):
    _open_fails(tmp_path, f"{tmp_path} is not a dataset store (no config.json); "
                          "create one with `python -m vae preprocess`")


@pytest.mark.parametrize("name", ["config.json", "manifest.json"])
@pytest.mark.parametrize("content", [b"{ not json", b"", b"\xff\xfe\x00\x81 binary"], ids=["bad", "empty", "binary"])
def test_corrupt_json_names_the_file_and_says_rebuild(copy, name, content):
    (copy / name).write_bytes(content)
    _open_fails(copy, f"{copy / name} is damaged (not valid JSON", "--force", "pick another folder")


@pytest.mark.parametrize(("name", "content", "what"), [
    ("config.json", [1, 2], "is not a store config"),
    ("config.json", {"version": 1}, "is not a store config"),
    ("config.json", {"spectrogram": {"sample_rate": -5}}, "has bad spectrogram parameters"),
    ("config.json", {"spectrogram": "8000 Hz"}, "has bad spectrogram parameters"),
    ("manifest.json", {"clips": []}, "is not a store manifest"),
    ("manifest.json", [{"source": "a.wav"}], "is not a store manifest"),
    ("manifest.json", ["a.wav"], "is not a store manifest"),
])
def test_wrong_json_content_names_the_file(copy, name, content, what):
    (copy / name).write_text(json.dumps(content))
    _open_fails(copy, f"{copy / name} {what}", "rebuild it")


def test_unreadable_json_names_the_file(copy, monkeypatch):
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == "manifest.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    _open_fails(copy, f"cannot read {copy / 'manifest.json'} (Permission denied)", "check its permissions")


@pytest.mark.parametrize("content", [None, b"", b"not an npy file at all", "truncated"],
                         ids=["missing", "empty", "garbage", "truncated"])
def test_bad_spectrograms_file(copy, content):
    specs = copy / "spectrograms.npy"
    if content is None:
        specs.unlink()
        _open_fails(copy, f"{copy} is not a complete dataset store (no spectrograms.npy)", "rebuild it")
        return
    if content == "truncated":
        content = specs.read_bytes()[:1000]
    specs.write_bytes(content)
    _open_fails(copy, f"{specs} is damaged", "rebuild it")


def test_pickled_spectrograms_are_refused(copy):
    np.save(copy / "spectrograms.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _open_fails(copy, f"{copy / 'spectrograms.npy'} is damaged")


# ---------------------------------------------------------------------------- building a store


def test_a_damaged_store_is_rebuilt_in_place(fsdd_dir, copy):
    (copy / "config.json").write_text("{ damaged")
    summary = build_store(fsdd_dir, copy, TINY)
    assert not summary.reused and summary.n_clips == 36 and len(Store(copy)) == 36


def test_output_below_a_file_is_a_user_error(fsdd_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "store"
    with pytest.raises(PreprocessError, match=re.escape(f"cannot build the store {out} (")) as e:
        build_store(fsdd_dir, out, TINY)
    assert "choose another output" in str(e.value)


def test_a_full_disk_is_a_user_error_and_leaves_nothing(fsdd_dir, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(store, "_finalise", full)
    with pytest.raises(PreprocessError, match="No space left on device") as e:
        build_store(fsdd_dir, tmp_path / "s", TINY)
    assert f"cannot build the store {tmp_path / 's'}" in str(e.value) and "free space" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no store, no temporary folder


def test_dot_output_builds_in_the_current_folder(fsdd_dir, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert build_store(fsdd_dir, ".", TINY).n_clips == 36
    assert len(Store(tmp_path / "here")) == 36 and sorted(p.name for p in tmp_path.iterdir()) == ["here"]


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture
def _keep_sigint_handler():
    """`train` installs a Ctrl-C handler; give pytest its own back afterwards."""
    old = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, old)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert sum(ln.startswith("error: ") for ln in lines) == 1 and "Traceback" not in err
    assert lines[-1].startswith("error: ")
    return lines[-1]


@pytest.mark.usefixtures("_keep_sigint_handler")
@pytest.mark.parametrize(("damage", "expected"), [
    ("no manifest", "is not a dataset store (no manifest.json)"),
    ("bad config", "config.json is damaged (not valid JSON"),
    ("bad manifest", "manifest.json is damaged (not valid JSON"),
])
def test_cli_train_on_a_damaged_store(copy, tmp_path, capsys, damage, expected):
    if damage == "no manifest":
        (copy / "manifest.json").unlink()
    else:
        (copy / f"{damage.split()[1]}.json").write_text("{ damaged")
    assert main(["train", "--data", str(copy), "--output", str(tmp_path / "run"), "--epochs", "1",
                 "--device", "cpu"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert expected in line and str(copy) in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["config.json", "manifest.json", "spectrograms.npy"])
def test_cli_evaluate_on_a_damaged_store(copy, trained, capsys, damage):
    (copy / damage).write_bytes(b"\x00 damaged")
    assert main(["evaluate", "--checkpoint", str(trained[0]), "--input", str(copy), "--no-stoi"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{copy / damage} is damaged" in line


# ---------------------------------------------------------------------------- download


def test_one_progress_type():
    assert store.ProgressFn is download.ProgressFn is ProgressFn


class NoLengthHandler(http.server.BaseHTTPRequestHandler):
    """Serves the archive without Content-Length (HTTP/1.0: the body ends when the connection closes)."""

    payload = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args) -> None:
        pass


def test_download_of_unknown_size_reports_total_0(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    NoLengthHandler.payload = make_zip(tmp_path / "fsdd.zip", fsdd_members()).read_bytes()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoLengthHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    calls: list[tuple] = []
    try:
        out = download_fsdd(tmp_path / "data", f"http://127.0.0.1:{httpd.server_address[1]}/x.zip",
                            progress=lambda *a: calls.append(a))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(list(out.glob("*.wav"))) == 20
    assert all(isinstance(done, int) and isinstance(total, int) for done, total, _ in calls)
    downloading = [c for c in calls if c[2] == "downloading"]
    assert downloading[0] == (0, 0, "downloading") and {c[1] for c in downloading} == {0}
    assert downloading[-1][0] == len(NoLengthHandler.payload)
    assert calls[-1] == (20, 20, "extracting")


def _fetched(archive: Path):
    """A stand-in for download._fetch that 'downloads' ``archive`` (a copy, as the real one is removed)."""
    def fetch(url, folder, progress, timeout):
        out = folder / "fsdd-download.zip"
        if archive.exists():
            shutil.copyfile(archive, out)
        return out
    return fetch


def test_unwritable_download_folder_is_a_download_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(download.tempfile, "mkstemp", refuse)
    with pytest.raises(DownloadError, match=re.escape(f"cannot write in the folder {tmp_path / 'fsdd'} "
                                                      "(Permission denied)")):
        download_fsdd(tmp_path, "http://127.0.0.1:9/fsdd.zip")


def test_unwritable_extraction_folder_is_a_download_error(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "a.zip", fsdd_members())
    monkeypatch.setattr(download, "_fetch", _fetched(archive))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(download.tempfile, "mkdtemp", refuse)
    with pytest.raises(DownloadError, match=re.escape(f"cannot write in the folder {tmp_path / 'd' / 'fsdd'}")):
        download_fsdd(tmp_path / "d", "http://127.0.0.1:9/fsdd.zip")


def test_vanished_download_is_a_download_error(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_fetch", _fetched(tmp_path / "never-written.zip"))
    with pytest.raises(DownloadError, match="cannot read the downloaded file"):
        download_fsdd(tmp_path / "d", "http://127.0.0.1:9/fsdd.zip")


def test_unreadable_recordings_folder_counts_as_empty(tmp_path, monkeypatch):
    target = download.recordings_dir(tmp_path)
    target.mkdir(parents=True)
    real = Path.iterdir

    def iterdir(self):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert download.count_recordings(target) == 0
    (tmp_path / "file").write_text("x")
    assert download.count_recordings(tmp_path / "file") == 0


@pytest.mark.parametrize("name", ["manifest.json", "spectrograms.npy"])
def test_unreadable_files_give_the_whole_message(copy, monkeypatch, name):
    """The exact message: the file, the system's reason (not the exception's repr) and what to do."""
    real_read, real_load = Path.read_text, np.load

    def read_text(self, *args, **kwargs):
        if self.name == name:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    def load(path, *args, **kwargs):
        if Path(path).name == name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(np, "load", load)
    with pytest.raises(PreprocessError) as e:
        Store(copy)
    assert str(e.value) == (f"cannot read {copy / name} (Permission denied); check its permissions, "
                            "or pick another folder")
