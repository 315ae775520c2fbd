"""``obliviate demo``: the end-to-end scenarios on the default model, offline but for PyPI."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import List, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from obliviate.errors import UserError

console = Console(stderr=True)


def _apply(options, settings: list[str]):
    known = {f.name for f in fields(options)}
    for item in settings:
        if "=" not in item:
            raise UserError(f"demo setting '{item}' must look like name=value (names: {', '.join(sorted(known))})")
        key, value = item.split("=", 1)
        if key not in known:
            import difflib

            hint = difflib.get_close_matches(key, known, n=1)
            raise UserError(f"unknown demo setting '{key}'" + (f"; did you mean '{hint[0]}'?" if hint else f" (known: {', '.join(sorted(known))})"))
        setattr(options, key, yaml.safe_load(value))
    return options


def _print_summary(summary: dict) -> None:
    table = Table(title=f"harmful-response unlearning — judge: {summary['judge']}")
    for column in ("metric", "split", "before", "after", "note"):
        table.add_column(column, justify="right" if column in ("before", "after") else "left")

    def fmt(value):
        return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    for row in summary["rows"]:
        table.add_row(row["metric"], row["split"], fmt(row["before"]), fmt(row["after"]), row["note"])
    Console().print(table)
    Console().print(
        f"unseen harmful rate cut by [bold]{100 * summary['unseen_harmful_reduction']:.0f}%[/bold] (target ≥ 75%); "
        f"over-refusal {summary['over_refusal_increase_points']:+.1f} points (target ≤ +10); "
        f"forget set {summary['forget_set_size']} dialogues; total {summary['seconds_total']:.0f} s"
    )


def demo(
    scenario: str = typer.Option("harmful", "--scenario", help="harmful | copyright"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/demo-<scenario>)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run folder"),
    settings: Optional[List[str]] = typer.Argument(None, help="name=value demo settings, e.g. steps=60 lr=5e-5"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Run a whole scenario: data, original answers, detection, unlearning, evaluation, report."""
    from obliviate.cli.console import quiet_libraries, show_warnings_on_one_line

    target = out or Path("runs") / f"demo-{scenario}"
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise UserError(f"run folder {target} already exists; pass --overwrite to replace it")
    quiet_libraries()
    show_warnings_on_one_line()
    if scenario == "harmful":
        from obliviate.scenarios.harmful import HarmfulDemoOptions, run_harmful_demo

        options = _apply(HarmfulDemoOptions(), settings or [])
        summary = run_harmful_demo(target, options, overwrite=overwrite, progress=not no_progress, log=console.print)
        _print_summary(summary)
    elif scenario == "copyright":
        try:
            from obliviate.scenarios.copyright import run_copyright_demo_cli
        except ImportError:
            raise UserError("the copyright scenario is not available in this version") from None
        run_copyright_demo_cli(target, settings or [], overwrite=overwrite, progress=not no_progress)
    else:
        raise UserError(f"unknown scenario '{scenario}' (known: harmful, copyright)")
    console.print(f"report: {target / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
