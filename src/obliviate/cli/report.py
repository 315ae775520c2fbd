"""``obliviate report RUN [RUN ...]``: the HTML report of a run folder, or one page comparing several."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report(
    runs: List[Path] = typer.Argument(..., metavar="RUN...", help="run folders (unlearning or evaluation runs, demo folders)"),
    out: Optional[Path] = typer.Option(
        None, "--out", help="the HTML file to write (default RUN/report.html; required with several runs)"),
    title: Optional[str] = typer.Option(None, "--title", help="the page title"),
    tag: Optional[str] = typer.Option(
        None, "--tag", help="show only this evaluation tag of each suite (e.g. forget01 of a TOFU benchmark)"),
) -> None:
    """Write a self-contained HTML report (plots, tables, example answers) and print its path."""
    from obliviate.report import build_report

    typer.echo(str(build_report(runs, out=out, title=title, tag=tag)))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
