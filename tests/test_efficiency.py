"""The efficiency block of train_summary.json: figures present, positive and consistent, the FLOPs
estimate checked by hand, and the run report's Efficiency table."""

import json

import pytest
import torch

from obliviate.data.formatting import encode_pair
from obliviate.errors import UserError
from obliviate.train import efficiency
from obliviate.train.efficiency import ParameterCounts
from tests.conftest import FORGET, RETAIN, write_jsonl


def test_flops_formula_by_hand():
    lora = ParameterCounts(total=130, trainable=10, matmul=100, trainable_matmul=10, base_matmul=90)
    # 7 trained tokens x (2*100 forward + 2*100 activation grads + 2*10 weight grads) + 3 reference tokens x 2*90
    assert efficiency.estimate_training_flops(lora, 7, 3) == 7 * 420 + 3 * 180
    full = ParameterCounts(total=130, trainable=100, matmul=100, trainable_matmul=100, base_matmul=100)
    assert efficiency.flops_per_trained_token(full.matmul, full.trainable_matmul) == 6 * 100  # the 6N rule
    assert efficiency.flops_per_trained_token(100, 100, recompute=True) == 8 * 100  # checkpointing: one more forward
    assert efficiency.fine_tune_epoch_flops(90, 11) == 6 * 90 * 11
    block = efficiency.efficiency_block(
        seconds=2.0, steps_run=3, trained_tokens=7, padded_tokens=9, reference_tokens=3, counts=lora, recompute=False,
        forget_set_tokens=11, peak_gflops=1e-6, peak_dtype="float32", processes=1,
        memory={"peak_rss_mb": 1.0, "cuda_max_allocated_mb": None, "cuda_max_reserved_mb": None},
    )
    assert block["estimated_flops"] == 3480
    assert block["achieved_gflops_per_s"] == pytest.approx(3480 / 2 / 1e9)
    assert block["share_of_peak"] == pytest.approx(3480 / 2 / 1e9 / 1e-6)
    assert block["cost_vs_one_fine_tune_epoch"] == pytest.approx(3480 / (6 * 90 * 11))
    assert block["tokens_per_s"] == 3.5


