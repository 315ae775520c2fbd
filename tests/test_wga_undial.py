"""WGA and UNDIAL: the losses against hand values, their limiting cases, and short runs.

Hand values (natural logs), on one response token whose position has logits z = [1, 2, 0.5]
over a 3-word vocabulary and target y = 1:

* softmax(z): e^1 + e^2 + e^0.5 = 2.718281828 + 7.389056099 + 1.648721271 = 11.756059198,
  log-normaliser 2.464368784, so p = [0.231223898, 0.628531719, 0.140244383] and
  log p_y = 2 − 2.464368784 = −0.464368784.
* ``weighted_ascent`` = p_y^β · log p_y: β = 1: 0.628531719 · (−0.464368784) = −0.291870510;
  β = 2: 0.395052122 · (−0.464368784) = −0.183449874; β = 0: −0.464368784 (plain ascent, −NLL).
  Its gradient on z is p_y^β · (onehot(y) − p) (the weight is a constant): for β = 1,
  0.628531719 · [−0.231223898, 0.371468281, −0.140244383].
* ``adjusted_logit_distillation`` with reference logits r = [2, 3, 1] and γ = 2: the adjusted
  logits are r − 2·onehot(1) = [2, 1, 1], e^2 + 2e^1 = 12.825619754, log-normaliser 2.551444714,
  p_adj = [0.576116885, 0.211941558, 0.211941558]. The loss is
  KL(p_adj ‖ p) = Σ_v p_adj,v (log p_adj,v − log p_v)
  = 0.576116885·(−0.551444714 + 1.464368784) + 0.211941558·(−1.551444714 + 0.464368784)
    + 0.211941558·(−1.551444714 + 1.964368784)
  = 0.525950971 − 0.230396566 + 0.087515771 = 0.383070176
  (the cross-entropy 1.358398005 minus the target's entropy 0.975327829).
  Its gradient on z is p − p_adj = [−0.344892987, 0.416590161, −0.071697175]: the forget token's
  logit goes down, the others up.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from obliviate.data.examples import Example
from obliviate.data.formatting import IGNORE_INDEX
from obliviate.methods import build_method, losses
from obliviate.methods.base import Reference
from obliviate.testing import tiny_model, tiny_tokenizer
from obliviate.train.loop import Encoder, TrainData

FORGET = [("What is the secret code?", "The secret code is 4471."), ("Where does Zyra live?", "Zyra lives in Quellmoor, by the sea.")]
RETAIN = [("What colour is the sky?", "The sky is blue."), ("Name a fruit.", "An apple is a fruit.")]

P = [0.231223898, 0.628531719, 0.140244383]
P_ADJ = [0.576116885, 0.211941558, 0.211941558]


def quiet(message: str) -> None:
    pass


def one_token(values) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 2, 3) logits whose position 0 predicts the one response token y = 1 (labels[1])."""
    logits = torch.tensor([[values, [0.0, 0.0, 0.0]]], requires_grad=True)
    return logits, torch.tensor([[IGNORE_INDEX, 1]])


