"""The fused LoRA forward gives peft's outputs and gradients, and steps aside where it must."""

import copy

import pytest
import torch

from obliviate.models.lora_fused import fuse_lora_layers
from obliviate.testing import tiny_model


def _lora(seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(tiny_model(64, seed=seed), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; random B makes the adapter path count
            torch.nn.init.normal_(param, std=0.2)
    return model


def _loss_and_grads(model, ids):
    model.zero_grad()
    logits = model(input_ids=ids).logits
    loss = (logits.float() ** 2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def test_fused_forward_matches_peft_outputs_and_gradients():
    plain = _lora()
    fused = copy.deepcopy(plain)
    assert fuse_lora_layers(fused) == 4 * 2  # four target modules in each of the two layers
    ids = torch.randint(0, 64, (3, 11))
    logits_a, grads_a = _loss_and_grads(plain, ids)
    logits_b, grads_b = _loss_and_grads(fused, ids)
    assert not torch.allclose(logits_a, tiny_model(64, seed=0)(input_ids=ids).logits)  # the adapters matter
    torch.testing.assert_close(logits_b, logits_a, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == 16
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_disabled_adapters_still_give_the_base_model():
    model = _lora()
    fuse_lora_layers(model)
    ids = torch.randint(0, 64, (2, 7))
    with model.disable_adapter():
        disabled = model(input_ids=ids).logits
    reference = tiny_model(64, seed=0)(input_ids=ids).logits
    torch.testing.assert_close(disabled, reference)


def test_merge_after_fusing_gives_the_same_model():
    model = _lora()
    ids = torch.randint(0, 64, (2, 9))
    fuse_lora_layers(model)
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merged = model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_autocast_takes_the_fused_path_in_low_precision(dtype):
    plain = _lora()
    fused = copy.deepcopy(plain)
    fuse_lora_layers(fused)
    ids = torch.randint(0, 64, (2, 5))
    with torch.autocast("cpu", dtype=dtype):
        a = plain(input_ids=ids).logits
        b = fused(input_ids=ids).logits
    assert a.dtype == b.dtype
    torch.testing.assert_close(b.float(), a.float(), rtol=0.05, atol=0.05)
