"""Plain-text corpora for the copyrighted-text scenario: passages, sentences, prompts, splits.

The copyright experiment of Yao et al. (arXiv 2310.10683) fine-tunes a model on a book until it
memorises it, unlearns part of it, and then prompts the model with the opening of each passage to
see whether it still reproduces the rest. This module turns any text into the pieces that
experiment needs:

- :func:`load_corpus` reads a ``.txt`` file (chapters found from heading lines, passages from
  paragraphs) or a ``.jsonl`` file (one passage per row, the text in a named field);
- :func:`split_sentences` is a regex sentence splitter that does not break after "Mr." or "e.g.";
- :func:`prefix_continuation_pairs` cuts each passage into a prompt and the continuation the model
  should (not) reproduce;
- :func:`token_blocks` packs texts into fixed-length token blocks for fine-tuning;
- :func:`split_by_chapter` / :func:`split_by_passage` make deterministic forget / unseen / retain
  splits.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.io import iter_jsonl

#: A heading line that opens a chapter: "Chapter 3", "CHAPTER IV. The Storm", "BOOK II.", "ACT I.",
#: "Part Two". The keyword must be followed by a number (digits, Roman or spelled out) so that a
#: line of prose that happens to start with "Part" or "Book" is not taken for a heading.
_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
)
DEFAULT_CHAPTER_PATTERN = (
    rf"^[ \t]*(?:chapter|book|act|part)[ \t]+(?:\d+|[ivxlc]+|{_NUMBER_WORDS})\b[^\n]{{0,80}}$"
)

#: Words that end with a period but rarely end a sentence (compared lower-case, without the dot).
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof st sr jr mt ft no nos vs gen col capt lt sgt rev hon gov sen rep pres
    fig figs vol vols ch pp ed eds approx dept est inc ltd co corp jan feb mar apr jun jul aug sep
    sept oct nov dec""".split()
)

_SENTENCE_END = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*(?=\s+)")
_NEXT_STARTS_SENTENCE = re.compile(r"\s+[\"'\u2018\u201c(\[]*[A-Z0-9]")


@dataclass(frozen=True)
class Passage:
    """A piece of a corpus: the unit that is memorised, prompted and split."""

    id: str
    text: str
    chapter: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class TextSplits:
    """Disjoint parts of a corpus.

    ``forget``: passages to unlearn. ``unseen``: passages held out from unlearning (still part of
    the memorised book) that show whether forgetting generalises beyond the passages trained on.
    ``retain``: the rest of the corpus.
    """

    forget: list[Passage]
    unseen: list[Passage]
    retain: list[Passage]

    def sizes(self) -> dict[str, int]:
        return {"forget": len(self.forget), "unseen": len(self.unseen), "retain": len(self.retain)}


