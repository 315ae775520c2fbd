"""The training loop: methods unlearn on the tiny model, NaN stops cleanly (resume, for every
method: tests/test_method_contract.py)."""

import json

import pytest
import torch

from obliviate.data.formatting import collate, encode_pair, pad_id
from obliviate.errors import TrainingDiverged
from obliviate.methods import losses
from obliviate.train.loop import run_training, stream_indices
from tests.conftest import FORGET, RETAIN


def mean_nll(model, tokenizer, rows):
    batch = collate([encode_pair(tokenizer, r["prompt"], r["response"], 128) for r in rows], pad_id(tokenizer))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return losses.nll(logits, batch["labels"]).item()


def load(model_dir):
    from obliviate.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(str(model_dir))


@pytest.mark.parametrize("method", ["ga", "grad_diff", "ga_kl", "ga_mismatch_kl"])
def test_each_method_lowers_forget_likelihood(method, make_config, memorised_model_dir, tmp_path):
    cfg = make_config(f"method.name={method}", "train.lora.enabled=false", "train.max_steps=6", "train.lr=3e-3")
    model, tok = load(memorised_model_dir)
    forget_before, retain_before = mean_nll(model, tok, FORGET), mean_nll(model, tok, RETAIN)
    run_training(cfg, tmp_path / "run", model=model, tokenizer=tok, progress=False, log=lambda m: None)
    forget_after, retain_after = mean_nll(model, tok, FORGET), mean_nll(model, tok, RETAIN)
    assert forget_after > forget_before + 0.05, (forget_before, forget_after)
    if method in ("grad_diff", "ga_kl"):
        # the retain term keeps the retain loss from rising with the forget loss (plain GA drags
        # both up on this tiny model, whose two sets share one character distribution)
        assert retain_after - retain_before < 0.5 * (forget_after - forget_before), (retain_before, retain_after)


def test_run_folder_contents_and_log(make_config, tmp_path):
    cfg = make_config("train.max_steps=3", "train.save_every=2")
    result = run_training(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    run = tmp_path / "run"
    for name in ("config.yaml", "env.json", "train_log.jsonl", "train_summary.json", "model/adapter_model.safetensors"):
        assert (run / name).exists(), name
    assert (run / "checkpoints" / "step-2" / "optimizer.pt").exists()
    lines = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert {"lr", "loss/total", "loss/forget", "loss/mismatch", "loss/retain_kl", "grad_norm", "tokens_per_s"} <= set(lines[0])
    assert lines[-1]["lr"] == pytest.approx(0.0)  # linear decay to zero at max_steps
    assert result.steps == 3


def test_saved_lora_model_loads_with_peft_and_merged_with_transformers(make_config, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    run_training(make_config("train.max_steps=2"), tmp_path / "a", progress=False, log=lambda m: None)
    assert AutoPeftModelForCausalLM.from_pretrained(tmp_path / "a" / "model") is not None
    run_training(make_config("train.max_steps=2", "train.merge_lora=true"), tmp_path / "b", progress=False, log=lambda m: None)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "model")
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_nan_loss_stops_with_message_and_keeps_checkpoint(make_config, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = losses.gradient_ascent

    def poisoned(logits, labels):
        calls["n"] += 1
        value = real(logits, labels)
        return value * float("nan") if calls["n"] >= 3 else value

    monkeypatch.setattr(losses, "gradient_ascent", poisoned)
    with pytest.raises(TrainingDiverged, match=r"non-finite at step 3.*step-2"):
        run_training(make_config("train.save_every=2", "train.max_steps=5"), tmp_path / "run", progress=False, log=lambda m: None)
    assert (tmp_path / "run" / "checkpoints" / "step-2" / "trainable.safetensors").exists()


def test_early_stop_hook(make_config, tmp_path):
    result = run_training(
        make_config("train.max_steps=10"), tmp_path / "run",
        stop_hooks=[lambda s: "target reached" if s.step == 2 else None], progress=False, log=lambda m: None,
    )
    assert (result.steps, result.stop_reason) == (2, "target reached")
    assert (tmp_path / "run" / "model").exists()


def test_stream_indices_are_epoch_permutations():
    first = stream_indices(5, 0, 0, 10)
    assert sorted(first[:5]) == list(range(5)) and sorted(first[5:]) == list(range(5))
    assert stream_indices(5, 0, 3, 4) == first[3:7]


def test_input_model_folder_is_never_modified(make_config, tiny_model_dir, tmp_path):
    import hashlib

    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tiny_model_dir.iterdir()) if p.is_file()}

    before = digest()
    run_training(make_config("train.lora.enabled=false", "train.max_steps=2"), tmp_path / "run", progress=False, log=lambda m: None)
    assert digest() == before


