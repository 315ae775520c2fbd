"""Text similarity and memorisation metrics against hand-computed values and hand loops."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from obliviate.data.formatting import encode_pair
from obliviate.data.synthetic_book import generate_book
from obliviate.errors import UserError
from obliviate.metrics.memorisation import (
    argmax_hits,
    calibrate_bleu_threshold,
    exact_memorisation,
    extraction_strength,
    leak_rate,
    perplexity,
    unrelated_bleu_scores,
)
from obliviate.metrics.text import (
    bleu,
    corpus_bleu,
    corpus_rouge_l,
    corpus_unique_token_ratio,
    rouge_l_f1,
    unique_token_ratio,
)
from obliviate.testing import tiny_model, tiny_tokenizer

# --- ROUGE-L, BLEU, diversity ------------------------------------------------------------------


def test_rouge_l_identical_disjoint_and_partial():
    assert rouge_l_f1("the cat sat", "the cat sat") == 1.0
    assert rouge_l_f1("alpha beta", "gamma delta") == 0.0
    # LCS(the cat sat on the mat | the cat lay on a mat) = the cat on mat = 4; P = R = 4/6.
    assert rouge_l_f1("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 / 3)
    # LCS(a b c d | a x c) = a c = 2; P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7.
    assert rouge_l_f1("a b c d", "a x c") == pytest.approx(4 / 7)
    # Order matters (subsequence, not bag of words): LCS(c b a | a b c) = 1, F1 = 1/3.
    assert rouge_l_f1("c b a", "a b c") == pytest.approx(1 / 3)
    # Case and punctuation are ignored; no stemming by default.
    assert rouge_l_f1("The CAT, sat!", "the cat sat") == 1.0
    assert rouge_l_f1("cats", "cat") == 0.0
    assert rouge_l_f1("cats", "cat", use_stemmer=True) == 1.0


def test_empty_texts():
    assert rouge_l_f1("", "") == 1.0 and rouge_l_f1("", "a b") == 0.0 and rouge_l_f1("a", "") == 0.0
    assert rouge_l_f1("...", "!!") == 1.0  # both empty after tokenisation
    assert bleu("", "  ") == 1.0 and bleu("", "a b") == 0.0
    assert unique_token_ratio("") == 0.0


def test_bleu_identical_disjoint_and_brevity_penalty():
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert bleu("x y z w", "a b c d") == 0.0
    # Every n-gram of the prediction is in the reference (all precisions 1); only the brevity
    # penalty acts: exp(1 - 7/6).
    assert bleu("the cat sat on the mat", "the cat sat on the mat today") == pytest.approx(math.exp(1 - 7 / 6))


def test_unique_token_ratio():
    assert unique_token_ratio("the cat the cat") == 0.5
    assert unique_token_ratio("The the THE") == pytest.approx(1 / 3)
    tok = tiny_tokenizer()
    assert unique_token_ratio("aab", tokenizer=tok) == pytest.approx(2 / 3)  # byte tokens a, a, b


def test_corpus_helpers_return_mean_and_items():
    score = corpus_rouge_l(["a b", "a b"], ["a b", "c d"])
    assert score.per_item == [1.0, 0.0] and score.value == 0.5
    assert corpus_bleu(["a b c d"], ["a b c d"]).per_item == [1.0]
    assert corpus_unique_token_ratio(["a a", "a b"]).value == pytest.approx(0.75)
    with pytest.raises(ValueError):
        corpus_rouge_l(["a"], [])


# --- leak rate ---------------------------------------------------------------------------------

SENTENCES = [
    "Kelvane crossed the old bridge at dawn with a lantern.",
    "The miller of Dorholm counted sacks of grain all night.",
    "Rain fell on the harbour while the ferry waited.",
    "Nobody in the village spoke about the fire again.",
]


def test_calibration_uses_all_ordered_pairs_when_few():
    scores = unrelated_bleu_scores([" ".join(SENTENCES)], pairs=1000)
    expected = [bleu(a, b) for i, a in enumerate(SENTENCES) for j, b in enumerate(SENTENCES) if i != j]
    assert scores == expected
    threshold = calibrate_bleu_threshold([" ".join(SENTENCES)], quantile=0.5)
    assert threshold == pytest.approx(float(np.quantile(expected, 0.5)))


def test_calibration_is_deterministic_per_seed_and_ignores_short_pieces():
    text = generate_book(seed=0, chapters=1, paragraphs_per_chapter=4).text
    a = unrelated_bleu_scores([text], seed=1, pairs=50)
    assert a == unrelated_bleu_scores([text], seed=1, pairs=50) and len(a) == 50
    assert a != unrelated_bleu_scores([text], seed=2, pairs=50)
    assert calibrate_bleu_threshold([text], seed=1, pairs=50) == pytest.approx(float(np.quantile(a, 0.99)))
    with pytest.raises(UserError, match="at least two"):
        calibrate_bleu_threshold(["Yes. No. Ok fine."])
    with pytest.raises(UserError, match="strictly between"):
        calibrate_bleu_threshold(SENTENCES, quantile=1.0)


def test_leak_rate_counts_scores_strictly_above_threshold():
    result = leak_rate([0.1, 0.5, 0.3], threshold=0.3)
    assert result.per_item == [0.0, 1.0, 0.0] and result.value == pytest.approx(1 / 3)
    assert math.isnan(leak_rate([], 0.1).value)


# --- teacher-forced memorisation --------------------------------------------------------------


class TableModel(torch.nn.Module):
    """Predicts a fixed next token for each token id (a bigram table), whatever the context."""

    def __init__(self, vocab_size: int, table: dict[int, int] | None = None, shift: int = 1):
        super().__init__()
        nxt = (torch.arange(vocab_size) + shift) % vocab_size
        for src, dst in (table or {}).items():
            nxt[src] = dst
        self.register_buffer("nxt", nxt)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab_size = vocab_size

    def forward(self, input_ids, attention_mask=None):
        logits = torch.nn.functional.one_hot(self.nxt[input_ids], self.vocab_size).float() * 5.0
        return SimpleNamespace(logits=logits + 0.0 * self.dummy)


def test_exact_memorisation_and_extraction_strength_hand_cases():
    tok = tiny_tokenizer()
    model = TableModel(len(tok))  # predicts id + 1: 'a' -> 'b', ...
    prompts = ["xy ", "xyz"]
    continuations = ["abXcd", "abcdef"]
    hits = argmax_hits(model, tok, prompts, continuations, batch_size=2)
    # 1st: no space added (prompt ends with one). a: from ' ' wrong; b right; X wrong; c (after X) wrong; d right.
    # 2nd: a space is added: ' ' after z wrong; a after ' ' wrong; b..f right.
    assert hits == [[False, True, False, False, True], [False, False, True, True, True, True, True]]
    em = exact_memorisation(model, tok, prompts, continuations, batch_size=1)
    assert em.per_item == pytest.approx([2 / 5, 5 / 7]) and em.value == pytest.approx((2 / 5 + 5 / 7) / 2)
    es = extraction_strength(model, tok, prompts, continuations, batch_size=2)
    # 1st: only the last token is reproduced without help: k = 4 of 5. 2nd: k = 2 of 7.
    assert es.per_item == pytest.approx([1 - 4 / 5, 1 - 2 / 7])


def test_a_model_that_memorised_the_text_scores_one_and_empty_items_are_nan():
    tok = tiny_tokenizer()
    ids = tok("ab cde", add_special_tokens=False)["input_ids"]
    model = TableModel(len(tok), table={a: b for a, b in zip(ids, ids[1:])})
    em = exact_memorisation(model, tok, ["ab", "ab", "x"], ["cde", "cd", ""])
    assert em.per_item[:2] == [1.0, 1.0] and math.isnan(em.per_item[2]) and em.value == 1.0
    es = extraction_strength(model, tok, ["ab"], ["cde"])
    assert es.per_item == [1.0]
    nothing = extraction_strength(TableModel(len(tok), shift=3), tok, ["ab"], ["cde"])
    assert nothing.per_item == [0.0]


def _hand_hits(model, ids: list[int], labels: list[int]) -> list[bool]:
    out = []
    with torch.no_grad():
        for t in range(1, len(ids)):
            if labels[t] == -100:
                continue
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
            out.append(int(logits.argmax()) == ids[t])
    return out


@pytest.mark.parametrize("template", ["none", "chat", "plain"])
def test_batched_hits_match_a_hand_loop_on_a_tiny_model(template):
    tok = tiny_tokenizer(chat=True)
    model = tiny_model(len(tok), seed=3)
    # Unbatched, unpadded, one prefix at a time: any slip in padding, shifting or masking in the
    # batched code changes the number or order of scored tokens or their verdicts.
    prompts = ["Once upon a time", "The", "A much longer opening line for the batch"]
    continuations = ["there was a fox.", "end of it all, truly", "xy"]
    got = argmax_hits(model, tok, prompts, continuations, template=template, batch_size=2)
    for prompt, cont, hits in zip(prompts, continuations, got):
        if template == "none":
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            c_ids = tok(" " + cont, add_special_tokens=False)["input_ids"]
            ids, labels = p_ids + c_ids, [-100] * len(p_ids) + c_ids
        else:
            enc = encode_pair(tok, prompt, cont, max_length=1024, template=template)
            ids, labels = enc.input_ids, enc.labels
        assert hits == _hand_hits(model, ids, labels)
        assert len(hits) == sum(label != -100 for label in labels)
    em = exact_memorisation(model, tok, prompts, continuations, template=template, batch_size=3)
    assert em.per_item == pytest.approx([sum(h) / len(h) for h in got])


# --- perplexity --------------------------------------------------------------------------------


class UniformModel(torch.nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab_size = vocab_size

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab_size) + 0.0 * self.dummy)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    tok = tiny_tokenizer()
    result = perplexity(UniformModel(len(tok)), tok, ["hello world", "a much longer text " * 5, ""], block_size=8)
    assert result.per_item[:2] == pytest.approx([len(tok)] * 2)
    assert math.isnan(result.per_item[2])  # an empty text is BOS alone: nothing to score
    assert result.value == pytest.approx(len(tok))


@pytest.mark.parametrize("block_size", [5, 64])
def test_perplexity_matches_a_hand_loop_with_windows(block_size):
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1)
    texts = ["The river remembers every promise.", "Short", "Keep it safe until I come back, she said."]
    result = perplexity(model, tok, texts, block_size=block_size, batch_size=2)
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for text, got in zip(texts, result.per_item):
            ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
            nll = 0.0
            for j in range(1, len(ids)):
                # Token j is scored inside the window that starts at the last multiple of
                # (block_size - 1) before it, with that window's tokens as its only context.
                start = ((j - 1) // (block_size - 1)) * (block_size - 1)
                logits = model(input_ids=torch.tensor([ids[start:j]])).logits[0, -1]
                nll -= float(torch.log_softmax(logits, -1)[ids[j]])
            assert got == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-5)
            total_nll += nll
            total_tokens += len(ids) - 1
    assert result.value == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-5)