# ---------------------------------------------------------------------------------------------
# Sentences


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences with regular expressions.

    A sentence ends at ``.``, ``!`` or ``?`` (plus closing quotes or brackets) followed by
    whitespace and a word that starts with a capital letter, a digit or an opening quote. A period
    does not end a sentence after a known abbreviation ("Mr.", "Dr.", "St."), a single capital
    letter (initials such as "J. R. Tolkien") or a dotted abbreviation ("e.g.", "U.S."). Whitespace
    inside each sentence is collapsed to single spaces.
    """
    flat = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(flat):
        end = match.end()
        if not _NEXT_STARTS_SENTENCE.match(flat, end):
            continue
        if match.group(0).startswith(".") and _is_abbreviation(flat[start:match.start()]):
            continue
        piece = flat[start:end].strip()
        if piece:
            sentences.append(piece)
        start = end
    tail = flat[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _is_abbreviation(before_period: str) -> bool:
    words = before_period.split()
    if not words:
        return False
    word = words[-1].lstrip("\"'(\u2018\u201c[")
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # an initial
    if "." in word and all(len(part) <= 2 for part in word.split(".")):
        return True  # e.g / i.e / U.S
    return word.lower() in ABBREVIATIONS


# ---------------------------------------------------------------------------------------------
# Passages


def passages_from_text(
    text: str,
    *,
    chapter_pattern: str | None = DEFAULT_CHAPTER_PATTERN,
    min_chars: int = 300,
    max_chars: int = 1200,
    id_prefix: str = "p",
) -> list[Passage]:
    """Cut a plain text into chapters (by heading lines) and passages (by paragraphs).

    Paragraphs are blocks separated by blank lines. Consecutive short paragraphs of a chapter are
    merged until a passage has at least ``min_chars`` characters (so that a 200-character prompt
    leaves a continuation), and a paragraph longer than ``max_chars`` is cut at sentence ends.
    Passages never cross a chapter heading. Whitespace is collapsed to single spaces: line breaks
    of verse carry no meaning for the word-level similarity metrics and would only add tokens.
    Text before the first heading is chapter ``"0"``; without a pattern everything is chapter
    ``"1"``. Chapter names are the heading lines.
    """
    if min_chars > max_chars:
        raise ValueError(f"min_chars ({min_chars}) must not exceed max_chars ({max_chars})")
    chapters = _chapters(text, chapter_pattern)
    passages: list[Passage] = []
    for chapter, body in chapters:
        pieces: list[str] = []
        for paragraph in re.split(r"\n\s*\n", body):
            flat = " ".join(paragraph.split())
            if flat:
                pieces.extend(_cut_long(flat, max_chars))
        current = ""
        for piece in pieces:
            current = f"{current} {piece}" if current else piece
            if len(current) >= min_chars:
                passages.append(Passage(f"{id_prefix}{len(passages):05d}", current, chapter))
                current = ""
        if current:
            # A short tail joins the chapter's previous passage when that keeps it within bounds.
            if passages and passages[-1].chapter == chapter and len(passages[-1].text) + len(current) < max_chars:
                last = passages.pop()
                passages.append(Passage(last.id, f"{last.text} {current}", chapter))
            else:
                passages.append(Passage(f"{id_prefix}{len(passages):05d}", current, chapter))
    return passages


def _chapters(text: str, pattern: str | None) -> list[tuple[str, str]]:
    if pattern is None:
        return [("1", text)]
    heading = re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    matches = list(heading.finditer(text))
    if not matches:
        return [("1", text)]
    chapters: list[tuple[str, str]] = []
    preface = text[: matches[0].start()]
    if preface.strip():
        chapters.append(("0", preface))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        chapters.append((" ".join(match.group(0).split()), text[match.end():end]))
    return chapters


def _cut_long(paragraph: str, max_chars: int) -> list[str]:
    if len(paragraph) <= max_chars:
        return [paragraph]
    out: list[str] = []
    current = ""
    for sentence in split_sentences(paragraph):
        if current and len(current) + 1 + len(sentence) > max_chars:
            out.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        out.append(current)
    return out


def load_corpus(
    path: str | Path,
    *,
    text_field: str = "text",
    chapter_field: str | None = None,
    id_field: str | None = None,
    chapter_pattern: str | None = DEFAULT_CHAPTER_PATTERN,
    min_chars: int = 300,
    max_chars: int = 1200,
) -> list[Passage]:
    """Read a corpus file into passages.

    ``.txt`` (or ``.md``): see :func:`passages_from_text`. ``.jsonl``: one passage per non-empty
    line, the text in ``text_field``; the chapter comes from ``chapter_field`` (else ``"1"``) and
    the id from ``id_field`` (else the line number). Other fields go to ``Passage.extra``.
    Raises ``UserError`` naming the file, line and field for a missing file, bad JSON, a missing
    or non-string text field, or a corpus with no text.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such corpus file (give a .txt or .jsonl file)")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md", ".text"):
        text = path.read_text(encoding="utf-8", errors="replace")
        passages = passages_from_text(
            text, chapter_pattern=chapter_pattern, min_chars=min_chars, max_chars=max_chars
        )
    elif suffix == ".jsonl":
        passages = _passages_from_jsonl(path, text_field, chapter_field, id_field)
    else:
        raise UserError(f"{path}: unknown corpus format '{suffix}' (valid: .txt, .md, .jsonl)")
    if not passages:
        raise UserError(f"{path}: the corpus holds no text")
    return passages


