"""The one progress-callback type shared by long-running steps (preprocessing, downloading, evaluating)."""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, what)``: ``done`` of ``total`` units (files, or bytes while downloading) and
what is being worked on. ``total`` is 0 when it is not known (a download whose size the server does not say)."""
