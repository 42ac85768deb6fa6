"""Temporary files and folders of writers, named ``.NAME.tmp-PID`` beside what they become (a store being
built, a checkpoint file being written): renamed into place when complete, so a later writer can tell the
ones a killed process left behind and remove them."""

from __future__ import annotations

import os
import re
from pathlib import Path

_TMP = re.compile(r"^\..+\.tmp-(\d+)$")


def tmp_path(path: Path) -> Path:
    """This process's temporary name for ``path``: ``.NAME.tmp-PID`` in the same folder."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def left_by_dead_writer(name: str) -> bool:
    """Whether ``name`` is a temporary name (:func:`tmp_path`) of a process that no longer runs (POSIX;
    elsewhere none counts, as there is no safe way to ask whether a process runs: on Windows ``os.kill``
    would end it)."""
    m = _TMP.match(name)
    if m is None or os.name != "posix" or int(m[1]) == os.getpid():
        return False
    try:
        os.kill(int(m[1]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (OverflowError, ValueError):  # not a possible pid
        return True
    except PermissionError:  # runs as another user
        return False
    return False