def _passages_from_jsonl(
    path: Path, text_field: str, chapter_field: str | None, id_field: str | None
) -> list[Passage]:
    passages: list[Passage] = []
    seen_ids: set[str] = set()
    for line_no, row in iter_jsonl(path):
        if text_field not in row:
            fields = ", ".join(sorted(map(str, row))) or "none"
            raise UserError(
                f"{path}, line {line_no}: no field '{text_field}' (fields here: {fields}); "
                "choose the text field with text_field"
            )
        text = row[text_field]
        if not isinstance(text, str):
            raise UserError(f"{path}, line {line_no}, field '{text_field}': expected a string")
        if chapter_field is not None and chapter_field not in row:
            raise UserError(f"{path}, line {line_no}: no field '{chapter_field}' (the chapter field)")
        if id_field is not None and id_field not in row:
            raise UserError(f"{path}, line {line_no}: no field '{id_field}' (the id field)")
        passage_id = str(row[id_field]) if id_field is not None else f"line{line_no}"
        if passage_id in seen_ids:
            raise UserError(f"{path}, line {line_no}, field '{id_field}': duplicate id '{passage_id}'")
        seen_ids.add(passage_id)
        chapter = str(row[chapter_field]) if chapter_field is not None else "1"
        used = {text_field, chapter_field, id_field}
        extra = {k: v for k, v in row.items() if k not in used}
        flat = " ".join(text.split())
        if flat:
            passages.append(Passage(passage_id, flat, chapter, extra))
    return passages


# ---------------------------------------------------------------------------------------------
# Prompts


