"""The run folder: the interface between stages (see ``docs/run_dir.md``).

Writes are atomic (temp file, then rename) so an interrupted stage never leaves a half file, and
an existing run is never overwritten unless the user asks. A run folder is only ever obliviate's:
it carries a marker file (``.obliviate-run``) from its creation, ``--overwrite`` replaces only a
marked folder and, in it, only the files obliviate writes, and one process at a time holds it
(:mod:`obliviate.train.run_lock`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obliviate.errors import UserError
from obliviate.io import atomic_write_text
from obliviate.train.run_lock import LOCK_FILES, check_not_locked, lock_run_dir, release_run_dir

if TYPE_CHECKING:
    from obliviate.config import RunConfig

MARKER_FILE = ".obliviate-run"
MARKER_VERSION = 1

# What obliviate writes at the top of a run folder (docs/run_dir.md; train/loop.py, train/checkpoint.py,
# gating/, methods/npo.py's reference cache, eval/results.py, report/, the demos, the in-context
# baseline). ``--overwrite`` removes these and nothing else.
PROJECT_FILES = frozenset({
    "config.yaml", "env.json", "train_log.jsonl", "train_summary.json", "early_stopping.jsonl",
    "early_stopping.json", "forget_gate.jsonl", "reference_logprobs.json", "summary.json", "report.html",
})
PROJECT_FOLDERS = frozenset({"checkpoints", "model", "data", "eval", "generations", "plots"})
# The demos' stage folders: run folders themselves, cleared by the same rules (and under their own lock).
STAGE_FOLDERS = frozenset({"finetune", "unlearn"})


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` carries obliviate's run-folder marker."""
    return (Path(path) / MARKER_FILE).is_file()


def _contents(path: Path) -> list[Path]:
    """What the folder holds besides the marker and the lock (a folder holding only those is empty)."""
    return [p for p in path.iterdir() if p.name != MARKER_FILE and p.name not in LOCK_FILES]


def holds_a_run(path: Path) -> bool:
    """Whether ``path`` is a folder with something in it besides the marker and the lock."""
    path = Path(path)
    return path.is_dir() and bool(_contents(path))


def _is_project_entry(entry: Path) -> bool:
    name = entry.name
    if name in PROJECT_FILES or name in PROJECT_FOLDERS:
        return True
    # A temporary left by an interrupted atomic write: ".<name>.<random>.tmp", ".model.tmp"...
    known = PROJECT_FILES | PROJECT_FOLDERS | {MARKER_FILE}
    return name.startswith(".") and any(name.startswith(f".{k}.") for k in known)


def check_writable(path: Path) -> None:
    """A one-line ``UserError`` unless ``path`` is, or can be made as, a writable folder. Writes nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"run folder {path} is a file, not a folder; pick another --run-dir")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"cannot make run folder {path}: {existing} is a file, not a folder; set run.output_dir or --run-dir to a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write run folder {path}: {existing} is not writable; pick another --run-dir")


def _refuse_foreign(path: Path) -> None:
    if path.is_dir() and not is_run_folder(path) and _contents(path):
        raise UserError(
            f"run folder {path} already exists and is not an obliviate run folder (no {MARKER_FILE} marker), "
            "so nothing in it is replaced; pick another --run-dir"
        )


def config_inputs(config: RunConfig) -> list[tuple[str, Path]]:
    """The local files and folders a run reads, by field: the model when ``model.name`` is a local
    path, ``train.lora.init_from``, the data files and early stopping's prompt files."""
    inputs: list[tuple[str, Path]] = []
    model = Path(config.model.name).expanduser()
    if model.exists():
        inputs.append(("model.name", model))
    if config.train.lora.init_from is not None:
        inputs.append(("train.lora.init_from", Path(config.train.lora.init_from).expanduser()))
    for role in ("forget", "retain", "random_answers"):
        spec = getattr(config.data, role)
        if spec is not None and spec.format != "hf" and not spec.path.startswith("builtin:"):
            inputs.append((f"data.{role}.path", config.resolve_path(spec.path)))
    if config.early_stopping is not None:
        for name in ("prompts", "retain_prompts"):
            value = getattr(config.early_stopping, name)
            if value is not None and not str(value).startswith("builtin:"):
                inputs.append((f"early_stopping.{name}", config.resolve_path(str(value))))
    return inputs


