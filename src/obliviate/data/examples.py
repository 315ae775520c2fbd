"""The unit of data: a prompt and a response, plus optional fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One dialogue turn. ``extra`` keeps any other fields of the source row (ids, labels...)."""

    prompt: str
    response: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "response": self.response, **self.extra}
