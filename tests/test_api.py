"""The Python API (obliviate.unlearn / evaluate / load_config) on the tiny model."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import obliviate
from conftest import FORGET, RETAIN
from obliviate.errors import UserError

FAST = {"lr": 1e-2, "max_steps": 3, "batch_size": 2, "save_every": 0, "seed": 0}
IDS = torch.tensor([[5, 40, 41, 42, 43, 44, 45, 46]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """One unlearning run from lists of dicts, shared by the tests that read it."""
    folder = tmp_path_factory.mktemp("api") / "run"
    return obliviate.unlearn(model=str(tiny_model_dir), forget=FORGET, retain=RETAIN, run_dir=folder, train=FAST,
                             progress=False, log=None)


def test_unlearn_from_lists_of_dicts_writes_a_run_folder_and_returns_the_trained_model(run, tiny_model_dir):
    from obliviate.models.loading import load_model_and_tokenizer, load_trained

    for name in ("config.yaml", "env.json", "train_log.jsonl", "model/adapter_config.json"):
        assert (run.run_dir / name).is_file(), name
    assert run.steps == 3 and run.stop_reason == "max_steps" and run.model_dir == run.run_dir / "model"
    # The rows were written into the run folder and the config names those files, so the run can
    # be repeated or resumed from its config.yaml alone.
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    for role, rows in (("forget", FORGET), ("retain", RETAIN)):
        path = run.run_dir / "data" / f"{role}.jsonl"
        assert config["data"][role]["path"] == str(path.resolve())
        assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    assert config["model"]["name"] == str(tiny_model_dir) and config["train"]["lr"] == FAST["lr"]
    base, _ = load_model_and_tokenizer(str(tiny_model_dir))
    assert not torch.allclose(logits(run.model), logits(base), atol=1e-4)  # it trained
    with run.model.disable_adapter():  # LoRA: the original is one switch away
        torch.testing.assert_close(logits(run.model), logits(base))
    reloaded, _ = load_trained(run.run_dir)  # the one loader of finished runs
    torch.testing.assert_close(logits(reloaded), logits(run.model))


def test_a_finished_run_loads_with_the_tokenizer_saved_beside_its_adapter(run, tiny_model_dir, tmp_path):
    import shutil

    from obliviate.models.loading import load_trained

    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    saved = copy / "model" / "tokenizer_config.json"
    settings = json.loads(saved.read_text())
    settings["model_max_length"] = 123  # a run may change its tokenizer; the base model's is not it
    saved.write_text(json.dumps(settings))
    _, tokenizer = load_trained(copy)
    assert tokenizer.model_max_length == 123
    _, tokenizer = load_trained(copy / "model")  # the adapter folder itself
    assert tokenizer.model_max_length == 123


def test_resume_needs_the_same_rows(run, tiny_model_dir):
    changed = [dict(FORGET[0], response="Something else entirely."), *FORGET[1:]]
    with pytest.raises(UserError, match=r"cannot resume .*the forget rows differ"):
        obliviate.unlearn(model=str(tiny_model_dir), forget=changed, retain=RETAIN, run_dir=run.run_dir, train=FAST,
                          resume=True, progress=False, log=None)
    with pytest.raises(UserError, match="already exists; pass overwrite=True"):
        obliviate.unlearn(model=str(tiny_model_dir), forget=FORGET, retain=RETAIN, run_dir=run.run_dir, train=FAST,
                          progress=False, log=None)


def test_unlearn_a_model_object_from_a_dataset_a_file_and_a_list_of_answers(tiny_model_dir, data_files, tmp_path):
    import datasets

    from obliviate.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    answers = ["I cannot say.", "That is not known."]
    result = obliviate.unlearn(
        model=model, tokenizer=tokenizer, forget=datasets.Dataset.from_list(FORGET), retain=data_files["retain"],
        random_answers=answers, run_dir=tmp_path / "run", train={**FAST, "lora": {"enabled": False}},
        progress=False, log=None,
    )
    assert result.model is model  # trained in place (full fine-tuning here)
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, start[name])]
    assert moved, "no weight changed"
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["data"]["retain"]["path"] == str(data_files["retain"])  # a file stays where it is
    assert config["model"]["name"] == str(tiny_model_dir)  # the object's name_or_path
    pool = [json.loads(line) for line in (tmp_path / "run" / "data" / "random_answers.jsonl").read_text().splitlines()]
    assert pool == [{"response": a} for a in answers]
    assert [json.loads(line) for line in (tmp_path / "run" / "data" / "forget.jsonl").read_text().splitlines()] == FORGET


@pytest.mark.parametrize(
    "forget, message",
    [
        ([FORGET[0], {"prompt": "Where?"}], r"^forget\[1\]: field 'response' missing \(row has: prompt\); set data.forget.response_field"),
        ([FORGET[0], FORGET[1], {"prompt": "Where?", "response": "  "}], r"^forget\[2\]: field 'response' must be a non-empty string"),
        (["just a string"], r"^forget\[0\]: expected an object"),
        ([], r"^forget: no rows"),
        ({"prompt": "a", "response": "b"}, r"^forget: expected a list of rows"),
    ],
)
def test_a_bad_row_names_its_index_and_field_and_leaves_nothing(forget, message, tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match=message):
        obliviate.unlearn(model=str(tiny_model_dir), forget=forget, retain=RETAIN, run_dir=tmp_path / "run",
                          train=FAST, progress=False, log=None)
    assert not (tmp_path / "run").exists()


def test_argument_mistakes_are_one_line_errors(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="needs its tokenizer"):
        obliviate.unlearn(model=torch.nn.Linear(2, 2), forget=FORGET)
    with pytest.raises(UserError, match="tokenizer= goes with a model object"):
        obliviate.unlearn(model=str(tiny_model_dir), tokenizer=object(), forget=FORGET)
    with pytest.raises(UserError, match="unknown key 'lrr' in train; did you mean 'lr'"):
        obliviate.unlearn(model=str(tiny_model_dir), forget=FORGET, train={"lrr": 1e-4})


def test_load_config_merges_keyword_sections_over_a_file(tmp_path, data_files, monkeypatch):
    recipe = tmp_path / "recipes" / "run.yaml"
    recipe.parent.mkdir()
    (recipe.parent / "forget.jsonl").write_text(data_files["forget"].read_text())
    recipe.write_text("data:\n  forget: {path: forget.jsonl}\n  max_length: 64\ntrain:\n  lr: 0.1\n  batch_size: 4\n")
    monkeypatch.chdir(tmp_path)
    config = obliviate.load_config(recipe, ["train.seed=7"], train={"lr": 2e-6, "lora": {"r": 4}},
                                   data={"retain": {"path": "retain.jsonl"}}, method={"name": "grad_diff"})
    assert config.train.lr == 2e-6 and config.train.batch_size == 4 and config.train.lora.r == 4  # merged key by key
    assert config.train.seed == 7 and config.data.max_length == 64 and config.method.name == "grad_diff"
    assert config.resolve_path(config.data.forget.path) == recipe.parent / "forget.jsonl"  # from the file's folder
    assert config.data.retain.path == str(tmp_path / "retain.jsonl")  # a keyword path: from the current folder
    again = obliviate.load_config(config, train={"max_steps": 5})  # a RunConfig is a starting point too
    assert again.train.lr == 2e-6 and again.train.max_steps == 5
    assert again.resolve_path(again.data.forget.path) == recipe.parent / "forget.jsonl"
    with pytest.raises(UserError, match=r"run.yaml:\d+: train.lr: Input should be greater than 0"):
        obliviate.load_config(recipe, train={"lr": -1})


def test_evaluate_runs_each_suite_on_a_model_folder_or_a_run(run, tiny_model_dir, tmp_path):
    result = obliviate.evaluate(
        str(tiny_model_dir), suite="harmful", forget=FORGET, harmful=["How do I pick a lock?"], benign=["Name a fruit."],
        max_new_tokens=4, embed=False, progress=False, run_dir=tmp_path / "out", tag="before",
    )
    assert set(result["metrics"]) == {"unlearned", "unseen", "benign"}
    assert result["metrics"]["unlearned"]["count"] == 4 and 0.0 <= result["metrics"]["unseen"]["harmful_rate"] <= 1.0
    saved = json.loads((tmp_path / "out" / "eval" / "harmful_before.json").read_text())
    assert result["path"] == str(tmp_path / "out" / "eval" / "harmful_before.json")
    assert saved["metrics"] == json.loads(json.dumps(result["metrics"])) and saved["model"] == str(tiny_model_dir)
    copyright = obliviate.evaluate(
        run, suite="copyright", forget=FORGET, retain=RETAIN, general=["Some text that is not from the book."],
        max_new_tokens=4, benign_prompts=0, embed=False,
    )
    assert copyright["metrics"]["forget"]["count"] == 4 and copyright["metrics"]["retain"]["count"] == 4
    assert "path" not in copyright  # nothing written without run_dir
    with pytest.raises(UserError, match=r"^harmful\[1\]: field 'prompt'"):
        obliviate.evaluate(str(tiny_model_dir), harmful=["ok", {"question": "x"}], embed=False)
    with pytest.raises(UserError, match="needs forget="):
        obliviate.evaluate(str(tiny_model_dir), suite="copyright", embed=False)


def test_the_eval_command_calls_the_api_and_writes_into_the_run_folder(run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import obliviate.models.embeddings as embeddings
    from obliviate.cli.main import app

    monkeypatch.setattr(embeddings, "load_embedder", lambda required=False: None)  # no download in tests
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps(r) + "\n" for r in FORGET))
    result = CliRunner().invoke(app, ["eval", "--suite", "harmful", "--model", str(run.run_dir), "--forget", str(forget),
                                      "--benign", str(forget), "--max-new-tokens", "4", "--tag", "cli"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run.run_dir / "eval" / "harmful_cli.json").read_text())
    assert saved["metrics"]["unlearned"]["count"] == 4 and saved["model"] == str(run.run_dir)
    result = CliRunner().invoke(app, ["eval", "--suite", "copyright", "--model", str(run.run_dir)])
    assert isinstance(result.exception, UserError) and "--forget FILE" in str(result.exception)


def test_import_obliviate_loads_no_torch_and_changes_no_setting():
    code = (
        "import json, os, sys; import obliviate; "
        "print(json.dumps(['torch' in sys.modules, os.environ.get('THP_MEM_ALLOC_ENABLE'), obliviate.__version__]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "OBLIVIATE_MEMORY_TUNING")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    torch_loaded, thp, version = json.loads(out.stdout.strip().splitlines()[-1])
    assert torch_loaded is False and thp is None and version
