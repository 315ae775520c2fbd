"""User-facing errors.

A ``UserError`` is a problem with what the user gave us (a file, a field, a flag). The CLI prints
its message on one line and exits with code 2, without a traceback unless ``--debug`` is set.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input that the user can fix; the message says what would be valid."""

    exit_code = 2


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the run stops and names the checkpoint from before it."""

    exit_code = 3


class StorageError(Exception):
    """Writing a file failed (a full disk, a quota, a file size limit); the message names the folder
    and says to free space there. Its own exit code, so scripts can tell it from bad input."""

    exit_code = 4
