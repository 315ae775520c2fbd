"""Batched generation and log-likelihood scoring on the tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.data.formatting import encode_pair, prompt_text
from obliviate.models.generation import LogLik, generate, score_loglik, stop_token_ids
from obliviate.testing import tiny_model, tiny_tokenizer

PROMPTS = [
    "Hi",
    "Tell me a long story about a dragon who lived under a mountain of gold",
    "What is 2+2?",
    "x",
    "Explain photosynthesis in two sentences, please.",
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(chat=True)


@pytest.fixture(scope="module")
def model(tok):
    m = tiny_model(vocab_size=len(tok), seed=3)
    # Sharpen the output layer: random logits are nearly flat, and a clear argmax makes the
    # greedy comparison below test padding, not float rounding between two near-equal logits.
    with torch.no_grad():
        m.lm_head.weight.mul_(40.0)
    return m.eval()


def _reference_greedy(model, tok, prompt: str, new_tokens: int) -> str:
    """One prompt alone, no padding at all, through plain model.generate."""
    ids = tok(prompt_text(tok, prompt), add_special_tokens=False, return_tensors="pt")["input_ids"]
    stops = stop_token_ids(tok)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
            do_sample=False, eos_token_id=stops, pad_token_id=0,
        )[0, ids.shape[1]:].tolist()
    for i, t in enumerate(out):
        if t in stops:
            out = out[:i]
            break
    return tok.decode(out, skip_special_tokens=True).strip()


def test_batched_greedy_equals_one_prompt_at_a_time(model, tok):
    batched = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=3)
    expected = [_reference_greedy(model, tok, p, 12) for p in PROMPTS]
    assert batched == expected
    # The answers differ between prompts, so a shuffled order would be caught.
    assert len(set(batched)) > 1


def test_input_order_is_preserved(model, tok):
    forward = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=2)
    backward = generate(model, tok, PROMPTS[::-1], max_new_tokens=8, batch_size=2)
    assert backward == forward[::-1]


def test_sampling_is_deterministic_with_seed_and_leaves_caller_rng_alone(model, tok):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate(model, tok, PROMPTS, max_new_tokens=10, do_sample=True, temperature=1.5, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = generate(model, tok, PROMPTS, max_new_tokens=10, do_sample=True, temperature=1.5, seed=7)
    c = generate(model, tok, PROMPTS, max_new_tokens=10, do_sample=True, temperature=1.5, seed=8)
    assert a == b
    assert a != c


def test_tokenizer_and_training_mode_are_restored(model, tok):
    tok.padding_side = "right"
    model.train()
    generate(model, tok, PROMPTS[:2], max_new_tokens=2)
    assert tok.padding_side == "right"
    assert model.training
    model.eval()


class _ScriptedModel(torch.nn.Module):
    """Returns the prompt followed by fixed tokens, whatever the input (tests the cutting)."""

    def __init__(self, new_tokens: list[int]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.new_tokens = new_tokens
        self.seen: dict = {}

    def generate(self, input_ids, attention_mask, generation_config):
        self.seen = {"input_ids": input_ids, "attention_mask": attention_mask, "config": generation_config}
        tail = torch.tensor([self.new_tokens] * input_ids.shape[0])
        return torch.cat([input_ids, tail], dim=1)


def test_answer_is_cut_at_end_of_turn_token_and_padding_is_left(tok):
    vocab = tok.get_vocab()
    a, b, end = vocab["a"], vocab["b"], vocab["<|im_end|>"]
    scripted = _ScriptedModel([a, b, end, a, a])
    answers = generate(scripted, tok, ["short", "a much longer prompt"], max_new_tokens=5)
    assert answers == ["ab", "ab"]
    mask = scripted.seen["attention_mask"]
    # Left padding: the short prompt's row starts with zeros and ends with ones.
    assert mask[:, -1].tolist() == [1, 1]
    assert mask[1, 0].item() == 0 and mask[0, 0].item() == 1  # longest first
    config = scripted.seen["config"]
    assert set(config.eos_token_id) == {tok.eos_token_id, end}
    assert config.max_new_tokens == 5 and config.do_sample is False


def test_works_with_peft_wrapped_model(model, tok):
    from peft import LoraConfig, get_peft_model

    base_answers = generate(model, tok, PROMPTS[:3], max_new_tokens=6)
    wrapped = get_peft_model(
        tiny_model(vocab_size=len(tok), seed=3),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], lora_alpha=4),
    )
    with torch.no_grad():
        wrapped.base_model.model.lm_head.weight.mul_(40.0)
    # A fresh LoRA adapter is zero (B = 0), so the wrapped model answers like the base model.
    assert generate(wrapped, tok, PROMPTS[:3], max_new_tokens=6) == base_answers


def test_score_loglik_equals_hand_loop(model, tok):
    responses = ["Four.", "Once upon a time there was a dragon.", "", "ok", "Plants make sugar."]
    batched = score_loglik(model, tok, PROMPTS, responses, batch_size=2)
    for prompt, response, got in zip(PROMPTS, responses, batched):
        enc = encode_pair(tok, prompt, response, max_length=1024)
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        total, count = 0.0, 0
        for position in range(1, len(enc.input_ids)):
            if enc.labels[position] != -100:
                total += logprobs[position - 1, enc.labels[position]].item()
                count += 1
        assert got.tokens == count
        assert got.total == pytest.approx(total, abs=1e-3)
    assert batched[2].tokens == len(encode_pair(tok, PROMPTS[2], "", 1024).labels) - len(
        tok(prompt_text(tok, PROMPTS[2]), add_special_tokens=False)["input_ids"]
    )


def test_loglik_mean_and_perplexity():
    value = LogLik(total=-6.0, tokens=3)
    assert value.mean == -2.0
    assert value.perplexity == pytest.approx(math.exp(2.0))
    assert LogLik(total=0.0, tokens=0).mean == 0.0


def test_bad_arguments():
    tok = tiny_tokenizer()
    m = tiny_model(len(tok))
    assert generate(m, tok, []) == []
    with pytest.raises(ValueError):
        generate(m, tok, ["a"], max_new_tokens=0)
    with pytest.raises(ValueError):
        score_loglik(m, tok, ["a", "b"], ["x"])
