"""Every YAML file the project ships loads with the loader that reads it, without its data files.

``configs/accelerate/*.yaml`` are accelerate configs (read as ``accelerate launch --config_file``
reads them); every other file under ``configs/`` is a run config (``obliviate unlearn -c``) or a
fine-tuning config (``obliviate finetune -c``, its data given on the command line);
``src/obliviate/scenarios/recipes/<scenario>.yaml`` are the scenarios' recipes. Data paths in
shipped configs name files that other commands make (``runs/...``), so nothing here requires them
to exist. A new file is picked up by the globs.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
RECIPES = REPO / "src" / "obliviate" / "scenarios" / "recipes"

ACCELERATE = sorted((CONFIGS / "accelerate").glob("*.y*ml"))
RUN_CONFIGS = sorted(p for p in CONFIGS.rglob("*.y*ml") if p not in ACCELERATE)
SCENARIO_RECIPES = sorted(RECIPES.glob("*.y*ml")) if RECIPES.is_dir() else []


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_globs_find_the_shipped_files():
    assert ACCELERATE and RUN_CONFIGS, "configs/ holds no YAML: the globs below look in the wrong place"


@pytest.mark.parametrize("path", ACCELERATE + RUN_CONFIGS + SCENARIO_RECIPES, ids=rel)
def test_opens_with_a_comment_saying_what_it_is(path):
    assert path.read_text().lstrip().startswith("#"), f"{rel(path)}: open with a comment (what it is, how to run it)"


# ----------------------------------------------------------------------------- run configs


def _run_config_sections() -> set[str]:
    from obliviate.config import RunConfig

    return set(RunConfig.model_fields)


def _check_paths_inside_repository(config, path: Path) -> None:
    """Relative data paths are read from the config's folder. The files they name are written by
    the commands in the config's comment, run from the repository root (``runs/...``), so resolved
    from ``configs/`` they must land in the repository but not in ``configs/``: a path written as
    if from the repository root would. ``builtin:`` sets must exist in the package."""
    from obliviate.data.loaders import builtin_path

    named = {f"data.{name}.path": getattr(config.data, name).path
             for name in ("forget", "retain", "random_answers") if getattr(config.data, name) is not None}
    if config.early_stopping is not None:
        for name in ("prompts", "retain_prompts"):
            value = getattr(config.early_stopping, name, None)
            if value is not None:
                named[f"early_stopping.{name}"] = value
    for field, value in named.items():
        if value.startswith("builtin:"):
            builtin_path(value.removeprefix("builtin:"))  # a UserError names the known sets
            continue
        resolved = config.resolve_path(value).resolve()
        assert REPO in resolved.parents and CONFIGS not in resolved.parents, (
            f"{rel(path)}: {field} = {value} resolves to {resolved}; relative paths are read from the config's folder"
        )


def _check_model_name(name: str, path: Path) -> None:
    from obliviate.models.loading import ALIASES

    known = ", ".join(ALIASES)
    assert name in ALIASES or "/" in name, f"{rel(path)}: model {name!r} is neither an alias ({known}) nor a hub id"


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=rel)
def test_configs_load_and_validate(path, tmp_path):
    """``load_config`` validates every section and the method's options (it does not look for the
    data files). A fine-tuning config gets its data from ``obliviate finetune --data``."""
    from obliviate.config import load_config
    from obliviate.methods import get_method_class

    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{rel(path)}: the top level is not a mapping"
    unknown = sorted(set(data) - _run_config_sections())
    assert not unknown, (
        f"{rel(path)}: sections {unknown} are not run-config sections ({', '.join(sorted(_run_config_sections()))}); "
        "configs/ holds run configs, scenario recipes live in src/obliviate/scenarios/recipes/"
    )
    if (data.get("method") or {}).get("name") == "finetune":
        from obliviate.train.finetune import finetune_config

        config = finetune_config(tmp_path / "pairs.jsonl", config_path=path)
    else:
        config = load_config(path)
        _check_paths_inside_repository(config, path)
    _check_model_name(config.model.name, path)
    get_method_class(config.method.name).Config.model_validate(config.method.options())


# ----------------------------------------------------------------------------- scenario recipes


@pytest.mark.parametrize("path", SCENARIO_RECIPES, ids=rel)
def test_scenario_recipes_load_and_make_valid_run_configs(path, tmp_path):
    """A recipe ``<scenario>.yaml`` is read by ``obliviate.scenarios.<scenario>.load_recipe``; the run
    configs the scenario builds from it (``stage_configs`` or ``unlearn_config``) validate too,
    the method's options included (no model, no data: only the configs)."""
    scenario = path.stem
    try:
        module = importlib.import_module(f"obliviate.scenarios.{scenario}")
    except ModuleNotFoundError:
        pytest.fail(f"{rel(path)}: no scenario module obliviate.scenarios.{scenario} reads it")
    assert hasattr(module, "load_recipe"), f"obliviate.scenarios.{scenario} has no load_recipe"
    loaded = module.load_recipe(path)
    recipe = loaded[0] if isinstance(loaded, tuple) else loaded
    if getattr(recipe, "model", None) is not None:
        _check_model_name(recipe.model, path)
    if hasattr(module, "stage_configs"):
        configs = list(module.stage_configs(recipe, tmp_path / "out"))
    elif hasattr(module, "unlearn_config"):
        configs = [module.unlearn_config(recipe, tmp_path / "data")]
    else:
        configs = []
    for config in configs:
        from obliviate.methods import get_method_class

        get_method_class(config.method.name).Config.model_validate(config.method.options())


# ----------------------------------------------------------------------------- accelerate configs


@pytest.mark.parametrize("path", ACCELERATE, ids=rel)
def test_accelerate_configs_read_as_accelerate_launch_reads_them(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    config = ClusterConfig.from_yaml_file(str(path))  # unknown keys and bad enum values raise here
    assert isinstance(config.num_processes, int) and config.num_processes >= 1, rel(path)
    assert isinstance(config.num_machines, int) and config.num_machines >= 1, rel(path)
    assert str(config.mixed_precision) in ("no", "fp16", "bf16", "fp8"), rel(path)
    # The nested blocks become `accelerate launch` options, one per key.
    options = {action.dest for action in launch_command_parser()._actions}
    for block in ("fsdp_config", "deepspeed_config"):
        unknown = sorted(set(getattr(config, block, None) or {}) - options)
        assert not unknown, f"{rel(path)}: {block} keys that accelerate launch does not know: {unknown}"
