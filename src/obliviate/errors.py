"""User-facing errors.

A ``UserError`` is a problem with what the user gave us (a file, a field, a flag). The CLI prints
its message on one line and exits with code 2, without a traceback unless ``--debug`` is set.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input that the user can fix; the message says what would be valid."""

    exit_code = 2


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""

    exit_code = 3
