"""Answer sets a method trains towards, read from a user's file or one shipped with the package.

Used by ``idk_nll`` and ``dpo`` (the "I don't know" answers). No method lives here; it is a
loader, kept apart so that neither method imports the other.

Accepted forms of ``answers``:

- ``builtin:NAME``: ``src/obliviate/data/builtin/NAME.jsonl`` (``builtin:idk_answers``, written
  for this project, is the default);
- a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file whose rows have a ``response`` field;
- a ``.txt`` file, one answer per line; a ``.jsonl`` file whose first line is not a JSON object
  is read the same way (TOFU's ``idontknow.jsonl`` is plain lines under that suffix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from obliviate.data.examples import Example
from obliviate.data.loaders import iter_rows
from obliviate.errors import UserError

RESPONSE_FIELD = "response"


def resolve(spec: str, base_dir: Optional[Path] = None) -> str:
    """``spec`` with a relative path made relative to ``base_dir`` (the run config's folder)."""
    if spec.startswith("builtin:"):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return str(path)


def load_answers(spec: str, *, setting: str = "method.answers", base_dir: Optional[Path] = None) -> list[str]:
    """The non-empty answers of ``spec``; a missing, unreadable or empty file is a one-line
    ``UserError`` naming ``setting`` and the file (and the line, for a bad row)."""
    source = resolve(spec, base_dir)
    if not source.startswith("builtin:"):
        path = Path(source)
        if not path.exists():
            raise UserError(f"{setting}: answer file {path} does not exist (give a path or builtin:NAME)")
        if path.is_dir():
            raise UserError(f"{setting}: {path} is a folder; give a .jsonl/.json/.csv/.parquet or .txt file")
        if _plain_lines(path):
            answers = [line.strip() for line in _lines(path) if line.strip()]
            if not answers:
                raise UserError(f"{setting}: {path} holds no answers (one per line expected)")
            return answers
    answers = []
    for where, row in iter_rows(source):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object with a field '{RESPONSE_FIELD}' ({setting})")
        value = row.get(RESPONSE_FIELD)
        if not isinstance(value, str) or not value.strip():
            present = ", ".join(map(str, row)) or "none"
            raise UserError(
                f"{where}: field '{RESPONSE_FIELD}' missing or empty (row has: {present}); each row of "
                f"{setting} needs a non-empty '{RESPONSE_FIELD}' string, or give a .txt file with one answer per line"
            )
        answers.append(value.strip())
    if not answers:
        raise UserError(f"{setting}: {source} holds no answers (rows with a '{RESPONSE_FIELD}' field expected)")
    return answers


def _plain_lines(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return True
    if suffix != ".jsonl":
        return False
    first = next((line.strip() for line in _lines(path) if line.strip()), "")
    return bool(first) and not first.startswith("{")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read it ({err.__class__.__name__}: {err})") from None


def paired_answers(forget: list[Example], answers: list[str], rng) -> list[Example]:
    """One answer drawn with ``rng`` (the step's seeded generator: reproducible, survives a resume)
    for each forget prompt, in the forget rows' order, so row i pairs with forget row i."""
    picks = rng.integers(0, len(answers), size=len(forget))
    return [Example(example.prompt, answers[j]) for example, j in zip(forget, picks)]


class AnswerPool:
    """A method's answer set: read in ``setup`` (so a bad file stops the run before the first
    step, with relative paths taken from the config's folder) and drawn from at each step."""

    def __init__(self, spec: str):
        self.spec = spec
        self.answers: Optional[list[str]] = None

    def load(self, base_dir: Optional[Path] = None) -> None:
        self.answers = load_answers(self.spec, base_dir=base_dir)

    def pair(self, forget: list[Example], rng) -> list[Example]:
        """:func:`paired_answers` of this set (read now if ``setup`` did not run)."""
        if self.answers is None:
            self.load()
        return paired_answers(forget, self.answers, rng)
