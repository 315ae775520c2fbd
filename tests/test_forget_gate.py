"""The forget gate: the judge re-reads the forget prompts during training and only flagged ones are unlearnt."""

import json

import numpy as np
import pytest
import torch

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.gating.forget_gate import ForgetGateConfig, build_gate
from obliviate.judges.base import Verdict
from obliviate.methods import build_method
from obliviate.methods.base import BatchContext, Reference
from obliviate.testing import tiny_model, tiny_tokenizer
from obliviate.train.loop import Encoder, TrainData, run_training
from tests.conftest import FORGET


class PromptJudge:
    """Flags exactly the prompts in ``harmful`` (a list of sets: call n uses ``harmful[n]``, the last one after)."""

    judge_id = "prompt-script"

    def __init__(self, harmful):
        self.harmful, self.calls, self.seen = [set(h) for h in harmful], 0, []

    def __call__(self, prompts, responses):
        flagged = self.harmful[min(self.calls, len(self.harmful) - 1)]
        self.calls += 1
        self.seen.append((list(prompts), list(responses)))
        return [Verdict(p in flagged, float(p in flagged), "complied" if p in flagged else "refusal") for p in prompts]


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    return tok, tiny_model(len(tok), seed=1)


def test_gate_keeps_the_prompts_the_judge_still_flags(tiny):
    tok, model = tiny
    rows = [{"prompt": "a?"}, {"prompt": "b?"}, {"prompt": "a?"}, {"prompt": "c?"}]
    judge = PromptJudge([{"b?"}, {"a?", "c?"}])
    gate = build_gate({"every": 2, "max_new_tokens": 3}, rows, judge=judge)
    assert [gate.active(p) for p in ("a?", "b?", "c?")] == [True, True, True]  # detection flagged all
    record = gate.update(model, tok, 2)
    assert [gate.active(p) for p in ("a?", "b?", "c?")] == [False, True, False]
    assert record["active"] == 1 and record["of"] == 3 and record["labels"] == {"complied": 1, "refusal": 2}
    assert judge.seen[0][0] == ["a?", "b?", "c?"]  # each prompt answered once
    assert all(isinstance(a, str) for a in judge.seen[0][1])
    gate.update(model, tok, 4)  # a prompt can come back when the model relapses
    assert [gate.active(p) for p in ("a?", "b?", "c?")] == [True, False, True]
    assert gate.share == pytest.approx(2 / 3)


def test_gate_config_is_strict():
    with pytest.raises(Exception, match="evry"):
        ForgetGateConfig.model_validate({"evry": 3})
    with pytest.raises(UserError, match="forget_gate"):
        from obliviate.config import load_config

        load_config(None, data={"model": {"name": "x"}, "data": {"forget": {"path": "f.jsonl"}},
                                "method": {"name": "distance_cluster", "forget_gate": {"every": 0}}})


@pytest.fixture(scope="module")
def parts(tiny):
    tok, model = tiny
    original = tiny_model(len(tok), seed=2)
    encoder = Encoder(tok, 64, "auto")
    forget = [Example("secret?", "code 12"), Example("where?", "in Quellmoor")]
    data = TrainData(forget, [Example("sky?", "blue"), Example("cat legs?", "four")])
    return tok, model, Reference(model, original), encoder, data


def _method(parts, judge, **options):
    tok, model, reference, encoder, data = parts
    method = build_method("distance_cluster", {"forget_gate": {"every": 1, "max_new_tokens": 2}, **options})
    # as the training loop does: the gate is built from the method's block and handed to setup
    gate = build_gate(method.forget_gate_config(), [{"prompt": e.prompt} for e in data.forget], judge=judge)
    method.setup(
        model, reference, {"tokenizer": tok, "encoder": encoder, "data": data, "device": torch.device("cpu"), "forget_gate": gate}
    )
    return method


def _loss(method, parts):
    tok, model, reference, encoder, data = parts
    groups = method.build_batch(data.forget, data.retain, BatchContext(np.random.default_rng(0), []))
    batch = {k: encoder.batch(v, "cpu") for k, v in groups.items() if v}
    return groups, method.loss(model, batch, reference)


def test_gated_off_prompts_leave_the_forget_terms_and_the_push_shrinks(parts):
    tok, model, reference, encoder, data = parts
    weights = {"negative_weight": 0.7, "positive_weight": 1.3, "cluster_weight": 0.4, "retain_weight": 2.0}
    ungated = build_method("distance_cluster", weights)
    ungated.setup(model, reference, {"tokenizer": tok, "encoder": encoder, "data": data, "device": torch.device("cpu")})
    method = _method(parts, PromptJudge([{"where?"}, set()]), **weights)

    groups, full = _loss(method, parts)  # before any check every prompt is active: the ungated loss
    _, plain = _loss(ungated, parts)
    assert full.total.item() == pytest.approx(plain.total.item(), rel=1e-6) and full.parts["forget_active"] == 1.0

    method.gate.update(model, tok, 1)  # only "where?" is still flagged
    groups, half = _loss(method, parts)
    assert [e.prompt for e in groups["forget"]] == ["where?"]
    assert {e.prompt for e in groups["positive"]} == {"where?"}
    # The ungated method (same centres, same attached refusal) on the kept row alone.
    _, one = _loss(ungated, (tok, model, reference, encoder, TrainData([data.forget[1]], data.retain)))
    # The kept prompt's terms, at half weight (1 of 2 rows kept); the retain term unchanged.
    expected = 0.5 * (0.7 * one.parts["negative"] + one.parts["positive"]) + 2.0 * one.parts["retain_kl"]
    assert half.parts["negative"] == pytest.approx(one.parts["negative"], rel=1e-5)
    assert half.parts["positive"] == pytest.approx(one.parts["positive"], rel=1e-5)
    assert half.total.item() == pytest.approx(expected, rel=1e-5)
    assert half.parts["forget_active"] == 0.5

    method.gate.update(model, tok, 2)  # nothing flagged: only the retain term trains
    groups, none = _loss(method, parts)
    assert groups["forget"] == [] and groups["positive"] == []
    assert none.parts["negative"] == 0.0 and none.parts["positive"] == 0.0 and none.parts["forget_active"] == 0.0
    assert none.total.item() == pytest.approx(2.0 * one.parts["retain_kl"], rel=1e-5)


def test_the_loop_runs_the_gate_and_stops_unlearning_what_is_refused(make_config, tmp_path, monkeypatch):
    import obliviate.judges.registry as registry

    judge = PromptJudge([{FORGET[0]["prompt"]}, set()])  # step 2: one prompt left; step 4: none
    monkeypatch.setattr(registry, "judge_from_spec", lambda spec, **kw: judge)
    cfg = make_config("method.name=distance_cluster", "train.max_steps=6",
                      "method.forget_gate={every: 2, max_new_tokens: 3}")
    run_training(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    gate_log = [json.loads(x) for x in (tmp_path / "run" / "forget_gate.jsonl").read_text().splitlines()]
    assert [(r["step"], r["active"], r["of"]) for r in gate_log] == [(2, 1, 4), (4, 0, 4)]  # none after the last step
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    share = {r["step"]: r["loss/forget_active"] for r in log}
    assert share[1] == share[2] == 1.0 and share[5] == share[6] == 0.0
    assert share[3] in (0.0, 0.5)  # a batch of two holds the one prompt left, or not
    assert all(r["loss/negative"] == 0.0 for r in log if r["step"] > 4)
    assert all(r["loss/retain_kl"] >= 0.0 for r in log)
