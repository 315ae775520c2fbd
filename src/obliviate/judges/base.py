"""The judge contract: ``judge(prompts, responses) -> list[Verdict]``, batched and cached.

A judge decides, for each (prompt, response) pair, whether the response is harmful. Subclasses
implement :meth:`Judge._judge_batch`; the base class validates the inputs, splits them in batches,
and caches verdicts in memory and, when a cache folder is given, on disk (one JSON Lines file per
judge id, appended as verdicts come in, so an interrupted evaluation resumes where it stopped).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Verdict:
    """What a judge says about one response.

    ``harmful``: the response gives the harmful help asked for. ``score``: the judge's confidence
    that it is harmful, in [0, 1]. ``label``: a judge-specific category ("refusal", "degenerate",
    "complied", "harmful", "safe", "unsafe", ...).
    """

    harmful: bool
    score: float
    label: str


def label_counts(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """How many verdicts carry each label, in the order the labels first appear."""
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.label] = counts.get(v.label, 0) + 1
    return counts


def cache_key(judge_id: str, prompt: str, response: str) -> str:
    """A stable key for one judged pair (hashing keeps the cache file small and free of the
    texts themselves)."""
    digest = hashlib.sha256()
    for part in (judge_id, prompt, response):
        data = part.encode("utf-8")
        # Length-prefix every part so ("ab", "c") and ("a", "bc") cannot collide.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class Judge(ABC):
    """Base class of every judge.

    Subclasses set ``name`` (the registry name) and implement ``judge_id`` (a string that changes
    whenever the verdicts could change: model, weights, prompt version) and ``_judge_batch``.
    """

    name: str = "judge"

    def __init__(self, *, batch_size: int = 16, cache_dir: str | Path | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, Verdict] = {}
        self._disk_loaded = False

    @property
    @abstractmethod
    def judge_id(self) -> str:
        """Identifies the judge and everything its verdicts depend on."""

    @abstractmethod
    def _judge_batch(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        """Verdicts for one batch, in order, without caching."""

    def describe(self) -> str:
        """One line naming the judge, for reports."""
        return self.judge_id

    # -- cache -----------------------------------------------------------------------------------

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.judge_id)[:80]
        short = hashlib.sha256(self.judge_id.encode()).hexdigest()[:12]
        return self.cache_dir / f"{safe}-{short}.jsonl"

    def _load_disk_cache(self) -> None:
        self._disk_loaded = True
        path = self._cache_file()
        if path is None or not path.exists():
            return
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                    self._memory[row["key"]] = Verdict(
                        harmful=bool(row["harmful"]), score=float(row["score"]), label=str(row["label"])
                    )
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted write: judge that pair again

    def _store(self, entries: list[tuple[str, Verdict]]) -> None:
        for key, verdict in entries:
            self._memory[key] = verdict
        path = self._cache_file()
        if path is None or not entries:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"key": k, **asdict(v)}) + "\n" for k, v in entries)
        # One write call per batch in append mode: other writers' lines are never interleaved
        # inside ours, and a crash loses at most the current batch.
        with path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def clear_cache(self) -> None:
        """Forget cached verdicts in memory (the disk file is left alone)."""
        self._memory.clear()

    # -- calling ---------------------------------------------------------------------------------

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]:
        """Verdicts for every pair, in input order; pairs seen before come from the cache."""
        prompts = list(prompts)
        responses = list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        for i, (p, r) in enumerate(zip(prompts, responses)):
            if not isinstance(p, str) or not isinstance(r, str):
                raise TypeError(f"pair {i}: prompt and response must be strings")
        if not self._disk_loaded:
            self._load_disk_cache()
        ident = self.judge_id
        keys = [cache_key(ident, p, r) for p, r in zip(prompts, responses)]
        # Judge each distinct missing pair once, even if it appears several times in the input.
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self._memory and key not in todo:
                todo[key] = i
        pending = list(todo.items())
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            verdicts = self._judge_batch(
                [prompts[i] for _, i in chunk], [responses[i] for _, i in chunk]
            )
            if len(verdicts) != len(chunk):
                raise RuntimeError(
                    f"judge {ident} returned {len(verdicts)} verdicts for {len(chunk)} pairs"
                )
            for verdict in verdicts:
                if not (0.0 <= verdict.score <= 1.0) or math.isnan(verdict.score):
                    raise RuntimeError(f"judge {ident} returned a score outside [0, 1]: {verdict}")
            self._store([(key, v) for (key, _), v in zip(chunk, verdicts)])
        return [self._memory[key] for key in keys]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.judge_id!r})"
