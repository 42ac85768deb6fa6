"""The one base class for errors a user can cause and fix.

Every error raised because of what a user supplied or asked for (a file, a parameter, a missing
model or dataset) derives from :class:`UserError`, and its message says what is wrong and what to
do. The CLI and the app catch this one class and show the message; anything else is a bug, shown
with its traceback (CLI) or logged with a short generic message (app).
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message names the file or value and what to do."""


class InputError(UserError, ValueError):
    """A value the user gave does not fit (wrong sample rate, unknown choice, out of range)."""
