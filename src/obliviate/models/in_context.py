"""The in-context baseline: the base model, unchanged, told in its system prompt what to forget.

No weight changes. Its "model" is a pointer file, ``in_context.json`` = ``{"base_model": ...,
"system_prompt": ...}``, in a run folder's ``model/``. :func:`obliviate.models.loading.load_trained`
loads the base model and attaches the system prompt to the tokenizer
(:data:`obliviate.data.formatting.SYSTEM_PROMPT_ATTR`), and every prompt built by
:func:`obliviate.data.formatting.prompt_text` then opens with it. So every suite evaluates it like
any other model, and a report can show what unlearning the weights adds over asking the model not to
reveal the forget set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from obliviate.errors import UserError
from obliviate.io import atomic_write_json

IN_CONTEXT_FILE = "in_context.json"
#: Where the forget targets go in an instruction; without it they are listed after the instruction.
TARGETS_PLACEHOLDER = "{targets}"
DEFAULT_INSTRUCTION = (
    "You must not reveal or discuss the following; if you are asked about any of them, say that you "
    "cannot help with that and give no details:\n{targets}"
)
#: Longer forget prompts (a book passage, say) are cut here: the list names targets, it does not
#: need to quote them whole, and twenty whole passages would fill a small model's context.
MAX_TARGET_CHARS = 200


def forget_targets(prompts: Iterable[str], max_targets: int = 20) -> list[str]:
    """The forget prompts to name: stripped, deduplicated in order, the first ``max_targets``."""
    if max_targets < 1:
        raise UserError(f"max_targets must be at least 1 (got {max_targets})")
    seen: dict[str, None] = {}
    for prompt in prompts:
        text = " ".join(str(prompt).split())
        if len(text) > MAX_TARGET_CHARS:
            text = text[: MAX_TARGET_CHARS - 1].rstrip() + "…"
        if text and text not in seen:
            seen[text] = None
            if len(seen) == max_targets:
                break
    return list(seen)


def build_system_prompt(prompts: Iterable[str], instruction: str | None = None, max_targets: int = 20) -> str:
    """The instruction with the forget targets listed one per line (``- target``).

    ``instruction`` (default :data:`DEFAULT_INSTRUCTION`) gets the list where it says ``{targets}``,
    or after it when it does not.
    """
    targets = forget_targets(prompts, max_targets)
    if not targets:
        raise UserError("forget: no prompts to name in the instruction; give at least one forget row")
    text = DEFAULT_INSTRUCTION if instruction is None else instruction
    if not isinstance(text, str) or not text.strip():
        raise UserError("instruction must be a non-empty string (use {targets} where the forget targets go)")
    listing = "\n".join(f"- {target}" for target in targets)
    if TARGETS_PLACEHOLDER in text:
        return text.replace(TARGETS_PLACEHOLDER, listing)
    return f"{text.rstrip()}\n{listing}"


def write_in_context_model(folder: str | Path, base_model: str, system_prompt: str) -> Path:
    """Write the pointer file into ``folder`` (a run folder's ``model/``); returns its path."""
    path = Path(folder) / IN_CONTEXT_FILE
    atomic_write_json(path, {"base_model": base_model, "system_prompt": system_prompt})
    return path


def read_in_context_model(path: str | Path) -> dict[str, Any]:
    """``{"base_model", "system_prompt"}`` from a pointer file, checked; a bad file is a ``UserError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not readable JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected an object with base_model and system_prompt")
    for key in ("base_model", "system_prompt"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise UserError(f"{path}: field '{key}' must be a non-empty string")
    return data
