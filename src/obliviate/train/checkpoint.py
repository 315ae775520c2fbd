"""Atomic, resumable checkpoints: trainable weights, optimiser, scheduler and RNG state.

Layout: ``checkpoints/step-N/{trainable.safetensors, optimizer.pt, trainer_state.pt, rng-R.pt}``;
``trainer_state.pt`` also holds the method's own state (``Method.state_dict``, e.g. a multiplier).
A checkpoint is written to a hidden temp folder and renamed into place, so a crash mid-write
leaves the previous checkpoint intact. Only tensors and plain containers are stored; they load
with ``torch.load(weights_only=True)``, which cannot execute code.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from obliviate.errors import StorageError
from obliviate.models.loading import refusing_pickles

STEP_DIR = re.compile(r"^step-(\d+)$")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = STEP_DIR.match(child.name)
        if match and (child / "trainer_state.pt").exists():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(folder: Path) -> Optional[tuple[int, Path]]:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(
    folder: Path, step: int, model: torch.nn.Module, optimizer, scheduler, *, is_main: bool, rank: int, keep: int,
    method_state: Optional[dict] = None,
) -> Path:
    """Write ``folder/step-<step>`` (weights from the main process, RNG state from every rank).

    A failed write (a full disk, a quota) removes the half-written temporary folder, leaves the
    earlier checkpoints as they were and raises ``StorageError`` naming the folder."""
    final = folder / f"step-{step}"
    tmp = folder / f".tmp-step-{step}"
    try:
        _write_checkpoint(
            folder, step, model, optimizer, scheduler, is_main=is_main, rank=rank, keep=keep, method_state=method_state
        )
    except (OSError, RuntimeError, SafetensorError) as err:
        # safetensors and torch.save report a failed write as their own errors, not OSError.
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(_write_failure(folder, step, err)) from None
    return final


def _write_failure(folder: Path, step: int, err: BaseException) -> str:
    space = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    if isinstance(err, OSError) and err.errno is not None:
        text = err.strerror or text
        full = err.errno in space
    else:
        full = any(word in text.lower() for word in ("no space", "too large", "quota", "unexpected pos", "failed writing"))
    hint = f"free space in {folder}" if full else f"check that {folder} is writable and has free space"
    return (
        f"could not write the checkpoint of step {step} in {folder} ({text}); {hint}, then rerun with --resume "
        "(the earlier checkpoints are intact)"
    )


def _write_checkpoint(
    folder: Path, step: int, model: torch.nn.Module, optimizer, scheduler, *, is_main: bool, rank: int, keep: int,
    method_state: Optional[dict] = None,
) -> None:
    final = folder / f"step-{step}"
    tmp = folder / f".tmp-step-{step}"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    _barrier()
    torch.save(rng, tmp / f"rng-{rank}.pt")
    _barrier()
    if is_main:
        # trainer_state.pt is written last: a folder without it is not a checkpoint.
        state = {"step": step, "scheduler": scheduler.state_dict(), "method": dict(method_state or {})}
        torch.save(state, tmp / "trainer_state.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for _, old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, *, rank: int, method=None) -> int:
    """Restore a checkpoint into live objects (``method``'s own state too, when given); returns the
    step it was taken at."""
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint {path} does not match the model (unknown parameter {missing[0]})")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(_load_plain(path / "optimizer.pt"))
    state = _load_plain(path / "trainer_state.pt")
    scheduler.load_state_dict(state["scheduler"])
    if method is not None:
        method.load_state_dict(state.get("method", {}))  # checkpoints older than method state hold none
    rng_file = path / f"rng-{rank}.pt"
    if rng_file.exists():
        rng = _load_plain(rng_file)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return int(state["step"])


def _load_plain(file: Path):
    """Tensors and plain containers only; a file with other pickled objects is a one-line error."""
    with refusing_pickles(file):
        return torch.load(file, weights_only=True)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
