"""Saliency-restricted training (``train.saliency``): the selection rules on hand-made scores, and
runs in which only the selected weights (full fine-tuning) or modules (LoRA) change.

Hand values: scores a = [3, 1], b = [2, 0] (4 weights). Top 50 %: k = 2, threshold 2, so a[0] and
b[0]; top 75 %: k = 3, threshold 1, a[0], a[1], b[0] (b[1] has no gradient and is never chosen).
Modules m1 (scores [4, 4], mean 4) and m2 (scores [1, 1, 1, 1], mean 1) of 6 weights: top 30 %
takes m1 (2 weights, 33 % ≥ 30 %); top 50 % takes m1 then m2 (2 < 3 weights before m2).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from obliviate.train.saliency import forget_gradient_scores, top_modules, top_weights


def test_top_weights_hand_values():
    scores = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([2.0, 0.0])}
    half = top_weights(scores, ["a", "b"], 50)
    assert half.masks["a"].tolist() == [True, False] and half.masks["b"].tolist() == [True, False]
    assert (half.selected, half.total, half.share) == (2, 4, 0.5)
    most = top_weights(scores, ["a", "b"], 75)
    assert most.masks["a"].tolist() == [True, True] and most.masks["b"].tolist() == [True, False]
    only_b = top_weights(scores, ["b"], 50)  # candidates limit the choice
    assert set(only_b.masks) == {"b"} and only_b.masks["b"].tolist() == [True, False]


def test_top_modules_hand_values():
    scores = {"m1.weight": torch.tensor([4.0, 4.0]), "m2.weight": torch.tensor([1.0, 1.0, 1.0, 1.0]), "other.weight": torch.ones(9)}
    assert top_modules(scores, ["m1", "m2"], 30).modules == ["m1"]
    picked = top_modules(scores, ["m1", "m2"], 50)
    assert picked.modules == ["m1", "m2"] and (picked.selected, picked.total) == (6, 6)
    assert top_modules(scores, ["m2", "m1"], 1).modules == ["m1"]  # at least one, the densest


def read_rows(path):
    from obliviate.data.examples import Example

    return [Example(r["prompt"], r["response"]) for r in map(json.loads, path.read_text().splitlines())]


def test_full_finetuning_changes_only_the_selected_weights(make_config, tiny_model_dir, data_files, tmp_path):
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.train.loop import Encoder, run_training

    config = make_config("method.name=ga", "train.precision=fp32", "train.lora.enabled=false", "train.saliency.top_percent=10")
    run_training(config, tmp_path / "run", progress=False, log=lambda m: None)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())["saliency"]
    assert summary["top_percent"] == 10 and summary["share_updated"] == pytest.approx(0.10, abs=0.01)

    # the selection, recomputed from the model as loaded
    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    scores = forget_gradient_scores(model, Encoder(tok, 256, "auto"), read_rows(data_files["forget"]), torch.device("cpu"))
    chosen = top_weights(scores, [n for n, _ in model.named_parameters()], 10)
    assert chosen.selected == summary["weights_selected"]

    start = load_file(str(tiny_model_dir / "model.safetensors"))
    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    changed = 0
    for name, before in start.items():
        moved = saved[name] != before
        assert not bool((moved & ~chosen.masks[name]).any()), f"{name}: an unselected weight changed"
        changed += int(moved.sum())
    assert changed > chosen.selected // 2  # and the selected ones did train


def test_lora_adapts_only_the_most_salient_modules(make_config, tmp_path):
    from obliviate.train.loop import run_training

    config = make_config("method.name=ga", "train.precision=fp32", "train.saliency.top_percent=10")
    run_training(config, tmp_path / "run", progress=False, log=lambda m: None)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())["saliency"]
    adapted = {k.split(".lora_")[0].removeprefix("base_model.model.") for k in load_file(str(tmp_path / "run" / "model" / "adapter_model.safetensors"))}
    assert adapted == set(summary["modules"])
    assert 0 < len(adapted) < 14  # 7 linear layers in each of 2 decoder layers
    assert 0.10 <= summary["share_updated"] < 0.5


def test_saliency_config_is_checked(make_config):
    from obliviate.errors import UserError

    with pytest.raises(UserError):
        make_config("train.saliency.top_percent=0")