def prefix_continuation_pairs(
    passages: Sequence[Passage],
    rule: Literal["chars", "words_fifth"] = "chars",
    prefix_chars: int = 200,
    max_continuation_chars: int | None = None,
) -> list[Example]:
    """Cut each passage into a prompt (its opening) and a response (the continuation).

    ``rule="chars"`` (Yao et al.): the first ``prefix_chars`` characters are the prompt and the
    rest the continuation. The cut moves back to the last whitespace at or before
    ``prefix_chars`` so that no word is split between prompt and continuation (a word that
    straddles the 200th character goes to the continuation); a passage whose first
    ``prefix_chars`` characters hold no whitespace is cut at exactly ``prefix_chars``.
    ``rule="words_fifth"``: the first fifth of the words (at least one) is the prompt.

    Whitespace at the cut is dropped from both sides; templates that concatenate the two raw
    (``template="none"`` in :mod:`obliviate.metrics.memorisation`) put one space back.
    ``max_continuation_chars`` caps the continuation, again at a word boundary, to bound
    generation cost. Passages too short to leave a continuation are skipped.
    ``extra`` holds ``passage_id``, ``chapter`` and ``rule``.
    """
    if rule not in ("chars", "words_fifth"):
        raise UserError(f"unknown prompt rule '{rule}' (valid: chars, words_fifth)")
    if rule == "chars" and prefix_chars < 1:
        raise UserError(f"prefix_chars must be at least 1, got {prefix_chars}")
    examples: list[Example] = []
    for passage in passages:
        text = passage.text
        if rule == "chars":
            cut = _word_cut(text, prefix_chars)
        else:
            starts = [m.start() for m in re.finditer(r"\S+", text)]
            if len(starts) < 2:
                continue
            cut = starts[max(1, len(starts) // 5)]
        prompt, response = text[:cut].rstrip(), text[cut:].lstrip()
        if max_continuation_chars is not None and len(response) > max_continuation_chars:
            response = response[: _word_cut(response, max_continuation_chars)].rstrip()
        if not prompt or not response:
            continue
        examples.append(
            Example(prompt, response, {"passage_id": passage.id, "chapter": passage.chapter, "rule": rule})
        )
    return examples


def _word_cut(text: str, limit: int) -> int:
    """Index at or before ``limit`` where a word starts (or ``limit`` if there is none)."""
    if len(text) <= limit:
        return len(text)
    if text[limit].isspace():
        return limit
    space = max(text.rfind(" ", 0, limit + 1), text.rfind("\n", 0, limit + 1), text.rfind("\t", 0, limit + 1))
    return space if space > 0 else limit


# ---------------------------------------------------------------------------------------------
# Fine-tuning blocks


def token_blocks(
    texts: Sequence[str],
    tokenizer,
    block_size: int,
    tail: Literal["drop", "keep"] = "drop",
) -> list[list[int]]:
    """Pack texts into blocks of ``block_size`` token ids for causal-LM fine-tuning.

    Each text is tokenised without special tokens and followed by EOS (when the tokenizer has
    one), so the model learns where a passage ends; the stream is then cut into consecutive
    blocks of exactly ``block_size`` ids. The shorter last block is dropped by default (every
    block then has the same length and the loss weighs all tokens alike); ``tail="keep"`` returns
    it unpadded (``collate``-style padding is the caller's job). No BOS is added.
    Returns a list of blocks, each a list of ``block_size`` ints (the last may be shorter with
    ``tail="keep"``).
    """
    if block_size < 2:
        raise UserError(f"block_size must be at least 2, got {block_size}")
    if tail not in ("drop", "keep"):
        raise UserError(f"unknown tail policy '{tail}' (valid: drop, keep)")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.extend(eos)
    blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    if blocks and len(blocks[-1]) < block_size and tail == "drop":
        blocks.pop()
    return blocks


# ---------------------------------------------------------------------------------------------
# Splits


def split_by_chapter(
    passages: Sequence[Passage],
    forget: float | int | Sequence[str] = 0.1,
    unseen: float | int | Sequence[str] = 0.1,
    seed: int = 0,
) -> TextSplits:
    """Split whole chapters into forget / unseen / retain.

    ``forget`` and ``unseen`` are each a fraction of the chapters (a float in (0, 1), rounded, at
    least one chapter), a count (an int) or an explicit list of chapter names. Chapters not named
    are shuffled with ``random.Random(seed)`` in order of first appearance, so the split depends
    only on the chapter names, their order and the seed. Passages keep their corpus order.
    """
    chapters = list(dict.fromkeys(p.chapter for p in passages))
    forget_set, unseen_set = _choose(chapters, forget, unseen, seed, what="chapter")
    return TextSplits(
        forget=[p for p in passages if p.chapter in forget_set],
        unseen=[p for p in passages if p.chapter in unseen_set],
        retain=[p for p in passages if p.chapter not in forget_set and p.chapter not in unseen_set],
    )


def split_by_passage(
    passages: Sequence[Passage],
    forget: float | int | Sequence[str] = 0.1,
    unseen: float | int | Sequence[str] = 0.1,
    seed: int = 0,
) -> TextSplits:
    """Split passages (ignoring chapters) into forget / unseen / retain; see :func:`split_by_chapter`.

    Explicit lists name passage ids.
    """
    ids = [p.id for p in passages]
    if len(set(ids)) != len(ids):
        raise UserError("passage ids are not unique; give each passage its own id before splitting")
    forget_set, unseen_set = _choose(ids, forget, unseen, seed, what="passage")
    return TextSplits(
        forget=[p for p in passages if p.id in forget_set],
        unseen=[p for p in passages if p.id in unseen_set],
        retain=[p for p in passages if p.id not in forget_set and p.id not in unseen_set],
    )


def _choose(
    keys: list[str],
    forget: float | int | Sequence[str],
    unseen: float | int | Sequence[str],
    seed: int,
    what: str,
) -> tuple[set[str], set[str]]:
    known = set(keys)
    explicit: dict[str, set[str]] = {}
    for name, spec in (("forget", forget), ("unseen", unseen)):
        if isinstance(spec, (list, tuple, set, frozenset)):
            names = {str(x) for x in spec}
            missing = sorted(names - known)
            if missing:
                raise UserError(f"{name}: unknown {what} {missing[0]!r} (known: {', '.join(keys[:10])}...)")
            explicit[name] = names
    if "forget" in explicit and "unseen" in explicit and explicit["forget"] & explicit["unseen"]:
        raise UserError(f"forget and unseen share the {what} {sorted(explicit['forget'] & explicit['unseen'])[0]!r}")
    pool = [k for k in keys if not any(k in s for s in explicit.values())]
    random.Random(seed).shuffle(pool)
    chosen: dict[str, set[str]] = {}
    for name, spec in (("forget", forget), ("unseen", unseen)):
        if name in explicit:
            chosen[name] = explicit[name]
            continue
        count = _count(spec, len(keys), name, what)
        if count > len(pool):
            raise UserError(f"{name}: asked for {count} {what}s but only {len(pool)} are left to choose from")
        chosen[name], pool = set(pool[:count]), pool[count:]
    return chosen["forget"], chosen["unseen"]


def _count(spec: float | int | Any, total: int, name: str, what: str) -> int:
    if isinstance(spec, bool) or not isinstance(spec, (int, float)):
        raise UserError(f"{name}: expected a fraction, a count or a list of {what}s, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise UserError(f"{name}: a count must be 0 or more, got {spec}")
        return spec
    if not 0.0 < spec < 1.0:
        raise UserError(f"{name}: a fraction must lie strictly between 0 and 1, got {spec}")
    return max(1, round(spec * total))
