"""Downloading FSDD (preprocessing.download), against a local HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import pickle
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from preprocessing import download
from preprocessing.download import FSDD_URL_ENV, DownloadError, download_fsdd, recordings_dir

TOP = "free-spoken-digit-dataset-1.0.10"
NAMES = [f"{d}_{s}_{t}.wav" for d in range(10) for s in ("alice", "bob") for t in (0,)]  # 20 recordings


def tiny_wav(seed: int) -> bytes:
    buf = io.BytesIO()
    wave = 0.1 * np.random.default_rng(seed).standard_normal(80).astype(np.float32)
    sf.write(buf, wave, 8000, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def fsdd_members(names: list[str] = NAMES) -> dict[str, bytes]:
    """A release-like archive: recordings plus files that must not be extracted."""
    members = {f"{TOP}/recordings/{n}": tiny_wav(i) for i, n in enumerate(names)}
    members.update({f"{TOP}/README.md": b"# FSDD\n", f"{TOP}/metadata.py": b"x = 1\n",
                    f"{TOP}/acquire_data/say_numbers_prompt.py": b"pass\n",
                    f"{TOP}/recordings/notes.txt": b"not audio\n", f"{TOP}/utils/0_carl_0.wav": tiny_wav(99)})
    return members


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/truncated.zip":  # promises 100 kB, sends 10 bytes, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04" + b"\0" * 6)
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(folder served, base URL) of an HTTP server on 127.0.0.1."""
    root = tmp_path_factory.mktemp("served")
    make_zip(root / "fsdd.zip", fsdd_members())
    (root / "page.zip").write_bytes(b"<!DOCTYPE html><html><body>Not found</body></html>\n")
    make_zip(root / "norecordings.zip", {f"{TOP}/README.md": b"hi", f"{TOP}/audio/0_alice_0.wav": tiny_wav(0)})
    make_zip(root / "few.zip", fsdd_members(NAMES[:3]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Never send the loopback requests through a proxy configured in the environment."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/fsdd.zip"


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def assert_how_to_proceed(err: DownloadError, url: str) -> None:
    msg = str(err)
    assert msg.startswith("Downloading FSDD failed: ")
    assert f"download the archive from {url} on a machine with internet" in msg
    assert "build a dataset store from its recordings/ folder" in msg
    assert "`sound-vae preprocess --input <folder>/recordings`" in msg and "the app's folder source" in msg


def test_download_extracts_only_recordings_and_reports_progress(server, tmp_path, caplog):
    root, base = server
    calls = []
    with caplog.at_level(logging.WARNING, logger="preprocessing.download"):
        out = download_fsdd(tmp_path / "data", f"{base}/fsdd.zip", progress=lambda *a: calls.append(a))
    assert out == recordings_dir(tmp_path / "data") == tmp_path / "data" / "fsdd" / "recordings"
    # Only the FSDD-named WAVs of recordings/ land, nothing else (no archive, no temporary files).
    assert files_under(tmp_path / "data") == sorted(f"fsdd/recordings/{n}" for n in NAMES)
    with zipfile.ZipFile(root / "fsdd.zip") as zf:
        assert (out / NAMES[5]).read_bytes() == zf.read(f"{TOP}/recordings/{NAMES[5]}")
    wave, sr = sf.read(str(out / NAMES[0]))
    assert sr == 8000 and len(wave) == 80

    size = (root / "fsdd.zip").stat().st_size
    downloading = [c for c in calls if c[2] == "downloading"]
    assert downloading[0] == (0, size, "downloading") and downloading[-1] == (size, size, "downloading")
    assert [c[0] for c in downloading] == sorted(c[0] for c in downloading)
    assert calls[-1] == (len(NAMES), len(NAMES), "extracting")
    assert "holds 20 recordings" in caplog.text  # far fewer than the real release's 3000


def test_second_call_reuses_without_network(server, tmp_path):
    _, base = server
    first = download_fsdd(tmp_path, f"{base}/fsdd.zip")
    calls = []
    again = download_fsdd(tmp_path, closed_port_url(), progress=lambda *a: calls.append(a))
    assert again == first
    assert calls == [(20, 20, f"already downloaded: 20 recordings in {first}")]


def test_incomplete_earlier_folder_is_replaced(server, tmp_path):
    _, base = server
    target = recordings_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "0_alice_0.wav").write_bytes(b"half")
    out = download_fsdd(tmp_path, f"{base}/fsdd.zip")
    assert len(list(out.glob("*.wav"))) == 20 and (out / "0_alice_0.wav").stat().st_size > 100


def test_url_from_environment(server, tmp_path, monkeypatch):
    _, base = server
    monkeypatch.setenv(FSDD_URL_ENV, f"{base}/fsdd.zip")
    assert len(list(download_fsdd(tmp_path).glob("*.wav"))) == 20


@pytest.mark.parametrize(("name", "reason"), [
    ("page.zip", "is not a zip archive (it looks like a web page)"),
    ("norecordings.zip", "no recordings/ folder"),
    ("few.zip", "only 3 recordings"),
    ("missing.zip", "HTTP 404"),
    ("truncated.zip", "Downloading FSDD failed"),
])
def test_bad_archive_or_answer_raises_and_leaves_nothing(server, tmp_path, name, reason):
    _, base = server
    url = f"{base}/{name}"
    with pytest.raises(DownloadError) as e:
        download_fsdd(tmp_path, url)
    assert reason in str(e.value)
    assert_how_to_proceed(e.value, url)
    assert files_under(tmp_path) == []  # no partial download, no half-extracted folder


def test_uncompressed_size_is_bounded(server, tmp_path, monkeypatch):
    root, base = server
    silence = io.BytesIO()
    sf.write(silence, np.zeros(16000, np.float32), 8000, subtype="PCM_16", format="WAV")  # 32 kB, zips to ~100 B
    make_zip(root / "bomb.zip", {f"{TOP}/recordings/{n}": silence.getvalue() for n in NAMES})
    assert (root / "bomb.zip").stat().st_size < 20_000
    monkeypatch.setattr(download, "MAX_BYTES", 200_000)
    with pytest.raises(DownloadError, match="would take 641 kB, more than the 200 kB limit"):
        download_fsdd(tmp_path, f"{base}/bomb.zip")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/fsdd.zip", "http://[::1/fsdd.zip", "fsdd.zip", "http://127.0.0.1:99999/x"])
def test_invalid_url(tmp_path, url):
    with pytest.raises(DownloadError, match="invalid URL"):
        download_fsdd(tmp_path, url)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("evil", ["../evil.wav", f"{TOP}/recordings/../../../evil.wav", "ABSOLUTE"])
def test_zip_slip_member_is_rejected(server, tmp_path, evil):
    root, base = server
    outside = tmp_path / "outside"
    if evil == "ABSOLUTE":
        evil = (outside / "evil.wav").as_posix()
    members = fsdd_members()
    members[evil] = tiny_wav(7)
    make_zip(root / "slip.zip", members)
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="unsafe paths"):
        download_fsdd(dest, f"{base}/slip.zip")
    assert not list(tmp_path.rglob("evil.wav")) and not outside.exists()
    assert not recordings_dir(dest).exists()


def test_unreachable_server_says_how_to_proceed(tmp_path):
    url = closed_port_url()
    with pytest.raises(DownloadError) as e:
        download_fsdd(tmp_path, url, timeout=5)
    assert pickle.loads(pickle.dumps(e.value)).args == e.value.args
    assert "cannot reach 127.0.0.1" in e.value.reason and "offline" in e.value.reason
    assert_how_to_proceed(e.value, url)


def test_silent_server_times_out(tmp_path):
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/fsdd.zip"
        with pytest.raises(DownloadError, match="timed out") as e:
            download_fsdd(tmp_path, url, timeout=0.3)
    assert_how_to_proceed(e.value, url)
