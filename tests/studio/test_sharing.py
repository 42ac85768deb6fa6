"""Safe sharing (issue #12): server folders only inside allowed roots, a blank folder refused, no
sharing or non-loopback host without a password, and a private Gradio temporary folder per app."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import pytest
from conftest import TINY

import app
from preprocessing.store import PreprocessError
from studio.datasets import build_named_store

TINY_ARGS = (TINY.sample_rate, TINY.duration, TINY.n_fft, TINY.hop_length, "global", "all")


def no_progress(*args, **kwargs) -> None:
    pass


@pytest.fixture
def roots(tmp_path, fsdd_dir) -> dict[str, Path]:
    """An allowed root holding audio, a secret folder beside it, and links out of the root."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "clips").mkdir(parents=True)
    secret.mkdir()
    for f in sorted(fsdd_dir.glob("*.wav"))[:4]:
        (allowed / "clips" / f.name).write_bytes(f.read_bytes())
        (secret / f.name).write_bytes(f.read_bytes())
    (allowed / "escape").symlink_to(secret, target_is_directory=True)
    (allowed / "inner").symlink_to(allowed / "clips", target_is_directory=True)
    return {"allowed": allowed, "secret": secret, "stores": tmp_path / "stores"}


# ---------------------------------------------------------------------------- allowed roots


FOLDERS = {"beside": "{root}/../secret", "link out": "{root}/escape", "dot-dot": "{root}/clips/../../secret",
           "absolute": "{secret}"}


@pytest.mark.parametrize("folder", FOLDERS.values(), ids=FOLDERS.keys())
def test_folders_outside_the_allowed_roots_are_refused(roots, folder):
    """After resolving links and '..', a folder must lie inside an allowed root; the refusal names it
    and says how to allow it (nothing is read, no store is made)."""
    typed = folder.format(root=roots["allowed"], secret=roots["secret"])
    with pytest.raises(PreprocessError, match="--allow-dir") as e:
        build_named_store(roots["stores"], "s", TINY, folder=typed, allowed_roots=[roots["allowed"]])
    assert typed in str(e.value)
    assert not roots["stores"].exists()


def test_folders_inside_the_allowed_roots_are_read(roots):
    for name, folder in (("a", roots["allowed"] / "clips"), ("b", roots["allowed"] / "inner")):
        summary, _ = build_named_store(roots["stores"], name, TINY, folder=folder, allowed_roots=[roots["allowed"]])
        assert summary.n_clips == 4


def test_the_home_folder_is_not_walked(roots, monkeypatch):
    monkeypatch.setenv("HOME", str(roots["secret"]))
    with pytest.raises(PreprocessError, match="--allow-dir"):
        build_named_store(roots["stores"], "s", TINY, folder="~", allowed_roots=[roots["allowed"]])


@pytest.mark.parametrize("folder", ["", "   ", "\t\n"])
def test_a_blank_folder_is_refused_before_anything_is_read(tmp_path, monkeypatch, folder):
    """Defect 9: a blank folder built a store from the server's working directory."""
    def read(*args, **kwargs):
        raise AssertionError("a blank folder was read")

    monkeypatch.setattr("studio.datasets.build_store", read)
    for limit in ({}, {"allowed_roots": [tmp_path]}):
        with pytest.raises(PreprocessError, match="folder field is empty"):
            build_named_store(tmp_path / "stores", "s", TINY, folder=folder, **limit)


# ---------------------------------------------------------------------------- the launcher


