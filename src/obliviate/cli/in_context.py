"""``obliviate in-context``: write the in-context baseline's run folder (``obliviate.api.in_context_baseline``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from obliviate.cli.console import console


def in_context(
    forget: Path = typer.Option(..., "--forget", help="the forget set (JSONL/CSV/JSON/Parquet with a prompt field)"),
    model: Optional[str] = typer.Option(None, "--model", help="base model: alias, folder, .gguf, hub id, run folder"),
    run_dir: Path = typer.Option(Path("runs") / "in_context", "--run-dir"),
    instruction: Optional[str] = typer.Option(
        None, "--instruction", help="replaces the default instruction; {targets} marks where the forget prompts go"
    ),
    max_targets: int = typer.Option(20, "--max-targets", help="how many distinct forget prompts to name"),
    prompt_field: str = typer.Option("prompt", "--prompt-field"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run folder"),
) -> None:
    """The in-context baseline: no training; the base model told in its system prompt not to reveal the forget set."""
    from obliviate.api import in_context_baseline

    folder = in_context_baseline(
        model, forget=forget, run_dir=run_dir, instruction=instruction, max_targets=max_targets,
        prompt_field=prompt_field, overwrite=overwrite,
    )
    console.print(f"[green]done[/green]: {folder} (no weights changed); evaluate it with obliviate eval --model {folder}")


def register(app: typer.Typer) -> None:
    app.command("in-context")(in_context)
