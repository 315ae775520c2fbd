"""``obliviate unlearn``, ``obliviate config show`` and ``obliviate methods``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from obliviate.cli.console import console, quiet_libraries, show_warnings_on_one_line
from obliviate.config import load_config
from obliviate.errors import UserError

config_app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)


def unlearn(
    config: Path = typer.Option(..., "--config", "-c", help="run config (YAML)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides, e.g. train.lr=1e-4"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="default: <run.output_dir>/<run.name>"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run folder"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its last checkpoint"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Unlearn: train a method on a forget set (and a retain set) and write a run folder."""
    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    cfg = load_config(config, overrides or [])
    from obliviate.methods import build_method
    from obliviate.train.loop import load_train_data, run_training

    method = build_method(cfg.method.name, cfg.method.options())
    data = load_train_data(cfg, method)  # every data error surfaces before a model loads
    target = run_dir or Path(cfg.run.output_dir) / cfg.run.name
    from obliviate.train.run_dir import check_run_dir, config_inputs, holds_a_run, is_first_rank

    check_run_dir(target, inputs=config_inputs(cfg), resume=resume)
    if is_first_rank() and holds_a_run(target) and not (overwrite or resume):
        raise UserError(f"run folder {target} already exists; pass --overwrite to replace it or --resume to continue it")
    quiet_libraries()
    show_warnings_on_one_line()
    result = run_training(
        cfg, target, resume=resume, overwrite=overwrite, method=method, data=data,
        progress=not no_progress, log=lambda m: console.print(m),
    )
    console.print(
        f"[green]done[/green]: {result.steps} steps in {result.seconds:.1f} s "
        f"({result.tokens_per_s:.0f} tokens/s, peak {result.peak_memory_mb:.0f} MB); stop: {result.stop_reason}; "
        f"model in {result.model_dir}"
    )


def show(
    config: Path = typer.Option(..., "--config", "-c"),
    overrides: Optional[List[str]] = typer.Argument(None),
) -> None:
    """Validate a config, check its data files exist, and print it fully resolved (defaults filled in). Loads no model."""
    cfg = load_config(config, overrides or [])
    cfg.check_files()
    from obliviate.methods import get_method_class

    resolved = cfg.model_dump(mode="json")
    method_cls = get_method_class(cfg.method.name)
    resolved["method"] = {"name": cfg.method.name, **method_cls.Config.model_validate(cfg.method.options()).model_dump()}
    import yaml

    typer.echo(yaml.safe_dump(resolved, sort_keys=False), nl=False)


def methods() -> None:
    """List the registered unlearning methods with their needs and default options."""
    from obliviate.methods import available_methods

    table = Table(title="methods")
    for column in ("name", "reference", "retain", "defaults", "summary"):
        table.add_column(column)
    for name, cls in available_methods().items():
        defaults = ", ".join(f"{k}={v.default}" for k, v in cls.Config.model_fields.items())
        summary = (cls.__doc__ or cls.__module__ and __import__(cls.__module__, fromlist=["x"]).__doc__ or "").strip().splitlines()[0]
        table.add_row(name, "yes" if cls.needs_reference else "", "yes" if cls.needs_retain else "", defaults, summary)
    Console().print(table)


config_app.command("show")(show)


def register(app: typer.Typer) -> None:
    app.command("unlearn")(unlearn)
    app.command("methods")(methods)
    app.add_typer(config_app, name="config")
