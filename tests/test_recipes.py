"""Scenario recipes: the packaged YAML is the one copy of each demo's settings, checked like a run
config, overridden with the one ``name=value`` parser, and refused on one line before any work."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from obliviate.errors import UserError
from obliviate.scenarios.recipe import RECIPES_DIR, packaged_recipe

ROOT = Path(__file__).resolve().parents[1]

# The harmful demo's shipped settings, written out once: the figures in BENCHMARKS.md (the harm
# protocol's test split, docs/harm_protocol.md) come from them.
SHIPPED_HARMFUL = {
    "model": None, "evaluate_on": "test", "eval_per_kind": 100, "split_seed": 0,
    "harmful_train_sources": ["harmbench"], "benign_train_sources": ["obliviate-benign"], "n_forget": 200, "forget_rewordings": 0,
    "n_forget_eval": 48, "n_retain": 96, "retain_rewordings": 0, "retain_kinds": ["everyday", "borderline"], "max_new_tokens": 48,
    "train_answer_tokens": 32, "gen_batch_size": 32, "reuse_original_answers": True, "judge": "refusal",
    "method": "ga_mismatch_kl", "method_options": {"num_random_answers": 3, "retain_weight": 8.0},
    "random_answers": "refusals", "lr": 1e-4, "steps": 60, "batch_size": 2,
    "retain_batch_size": 6, "lora_r": 8, "max_length": 160, "seed": 0, "precision": "fp32",
}
# The copyright scenario's recipe before (configs/copyright_synthetic.yaml with the schema's defaults
# for what it left out): forget ROUGE-L 1.000 -> 0.053, retain perplexity -9.4%, general +8.9%.
OLD_COPYRIGHT = {
    "model": "smollm2-135m-instruct",
    "book": {"source": "synthetic", "seed": 0, "chapters": 4, "paragraphs_per_chapter": 4, "max_passages": None,
             "prefix_chars": 100, "max_continuation_chars": 120, "split": "chapter", "forget": 1, "unseen": 1,
             "split_seed": 0, "finetune_on": ["forget", "unseen", "retain"]},
    "finetune": {"data": {"template": "plain", "max_length": 96},
                 "train": {"lr": 2e-3, "epochs": 10, "batch_size": 4, "seed": 0, "precision": "fp32"}},
    "unlearn": {"method": {"name": "ga_mismatch_kl", "forget_weight": 1.0, "mismatch_weight": 1.0, "retain_weight": 3.0,
                           "num_random_answers": 1},
                "train": {"lr": 1e-3, "max_steps": 20, "batch_size": 2, "warmup_steps": 2, "seed": 0,
                          "lora": {"r": 16, "alpha": 32}, "precision": "fp32"}},
    "eval": {"max_new_tokens": 36, "batch_size": 16, "max_per_split": 12, "benign_prompts": 6, "benign_max_new_tokens": 24,
             "bleu_quantile": 0.99, "calibration_unit": "text", "embedder": True, "original": True},
    "unlearn_start": "merged",
    "everyday_retain": 21,
}


def harmful(path=None, overrides=()):
    from obliviate.scenarios.harmful import load_recipe

    return load_recipe(path, overrides)


def copyright_recipe(path=None, overrides=()):
    from obliviate.scenarios.copyright import load_recipe

    return load_recipe(path, overrides)[0]


def tofu_recipe(path=None, overrides=()):
    from obliviate.scenarios.tofu import load_recipe

    return load_recipe(path, overrides)


def hallucination_recipe(path=None, overrides=()):
    from obliviate.scenarios.hallucination import load_recipe

    return load_recipe(path, overrides)


def privacy_recipe(path=None, overrides=()):
    from obliviate.scenarios.privacy import load_recipe

    return load_recipe(path, overrides)[0]


def line_of(text: str, prefix: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(prefix))


def test_every_shipped_recipe_loads_and_is_packaged():
    loaders = {"harmful": harmful, "copyright": copyright_recipe, "tofu": tofu_recipe, "hallucination": hallucination_recipe,
               "privacy": privacy_recipe}
    assert sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) == sorted(loaders)
    from obliviate.scenarios.recipe import load_recipe

    for name, load in loaders.items():
        recipe = load()
        assert recipe.model_dump() == load(packaged_recipe(name)).model_dump()
        assert load_recipe(name).model_dump() == recipe.model_dump()  # by scenario name
        assert load_recipe(packaged_recipe(name)).model_dump() == recipe.model_dump()  # by file, scenario from its name
    with pytest.raises(UserError, match="which scenario is this recipe for"):
        load_recipe("mine.yaml")
    # The wheel carries them (an installed package has no configs/ folder to fall back on).
    assert '"scenarios/recipes/*.yaml"' in (ROOT / "pyproject.toml").read_text()
    assert not (ROOT / "configs" / "copyright_synthetic.yaml").exists()  # no second copy


def test_the_harmful_recipe_resolves_to_the_shipped_settings(tmp_path):
    from obliviate.scenarios.harmful import unlearn_config

    recipe = harmful()
    assert recipe.model_dump() == SHIPPED_HARMFUL
    config = unlearn_config(recipe, tmp_path / "data")
    assert config.method.model_dump() == {"name": "ga_mismatch_kl", "num_random_answers": 3, "retain_weight": 8.0}
    train = config.train.model_dump()
    assert {k: train[k] for k in ("lr", "max_steps", "batch_size", "retain_batch_size", "seed", "precision",
                                  "save_every", "warmup_steps")} == {
        "lr": 1e-4, "max_steps": 60, "batch_size": 2, "retain_batch_size": 6, "seed": 0, "precision": "fp32",
        "save_every": 0, "warmup_steps": 6}
    assert (config.train.lora.enabled, config.train.lora.r, config.train.lora.alpha) == (True, 8, 16)
    assert config.data.max_length == 160 and config.data.random_answers.path == "builtin:refusal_answers"
    assert config.data.forget.path == str(tmp_path / "data" / "forget.jsonl")
    assert config.model.name == "smollm2-135m-instruct"


def test_the_copyright_recipe_resolves_to_the_old_run_configs(tmp_path):
    from obliviate.scenarios.copyright import load_recipe, stage_configs

    recipe, source = load_recipe()
    assert recipe.model_dump(mode="json") == OLD_COPYRIGHT
    ft, ul = stage_configs(recipe, tmp_path, source)
    assert (ft.method.name, ft.data.template, ft.data.max_length) == ("finetune", "plain", 96)
    assert (ft.train.lr, ft.train.epochs, ft.train.max_steps, ft.train.batch_size, ft.train.seed) == (2e-3, 10, None, 4, 0)
    assert (ft.train.precision, ft.train.weight_decay, ft.train.merge_lora) == ("fp32", 0.1, True)
    assert (ft.train.lora.enabled, ft.train.lora.r, ft.train.lora.alpha, ft.train.lora.dropout) == (True, 16, 32, 0.05)
    assert ul.method.model_dump() == {"name": "ga_mismatch_kl", "forget_weight": 1.0, "mismatch_weight": 1.0,
                                      "retain_weight": 3.0, "num_random_answers": 1}
    assert (ul.train.lr, ul.train.max_steps, ul.train.batch_size, ul.train.warmup_steps, ul.train.seed) == (1e-3, 20, 2, 2, 0)
    assert (ul.train.precision, ul.train.save_every, ul.train.lora.r, ul.train.lora.alpha) == ("fp32", 0, 16, 32)
    assert (ul.data.template, ul.data.max_length) == ("plain", 96)
    assert ul.model.name == str(tmp_path / "finetune" / "model")  # a new adapter on the merged fine-tuned model


def test_an_unknown_key_in_a_file_names_the_line_and_a_close_match(tmp_path):
    text = packaged_recipe("harmful").read_text().replace("\nn_forget:", "\nn_forgett:")
    bad = tmp_path / "mine.yaml"
    bad.write_text(text)
    with pytest.raises(UserError) as info:
        harmful(bad)
    message = str(info.value)
    assert message == f"{bad}:{line_of(text, 'n_forgett:')}: unknown key 'n_forgett' in top level; did you mean 'n_forget'?"

    text = packaged_recipe("copyright").read_text().replace("  prefix_chars:", "  prefix_char:")
    bad.write_text(text)
    with pytest.raises(UserError, match=rf"mine.yaml:{line_of(text, '  prefix_char:')}: unknown key 'prefix_char' in book; "
                                        r"did you mean 'prefix_chars'\?"):
        copyright_recipe(bad)


def test_a_bad_value_names_the_field_and_what_is_valid(tmp_path):
    with pytest.raises(UserError) as info:
        harmful(None, ["precision=fp16"])
    message = str(info.value)
    assert "\n" not in message and message.startswith("setting 'precision=fp16': precision:")
    assert "'auto', 'fp32' or 'bf16'" in message and "fp16" in message

    text = packaged_recipe("harmful").read_text().replace("\nprecision: fp32", "\nprecision: fp16")
    bad = tmp_path / "mine.yaml"
    bad.write_text(text)
    with pytest.raises(UserError, match=rf"mine.yaml:{line_of(text, 'precision:')}: precision: .*'auto', 'fp32' or 'bf16'"):
        harmful(bad)
    for setting, field in (("steps=0", "steps"), ("random_answers=normal", "random_answers"), ("lr=fast", "lr")):
        with pytest.raises(UserError, match=rf"^setting '{re.escape(setting)}': {field}: "):
            harmful(None, [setting])


def test_a_recipe_file_names_every_setting(tmp_path):
    text = "\n".join(line for line in packaged_recipe("harmful").read_text().splitlines() if not line.startswith("steps:"))
    partial = tmp_path / "partial.yaml"
    partial.write_text(text)
    with pytest.raises(UserError, match=r"partial.yaml: steps is missing; a recipe names every setting \(start from a copy "
                                        r"of .*recipes/harmful.yaml\)"):
        harmful(partial)
    with pytest.raises(UserError, match="recipe file .*nowhere.yaml does not exist"):
        harmful(tmp_path / "nowhere.yaml")


def test_overrides_reach_nested_keys_and_leave_the_rest():
    recipe = harmful(None, ["method_options.retain_weight=6", "steps=80"])
    assert recipe.method_options == {"num_random_answers": 3, "retain_weight": 6}
    assert recipe.steps == 80 and recipe.lr == 1e-4
    assert harmful().method_options["retain_weight"] == 8.0  # the packaged recipe is not changed
    from obliviate.scenarios.copyright import stage_configs

    recipe = copyright_recipe(None, ["unlearn.train.lr=2e-4", "book.source=milton", "model=some/model"])
    assert recipe.book.source == "milton" and recipe.book.prefix_chars == 100 and recipe.model == "some/model"
    ft, ul = stage_configs(recipe, Path("out"))
    assert ul.train.lr == 2e-4 and ul.train.max_steps == 20 and ul.train.lora.r == 16
    with pytest.raises(UserError, match=r"setting 'book.prefix_char=3': unknown key 'prefix_char' in book; did you mean"):
        copyright_recipe(None, ["book.prefix_char=3"])


def test_a_method_option_the_method_does_not_take_stops_the_demo_before_any_folder(tmp_path):
    from obliviate.scenarios.harmful import run_harmful_demo

    out = tmp_path / "demo"
    with pytest.raises(UserError, match="harmful recipe, its unlearning run config: unknown key 'bogus' in method"):
        run_harmful_demo(out, harmful(None, ["method_options.bogus=1"]), progress=False, log=lambda m: None)
    assert not out.exists()


def test_the_cli_refuses_a_bad_setting_on_one_line_and_makes_no_folder(tmp_path, monkeypatch, capsys):
    import sys

    from typer.testing import CliRunner

    from obliviate.cli import main as cli

    monkeypatch.chdir(tmp_path)  # the default run folder would be runs/demo-harmful here
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli.app, ["demo", "--scenario", "harmful", "--out", str(out), "bogus=1"])
    assert isinstance(result.exception, UserError) and result.exception.exit_code == 2
    message = str(result.exception)
    assert "\n" not in message and "unknown key 'bogus'" in message and "n_forget" in message and "precision" in message
    result = CliRunner().invoke(cli.app, ["demo", "--scenario", "copyright", "eval.max_new_token=3"])
    assert "did you mean 'max_new_tokens'" in str(result.exception)
    result = CliRunner().invoke(cli.app, ["demo", "--scenario", "harmful", "--recipe", str(tmp_path / "no.yaml")])
    assert "recipe file" in str(result.exception) and "does not exist" in str(result.exception)
    assert not out.exists() and not (tmp_path / "runs").exists()

    # Through the console script's entry point: exit code 2 and one line on stderr.
    monkeypatch.setattr(sys, "argv", ["obliviate", "demo", "--out", str(out), "precision=fp16"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: setting 'precision=fp16': precision:")
    assert not out.exists()


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_comparison_bench_takes_the_demo_recipe_and_the_one_setting_parser():
    script = _bench("compare_evaluator_gated")
    args = script.parse_args(["--out", "x"])
    recipe = harmful()
    assert (args.n_forget, args.n_unseen, args.n_retain, args.n_benign) == (128, 32, recipe.n_retain, 32)
    assert (args.lr, args.steps, args.precision, args.seed) == (recipe.lr, recipe.steps, recipe.precision, recipe.seed)
    assert script.method_settings(["negative_tokens=8", "forget_gate={every: 10}"]) == {
        "negative_tokens": 8, "forget_gate": {"every": 10}}
    with pytest.raises(SystemExit, match="must look like"):
        script.method_settings(["margin"])