def test_parameter_counts_of_the_tiny_model_with_and_without_lora(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from obliviate.models.loading import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    embedding = model.get_input_embeddings().weight.numel()  # untied: a look-up, not a matmul
    total = sum(p.numel() for p in model.parameters())
    full = efficiency.count_parameters(model)
    assert (full.total, full.trainable, full.matmul, full.trainable_matmul, full.base_matmul) == (
        total, total, total - embedding, total - embedding, total - embedding)
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    adapters = sum(p.numel() for n, p in adapted.named_parameters() if "lora_" in n)
    lora = efficiency.count_parameters(adapted)
    assert lora.trainable == lora.trainable_matmul == adapters > 0
    assert lora.total == total + adapters and lora.base_matmul == total - embedding
    assert efficiency.flops_per_trained_token(lora.matmul, lora.trainable_matmul) < efficiency.flops_per_trained_token(
        full.matmul, full.trainable_matmul)


def test_peak_seconds_setting(monkeypatch):
    monkeypatch.delenv(efficiency.PEAK_SECONDS_ENV, raising=False)
    assert efficiency.peak_seconds() == efficiency.DEFAULT_PEAK_SECONDS  # measured by default
    monkeypatch.setenv(efficiency.PEAK_SECONDS_ENV, "0")
    assert efficiency.peak_seconds() == 0
    monkeypatch.setenv(efficiency.PEAK_SECONDS_ENV, "soon")
    with pytest.raises(UserError, match="OBLIVIATE_MATMUL_PEAK_SECONDS"):
        efficiency.peak_seconds()


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """The same ga_mismatch_kl run (same seed, same batches) under LoRA and under full fine-tuning."""
    from obliviate.config import load_config
    from obliviate.train.loop import run_training

    folder = tmp_path_factory.mktemp("efficiency")
    base = {
        "model": {"name": str(tiny_model_dir)},
        "data": {"forget": {"path": str(write_jsonl(folder / "forget.jsonl", FORGET))},
                 "retain": {"path": str(write_jsonl(folder / "retain.jsonl", RETAIN))}},
        "method": {"name": "ga_mismatch_kl"},
        "train": {"lr": 1e-2, "max_steps": 3, "batch_size": 2, "save_every": 0, "seed": 0},
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(efficiency.PEAK_SECONDS_ENV, "0.05")  # measured, but briefly
        run_training(load_config(None, data=base), folder / "lora", progress=False, log=lambda m: None)
        patch.setenv(efficiency.PEAK_SECONDS_ENV, "0")  # skipped
        run_training(load_config(None, ["train.lora.enabled=false"], data=base), folder / "full",
                     progress=False, log=lambda m: None)
    return folder


def summary(folder):
    return json.loads((folder / "train_summary.json").read_text())


def test_figures_present_positive_and_consistent(runs, tiny_model_dir):
    from obliviate.models.loading import load_model_and_tokenizer

    top = summary(runs / "lora")
    block = top["efficiency"]
    for key in ("wall_s", "tokens", "padded_tokens", "reference_tokens", "tokens_per_s", "estimated_flops",
                "achieved_gflops_per_s", "matmul_peak_gflops", "share_of_peak", "peak_rss_mb",
                "trainable_parameters", "total_parameters", "cost_vs_one_fine_tune_epoch"):
        assert block[key] > 0, key
    assert block["tokens_per_s"] * block["wall_s"] == pytest.approx(block["tokens"], rel=1e-3)
    assert block["tokens_per_s"] == pytest.approx(top["tokens_per_s"], rel=1e-3)
    logged = [json.loads(line) for line in (runs / "lora" / "train_log.jsonl").read_text().splitlines()]
    assert block["tokens"] == sum(line["tokens"] for line in logged)  # every step's real tokens, no more
    assert block["padded_tokens"] >= block["tokens"] and block["steps_run"] == 3
    assert block["trainable_parameters"] < block["total_parameters"]
    assert block["share_of_peak"] == pytest.approx(block["achieved_gflops_per_s"] / block["matmul_peak_gflops"])
    if not torch.cuda.is_available():
        assert block["cuda_max_allocated_mb"] is None and block["cuda_max_reserved_mb"] is None
    _, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    forget_tokens = sum(len(encode_pair(tokenizer, r["prompt"], r["response"], 512).input_ids) for r in FORGET)
    assert block["forget_set_tokens"] == forget_tokens
    assert block["cost_vs_one_fine_tune_epoch"] == pytest.approx(block["estimated_flops"] / block["fine_tune_epoch_flops"])


def test_lora_costs_less_than_full_fine_tuning_on_the_same_tokens(runs):
    lora, full = summary(runs / "lora")["efficiency"], summary(runs / "full")["efficiency"]
    assert lora["tokens"] == full["tokens"] and lora["reference_tokens"] == full["reference_tokens"] > 0
    assert lora["estimated_flops"] < full["estimated_flops"]
    assert lora["trainable_parameters"] < full["trainable_parameters"] == full["total_parameters"]
    assert full["matmul_peak_gflops"] is None and full["share_of_peak"] is None  # measurement switched off


def test_report_shows_the_efficiency_table(runs):
    from obliviate.report.run_report import write_run_report

    page = write_run_report(runs / "lora").read_text()
    assert "<h2>Efficiency</h2>" in page or ">Efficiency<" in page
    for column in ("estimated FLOPs", "matmul peak GFLOP/s", "share of peak", "cost vs fine-tuning", "trainable params"):
        assert column in page, column
    assert "GPU reserved" not in page or torch.cuda.is_available()  # no GPU: no GPU columns
