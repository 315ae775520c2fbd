"""One process at a time per run folder: a ``filelock`` lock inside the folder.

The lock file (``.obliviate-run.lock``) sits in the run folder itself, so it names exactly the
folder it guards whatever path leads there. ``filelock`` does not record who holds a lock, so
the holder writes its pid beside it (``.obliviate-run.lock.pid``) for the refusal message.
Locks are re-entrant within a process: a demo that holds its folder may run stages in it, and
a run that calls ``prepare_run_dir`` after checking the folder does not lock itself out.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

from obliviate.errors import UserError
from obliviate.io import atomic_write_text

LOCK_FILE = ".obliviate-run.lock"
PID_FILE = ".obliviate-run.lock.pid"
LOCK_FILES = frozenset({LOCK_FILE, PID_FILE})

# The locks this process holds, by resolved folder (a second FileLock object on the same file
# would wait for the first, even in the same process).
_held: dict[Path, FileLock] = {}


def holds_lock(folder: Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return Path(folder).resolve() in _held


def lock_depth(folder: Path) -> int:
    """How many times this process has taken ``folder``'s lock and not yet released it."""
    lock = _held.get(Path(folder).resolve())
    return lock.lock_counter if lock is not None else 0


def _holder(folder: Path) -> str:
    try:
        pid = (folder / PID_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "a process that did not record its pid"


def _in_use(folder: Path) -> UserError:
    return UserError(
        f"run folder {folder} is in use by another obliviate process ({_holder(folder)}); "
        "wait for it to finish or pick another --run-dir"
    )


def lock_run_dir(folder: Path) -> None:
    """Take ``folder``'s lock (the folder must exist) or raise a one-line ``UserError`` naming the
    holder; never waits. Each call needs a :func:`release_run_dir`."""
    key = Path(folder).resolve()
    lock = _held.get(key)
    if lock is None:
        lock = FileLock(str(key / LOCK_FILE), timeout=0)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise _in_use(Path(folder)) from None
    if key not in _held:
        _held[key] = lock
        atomic_write_text(key / PID_FILE, f"{os.getpid()}\n")


def release_run_dir(folder: Path) -> None:
    """Undo one :func:`lock_run_dir`; the last one lets the folder go (no-op if not held)."""
    key = Path(folder).resolve()
    lock = _held.get(key)
    if lock is None:
        return
    if lock.lock_counter == 1:
        # The pid goes first, while the lock is still ours: a new holder's pid is never removed.
        (key / PID_FILE).unlink(missing_ok=True)
        del _held[key]
    lock.release()


def check_not_locked(folder: Path) -> None:
    """Raise the ``in use`` ``UserError`` if another process holds ``folder``'s lock; writes
    nothing (a folder that has never been locked has no lock file to try)."""
    folder = Path(folder)
    if not (folder / LOCK_FILE).is_file() or holds_lock(folder):
        return
    probe = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        raise _in_use(folder) from None
    except OSError:
        return  # an unreadable lock file: taking the lock later says what is wrong
    probe.release()
