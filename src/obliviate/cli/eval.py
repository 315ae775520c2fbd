"""``obliviate eval --suite NAME``: run an evaluation suite on a model or a run folder (``obliviate.api.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from obliviate.errors import UserError

console = Console(stderr=True)
SUITES = ("harmful", "copyright")
HARMFUL_COLUMNS = ("harmful_rate", "refusal_rate", "degenerate_rate", "on_topic_rate", "perplexity_under_original", "count")
COPYRIGHT_COLUMNS = ("rouge_l", "bleu", "leak_rate", "exact_memorisation", "perplexity")


def evaluate(
    suite: str = typer.Option(..., "--suite", help="harmful | copyright"),
    model: Optional[str] = typer.Option(None, "--model", help="run folder, adapter folder, model folder, .gguf, alias"),
    harmful: Optional[Path] = typer.Option(None, "--harmful", help="held-out harmful prompts ('unseen')"),
    forget: Optional[Path] = typer.Option(None, "--forget", help="the forget set's prompts ('unlearned')"),
    benign: Optional[Path] = typer.Option(None, "--benign", help="benign prompts (default: obliviate's builtin set)"),
    unseen: Optional[Path] = typer.Option(None, "--unseen", help="copyright: held-out passages (prefix/continuation)"),
    retain: Optional[Path] = typer.Option(None, "--retain", help="retained set (copyright: passages; harmful: prompts)"),
    general: Optional[Path] = typer.Option(None, "--general", help="copyright: general text for perplexity"),
    prompt_field: str = typer.Option("prompt", "--prompt-field"),
    judge: str = typer.Option("refusal", "--judge", help="refusal | classifier:DIR | llm[:MODEL|URL,...]"),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for eval/ and generations/ (default: the run folder)"),
    tag: str = typer.Option("eval", "--tag", help="name of this evaluation (file names)"),
) -> None:
    """Evaluate a model with a suite and write eval/<suite>_<tag>.json and generations/."""
    from obliviate.cli.console import quiet_libraries

    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}' (known: {', '.join(SUITES)})")
    if suite == "copyright" and forget is None:
        raise UserError("the copyright suite needs --forget FILE (prefix/continuation pairs; --unseen, --retain, --general optional)")
    if suite == "harmful" and harmful is None and forget is None:
        raise UserError("the harmful suite needs --harmful FILE and/or --forget FILE (JSONL/CSV/JSON/Parquet with a prompt field)")
    quiet_libraries()
    from obliviate.api import evaluate as run_suite

    target = out or (Path(model) if model and (Path(model) / "config.yaml").exists() else Path("runs") / "eval")
    result = run_suite(
        model, suite=suite, run_dir=target, tag=tag, forget=forget, harmful=harmful, benign=benign, unseen=unseen,
        retain=retain, general=general, judge=judge, prompt_field=prompt_field, max_new_tokens=max_new_tokens,
    )
    if suite == "harmful":
        _print_table(f"harmful suite — judge: {result['judge']}", result["metrics"], HARMFUL_COLUMNS)
    else:
        _print_table("copyright suite", result["metrics"], COPYRIGHT_COLUMNS)
    console.print(f"wrote {result['path']}")


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("—" if value is None else str(value))


def _print_table(title: str, metrics: dict[str, Any], columns: tuple[str, ...]) -> None:
    table = Table(title=title)
    table.add_column("split")
    for key in columns:
        table.add_column(key.replace("_", " "), justify="right")
    for split, values in metrics.items():
        if isinstance(values, dict):
            table.add_row(split, *[_cell(values.get(key)) for key in columns])
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
