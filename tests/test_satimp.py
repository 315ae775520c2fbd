"""SatImp: the loss against hand values and its limiting case.

Hand values (natural logs), one response token whose position has logits z = [1, 2, 0.5] and
target y = 1: p = softmax(z) = [0.231223898, 0.628531719, 0.140244383], log p_y = −0.464368784.
With β1 = 5, β2 = 1 the weight is p_y^5 · (1 − p_y) = 0.098093... · 0.371468281 = 0.036438264, so
the loss is 0.036438264 · (−0.464368784) = −0.016920794. Its gradient on z is the weight times
(onehot(y) − p) (the weight is a constant): 0.036438264 · [−0.231223898, 0.371468281, −0.140244383].
With β1 = 1, β2 = 0 the weight is p_y: WGA's −0.291870510.
"""

from __future__ import annotations

import pytest
import torch

from obliviate.data.formatting import IGNORE_INDEX
from obliviate.methods import build_method, losses

P = [0.231223898, 0.628531719, 0.140244383]


def one_token():
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]]], requires_grad=True)
    return logits, torch.tensor([[IGNORE_INDEX, 1]])


def test_satimp_hand_value_and_gradient():
    logits, labels = one_token()
    value = losses.saturation_importance_ascent(logits, labels, 5.0, 1.0)
    assert value.item() == pytest.approx(-0.016920794, rel=1e-5)
    value.backward()
    expected = [0.036438264 * (float(v == 1) - p) for v, p in enumerate(P)]
    assert logits.grad[0, 0].tolist() == pytest.approx(expected, rel=1e-4)
    assert logits.grad[0, 1].abs().max() == 0


def test_satimp_limits_are_wga_and_gradient_ascent():
    logits, labels = one_token()
    assert losses.saturation_importance_ascent(logits, labels, 1.0, 0.0).item() == pytest.approx(-0.291870510, rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen)
    labels = torch.tensor([[IGNORE_INDEX, 3, 0, 4, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]])
    plain = losses.saturation_importance_ascent(logits, labels, 0.0, 0.0)
    assert plain.item() == pytest.approx(losses.gradient_ascent(logits, labels).item(), rel=1e-6)
    # a token the model is sure of is spared: raising its logit lowers the magnitude of its push
    sure = logits.clone()
    sure[1, 1, 2] += 20.0
    weight = lambda x: losses.saturation_importance_ascent(x, labels, 0.0, 2.0)  # noqa: E731
    assert abs(weight(sure).item()) < abs(weight(logits).item())


def test_defaults_follow_openunlearning():
    c = build_method("satimp", {}).config
    assert (c.beta1, c.beta2, c.forget_weight, c.retain_loss, c.retain_weight) == (5.0, 1.0, 0.1, "nll", 1.0)
    assert build_method("satimp", {}).needs_retain and not build_method("satimp", {}).needs_reference
    assert build_method("satimp", {"retain_loss": "kl"}).needs_reference
    assert not build_method("satimp", {"retain_loss": "none"}).needs_retain