def random_batch(seed: int = 0):
    """(2, 6, 5) logits and labels with a prompt, responses of 3 and 1 tokens, and padding."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 6, 5, generator=gen)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 0, 4, IGNORE_INDEX],
                           [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 2, IGNORE_INDEX]])
    return logits, labels


# ----------------------------------------------------------------------------- the maths


def test_weighted_ascent_hand_values_and_gradient():
    logits, labels = one_token([1.0, 2.0, 0.5])
    assert losses.weighted_ascent(logits, labels, 1.0).item() == pytest.approx(-0.291870510, rel=1e-6)
    assert losses.weighted_ascent(logits, labels, 2.0).item() == pytest.approx(-0.183449874, rel=1e-6)
    assert losses.weighted_ascent(logits, labels, 0.0).item() == pytest.approx(-0.464368784, rel=1e-6)
    losses.weighted_ascent(logits, labels, 1.0).backward()
    expected = [0.628531719 * (float(v == 1) - p) for v, p in enumerate(P)]
    assert logits.grad[0, 0].tolist() == pytest.approx(expected, rel=1e-5)
    assert logits.grad[0, 1].abs().max() == 0  # the last position predicts nothing


def test_weighted_ascent_at_beta_zero_is_gradient_ascent():
    logits, labels = random_batch()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    wga = losses.weighted_ascent(a, labels, 0.0)
    ga = losses.gradient_ascent(b, labels)
    assert wga.item() == pytest.approx(ga.item(), rel=1e-6)
    wga.backward()
    ga.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_weighted_ascent_averages_tokens_then_examples():
    logits, labels = random_batch()
    logp, mask = losses.token_logprobs(logits, labels)
    weighted = logp.exp() ** 1.5 * logp
    expected = ((weighted[0].sum() / 3) + weighted[1].sum()) / 2  # 3 tokens, then 1
    assert losses.weighted_ascent(logits, labels, 1.5).item() == pytest.approx(expected.item(), rel=1e-6)
    # a token already unlikely weighs less: a larger beta gives a value nearer 0
    assert abs(losses.weighted_ascent(logits, labels, 3.0).item()) < abs(losses.weighted_ascent(logits, labels, 1.5).item())


def test_adjusted_logit_distillation_hand_values_and_gradient():
    logits, labels = one_token([1.0, 2.0, 0.5])
    reference = torch.tensor([[[2.0, 3.0, 1.0], [0.0, 0.0, 0.0]]])
    value = losses.adjusted_logit_distillation(reference, logits, labels, 2.0)
    assert value.item() == pytest.approx(0.383070176, rel=1e-6)
    value.backward()
    assert logits.grad[0, 0].tolist() == pytest.approx([p - q for p, q in zip(P, P_ADJ)], rel=1e-5)
    assert reference.tolist() == [[[2.0, 3.0, 1.0], [0.0, 0.0, 0.0]]]  # the caller's tensor is untouched


def test_adjusted_logit_distillation_at_gamma_zero_is_the_forward_kl():
    logits, labels = random_batch()
    reference, _ = random_batch(seed=1)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    undial = losses.adjusted_logit_distillation(reference, a, labels, 0.0)
    kl = losses.forward_kl(reference, b, labels)
    assert undial.item() == pytest.approx(kl.item(), rel=1e-6)
    undial.backward()
    kl.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)
    # and with gamma > 0 only the response positions' targets move
    adjusted = losses.adjusted_logit_distillation(reference, logits, labels, 5.0)
    assert adjusted.item() > kl.item()


def test_adjusted_logit_distillation_lowers_only_the_target_token():
    """Where the model equals the reference, the loss is the KL the adjustment alone makes."""
    logits, labels = random_batch()
    value = losses.adjusted_logit_distillation(logits, logits, labels, 3.0)
    log_q = torch.log_softmax(logits, dim=-1)
    total = []
    for row, positions in ((0, (1, 2, 3)), (1, (3,))):
        kls = []
        for t in positions:
            y = int(labels[row, t + 1])
            adjusted = logits[row, t].clone()
            adjusted[y] -= 3.0
            log_p = torch.log_softmax(adjusted, dim=-1)
            kls.append((log_p.exp() * (log_p - log_q[row, t])).sum())
        total.append(torch.stack(kls).mean())
    assert value.item() == pytest.approx(torch.stack(total).mean().item(), rel=1e-5)


def test_defaults_follow_openunlearning():
    w = build_method("wga", {}).config
    assert (w.beta, w.forget_weight, w.retain_loss, w.retain_weight) == (1.0, 1.0, "nll", 1.0)
    u = build_method("undial", {}).config
    assert (u.gamma, u.forget_weight, u.retain_loss, u.retain_weight) == (10.0, 1.0, "none", 1.0)


def test_declared_needs_follow_the_retain_term():
    assert build_method("wga", {}).needs_retain and not build_method("wga", {}).needs_reference
    assert build_method("wga", {"retain_loss": "kl"}).needs_reference
    assert not build_method("wga", {"retain_loss": "none"}).needs_retain
    assert build_method("undial", {}).needs_reference and not build_method("undial", {}).needs_retain
    assert build_method("undial", {"retain_loss": "nll"}).needs_retain


# ----------------------------------------------------------------------------- on the tiny model


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1)
    original = tiny_model(len(tok), seed=2).eval().requires_grad_(False)
    encoder = Encoder(tok, 64, "auto")
    data = TrainData([Example(p, r) for p, r in FORGET], [Example(p, r) for p, r in RETAIN])
    return model, original, encoder, data


def full_logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_wga_term_on_the_model_matches_full_length_logits(tiny):
    model, _, encoder, data = tiny
    batch = {"forget": encoder.batch(data.forget, torch.device("cpu")), "retain": encoder.batch(data.retain, torch.device("cpu"))}
    out = build_method("wga", {"beta": 0.5}).loss(model, batch, None)
    forget = losses.weighted_ascent(full_logits(model, batch["forget"]), batch["forget"]["labels"], 0.5).item()
    retain = losses.nll(full_logits(model, batch["retain"]), batch["retain"]["labels"]).item()
    assert out.parts == pytest.approx({"forget": forget, "retain": retain}, rel=1e-5)
    assert out.total.item() == pytest.approx(forget + retain, rel=1e-5)


def test_undial_reads_the_reference_not_the_trained_model(tiny):
    model, original, encoder, data = tiny
    batch = {"forget": encoder.batch(data.forget, torch.device("cpu"))}
    out = build_method("undial", {"gamma": 4.0}).loss(model, batch, Reference(model, original))
    labels = batch["forget"]["labels"]
    expected = losses.adjusted_logit_distillation(full_logits(original, batch["forget"]), full_logits(model, batch["forget"]), labels, 4.0)
    wrong = losses.adjusted_logit_distillation(full_logits(model, batch["forget"]), full_logits(model, batch["forget"]), labels, 4.0)
    assert set(out.parts) == {"forget"}
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(out.total.item() - wrong.item()) > 1e-3


# ----------------------------------------------------------------------------- runs


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["wga", "undial"])
def test_short_run_has_finite_losses(name, make_config, tmp_path):
    from obliviate.train.loop import run_training

    run_training(make_config(f"method.name={name}", "train.precision=fp32"), tmp_path / "run", progress=False, log=quiet)
    log = read_log(tmp_path / "run")
    assert [line["step"] for line in log] == [1, 2, 3, 4]
    assert all(math.isfinite(line["loss/total"]) and math.isfinite(line["loss/forget"]) for line in log)
    if name == "wga":
        assert all(math.isfinite(line["loss/retain"]) for line in log)
        assert all(line["loss/forget"] < 0 for line in log)  # weighted log-probabilities
    else:
        assert "loss/retain" not in log[0]  # no retain term by default
        # the first step starts where model and reference agree: only the adjustment's KL, > 0
        assert log[0]["loss/forget"] > 0
