"""task_vector: fine-tune on the forget set, then θ_0 − α·(θ_ft − θ_0) is what is saved.

Checked on the tiny model against a plain ``finetune`` run with the same seed (same batches, same
gradient), so θ_ft is known and the negation can be computed by hand.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from obliviate.methods import build_method, losses
from obliviate.methods.base import forward_answers
from obliviate.train.loop import Encoder, run_training

FULL = "train.lora.enabled=false"


def quiet(message: str) -> None:
    pass


def train(make_config, tmp_path, name: str, *overrides: str):
    cfg = make_config(f"method.name={name}", "train.precision=fp32", *overrides)
    return run_training(cfg, tmp_path / name, progress=False, log=quiet)


def saved(result) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(result.model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def base_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), torch_dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_model_dir))


def forget_batch(tokenizer, make_config):
    from obliviate.data.loaders import load_spec

    cfg = make_config()
    rows = load_spec(cfg.data.forget, cfg, "data.forget")
    return Encoder(tokenizer, 256, "auto").batch(rows, torch.device("cpu"))


@torch.no_grad()
def forget_nll(model, batch) -> float:
    out, labels = forward_answers(model.eval(), batch)
    return losses.nll(out.logits, labels).item()


def test_defaults_and_bad_scale():
    method = build_method("task_vector", {})
    assert (method.config.scale, method.config.forget_weight) == (1.0, 1.0)
    with pytest.raises(ValueError):
        build_method("task_vector", {"scale": -1})


def test_scale_zero_gives_back_the_original_weights_full(make_config, tiny_model_dir, tmp_path):
    result = train(make_config, tmp_path, "task_vector", FULL, "method.scale=0")
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    after = saved(result)
    assert start.keys() <= after.keys()
    for key, tensor in start.items():
        assert torch.equal(after[key], tensor), key
    # and training did move them before the negation (the comparison is not between untouched models)
    tuned = train(make_config, tmp_path, "finetune", FULL)
    assert max((saved(tuned)[k] - start[k]).abs().max().item() for k in start) > 1e-3


def test_scale_zero_gives_back_the_original_model_lora(make_config, tiny_model_dir, tmp_path):
    result = train(make_config, tmp_path, "task_vector", "method.scale=0")
    adapter = saved(result)
    assert all(not t.any() for k, t in adapter.items() if "lora_B" in k)
    assert any(t.any() for k, t in adapter.items() if "lora_A" in k)
    base, tokenizer = base_model(tiny_model_dir)
    merged = copy.deepcopy(result.model).merge_and_unload().eval()
    base_weights = base.state_dict()
    for key, tensor in merged.state_dict().items():
        assert torch.equal(tensor, base_weights[key]), key
    batch = forget_batch(tokenizer, make_config)
    with torch.no_grad():
        a = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(a, b)


def test_scale_one_is_the_negated_finetune_full(make_config, tiny_model_dir, tmp_path):
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    tuned = saved(train(make_config, tmp_path, "finetune", FULL))
    negated = saved(train(make_config, tmp_path, "task_vector", FULL))
    moved = 0.0
    for key, p0 in start.items():
        expected = p0 - (tuned[key] - p0)
        torch.testing.assert_close(negated[key], expected, rtol=1e-5, atol=1e-6, msg=key)
        moved = max(moved, (tuned[key] - p0).abs().max().item())
    assert moved > 1e-3


def test_scaled_negation_of_the_finetune_adapter_lora(make_config, tmp_path):
    tuned = saved(train(make_config, tmp_path, "finetune"))
    negated = saved(train(make_config, tmp_path, "task_vector", "method.scale=0.5"))
    assert tuned.keys() == negated.keys()
    for key in tuned:
        # B starts at zero, so θ_0 − α·(θ_ft − θ_0) on the merged weight is B ← −α·B with A as trained.
        expected = -0.5 * tuned[key] if "lora_B" in key else tuned[key]
        torch.testing.assert_close(negated[key], expected, rtol=1e-5, atol=1e-6, msg=key)
    assert max(t.abs().max().item() for k, t in tuned.items() if "lora_B" in k) > 1e-3


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_forget_nll_rises(make_config, tiny_model_dir, tmp_path, mode):
    overrides = ("method.scale=1",) + ((FULL,) if mode == "full" else ())
    base, tokenizer = base_model(tiny_model_dir)
    batch = forget_batch(tokenizer, make_config)
    before = forget_nll(base, batch)
    result = train(make_config, tmp_path, "task_vector", *overrides)
    after = forget_nll(result.model, batch)
    assert after > before + 0.05, (before, after)
    # the model handed back is the saved one
    if mode == "full":
        reloaded, _ = base_model(result.model_dir)
        assert forget_nll(reloaded, batch) == pytest.approx(after, rel=1e-5)


def test_resumed_run_negates_once(make_config, tmp_path):
    """A crash after a checkpoint, then resume: the same weights as an uninterrupted run (so the
    checkpoint held the fine-tuned weights and the negation ran once)."""
    overrides = ("method.name=task_vector", "train.precision=fp32", FULL, "train.save_every=2")

    class Interrupt(Exception):
        pass

    def crash(state):
        if state.step == 3:
            raise Interrupt()

    whole = run_training(make_config(*overrides), tmp_path / "whole", progress=False, log=quiet)
    with pytest.raises(Interrupt):
        run_training(make_config(*overrides), tmp_path / "cut", stop_hooks=[crash], progress=False, log=quiet)
    cut = run_training(make_config(*overrides), tmp_path / "cut", resume=True, progress=False, log=quiet)
    a, b = saved(whole), saved(cut)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
