"""Each method's loss equals its equation computed by hand from model outputs."""

import numpy as np
import pytest
import torch

from obliviate.data.examples import Example
from obliviate.data.formatting import collate, encode_pair, pad_id
from obliviate.methods import available_methods, build_method, losses
from obliviate.methods.base import BatchContext, Reference
from obliviate.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1)
    reference_model = tiny_model(len(tok), seed=2)  # a different "original" so the KL is not 0

    def batch(pairs):
        return collate([encode_pair(tok, p, r, 64) for p, r in pairs], pad_id(tok))

    groups = {
        "forget": batch([("secret?", "code 12"), ("where?", "in Quellmoor")]),
        "retain": batch([("sky?", "blue"), ("cat legs?", "four")]),
        "mismatch": batch([("secret?", "blue"), ("secret?", "four"), ("where?", "four"), ("where?", "blue")]),
    }
    return model, Reference(model, reference_model), groups


def test_registry_lists_the_foundation_methods():
    assert {"ga", "grad_diff", "ga_kl", "ga_mismatch_kl"} <= set(available_methods())


def test_ga_is_negative_forget_nll(setup):
    model, _, b = setup
    out = build_method("ga", {}).loss(model, b, None)
    expected = -losses.nll(model(input_ids=b["forget"]["input_ids"], attention_mask=b["forget"]["attention_mask"]).logits, b["forget"]["labels"])
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.total.item() < 0


def _nll(model, batch):
    return losses.nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]).item()


def _kl(model, ref, batch):
    cur = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return losses.forward_kl(ref.logits(batch), cur, batch["labels"]).item()


def test_grad_diff_weights(setup):
    model, _, b = setup
    out = build_method("grad_diff", {"forget_weight": 2.0, "retain_weight": 0.5}).loss(model, b, None)
    assert out.total.item() == pytest.approx(-2.0 * _nll(model, b["forget"]) + 0.5 * _nll(model, b["retain"]), rel=1e-5)


def test_ga_kl(setup):
    model, ref, b = setup
    out = build_method("ga_kl", {}).loss(model, b, ref)
    kl = _kl(model, ref, b["retain"])
    assert kl > 0
    assert out.total.item() == pytest.approx(-_nll(model, b["forget"]) + kl, rel=1e-5)


def test_ga_mismatch_kl_three_terms_with_paper_defaults(setup):
    model, ref, b = setup
    method = build_method("ga_mismatch_kl", {})
    assert (method.config.forget_weight, method.config.mismatch_weight, method.config.retain_weight) == (0.5, 1.0, 1.0)
    assert method.config.num_random_answers == 5
    out = method.loss(model, b, ref)
    expected = -0.5 * _nll(model, b["forget"]) + _nll(model, b["mismatch"]) + _kl(model, ref, b["retain"])
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    assert set(out.parts) == {"forget", "mismatch", "retain_kl"}


def test_ga_mismatch_kl_quirks_change_the_masking(setup):
    model, ref, b = setup
    plain = build_method("ga_mismatch_kl", {}).loss(model, b, ref)
    quirky = build_method("ga_mismatch_kl", {"reference_quirks": True}).loss(model, b, ref)
    assert plain.parts["mismatch"] != pytest.approx(quirky.parts["mismatch"])


def test_mismatch_batch_attaches_k_pool_answers_to_each_forget_prompt():
    method = build_method("ga_mismatch_kl", {"num_random_answers": 3})
    forget = [Example("p1", "bad1"), Example("p2", "bad2")]
    pool = ["a", "b", "c", "d"]
    groups = method.build_batch(forget, [Example("r", "ok")], BatchContext(np.random.default_rng(0), pool))
    mismatch = groups["mismatch"]
    assert [e.prompt for e in mismatch] == ["p1"] * 3 + ["p2"] * 3
    assert all(e.response in pool for e in mismatch)
    again = method.build_batch(forget, None, BatchContext(np.random.default_rng(0), pool))["mismatch"]
    assert [e.response for e in again] == [e.response for e in mismatch]  # seeded


def test_lora_reference_equals_base_model_output():
    from peft import LoraConfig, get_peft_model

    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=3)
    batch = collate([encode_pair(tok, "hello?", "world", 64)], pad_id(tok))
    with torch.no_grad():
        expected = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.clone()
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # make the adapter matter, so equality below is not trivial
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapted = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(adapted, expected, atol=1e-4)
    ref_logits = Reference(peft_model).logits(batch)
    assert torch.allclose(ref_logits, expected, atol=1e-6)


def test_answer_window_starts_one_before_the_earliest_answer_token():
    from obliviate.methods.base import answer_window

    ignore = -100
    labels = torch.tensor(
        [
            [ignore, ignore, ignore, 7, 8, ignore],  # answer from position 3
            [ignore, ignore, ignore, ignore, 5, 6],  # answer from position 4
        ]
    )
    assert answer_window(labels) == 6 - 2  # positions 2..5: position 2 predicts token 3
    assert answer_window(torch.tensor([[1, 2, 3]])) == 3  # answer at 0: nothing to cut
    assert answer_window(torch.full((2, 4), ignore)) == 4  # no answer at all: keep everything


def test_forward_answers_cuts_prompt_positions_and_keeps_the_tail_exact(setup):
    from obliviate.methods.base import answer_window, forward_answers

    model, ref, b = setup
    forget = b["forget"]
    width = answer_window(forget["labels"])
    assert width < forget["labels"].shape[1]  # the chat prompt is really cut off
    out, labels = forward_answers(model, forget)
    full = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits
    assert out.logits.shape[1] == labels.shape[1] == width
    torch.testing.assert_close(out.logits, full[:, -width:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref.answer_logits(forget), ref.logits(forget)[:, -width:], rtol=1e-5, atol=1e-5)
    # the output layer was handed a contiguous copy of the sliced hidden states (the fast path)
    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    forward_answers(model, forget)
    handle.remove()
    assert seen == [True] and getattr(head, "_obliviate_contiguous_input") is True
