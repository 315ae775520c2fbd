"""Evaluator-driven early stopping: stops on the judge's verdict, guards utility, logs its checks."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from obliviate.errors import UserError
from obliviate.gating.early_stopping import EarlyStoppingConfig, build_stopper, spread
from obliviate.judges.base import Verdict
from obliviate.train.loop import run_training


class ScriptedJudge:
    """Call n says 'harmful' for the first ``script[n]`` answers, 'refusal' for the rest."""

    judge_id = "scripted"

    def __init__(self, script):
        self.script, self.calls = list(script), 0

    def __call__(self, prompts, responses):
        harmful = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return [Verdict(i < harmful, float(i < harmful), "complied" if i < harmful else "refusal") for i in range(len(prompts))]


@dataclass
class FakeState:
    step: int
    total_steps: int
    model: torch.nn.Module
    run_dir: Path
    tokenizer: object = None
    is_main: bool = True


FLAGGED = [{"prompt": f"bad {i}"} for i in range(4)]
NORMAL = ["sky?", "cat?"]


def _stopper(script, answers, **options):
    """A stopper whose 'model' answers from a script: ``answers[k]`` is the k-th batch of answers."""
    stopper = build_stopper({"every": 2, "val_size": 4, "retain_size": 2, **options}, flagged=FLAGGED, retain=NORMAL,
                            judge=ScriptedJudge(script))
    batches = iter(answers)
    stopper._answers = lambda model, tok, prompts: next(batches)[: len(prompts)]
    return stopper


GOOD = ["The sky is blue because of scattering.", "A cat has four legs and a tail."]
BAD = ["!!!! ???? !!!! ???? ####", "the the the the the the"]


def test_stops_when_the_harmful_rate_reaches_the_target(tmp_path):
    model = torch.nn.Linear(2, 2)
    # prepare: baseline retain + step-0 check (flagged, retain); then one (flagged, retain) per check
    stopper = _stopper([4, 3, 0], [GOOD, ["x"] * 4, GOOD] + [["x"] * 4, GOOD] * 3, target_rate=0.25)
    stopper.prepare(model, None)
    reasons = [stopper(FakeState(step, 10, model, tmp_path)) for step in range(1, 5)]
    assert reasons[:3] == [None, None, None]
    assert reasons[3] == "early stopping: harmful rate 0.000 <= target 0.250"  # step 4, the 2nd check
    lines = [json.loads(x) for x in (tmp_path / "early_stopping.jsonl").read_text().splitlines()]
    assert [(x["step"], x["harmful_rate"]) for x in lines] == [(0, 1.0), (2, 0.75), (4, 0.0)]
    assert lines[1]["similarity"] == pytest.approx(1.0) and lines[1]["degenerate_rate"] == 0.0
    decision = json.loads((tmp_path / "early_stopping.json").read_text())
    assert decision["chosen_step"] == 4 and decision["judge"] == "scripted"


def test_utility_break_restores_the_best_check(tmp_path):
    model = torch.nn.Linear(2, 2)
    stopper = _stopper([4, 2, 1], [GOOD, ["x"] * 4, GOOD, ["x"] * 4, GOOD, ["x"] * 4, BAD], target_rate=0.0)
    stopper.prepare(model, None)
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert stopper(FakeState(2, 10, model, tmp_path)) is None  # harmful 0.5, utility fine: best so far
    with torch.no_grad():
        model.weight.fill_(7.0)
    reason = stopper(FakeState(4, 10, model, tmp_path))  # harmful 0.25 but the retain answers broke
    assert reason.startswith("early stopping: utility bound (degenerate rate 1.000 > 0.250")
    assert reason.endswith("restored step 2")
    assert torch.all(model.weight == 1.0)  # the weights of step 2 are back
    assert json.loads((tmp_path / "early_stopping.json").read_text())["chosen_step"] == 2


def test_similarity_bound_and_min_steps(tmp_path):
    model = torch.nn.Linear(2, 2)
    other = ["Paris is in France.", "Rivers flow downhill."]
    stopper = _stopper([4], [GOOD, ["x"] * 4, GOOD, ["x"] * 4, other, ["x"] * 4, other],
                       min_similarity=0.5, max_degenerate_rate=None, min_steps=3)
    stopper.prepare(model, None)
    assert stopper(FakeState(2, 10, model, tmp_path)) is None  # below min_steps
    assert re.search(r"similarity 0\.0\d+ < 0\.500", stopper(FakeState(4, 10, model, tmp_path)))


def test_over_refusal_bound_stops_and_restores_the_best_check(tmp_path):
    model = torch.nn.Linear(2, 2)
    refused = ["I'm sorry, but I can't help with that.", "A cat has four legs and a tail."]  # 1 of 2 refused
    stopper = _stopper([4, 2, 1], [GOOD, ["x"] * 4, GOOD, ["x"] * 4, GOOD, ["x"] * 4, refused],
                       target_rate=0.0, max_refusal_rate=0.25, min_similarity=None)
    stopper.prepare(model, None)
    assert stopper(FakeState(2, 10, model, tmp_path)) is None  # nothing refused: best so far
    reason = stopper(FakeState(4, 10, model, tmp_path))
    assert reason == "early stopping: utility bound (over-refusal 0.500 > 0.250); restored step 2"
    lines = [json.loads(x) for x in (tmp_path / "early_stopping.jsonl").read_text().splitlines()]
    assert [x["refusal_rate"] for x in lines] == [0.0, 0.0, 0.5]
    # without the bound the same answers are fine
    lenient = _stopper([4, 2, 1], [GOOD, ["x"] * 4, GOOD, ["x"] * 4, GOOD, ["x"] * 4, refused],
                       target_rate=0.0, min_similarity=None)
    lenient.prepare(model, None)
    assert lenient(FakeState(2, 10, model, tmp_path / "l")) is None
    assert lenient(FakeState(4, 10, model, tmp_path / "l")) is None


def test_patience_waits_for_checks_in_a_row_at_the_target(tmp_path):
    model = torch.nn.Linear(2, 2)
    # harmful counts of 4 at checks 2, 4, 6, 8, 10: one low reading (step 4), a rise, then two low ones
    stopper = _stopper([4, 4, 1, 3, 1, 1], [GOOD, ["x"] * 4, GOOD] + [["x"] * 4, GOOD] * 5, target_rate=0.25, patience=2)
    stopper.prepare(model, None)
    reasons = {step: stopper(FakeState(step, 20, model, tmp_path)) for step in (2, 4, 6, 8, 10)}
    assert [reasons[s] for s in (2, 4, 6, 8)] == [None, None, None, None]  # step 4 met it alone; step 6 broke the run
    assert reasons[10] == "early stopping: harmful rate 0.250 <= target 0.250 at 2 checks in a row"
    assert json.loads((tmp_path / "early_stopping.json").read_text())["chosen_step"] == 10


def test_config_is_strict_and_spread_is_even():
    with pytest.raises(UserError, match="early_stopping.evry"):
        build_stopper({"evry": 3}, flagged=FLAGGED, retain=NORMAL, judge=ScriptedJudge([0]))
    assert spread(list(range(10)), 3) == [0, 3, 6]
    assert EarlyStoppingConfig().every == 10


def test_works_as_a_stop_hook_of_the_loop(make_config, tmp_path):
    cfg = make_config("train.max_steps=12")
    stopper = build_stopper({"every": 3, "val_size": 2, "retain_size": 2, "max_new_tokens": 3, "max_degenerate_rate": None,
                             "min_similarity": None}, flagged=FLAGGED, retain=NORMAL, judge=ScriptedJudge([2, 0]))
    result = run_training(cfg, tmp_path / "run", stop_hooks=[stopper], progress=False, log=lambda m: None)
    assert (result.steps, result.stop_reason) == (6, "early stopping: harmful rate 0.000 <= target 0.100")
    lines = (tmp_path / "run" / "early_stopping.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [3, 6]  # not prepared: LoRA baseline taken late
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["stop_reason"].startswith("early stopping")


def test_distance_cluster_stops_early_from_the_run_configs_block(make_config, tmp_path):
    cfg = make_config(
        "method.name=distance_cluster", "train.max_steps=9",
        "early_stopping={every: 2, judge: refusal, target_rate: 1.0, val_size: 2, retain_size: 1, "
        "max_new_tokens: 3, max_degenerate_rate: null, min_similarity: null}",
    )
    result = run_training(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    assert result.steps == 2 and result.stop_reason.startswith("early stopping: harmful rate")
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "early_stopping.jsonl").read_text().splitlines()]
    assert steps == [0, 2]  # the baseline check, taken in setup, is written with the first one


def test_restoring_step_zero_without_a_copy_switches_lora_off(tmp_path):
    from peft import LoraConfig, get_peft_model

    from obliviate.testing import tiny_model

    model = get_peft_model(tiny_model(seed=3), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    stopper = _stopper([4, 0], [GOOD, ["x"] * 4, GOOD, ["x"] * 4, BAD])
    stopper.prepare(model, None, keep_weights=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    reason = stopper(FakeState(2, 10, model, tmp_path))
    assert reason.endswith("restored step 0")
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_the_old_method_early_stopping_block_names_the_new_one(make_config):
    with pytest.raises(UserError, match=r"'method.early_stopping' was renamed; use the run config's top-level early_stopping"):
        make_config("method.name=distance_cluster", "method.early_stopping={every: 2}")
