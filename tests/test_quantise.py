"""The quantisation attack's tools: int8 rounding of a copy, the rounding-share diagnostic, nf4's
requirements."""

import pytest
import torch

from obliviate.errors import UserError
from obliviate.models.quantise import merged_copy, quantise, quantise_4bit, quantise_int8, quantise_q4_0, rounding_share


@pytest.fixture
def tiny(tiny_model_dir):
    from obliviate.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))


def _log_probs(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float().log_softmax(-1)


def test_int8_rounds_a_copy_and_moves_logits_a_little(tiny):
    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantised = quantise_int8(model)

    assert not any(isinstance(m, torch.nn.Linear) for m in quantised.modules())  # every Linear was replaced
    assert any(isinstance(m, torch.nn.Linear) for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input is bit-identical

    ids = torch.tensor([tokenizer("Where does Zyra live? Zyra lives in Quellmoor.")["input_ids"]])
    gap = (_log_probs(model, ids) - _log_probs(quantised, ids)).abs().max().item()
    assert 0 < gap < 0.5


def test_int8_merges_a_lora_adapter_first(tiny):
    from peft import LoraConfig, get_peft_model

    model, _ = tiny
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    quantised = quantise_int8(adapted)
    assert not hasattr(quantised, "peft_config")
    assert hasattr(adapted, "peft_config")  # the caller's model keeps its adapter
    # The adapter's (non-zero) update is in the quantised copy: it is closer to the adapted model than to the base.
    with adapted.disable_adapter():
        base = _log_probs(adapted, ids)
    gap_adapted = (_log_probs(adapted, ids) - _log_probs(quantised, ids)).abs().max()
    assert gap_adapted < (base - _log_probs(quantised, ids)).abs().max()


def test_rounding_share_on_hand_made_weights():
    # Row 0: max |w| = 1.27 -> step 0.01, half step 0.005. Row 1: max |w| = 2.54 -> half step 0.01.
    original = {"layer.weight": torch.tensor([[1.27, 0.0, 0.5], [2.54, 1.0, 0.0]]), "bias": torch.tensor([1.0, 2.0])}
    unlearned = {
        "layer.weight": torch.tensor([[1.27, 0.004, 0.51], [2.54, 1.009, 0.02]]),
        "bias": torch.tensor([5.0, 5.0]),  # 1-D tensors are not Linear weights: ignored
    }
    share = rounding_share(original, unlearned)
    # Changed: 0.004 (< 0.005, erasable), 0.01 (not), 0.009 (< 0.01, erasable), 0.02 (not).
    assert (share.updated, share.erasable) == (4, 2)
    assert share.share == pytest.approx(0.5)


def test_rounding_share_of_models(tiny):
    model, _ = tiny
    tiny_move = merged_copy(model)
    with torch.no_grad():
        tiny_move.model.layers[0].mlp.up_proj.weight.add_(1e-7)  # far below any int8 step
    share = rounding_share(model, tiny_move)
    assert share.updated == tiny_move.model.layers[0].mlp.up_proj.weight.numel()
    assert share.share == 1.0
    assert rounding_share(model, model).share == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_nf4_without_cuda_is_a_user_error(tiny_model_dir):
    with pytest.raises(UserError, match="needs a CUDA GPU and the bitsandbytes package"):
        quantise_4bit(str(tiny_model_dir))
    with pytest.raises(UserError, match="nf4"):
        quantise(str(tiny_model_dir), "nf4")


def test_unknown_scheme_lists_the_valid_ones(tiny):
    with pytest.raises(UserError, match="valid schemes: int8, nf4"):
        quantise(tiny[0], "int4")


def test_q4_0_matches_hand_computed_blocks_and_leaves_the_input_alone(tiny):
    """GGUF Q4_0: per block of 32, scale d = m / -8 where m is the value of largest magnitude (sign
    kept); levels q = clamp(round(w / d) + 8, 0, 15); weight back = (q - 8) * d, d stored as fp16."""
    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rounded = quantise_q4_0(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input is bit-identical

    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.in_features % 32 == 0]
    assert linears, "the tiny model needs a Linear with a multiple of 32 inputs for this test"
    name, original = linears[0]
    got = dict(rounded.named_modules())[name].weight.detach()
    block = original.weight.detach()[0, :32].double()
    m = block[block.abs().argmax()]
    d = torch.tensor(float(m / -8), dtype=torch.float16).double()
    q = torch.clamp(torch.trunc(block / d + 8.5), 0, 15)  # llama.cpp rounds by adding 8.5 and truncating
    expected = (q - 8) * d
    assert torch.allclose(got[0, :32].double(), expected, atol=1e-6)
    assert len(torch.unique(got[0, :32])) <= 16  # 4 bits a weight

    ids = torch.tensor([tokenizer("Where does Zyra live? Zyra lives in Quellmoor.")["input_ids"]])
    gap = (_log_probs(model, ids) - _log_probs(rounded, ids)).abs().max().item()
    assert 0 < gap < 5.0
    assert torch.equal(quantise(model, "q4_0").state_dict()[name + ".weight"], got)  # the dispatcher
