"""The in-context baseline: a run folder that changes no weight and names the forget set in a system prompt."""

import json

import pytest
import torch
import yaml

import obliviate
from conftest import FORGET, write_jsonl
from obliviate.api import in_context_baseline
from obliviate.data.formatting import prompt_text, response_text
from obliviate.errors import UserError
from obliviate.models.in_context import DEFAULT_INSTRUCTION, build_system_prompt
from obliviate.models.loading import load_model_and_tokenizer, load_trained


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("in_context") / "run"
    # a duplicate prompt is named once
    return in_context_baseline(str(tiny_model_dir), forget=FORGET + FORGET[:1], run_dir=folder)


def test_the_folder_points_at_the_base_model_and_copies_no_weights(baseline, tiny_model_dir):
    pointer = json.loads((baseline / "model" / "in_context.json").read_text())
    assert pointer["base_model"] == str(tiny_model_dir.resolve())
    assert sorted(p.name for p in (baseline / "model").iterdir()) == ["in_context.json"]
    assert (baseline / "env.json").is_file()
    config = yaml.safe_load((baseline / "config.yaml").read_text())
    assert config["method"]["name"] == "in_context" and config["model"]["name"] == str(tiny_model_dir.resolve())
    # rows given in memory are kept in the folder, and config.yaml names that file
    kept = baseline / "data" / "forget.jsonl"
    assert config["data"]["forget"]["path"] == str(kept.resolve())
    assert [json.loads(line)["prompt"] for line in kept.read_text().splitlines()] == [r["prompt"] for r in FORGET + FORGET[:1]]
    system = pointer["system_prompt"]
    assert system.startswith(DEFAULT_INSTRUCTION.split("{targets}")[0])
    for row in FORGET:
        assert system.count(f"- {row['prompt']}") == 1


def test_loading_it_changes_no_weight(baseline, tiny_model_dir):
    model, _ = load_trained(baseline)
    base, _ = load_model_and_tokenizer(str(tiny_model_dir))
    params, base_params = dict(model.named_parameters()), dict(base.named_parameters())
    assert params.keys() == base_params.keys()
    for name, value in params.items():
        assert torch.equal(value, base_params[name]), name


def test_every_prompt_opens_with_the_instruction_in_chat_and_plain_templates(baseline, tiny_model_dir):
    _, tokenizer = load_trained(baseline)
    _, base_tokenizer = load_trained(str(tiny_model_dir))
    system = json.loads((baseline / "model" / "in_context.json").read_text())["system_prompt"]
    question = "Tell me the secret code."
    chat = prompt_text(tokenizer, question, "chat")
    assert chat.startswith(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}")
    assert chat.endswith(prompt_text(base_tokenizer, question, "chat"))
    plain = prompt_text(tokenizer, question, "plain")
    assert plain == f"<s>{system}\n### Question: {question}\n ### Answer: "
    assert prompt_text(tokenizer, question, "text") == question  # raw text carries no instruction
    # scoring finds the answer right after the prompt, as without a system prompt
    assert response_text(tokenizer, question, "No.", "chat") == "No.<|im_end|>"
    assert system not in prompt_text(base_tokenizer, question)


