"""``obliviate finetune``: the command over :mod:`obliviate.train.finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from obliviate.cli.console import quiet_libraries, show_warnings_on_one_line
from obliviate.errors import UserError

console = Console(stderr=True)


def finetune(
    data: Optional[Path] = typer.Option(None, "--data", help="pairs file (.jsonl/.json/.csv/.parquet) or a book (.txt/.md)"),
    book: Optional[str] = typer.Option(None, "--book", help="a generated book: synthetic"),
    public_domain: Optional[str] = typer.Option(None, "--public-domain", help="a public-domain work, e.g. milton, hamlet"),
    lora: bool = typer.Option(True, "--lora/--full", help="LoRA adapters (default) or all weights"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="run config (YAML) laid over the defaults"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides, e.g. train.epochs=5"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="default: <run.output_dir>/<run.name>"),
    prefix_chars: int = typer.Option(200, "--prefix-chars", help="prompt length when a book is cut into pairs"),
    block_size: Optional[int] = typer.Option(
        None, "--block-size", help="pack a book into blocks of this many tokens, trained as raw text (loss on every token)"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run folder"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its last checkpoint"),
    benchmark: Optional[str] = typer.Option(
        None, "--benchmark", help="tofu: build a benchmark's full and retain models from its recipe (settings as name=value)"
    ),
    tofu_dir: Optional[Path] = typer.Option(None, "--tofu-dir", help="TOFU's files in the hub layout (with --benchmark tofu)"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="with --benchmark: a recipe file instead of the packaged one"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Fine-tune a model (LoRA r16 by default) on pairs or a book: the model to unlearn from.

    With --benchmark tofu it builds the full and retain models of the TOFU benchmark instead."""
    quiet_libraries()
    show_warnings_on_one_line()
    if benchmark is not None:
        _benchmark_models(benchmark, tofu_dir, recipe, overrides or [], run_dir, overwrite, not no_progress,
                          other=[n for n, v in (("--data", data), ("--book", book), ("--public-domain", public_domain),
                                                ("--config", config), ("--block-size", block_size)) if v is not None])
        return
    if tofu_dir is not None or recipe is not None:
        raise UserError("--tofu-dir and --recipe go with --benchmark tofu")
    from obliviate.train.finetune import run_finetune

    result = run_finetune(
        run_dir, data=data, book=book, public_domain=public_domain, config=config, overrides=overrides or [],
        full=not lora, prefix_chars=prefix_chars, block_size=block_size, overwrite=overwrite, resume=resume, progress=not no_progress,
        log=lambda m: console.print(m),
    )
    console.print(
        f"[green]done[/green]: {result.steps} steps in {result.seconds:.1f} s ({result.tokens_per_s:.0f} tokens/s, "
        f"peak {result.peak_memory_mb:.0f} MB); model in {result.model_dir}"
    )


def _benchmark_models(name: str, tofu_dir: Optional[Path], recipe: Optional[Path], settings: List[str],
                      run_dir: Optional[Path], overwrite: bool, progress: bool, other: List[str]) -> None:
    if name != "tofu":
        raise UserError(f"unknown benchmark '{name}' (known: tofu)")
    if other:
        raise UserError(f"--benchmark tofu takes its data from the recipe; drop {', '.join(other)}")
    from obliviate.scenarios.tofu import build_reference_models, load_tofu_recipe

    checked = load_tofu_recipe(recipe, settings, tofu_dir=tofu_dir)
    target = run_dir or Path("runs") / "tofu"
    manifest = build_reference_models(target, checked, overwrite=overwrite, progress=progress,
                                      log=lambda m: console.print(m))
    for run_name, model_dir in manifest["models"].items():
        console.print(f"[green]{run_name}[/green]: {model_dir}")
    console.print(f"wrote {target / 'tofu_models.json'}")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