def test_retain_batch_size_sets_the_retain_group_and_ranks_split_groups():
    from obliviate.data.examples import Example
    from obliviate.methods import build_method
    from obliviate.train.loop import TrainData, _micro_batch

    data = TrainData(
        forget=[Example(f"f{i}", "x") for i in range(6)],
        retain=[Example(f"r{i}", "y") for i in range(10)],
        random_answers=["a", "b"],
    )
    method = build_method("ga_mismatch_kl", {"num_random_answers": 2})
    groups = _micro_batch(method, data, 0, 2, 1, 0, seed=0, retain_batch_size=5)
    assert (len(groups["forget"]), len(groups["mismatch"]), len(groups["retain"])) == (2, 4, 5)
    # two processes with batch 1 each see together exactly what one process with batch 2 sees
    one = _micro_batch(method, data, 3, 2, 1, 0, seed=0)
    halves = [_micro_batch(method, data, 3, 1, 2, rank, seed=0) for rank in (0, 1)]
    for name in ("forget", "mismatch", "retain"):
        merged = sorted(e.prompt + e.response for h in halves for e in h[name])
        assert merged == sorted(e.prompt + e.response for e in one[name]), name


@pytest.mark.parametrize("lora", ["true", "false"])
def test_gradient_checkpointing_trains_to_the_same_weights(make_config, tmp_path, lora):
    overrides = ("train.max_steps=3", f"train.lora.enabled={lora}", "train.lr=1e-3")
    plain = run_training(make_config(*overrides), tmp_path / "plain", progress=False, log=lambda m: None)
    ckpt = run_training(
        make_config(*overrides, "train.gradient_checkpointing=true"), tmp_path / "ckpt", progress=False, log=lambda m: None
    )
    base = ckpt.model.get_base_model() if hasattr(ckpt.model, "get_base_model") else ckpt.model
    assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules())  # really on, not ignored
    moved = 0
    for (name, a), (_, b) in zip(plain.model.named_parameters(), ckpt.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        moved += int(a.requires_grad)
    assert moved > 0
    loss = lambda run: [json.loads(l)["loss/total"] for l in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
    assert loss("plain") == pytest.approx(loss("ckpt"), rel=1e-4)


def test_continuing_a_finetuned_adapter(make_config, tiny_model_dir, tmp_path):
    """Unlearning can keep training the fine-tuning adapter (the papers' set-up): it starts from
    base + adapter, and its reference model is base + adapter too, not the bare base."""
    from obliviate.errors import UserError
    from obliviate.models.loading import load_trained

    run_training(make_config("method.name=finetune", "train.max_steps=20", "train.lr=5e-2"), tmp_path / "ft",
                 progress=False, log=lambda m: None)
    finetuned, tok = load_trained(str(tmp_path / "ft"))
    start_nll = mean_nll(finetuned, tok, FORGET)
    base, _ = load(tiny_model_dir)
    assert start_nll < mean_nll(base, tok, FORGET) - 0.05  # the adapter changed the model (it learned the set)

    result = run_training(
        make_config("method.name=ga_kl", "train.max_steps=6", "train.lr=0.1", f"train.batch_size={len(FORGET)}", f"train.lora.init_from={tmp_path / 'ft'}"),
        tmp_path / "ul", progress=False, log=lambda m: None,
    )
    log = [json.loads(l) for l in (tmp_path / "ul" / "train_log.jsonl").read_text().splitlines()]
    # Step 1 is computed before any update: the model is base + adapter, and so is the reference,
    # so the KL is zero and the forget NLL is the fine-tuned model's.
    assert log[0]["loss/retain_kl"] == pytest.approx(0.0, abs=1e-6)
    assert -log[0]["loss/forget"] == pytest.approx(start_nll, rel=1e-4)
    unlearned, _ = load_trained(str(tmp_path / "ul"))
    assert mean_nll(unlearned, tok, FORGET) > start_nll + 0.02
    assert result.stop_reason == "max_steps"

    with pytest.raises(UserError, match="init_from: .* is not a LoRA adapter folder"):
        run_training(make_config("method.name=ga", f"train.lora.init_from={tmp_path / 'nothing'}"), tmp_path / "bad",
                     progress=False, log=lambda m: None)
    assert not (tmp_path / "bad").exists()  # bad input leaves nothing behind


def test_each_run_in_one_process_gets_its_own_precision_and_returns_a_full_precision_model(make_config, tiny_model_dir, tmp_path):
    """accelerate keeps one state per process: without the reset a second run silently inherits
    the first run's bf16 autocast, and the model handed back keeps autocast in its forward."""
    from accelerate.state import AcceleratorState

    from obliviate.models.loading import load_model_and_tokenizer

    bf16 = run_training(make_config("train.max_steps=2", "train.precision=bf16"), tmp_path / "bf16",
                        progress=False, log=lambda m: None)
    assert AcceleratorState().mixed_precision == "bf16"
    # The returned model computes in fp32, exactly as the saved adapter loaded from disk does.
    _, tok = load_model_and_tokenizer(str(tiny_model_dir))
    from peft import AutoPeftModelForCausalLM

    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "bf16" / "model")).eval()
    batch = collate([encode_pair(tok, r["prompt"], r["response"], 64) for r in FORGET], pad_id(tok))
    with torch.no_grad():
        in_memory = bf16.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        from_disk = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert in_memory.dtype == torch.float32
    torch.testing.assert_close(in_memory, from_disk, rtol=1e-5, atol=1e-5)

    run_training(make_config("train.max_steps=1", "train.precision=fp32"), tmp_path / "fp32",
                 progress=False, log=lambda m: None)
    assert AcceleratorState().mixed_precision == "no"
    assert json.loads((tmp_path / "fp32" / "env.json").read_text())["precision"] == "no"
