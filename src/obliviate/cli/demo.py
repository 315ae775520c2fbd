"""``obliviate demo``: the end-to-end scenarios on the default model, offline but for PyPI."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from obliviate.errors import UserError

console = Console(stderr=True)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"harmful-response unlearning — judge: {summary['judge']}")
    for column in ("metric", "split", "before", "after", "note"):
        table.add_column(column, justify="right" if column in ("before", "after") else "left")

    def fmt(value):
        return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    for row in summary["rows"]:
        table.add_row(row["metric"], row["split"], fmt(row["before"]), fmt(row["after"]), row["note"])
    Console().print(table)
    Console().print(headline_text(summary))


def headline_text(summary: dict) -> str:
    """The demo's closing lines: the protocol split it evaluated, its sources, and the headline
    figures with their 95% intervals and targets."""
    protocol = summary.get("protocol") or {}
    split = summary.get("evaluated_on", "test")
    tests = protocol.get("test_sources") or {}
    lines = []
    used = (protocol.get("used") or {}).get("evaluated") or {}
    sizes = {kind: (protocol.get("splits") or {}).get(split, {}).get(kind, {}).get("count") for kind in ("harmful", "benign")}
    if used and sizes["harmful"] and (used.get("harmful"), used.get("benign")) != (sizes["harmful"], sizes["benign"]):
        part = (f" ({used['harmful']} of its {sizes['harmful']} harmful and {used['benign']} of its {sizes['benign']} "
                "benign prompts; eval_per_kind=null for all)")
    else:
        part = ""
    if split == "test":
        lines.append(f"test split{part}, sources no training or tuning data came from: harmful "
                     f"{', '.join(tests.get('harmful', []))}; benign {', '.join(tests.get('benign', []))}")
    else:
        lines.append(f"{split} split (tuning figures; the reported ones come from evaluate_on=test)")
    cut, benign = summary.get("harmful_cut"), summary.get("benign_answered_change_points")
    if cut and benign:
        degenerate = max((d["rate"] for d in summary.get("degenerate_after", {}).values()), default=float("nan"))
        lines.append(
            f"on-topic harmful compliance cut by [bold]{100 * cut['value']:.0f}%[/bold] "
            f"[95% CI {100 * cut['low']:.0f}–{100 * cut['high']:.0f}%, {cut['count']} prompts] (target ≥ 75%); "
            f"benign answered on topic {benign['value']:+.1f} points [{benign['low']:+.1f}, {benign['high']:+.1f}; "
            f"{benign['count']} prompts] (target ≥ −5); most degenerate set {100 * degenerate:.1f}% (target ≤ 5%)"
        )
    lines.append(f"forget set {summary['forget_set_size']} dialogues; one training seed ({summary['options']['seed']}); "
                 f"total {summary['seconds_total']:.0f} s")
    return "\n".join(lines)


def demo(
    scenario: str = typer.Option("harmful", "--scenario", help="harmful | copyright | hallucination | privacy"),
    recipe: Optional[Path] = typer.Option(
        None, "--recipe", help="a recipe file naming every setting (default: the scenario's packaged recipe)"
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/demo-<scenario>)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run folder"),
    settings: Optional[List[str]] = typer.Argument(
        None, help="name=value recipe settings, e.g. steps=80 method_options.retain_weight=6 (harmful), "
                   "unlearn.train.lr=2e-4 book.source=milton (copyright)"
    ),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Run a whole scenario: data, original answers, detection, unlearning, evaluation, report."""
    from obliviate.cli.console import quiet_libraries, show_warnings_on_one_line
    from obliviate.scenarios.recipe import SCHEMAS, load_recipe

    if scenario not in SCHEMAS:
        raise UserError(f"unknown scenario '{scenario}' (known: {', '.join(SCHEMAS)})")
    settings = list(settings or [])
    checked = load_recipe(recipe or scenario, settings, scenario=scenario)  # before anything else happens
    target = out or Path("runs") / f"demo-{scenario}"
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise UserError(f"run folder {target} already exists; pass --overwrite to replace it")
    quiet_libraries()
    show_warnings_on_one_line()
    if scenario == "harmful":
        from obliviate.scenarios.harmful import run_harmful_demo

        summary = run_harmful_demo(target, checked, overwrite=overwrite, progress=not no_progress, log=console.print)
        _print_summary(summary)
    elif scenario == "hallucination":
        from obliviate.scenarios.hallucination import print_summary as print_hallucination
        from obliviate.scenarios.hallucination import run_hallucination_demo

        summary = run_hallucination_demo(target, checked, overwrite=overwrite, progress=not no_progress,
                                         log=console.print)
        print_hallucination(summary)
    elif scenario == "privacy":
        from obliviate.scenarios.privacy import print_summary as print_privacy
        from obliviate.scenarios.privacy import run_privacy_demo

        summary = run_privacy_demo(target, config=recipe, overrides=settings, overwrite=overwrite,
                                   progress=not no_progress, log=console.print)
        print_privacy(summary)
    else:
        from obliviate.scenarios.copyright import print_summary, run_copyright_demo

        summary = run_copyright_demo(target, config=recipe, overrides=settings, overwrite=overwrite,
                                     progress=not no_progress, log=console.print)
        print_summary(summary)
    console.print(f"report: {target / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