def is_first_rank() -> bool:
    """True unless this process is a non-zero rank of a distributed launch (torchrun / accelerate
    set ``RANK``): the folder checks must run once, or a later rank sees the first one's new folder."""
    return os.environ.get("RANK", "0") in ("", "0")


def check_run_dir(
    path: Path, *, inputs: Iterable[tuple[str, Path]] = (), resume: bool = False, own: Iterable[Path] = ()
) -> None:
    """Everything about the run folder that can be checked before a model loads; writes nothing.

    Refuses (one-line ``UserError``): a folder that cannot be written; a non-empty folder without
    the marker; a folder another process holds; a folder that holds, is, or lies inside one of
    ``inputs`` (``(field, path)`` pairs: what the run reads, which ``--overwrite`` could delete or
    the run write over). A resumed run deletes nothing, and reads its in-memory rows back from its
    own ``data/``, so only its model input is checked then; ``own`` are files the run writes itself.
    """
    path = Path(path)
    if not is_first_rank():
        return  # the other ranks of a distributed launch follow rank 0, which checks and makes the folder
    check_writable(path)
    _refuse_foreign(path)
    check_not_locked(path)
    folder = path.resolve()
    skip = {Path(p).resolve() for p in own}
    for field, value in inputs:
        if resume and field.startswith(("data.", "early_stopping.")):
            continue
        item = Path(value).resolve()
        if item in skip:
            continue
        if item == folder or folder in item.parents or item in folder.parents:
            relation = "is" if item == folder else ("holds" if folder in item.parents else "lies inside")
            raise UserError(
                f"{field}: run folder {path} {relation} {value}, an input of this run; "
                "pick a --run-dir apart from the model and the data"
            )


def prepare_run_dir(path: Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create (or reopen, or clear) the run folder and take its lock; returns the folder.

    A new or empty folder gets the marker. An existing run is refused unless resuming (kept as it
    is) or overwriting: then only what obliviate writes there goes (:data:`PROJECT_FILES`,
    :data:`PROJECT_FOLDERS`, marked stage folders by the same rules); files the user put in the
    folder are kept, as are lock files. A non-empty folder without the marker is refused whatever
    the flags. The lock is held until :func:`release_run_dir` (or the process ends).
    """
    path = Path(path)
    check_writable(path)
    _refuse_foreign(path)
    if resume and not (path.is_dir() and _contents(path)):
        raise UserError(f"cannot resume: run folder {path} does not exist")
    path.mkdir(parents=True, exist_ok=True)
    lock_run_dir(path)
    try:
        _refuse_foreign(path)  # again, now that no other process can change it
        if _contents(path) and not resume:
            if not overwrite:
                raise UserError(f"run folder {path} already exists; pass --overwrite to replace it or --resume to continue it")
            _clear(path)
        if not is_run_folder(path):
            created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            atomic_write_text(path / MARKER_FILE, json.dumps({"obliviate_run": MARKER_VERSION, "created": created}) + "\n")
    except BaseException:
        release_run_dir(path)
        raise
    return path


def _clear(folder: Path) -> None:
    """Remove what obliviate wrote in ``folder`` (a marked run folder whose lock this process holds)."""
    for stage in STAGE_FOLDERS:  # a stage another process is running stops the clearing before it starts
        if is_run_folder(folder / stage):
            check_not_locked(folder / stage)
    for entry in _contents(folder):
        if entry.name in STAGE_FOLDERS and entry.is_dir() and not entry.is_symlink():
            if is_run_folder(entry):
                lock_run_dir(entry)
                try:
                    _clear(entry)
                    (entry / MARKER_FILE).unlink(missing_ok=True)
                finally:
                    release_run_dir(entry)
            continue  # an unmarked stage folder is not ours to clear
        if not _is_project_entry(entry):
            continue  # the user's own file: kept
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(seed: int, precision: str, extra: dict | None = None) -> dict[str, Any]:
    import accelerate
    import peft
    import torch
    import transformers

    from obliviate import __version__
    from obliviate.models.hardware import device_name

    return {
        "obliviate": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "device": device_name(),
        "cuda": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "seed": seed,
        "git_sha": git_sha(),
        **(extra or {}),
    }
