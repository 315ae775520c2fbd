"""CE-U: the loss against hand values, its gradient, and the skipped first answer token.

Hand values (natural logs), one response token whose position has logits z = [1, 2, 0.5] and
target y = 1: p = softmax(z) = [0.231223898, 0.628531719, 0.140244383]. The target is the model's
distribution without y, renormalised: r = [p_0, 0, p_2] / (1 − p_1) = [0.622459331, 0, 0.377540669].
The loss is the cross-entropy −Σ r_v log p_v = −(0.622459331·(−1.464368784) + 0.377540669·(−1.964368784))
= 0.911519... + 0.741629... = 1.653139; equally H(r) − log(1 − p_1) = 0.662840 + 0.990299.
Its gradient on z is p − r = [−0.391235433, 0.628531719, −0.237296286]: y's logit goes down.
"""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.data.formatting import IGNORE_INDEX
from obliviate.methods import build_method, losses
from obliviate.methods.ce_u import without_first_tokens


def test_ce_u_hand_value_and_gradient():
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, 1]])
    value = losses.cross_entropy_unlearning(logits, labels)
    assert value.item() == pytest.approx(1.653139, rel=1e-5)
    r = [0.622459331, 0.0, 0.377540669]
    entropy = -sum(x * math.log(x) for x in r if x > 0)
    assert value.item() == pytest.approx(entropy - math.log(1 - 0.628531719), rel=1e-5)
    value.backward()
    assert logits.grad[0, 0].tolist() == pytest.approx([-0.391235433, 0.628531719, -0.237296286], rel=1e-5)
    assert logits.grad[0, 1].abs().max() == 0


def test_ce_u_averages_tokens_then_examples():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, generator=gen)
    labels = torch.tensor([[IGNORE_INDEX, 3, 0, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 5, IGNORE_INDEX]])
    p = logits.softmax(-1)

    def token(row, t, y):
        r = p[row, t].clone()
        r[y] = 0
        r = r / r.sum()
        return -(r * p[row, t].log()).sum()

    expected = ((token(0, 0, 3) + token(0, 1, 0)) / 2 + token(1, 2, 5)) / 2
    assert losses.cross_entropy_unlearning(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_first_answer_tokens_are_skipped():
    labels = torch.tensor([[IGNORE_INDEX, 7, 8, 9], [IGNORE_INDEX, IGNORE_INDEX, 4, IGNORE_INDEX]])
    assert without_first_tokens(labels, 1).tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 8, 9], [IGNORE_INDEX] * 4]
    assert without_first_tokens(labels, 0) is labels
    assert without_first_tokens(labels, 2).tolist()[0] == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 9]


def test_defaults_follow_openunlearning():
    m = build_method("ce_u", {})
    assert (m.config.skip_first, m.config.forget_weight, m.config.retain_loss) == (1, 1.0, "none")
    assert not m.needs_retain and not m.needs_reference
    assert build_method("ce_u", {"retain_loss": "kl"}).needs_reference
