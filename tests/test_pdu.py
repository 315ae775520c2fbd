"""PDU: the flattening loss against hand values, the dual step, and the multiplier across a run.

Hand values: logits z = [1, 2, 0.5] at the one position that predicts a response token: max 2,
mean 3.5/3 = 1.166667, gap 0.833333, loss 0.833333² = 0.694444. Equal logits give 0.
Dual step λ ← max(0, λ + η·(r − ε)): λ = 1, r = 2.5, ε = 2, η = 0.5 gives 1.25; λ = 0.1, r = 1,
ε = 2, η = 1 gives max(0, −0.9) = 0; an unset ε becomes r and leaves λ as it was.
"""

from __future__ import annotations

import json

import pytest
import torch

from obliviate.data.formatting import IGNORE_INDEX
from obliviate.methods import build_method, losses
from obliviate.methods.pdu import dual_step


def test_flattening_hand_values():
    logits = torch.tensor([[[1.0, 2.0, 0.5], [9.0, 0.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, 1]])
    value = losses.logit_margin_flattening(logits, labels)
    assert value.item() == pytest.approx(0.694444, rel=1e-5)
    value.backward()
    # d/dz (max − mean)² = 2·gap·(onehot(argmax) − 1/3)
    assert logits.grad[0, 0].tolist() == pytest.approx([2 * 0.833333 * x for x in (-1 / 3, 2 / 3, -1 / 3)], rel=1e-4)
    assert logits.grad[0, 1].abs().max() == 0  # predicts no response token
    flat = torch.zeros(1, 2, 3)
    assert losses.logit_margin_flattening(flat, labels).item() == 0


def test_dual_step_hand_values():
    assert dual_step(1.0, 2.5, 2.0, 0.5) == (1.25, 2.0)
    assert dual_step(0.1, 1.0, 2.0, 1.0) == (0.0, 2.0)
    assert dual_step(0.7, 3.0, None, 1.0) == (0.7, 3.0)


def test_multiplier_follows_the_retain_loss_and_is_checkpointed(make_config, tmp_path):
    from obliviate.train.loop import run_training

    config = make_config("method.name=pdu", "method.retain_bound=0.5", "method.dual_step_size=0.25",
                         "train.precision=fp32", "train.save_every=2")
    run_training(config, tmp_path / "run", progress=False, log=lambda m: None)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["loss/retain_multiplier"] == 1.0
    for before, after in zip(log, log[1:]):
        expected = max(0.0, before["loss/retain_multiplier"] + 0.25 * (before["loss/retain"] - 0.5))
        assert after["loss/retain_multiplier"] == pytest.approx(expected, rel=1e-6)
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-2" / "trainer_state.pt", weights_only=True)
    assert state["method"]["multiplier"] == pytest.approx(log[2]["loss/retain_multiplier"], rel=1e-6)
    assert state["method"]["bound"] == 0.5


def test_default_bound_is_the_first_steps_retain_loss():
    method = build_method("pdu", {})
    assert (method.multiplier, method.bound, method.config.dual_step_size) == (1.0, None, 1.0)

    class Step:
        record = {"loss/retain": 2.0}

    method.on_step_end(Step())
    assert method.state_dict() == {"multiplier": 1.0, "bound": 2.0}
    Step.record = {"loss/retain": 2.5}
    method.on_step_end(Step())
    assert method.multiplier == pytest.approx(1.5)
    fresh = build_method("pdu", {})
    fresh.load_state_dict(method.state_dict())
    assert (fresh.multiplier, fresh.bound) == (1.5, 2.0)
