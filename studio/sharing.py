"""Serving the app beyond this machine safely: passwords, the exposure check, the folders the Dataset tab
may read, and a private temporary folder per app (issue #12, "Safe sharing"). ``app.main`` applies them
before anything is built or served."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .workspace import Workspace

AUTH_ENV = "SOUND_VAE_AUTH"  # "user:password": a password without --auth-file
log = logging.getLogger("sound-vae-app")


class StartError(Exception):
    """A reason not to start the server: printed as one ``error:`` line, exit status 2."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only takes connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name may resolve to any interface


def _credentials(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise StartError(f"{where}: expected user:password, both non-empty")  # never echo a password
    return user.strip(), password


def read_auth(auth_file: str | None, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(user, password) pairs from ``auth_file`` (``user:password`` lines; blank lines and ``#``
    comments skipped) and from ``$SOUND_VAE_AUTH`` (one ``user:password``)."""
    pairs = []
    if auth_file:
        try:
            lines = Path(auth_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise StartError(f"--auth-file {auth_file}: cannot read it ({e})") from None
        pairs = [_credentials(line, f"--auth-file {auth_file}, line {n}") for n, line in enumerate(lines, 1)
                 if line.strip() and not line.lstrip().startswith("#")]
        if not pairs:
            raise StartError(f"--auth-file {auth_file} holds no user:password line; write one per user")
    if env.get(AUTH_ENV):
        pairs.append(_credentials(env[AUTH_ENV], f"${AUTH_ENV}"))
    return pairs


def check_exposure(args: argparse.Namespace, auth: list[tuple[str, str]]) -> None:
    """Refuse to serve beyond this machine (``--share``, a non-loopback ``--host``) without a password,
    unless ``--insecure`` says so."""
    exposed = [what for what, yes in (("--share", args.share), (f"--host {args.host}", not is_loopback(args.host)))
               if yes]
    if not exposed or auth:
        return
    if not args.insecure:
        raise StartError(f"refusing to serve with {' and '.join(exposed)} without a password: anyone who reaches "
                         "the page could read the allowed server folders, fill the disk and use this machine. "
                         f"Give passwords with --auth-file FILE (user:password lines) or {AUTH_ENV}=user:password, "
                         "or pass --insecure to serve without one")
    log.warning("serving with %s and no password (--insecure): anyone who reaches the page can use it",
                " and ".join(exposed))


def allowed_dirs(ws: Workspace, extra: Sequence[str]) -> list[Path]:
    """The folders the Dataset tab may read: the data folder, the examples and each ``--allow-dir``."""
    for d in extra:
        if not Path(d).expanduser().is_dir():
            raise StartError(f"--allow-dir {d}: no such folder on this machine")
    return [Path(d).expanduser().resolve() for d in (ws.data_dir, ws.examples_dir, *extra)]


@contextlib.contextmanager
def private_temp_dir() -> Iterator[Path]:
    """A fresh folder for this app's temporary files while it runs (removed after): Gradio's uploads and
    file cache (``GRADIO_TEMP_DIR``, which Gradio serves), its examples cache, and the sounds and images
    the app writes. Apps on one host thus never serve each other's files."""
    tmp = Path(tempfile.mkdtemp(prefix="sound-vae-app-")).resolve()
    names = {"GRADIO_TEMP_DIR": tmp, "GRADIO_EXAMPLES_CACHE": tmp / "examples-cache"}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(v) for k, v in names.items()})
    try:
        yield tmp
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (``kill``, a service stopping) into a normal exit, so the temporary folder is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
