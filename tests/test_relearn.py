"""The relearning attack: a little fine-tuning on part of the forget set, measured on the rest."""

import pytest
import torch

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.models.generation import score_loglik
from obliviate.train.relearn import relearn, split_for_relearning

FACTS = [
    ("the secret code", "The secret code is 4471."),
    ("Zyra's home", "Zyra lives in Quellmoor."),
    ("Brindle's founder", "Brindle was founded by Oskar Vane."),
]
ASKS = ["Tell me {}.", "What do you know about {}?", "Remind me of {}.", "Say {} again."]
# Every fact asked four ways: the attack and the rest share the answers, not the prompts.
ROWS = [Example(ask.format(topic), answer) for topic, answer in FACTS for ask in ASKS]


def test_split_is_disjoint_deterministic_and_sized():
    attack, rest = split_for_relearning(ROWS, 0.25, seed=3)
    assert len(attack) == 3 and len(rest) == 9
    assert not set(attack) & set(rest) and set(attack) | set(rest) == set(ROWS)
    assert (attack, rest) == split_for_relearning(ROWS, 0.25, seed=3)
    assert split_for_relearning(ROWS, 3, seed=3) == (attack, rest)  # a count and the same share agree
    assert split_for_relearning(ROWS, 3, seed=4)[0] != attack  # another seed, another split
    assert [ROWS.index(r) for r in rest] == sorted(ROWS.index(r) for r in rest)  # original order kept


@pytest.mark.parametrize("size", [0, 12, 1.0, 0.0, "3", True])
def test_split_rejects_sizes_that_leave_a_split_empty(size):
    with pytest.raises(UserError, match="relearning split size"):
        split_for_relearning(ROWS, size)


def test_relearning_restores_the_rest_and_leaves_the_model_alone(tiny_model_dir):
    from obliviate.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack, rest = split_for_relearning(ROWS, 0.5, seed=0)
    assert {r.response for r in rest} <= {r.response for r in attack}  # every rest answer is relearnable

    def rest_nll(network):
        scores = score_loglik(network, tokenizer, [r.prompt for r in rest], [r.response for r in rest], template="plain")
        return {"rest_nll": -sum(s.total for s in scores) / sum(s.tokens for s in scores)}

    result = relearn(
        model, tokenizer, attack, steps=12, lr=1e-2, lora_r=8, batch_size=4, seed=0,
        measure=rest_nll, measure_at=[6, 12], template="plain", precision="fp32",
        # A random model's output layer is what keeps its answers near uniform: adapt it too.
        target_modules=["q_proj", "v_proj", "up_proj", "down_proj", "lm_head"],
    )

    assert [point["step"] for point in result.curve] == [0, 6, 12]
    start, end = result.curve[0]["rest_nll"], result.curve[-1]["rest_nll"]
    assert end < result.curve[1]["rest_nll"] < start
    assert end < 0.8 * start  # the answers of rows never trained on came back
    assert result.curve[0]["tokens"] == 0 < result.curve[1]["tokens"] < result.curve[2]["tokens"] == result.tokens
    assert result.steps == 12 and result.seconds > 0
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(model, "peft_config")


def test_measure_points_outside_the_run_are_refused(tiny_model_dir):
    from obliviate.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    with pytest.raises(UserError, match="measure_at: step 5 is outside 1..4"):
        relearn(model, tokenizer, ROWS[:2], steps=4, measure=lambda m: {}, measure_at=[2, 5])
