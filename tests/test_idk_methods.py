"""``idk_nll`` and ``dpo``: the "I don't know" answer set, the DPO maths, and short runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from obliviate.data.examples import Example
from obliviate.data.formatting import collate, encode_pair, pad_id
from obliviate.errors import UserError
from obliviate.methods import build_method, losses
from obliviate.methods.answer_sets import load_answers
from obliviate.methods.base import BatchContext, Reference
from obliviate.testing import tiny_model, tiny_tokenizer

FORGET = [Example("What is the secret code?", "The secret code is 4471."), Example("Where does Zyra live?", "In Quellmoor.")]
RETAIN = [Example("What colour is the sky?", "Blue."), Example("How many legs has a cat?", "Four.")]


def builtin_answers() -> list[str]:
    return load_answers("builtin:idk_answers")


# ----------------------------------------------------------------------------- dpo_loss


def test_dpo_loss_one_pair_by_hand():
    """policy_w=-1, policy_l=-2, ref_w=ref_l=-1.5, beta=0.1:
    margin = (-1 - -1.5) - (-2 - -1.5) = 0.5 - (-0.5) = 1.0;
    L = -log sigmoid(0.1 * 1.0) = log(1 + e^-0.1) = log(1 + 0.9048374) = log(1.9048374) = 0.6443967."""
    t = torch.tensor
    value = losses.dpo_loss(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]), beta=0.1)
    assert value.item() == pytest.approx(0.6443967, abs=1e-6)


def test_dpo_loss_is_the_batch_mean_and_reads_beta():
    """Row 1 as above (0.6443967); row 2 has margin 0, so -log sigmoid(0) = log 2 = 0.6931472;
    the mean is (0.6443967 + 0.6931472) / 2 = 0.6687719.
    With beta=1 and margin -2 (the forget answer preferred): -log sigmoid(-2) = log(1 + e^2) =
    log(8.3890561) = 2.1269280."""
    t = torch.tensor
    two = losses.dpo_loss(t([-1.0, -3.0]), t([-2.0, -3.0]), t([-1.5, -3.0]), t([-1.5, -3.0]), beta=0.1)
    assert two.item() == pytest.approx(0.6687719, abs=1e-6)
    wrong_way = losses.dpo_loss(t([-2.0]), t([-1.0]), t([-1.0]), t([-2.0]), beta=1.0)  # margin -1 - 1 = -2
    assert wrong_way.item() == pytest.approx(2.1269280, abs=1e-6)


def test_dpo_loss_gradient_flows_to_the_policy_only():
    """dL/dpolicy_w = -beta * (1 - sigmoid(beta * margin)) = -0.1 * (1 - 0.5249792) = -0.0475021,
    dL/dpolicy_l = +0.0475021; the reference values get no gradient."""
    policy_w, policy_l = torch.tensor([-1.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    ref_w, ref_l = torch.tensor([-1.5], requires_grad=True), torch.tensor([-1.5], requires_grad=True)
    losses.dpo_loss(policy_w, policy_l, ref_w, ref_l, beta=0.1).backward()
    assert policy_w.grad.item() == pytest.approx(-0.0475021, abs=1e-6)
    assert policy_l.grad.item() == pytest.approx(0.0475021, abs=1e-6)
    assert ref_w.grad is None and ref_l.grad is None


# ----------------------------------------------------------------------------- answer sets


def test_shipped_answers_are_many_distinct_idk_answers():
    answers = builtin_answers()
    assert len(answers) >= 30 and len(set(answers)) == len(answers)
    assert all(a.strip() == a and a for a in answers)


def test_user_answer_files_jsonl_txt_and_plain_lines(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"response": "No clue."}) + "\n\n" + json.dumps({"response": "Unknown."}) + "\n")
    (tmp_path / "b.txt").write_text("No clue.\n\n  Unknown.  \n")
    # TOFU's idontknow.jsonl: plain lines under a .jsonl suffix
    (tmp_path / "c.jsonl").write_text("I have no idea.\nNot sure.\n")
    assert load_answers(str(tmp_path / "a.jsonl")) == ["No clue.", "Unknown."]
    assert load_answers(str(tmp_path / "b.txt")) == ["No clue.", "Unknown."]
    assert load_answers(str(tmp_path / "c.jsonl")) == ["I have no idea.", "Not sure."]
    assert load_answers("c.jsonl", base_dir=tmp_path) == ["I have no idea.", "Not sure."]


@pytest.mark.parametrize("content", ["", "\n\n"])
@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_an_answer_file_with_no_rows_is_a_user_error(tmp_path, content, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text(content)
    with pytest.raises(UserError, match=r"method\.answers: .*empty.* holds no answers") as err:
        load_answers(str(path))
    assert "\n" not in str(err.value)


def test_bad_answer_files_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"method\.answers: answer file .*missing\.jsonl does not exist"):
        load_answers(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"response": "fine"}) + "\n" + json.dumps({"answer": "wrong field"}) + "\n")
    with pytest.raises(UserError, match=r"bad\.jsonl:2: field 'response' missing or empty \(row has: answer\)"):
        load_answers(str(bad))
    with pytest.raises(UserError, match="no builtin data set 'nope'"):
        load_answers("builtin:nope")


@pytest.mark.parametrize("name", ["idk_nll", "dpo"])
def test_setup_reads_the_file_and_stops_on_an_empty_one(name, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    method = build_method(name, {"answers": "empty.txt"})
    with pytest.raises(UserError, match="empty.txt holds no answers"):
        method.setup(None, None, {"base_dir": tmp_path})


# ----------------------------------------------------------------------------- drawing answers


def groups_for(name: str, seed: int, options: dict | None = None, context: dict | None = None):
    method = build_method(name, options or {})
    method.setup(None, None, context or {})
    return method, method.build_batch(FORGET, RETAIN, BatchContext(rng=np.random.default_rng([seed, 7, 0]), random_answers=[]))


@pytest.mark.parametrize("name,group", [("idk_nll", "idk"), ("dpo", "preferred")])
def test_drawn_answers_are_reproducible_and_come_from_the_file(name, group):
    answers = builtin_answers()
    _, first = groups_for(name, 0)
    _, again = groups_for(name, 0)
    assert [e.response for e in first[group]] == [e.response for e in again[group]]
    assert [e.prompt for e in first[group]] == [e.prompt for e in FORGET]  # one per forget prompt, in order
    assert all(e.response in answers for e in first[group])
    draws = {tuple(e.response for e in groups_for(name, seed)[1][group]) for seed in range(6)}
    assert len(draws) > 1, "the draw ignores the step's generator"
    assert first["retain"] == RETAIN
    if name == "dpo":
        assert first["forget"] == FORGET  # the dispreferred answers are the forget answers


def test_a_user_file_replaces_the_shipped_answers(tmp_path):
    (tmp_path / "mine.txt").write_text("Only this one.\n")
    _, groups = groups_for("idk_nll", 3, {"answers": "mine.txt"}, {"base_dir": tmp_path})
    assert [e.response for e in groups["idk"]] == ["Only this one.", "Only this one."]


# ----------------------------------------------------------------------------- the loss on a model


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()

    def encode(rows):
        return collate([encode_pair(tok, e.prompt, e.response, 64) for e in rows], pad_id(tok))

    return tiny_model(len(tok), seed=1), tiny_model(len(tok), seed=2), encode


def full_logits(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_idk_nll_is_the_plain_nll_of_the_drawn_answers(tiny):
    model, _, encode = tiny
    method, groups = groups_for("idk_nll", 1, {"idk_weight": 2.0, "retain_weight": 0.5})
    batch = {name: encode(rows) for name, rows in groups.items()}
    out = method.loss(model, batch, None)
    idk = losses.nll(full_logits(model, batch["idk"]), batch["idk"]["labels"]).item()
    retain = losses.nll(full_logits(model, batch["retain"]), batch["retain"]["labels"]).item()
    assert out.parts["idk"] == pytest.approx(idk, rel=1e-5)
    assert out.total.item() == pytest.approx(2.0 * idk + 0.5 * retain, rel=1e-5)
    # and by hand from the token log-probabilities of one drawn answer
    one = encode(groups["idk"][:1])
    logp = torch.log_softmax(full_logits(model, one)[0, :-1].float(), dim=-1)
    targets = one["labels"][0, 1:]
    mask = targets != -100
    by_hand = -logp[mask.nonzero().squeeze(-1), targets[mask]].mean().item()
    assert losses.nll(full_logits(model, one), one["labels"]).item() == pytest.approx(by_hand, rel=1e-5)


def test_idk_nll_without_retain_weight_has_one_term(tiny):
    model, _, encode = tiny
    method, groups = groups_for("idk_nll", 1, {"retain_weight": 0})
    out = method.loss(model, {name: encode(rows) for name, rows in groups.items()}, None)
    assert set(out.parts) == {"idk"}


def test_dpo_is_the_dpo_of_sequence_logprobs(tiny):
    model, other, encode = tiny
    reference = Reference(model, other)  # a different "original", so the margin is not 0
    method, groups = groups_for("dpo", 2, {"beta": 0.5, "retain_weight": 0.25})
    batch = {name: encode(rows) for name, rows in groups.items()}
    out = method.loss(model, batch, reference)

    def seq(m, group):
        return losses.sequence_logprob(full_logits(m, batch[group]), batch[group]["labels"])

    with torch.no_grad():
        margin = (seq(model, "preferred") - seq(other, "preferred")) - (seq(model, "forget") - seq(other, "forget"))
        expected = -torch.nn.functional.logsigmoid(0.5 * margin).mean().item()
        retain = losses.nll(full_logits(model, batch["retain"]), batch["retain"]["labels"]).item()
    assert abs(margin).max() > 1e-3
    assert out.parts["forget"] == pytest.approx(expected, rel=1e-5)
    assert out.parts["dpo_margin"] == pytest.approx(margin.mean().item(), rel=1e-4, abs=1e-5)
    assert out.total.item() == pytest.approx(expected + 0.25 * retain, rel=1e-5)


def test_dpo_at_the_reference_is_log_two(tiny):
    """Policy = reference: every margin is 0, so L_DPO = -log sigmoid(0) = log 2 = 0.6931472."""
    model, _, encode = tiny
    method, groups = groups_for("dpo", 0)
    batch = {name: encode(rows) for name, rows in groups.items()}
    out = method.loss(model, batch, Reference(model, model))
    assert out.parts["forget"] == pytest.approx(math.log(2), abs=1e-6)


# ----------------------------------------------------------------------------- runs


@pytest.mark.parametrize("name", ["idk_nll", "dpo"])
def test_a_short_run_has_finite_losses(name, make_config, tmp_path):
    from obliviate.train.loop import run_training

    answers = tmp_path / "idk.txt"
    answers.write_text("I don't know.\nNo idea.\n")
    cfg = make_config(f"method.name={name}", f"method.answers={answers}", "train.max_steps=3")
    run_training(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    lines = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    for line in lines:
        figures = {k: v for k, v in line.items() if k.startswith("loss/")}
        assert {"loss/total", "loss/retain"} <= set(figures)
        assert all(math.isfinite(v) for v in figures.values()), figures
    assert (tmp_path / "run" / "model").is_dir()