class Launched:
    """Stands in for ``Blocks.launch``: records what the app was served with, and the temp folder."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.apps: list = []
        self.during: Callable[[], None] | None = None  # checks to run while the app is being served

    def launch(self, demo: gr.Blocks, **kwargs) -> None:
        tmp = os.environ.get("GRADIO_TEMP_DIR")
        self.calls.append({**kwargs, "temp_dir": tmp, "temp_existed": bool(tmp) and Path(tmp).is_dir(),
                           "cache": demo.GRADIO_CACHE})
        if self.during is not None:
            self.during()


@pytest.fixture
def launched(monkeypatch, tmp_path) -> Launched:
    rec = Launched()
    real_create = app.create_app

    def create_app(*args, **kwargs):
        out = real_create(*args, **kwargs)
        rec.apps.append(out[1])
        return out

    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: rec.launch(self, **kw))
    monkeypatch.setattr(app, "create_app", create_app)
    monkeypatch.delenv("SOUND_VAE_AUTH", raising=False)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "shared-gradio"))  # what another app may use
    return rec


def test_parse_args_defaults():
    args = app.parse_args([])
    assert (args.host, args.share, args.insecure, args.auth_file, args.allow_dir) == ("127.0.0.1", False, False,
                                                                                      None, [])
    assert app.parse_args(["--allow-dir", "a", "--allow-dir", "b"]).allow_dir == ["a", "b"]


@pytest.mark.parametrize("argv", [["--share"], ["--host", "0.0.0.0"], ["--host", "192.168.1.5"], ["--host", "::"],
                                  ["--host", "myhost.example"]])
def test_refuses_to_share_without_a_password(launched, capsys, tmp_path, argv):
    assert app.main([*argv, "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "--auth-file" in err and "SOUND_VAE_AUTH" in err and "--insecure" in err
    assert launched.calls == [] and launched.apps == []  # refused before anything was built


def test_shares_with_a_password_from_a_file_or_the_environment(launched, tmp_path, monkeypatch):
    auth = tmp_path / "auth.txt"
    auth.write_text("# users\nann:s3cret:with colon\n\nbob:pw2\n")
    monkeypatch.setattr(app, "create_app", lambda ws, checkpoint=None, **kw: (gr.Blocks(), None))
    assert app.main(["--share", "--auth-file", str(auth), "--data-dir", str(tmp_path / "d")]) == 0
    assert launched.calls[-1]["share"] is True
    assert launched.calls[-1]["auth"] == [("ann", "s3cret:with colon"), ("bob", "pw2")]
    monkeypatch.setenv("SOUND_VAE_AUTH", "cy:pw")
    assert app.main(["--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")]) == 0
    assert launched.calls[-1]["server_name"] == "0.0.0.0" and launched.calls[-1]["auth"] == [("cy", "pw")]


def test_insecure_and_loopback_start_without_a_password(launched, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "create_app", lambda ws, checkpoint=None, **kw: (gr.Blocks(), None))
    for argv in (["--host", "0.0.0.0", "--insecure"], ["--host", "localhost"], ["--host", "::1"],
                 ["--host", "127.0.0.2"], []):
        assert app.main([*argv, "--data-dir", str(tmp_path / "d")]) == 0, argv
        assert launched.calls[-1].get("auth") is None


@pytest.mark.parametrize("content,message", [("ann\n", "line 1"), ("ann:pw\n:pw\n", "line 2"),
                                             ("bob:\n", "line 1"), ("# nothing\n", "no user")])
def test_bad_auth_files_are_refused(launched, tmp_path, capsys, content, message):
    auth = tmp_path / "auth.txt"
    auth.write_text(content)
    assert app.main(["--share", "--auth-file", str(auth)]) == 2
    err = capsys.readouterr().err
    assert str(auth) in err and message in err
    assert app.main(["--auth-file", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert launched.calls == []


def test_allow_dir_must_be_a_folder(launched, tmp_path, capsys):
    assert app.main(["--allow-dir", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "nope" in capsys.readouterr().err and launched.calls == []


def test_the_served_app_does_not_walk_the_home_folder(launched, roots, tmp_path, monkeypatch):
    """As probed: '~' in the Dataset tab of ``python app.py`` read the whole home folder."""
    monkeypatch.setenv("HOME", str(roots["secret"]))
    refused: list[str] = []

    def while_serving() -> None:
        tab = launched.apps[-1].dataset
        with pytest.raises(PreprocessError, match="--allow-dir") as e:
            tab.build_store("folder", "~", None, "home", "digits", *TINY_ARGS, progress=no_progress)
        refused.append(str(e.value))

    launched.during = while_serving
    assert app.main(["--data-dir", str(tmp_path / "data")]) == 0
    assert refused and not (tmp_path / "data" / "stores" / "home").exists()


def test_the_dataset_tab_reads_only_allowed_folders(launched, roots, tmp_path):
    """The app that ``main`` serves: its Dataset tab refuses a folder outside the data folder and the
    examples, and reads one given with --allow-dir (which is not served as files)."""
    data = tmp_path / "data"
    (data / "mine").mkdir(parents=True)
    for f in (roots["allowed"] / "clips").iterdir():
        (data / "mine" / f.name).write_bytes(f.read_bytes())
    built: dict[str, str] = {}

    def while_serving() -> None:
        tab = launched.apps[-1].dataset
        with pytest.raises(PreprocessError, match="--allow-dir"):
            tab.build_store("folder", str(roots["secret"]), None, "x", "digits", *TINY_ARGS, progress=no_progress)
        with pytest.raises(PreprocessError, match="folder field is empty"):
            tab.build_store("folder", "  ", None, "x", "digits", *TINY_ARGS, progress=no_progress)
        for name, folder in (("x", roots["allowed"] / "clips"), ("y", data / "mine")):
            built[name] = tab.build_store("folder", str(folder), None, name, "digits", *TINY_ARGS,
                                          progress=no_progress)[tab.summary]

    launched.during = while_serving
    assert app.main(["--data-dir", str(data), "--allow-dir", str(roots["allowed"])]) == 0
    assert "4 clips" in built["x"] and "4 clips" in built["y"]
    served = launched.calls[-1]["allowed_paths"]
    assert not any(str(roots["allowed"]) in p or str(data) in p for p in served)


def test_each_app_gets_its_own_temp_folder_removed_at_exit(launched, tmp_path):
    before = os.environ["GRADIO_TEMP_DIR"]
    for _ in range(2):
        assert app.main(["--data-dir", str(tmp_path / "data")]) == 0
    first, second = launched.calls
    assert first["temp_existed"] and second["temp_existed"]
    assert first["temp_dir"] != second["temp_dir"] and before not in (first["temp_dir"], second["temp_dir"])
    assert Path(first["temp_dir"]).parent == Path(tempfile.gettempdir())
    for call, built in zip(launched.calls, launched.apps):
        assert Path(call["cache"]) == Path(call["temp_dir"])  # Gradio's cache and uploads go there
        assert Path(call["temp_dir"]) in Path(built.ws.audio_dir).parents  # and so do the app's sounds
        assert not any(call["temp_dir"] in p for p in call["allowed_paths"])
        assert not Path(call["temp_dir"]).exists()  # removed when the server stopped
    assert os.environ["GRADIO_TEMP_DIR"] == before
