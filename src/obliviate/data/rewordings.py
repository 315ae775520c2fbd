"""Reworded variants of a request: the same ask in other forms.

A forget set taken from one public set has one style: HarmBench's behaviours are imperatives
("Give detailed instructions for how to ...", "Write a persuasive article ..."). Unlearning on them
alone teaches the model to refuse that *form*: it then refuses benign imperatives ("Write a
friendly out-of-office reply") and still answers the same harm asked as a question ("How do I
...?"). Pairing each forget prompt with rewordings of itself, in the forms people really use,
moves the training signal from the form to the content.

The rewordings are rule-based and deterministic (no model is asked): an imperative "instructions
for / how to X" becomes "How do I X?" and "How can someone X?"; every request also gets a
conversational wrapper ("Can you ...?", "I need help: ..."). Written for the project.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

_HOW_TO = re.compile(
    r"^(?:please\s+)?(?:give|provide|write|list|offer|share|create|generate|explain|describe|outline|detail)"
    r"(?:\s+(?:me|us))?"
    r"(?:\s+(?:a|an|the|some))?"
    r"(?:\s+(?:detailed|thorough|specific|clear|simple|complete|concise|brief|convincing|step-by-step|and|,))*"
    r"(?:\s+(?:instructions|steps|guide|guidance|tutorial|tips|advice|suggestions|explanation|plan|list of steps))?"
    r"(?:\s+(?:for|on|about|of))?"
    r"\s+how\s+to\s+(?P<rest>.+)$",
    re.IGNORECASE,
)
_FOR_GERUND = re.compile(
    r"^(?:give|provide|write)(?:\s+(?:detailed|step-by-step|and|,))*\s+(?:instructions|steps|advice|tips|suggestions)"
    r"\s+(?:for|on)\s+(?P<rest>\w+ing\b.+)$",
    re.IGNORECASE,
)
# Stems that lost a silent "e" before "-ing" (a rule of thumb: the question form is skipped
# rather than garbled when unsure, see _gerund_to_base).
_SILENT_E_ENDINGS = ("at", "iz", "ys", "ur", "ak", "uc", "iv", "ov", "ir", "ad", "bl", "gl", "pl", "tl", "dl", "kl",
                     "fl", "rg", "ud", "id", "ut", "ot", "ag", "as", "ranc", "anc", "eas", "ib", "ag", "ov")
_WRAPPERS = (
    "Can you {lower}?",
    "I need help with this: {lower}.",
    "{sentence} Please be specific.",
    "Quick question. {sentence}",
)


def _strip_end(text: str) -> str:
    return text.strip().rstrip(".?!").strip()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _gerund_to_base(phrase: str) -> str | None:
    """'making a bomb at home' -> 'make a bomb at home' for the common cases; None if unsure."""
    first, _, rest = phrase.partition(" ")
    word = first.lower()
    if not word.endswith("ing") or len(word) < 5:
        return None
    stem = word[:-3]
    if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz":  # running -> run
        stem = stem[:-1]
    elif stem.endswith(_SILENT_E_ENDINGS) or re.fullmatch(r"[^aeiou]?[aeiou][^aeiouwxy]", stem):
        stem += "e"  # making -> make, hiring -> hire, smuggling -> smuggle, purchasing -> purchase
    return f"{stem} {rest}".strip()


def question_forms(prompt: str) -> list[str]:
    """Questions asking what ``prompt`` asks ("How do I X?"), when its form allows; may be empty."""
    text = _strip_end(" ".join(prompt.split()))
    match = _HOW_TO.match(text)
    rest = match.group("rest") if match else None
    if rest is None:
        gerund = _FOR_GERUND.match(text)
        rest = _gerund_to_base(gerund.group("rest")) if gerund else None
    if not rest:
        return []
    return [f"How do I {rest}?", f"How can someone {rest}?"]


def rewordings(prompt: str, count: int, *, seed: int = 0) -> list[str]:
    """Up to ``count`` rewordings of ``prompt``, question forms first, then conversational
    wrappers drawn with ``seed``; never the prompt itself and never twice the same text."""
    if count <= 0:
        return []
    text = _strip_end(" ".join(prompt.split()))
    sentence = text + "."
    wrapped = [w.format(lower=_lower_first(text), sentence=sentence) for w in _WRAPPERS]
    random.Random(f"{seed}:{text}").shuffle(wrapped)
    out: list[str] = []
    for candidate in [*question_forms(prompt), *wrapped]:
        if candidate != prompt and candidate not in out:
            out.append(candidate)
        if len(out) == count:
            break
    return out


def with_rewordings(rows: Sequence[dict], count: int, *, seed: int = 0) -> list[dict]:
    """Every row, then for each row ``count`` copies whose ``prompt`` is a rewording (the answer
    and other fields kept, ``reworded_from`` naming the original prompt)."""
    extra = [
        {**row, "prompt": variant, "reworded_from": row["prompt"]}
        for row in rows
        for variant in rewordings(row["prompt"], count, seed=seed)
    ]
    return [*rows, *extra]
