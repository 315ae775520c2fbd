"""Loss functions against values computed by hand."""

import math

import pytest
import torch

from obliviate.methods import losses

IGN = -100


def logits_for(probabilities):
    """Logits (1, T, V) whose softmax rows are the given probabilities."""
    return torch.log(torch.tensor([probabilities], dtype=torch.float32))


def test_nll_covers_response_tokens_only():
    # Position t predicts token t+1. Labels mask position 1 (prompt), so only the prediction of
    # token 2 (made at position 1) counts: p = 0.25 for token 0 -> NLL = ln 4.
    logits = logits_for([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]])
    labels = torch.tensor([[IGN, IGN, 0]])
    assert losses.nll(logits, labels).item() == pytest.approx(math.log(4), rel=1e-6)
    # With the second-token label visible too: mean of -ln 0.5 (pos 0 -> token 1 = 1) and ln 4.
    labels = torch.tensor([[IGN, 1, 0]])
    assert losses.nll(logits, labels).item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)


def test_nll_is_mean_of_per_example_means():
    a = logits_for([[0.5, 0.5], [0.25, 0.75], [0.5, 0.5]])
    b = logits_for([[0.8, 0.2], [0.5, 0.5], [0.5, 0.5]])
    logits = torch.cat([a, b])
    labels = torch.tensor([[IGN, 1, 1], [IGN, 0, IGN]])
    # example 1: tokens 1 (p .5) and 1 (p .75) -> (ln2 + ln(4/3))/2 ; example 2: token 0 with p .8 -> ln 1.25
    expected = ((math.log(2) + math.log(4 / 3)) / 2 + math.log(1.25)) / 2
    assert losses.nll(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert losses.gradient_ascent(logits, labels).item() == pytest.approx(-expected, rel=1e-6)


def test_forward_kl_hand_value_and_direction():
    ref = logits_for([[0.5, 0.5], [0.9, 0.1]])
    cur = logits_for([[0.75, 0.25], [0.9, 0.1]])
    labels = torch.tensor([[IGN, 1]])  # only position 0's distribution counts
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(ref || cur)
    assert losses.forward_kl(ref, cur, labels).item() == pytest.approx(expected, rel=1e-6)
    reverse = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert expected != pytest.approx(reverse)
    assert losses.forward_kl(ref, ref, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_reference_style_kl_is_cross_entropy_over_all_positions():
    ref = logits_for([[0.5, 0.5], [1.0 - 1e-9, 1e-9]])
    cur = logits_for([[0.75, 0.25], [0.5, 0.5]])
    ce0 = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    ce1 = math.log(2)
    assert losses.reference_style_kl(ref, cur).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)


def test_unmasked_nll_counts_prompt_tokens():
    logits = logits_for([[0.5, 0.5], [0.25, 0.75], [0.5, 0.5]])
    ids = torch.tensor([[0, 1, 0]])
    mask = torch.tensor([[1, 1, 0]])  # last token is padding
    assert losses.unmasked_nll(logits, ids, mask).item() == pytest.approx(math.log(2), rel=1e-6)


def test_sequence_logprob_sums():
    logits = logits_for([[0.5, 0.5], [0.25, 0.75], [0.5, 0.5]])
    labels = torch.tensor([[IGN, 1, 0]])
    assert losses.sequence_logprob(logits, labels).item() == pytest.approx(math.log(0.5) + math.log(0.25), rel=1e-6)


def test_lean_target_logprob_matches_autograd_values_and_gradients():
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 5, 7, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, 7, (2, 5))
    assert torch.autograd.gradcheck(losses.TargetLogProb.apply, (logits, target))
    weights = torch.randn(2, 5, dtype=torch.float64)
    (losses.TargetLogProb.apply(logits, target) * weights).sum().backward()
    lean = logits.grad.clone()
    logits.grad = None
    plain = torch.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(losses.TargetLogProb.apply(logits, target), plain)
    (plain * weights).sum().backward()
    torch.testing.assert_close(lean, logits.grad)


def test_lean_forward_kl_matches_autograd_values_and_gradients():
    torch.manual_seed(1)
    cur = (2 * torch.randn(3, 4, 6, dtype=torch.float64)).requires_grad_()
    ref = 2 * torch.randn(3, 4, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: losses.ForwardKLPerToken.apply(x, ref), (cur,))
    log_p, log_q = torch.log_softmax(ref, -1), torch.log_softmax(cur, -1)
    plain = (log_p.exp() * (log_p - log_q)).sum(-1)
    torch.testing.assert_close(losses.ForwardKLPerToken.apply(cur, ref), plain)
    # the same model on both sides: exactly zero, as the step-1 KL of a fresh adapter must be
    assert losses.ForwardKLPerToken.apply(ref, ref).abs().max().item() == 0.0
