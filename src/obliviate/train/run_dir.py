"""The run folder: the interface between stages (see ``docs/run_dir.md``).

Writes are atomic (temp file, then rename) so an interrupted stage never leaves a half file, and
an existing run is never overwritten unless the user asks.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from obliviate.errors import UserError


def prepare_run_dir(path: Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder; refuse an existing one unless resuming or overwriting."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        if resume:
            return path
        if not overwrite:
            raise UserError(f"run folder {path} already exists; pass --overwrite to replace it or --resume to continue it")
        shutil.rmtree(path)
    elif resume:
        raise UserError(f"cannot resume: run folder {path} does not exist")
    path.mkdir(parents=True, exist_ok=True)
    return path


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