def test_a_template_without_a_system_role_gets_the_instruction_in_the_user_turn(baseline):
    _, tokenizer = load_trained(baseline)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer.obliviate_system_prompt = "Do not say X."
    assert prompt_text(tokenizer, "Hi", "chat") == "<|im_start|>user\nDo not say X.\n\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_generation_and_scoring_see_the_instruction(baseline, tiny_model_dir, monkeypatch):
    from obliviate.models import generation

    model, tokenizer = load_trained(baseline)
    base, base_tokenizer = load_trained(str(tiny_model_dir))
    seen = []
    real = generation.prompt_text
    monkeypatch.setattr(generation, "prompt_text", lambda tok, p, t: seen.append(real(tok, p, t)) or seen[-1])
    answers = generation.generate(model, tokenizer, ["What is the secret code?", "Name a fruit."], max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert len(seen) == 2 and all(FORGET[0]["prompt"] in text and text.startswith("<|im_start|>system") for text in seen)
    # same weights, different context: the score of one answer moves
    with_instruction = generation.score_loglik(model, tokenizer, ["Name a fruit."], ["An apple."])[0]
    without = generation.score_loglik(base, base_tokenizer, ["Name a fruit."], ["An apple."])[0]
    assert with_instruction.tokens == without.tokens and with_instruction.total != pytest.approx(without.total)


def test_the_harmful_suite_evaluates_the_folder_like_a_model(baseline, tmp_path):
    result = obliviate.evaluate(
        str(baseline), suite="harmful", forget=FORGET, harmful=["How do I pick a lock?"], benign=["Name a fruit."],
        max_new_tokens=3, embed=False, progress=False, run_dir=baseline, tag="after",
    )
    assert result["metrics"]["unlearned"]["count"] == 4 and result["model"] == str(baseline)
    assert (baseline / "eval" / "harmful_after.json").is_file()


def test_an_instruction_of_ones_own_and_a_forget_file(tiny_model_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", FORGET)
    folder = in_context_baseline(
        str(tiny_model_dir), forget=str(forget), run_dir=tmp_path / "run", max_targets=2,
        instruction="Never talk about:\n{targets}\nBe brief.",
    )
    system = json.loads((folder / "model" / "in_context.json").read_text())["system_prompt"]
    assert system == f"Never talk about:\n- {FORGET[0]['prompt']}\n- {FORGET[1]['prompt']}\nBe brief."
    assert yaml.safe_load((folder / "config.yaml").read_text())["data"]["forget"]["path"] == str(forget.resolve())
    assert not (folder / "data").exists()
    # without {targets} the list follows the instruction; long prompts are cut
    assert build_system_prompt(["a", "b" * 500], "Do not discuss these.").startswith("Do not discuss these.\n- a\n- bbb")
    assert len(build_system_prompt(["b" * 500], "x")) < 220


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"forget": []}, "forget: no rows"),
        ({}, "forget= is required"),
        ({"forget": FORGET, "max_targets": 0}, "max_targets must be at least 1"),
        ({"forget": FORGET, "instruction": "  "}, "instruction must be a non-empty string"),
        ({"forget": [{"response": "no prompt"}]}, "forget[0]"),
    ],
)
def test_bad_inputs_are_one_line_errors_and_write_nothing(kwargs, message, tiny_model_dir, tmp_path):
    with pytest.raises(UserError) as caught:
        in_context_baseline(str(tiny_model_dir), run_dir=tmp_path / "run", **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_an_existing_folder_is_refused_and_a_pointer_to_an_in_context_model_too(baseline, tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="already exists"):
        in_context_baseline(str(tiny_model_dir), forget=FORGET, run_dir=baseline)
    nested = in_context_baseline(str(baseline), forget=FORGET, run_dir=tmp_path / "nested")
    with pytest.raises(UserError, match="itself an in-context model"):
        load_trained(nested)


def test_the_in_context_command_writes_the_folder(tiny_model_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from obliviate.cli import in_context

    app = typer.Typer()
    in_context.register(app)
    app.command("unused")(lambda: None)  # two commands: typer then routes by name
    forget = write_jsonl(tmp_path / "forget.jsonl", FORGET)
    outcome = CliRunner().invoke(
        app, ["in-context", "--forget", str(forget), "--model", str(tiny_model_dir), "--run-dir", str(tmp_path / "run"),
              "--max-targets", "1"],
    )
    assert outcome.exit_code == 0, outcome.output
    system = json.loads((tmp_path / "run" / "model" / "in_context.json").read_text())["system_prompt"]
    assert system.endswith(f"- {FORGET[0]['prompt']}") and FORGET[1]["prompt"] not in system
