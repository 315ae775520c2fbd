"""What the scenario demos share while they run and when they finish: each stage's seconds, logged
as the stage ends, and the pieces of the summary they print on the terminal."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class Laps:
    """A demo's clock: :attr:`timings` holds each stage's seconds (the summary's ``timings_s``; the
    same dict throughout, so a stage timed after the summary is built still lands in it)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self._log = log
        self._since = self.started

    def start(self) -> None:
        """The next stage starts now (what came before it is not timed)."""
        self._since = time.perf_counter()

    def lap(self, name: str) -> None:
        """The stage ``name`` ends now: record and log its seconds; the next stage starts."""
        self.timings[name] = round(time.perf_counter() - self._since, 1)
        self._log(f"  {name}: {self.timings[name]} s")
        self._since = time.perf_counter()

    def total(self) -> float:
        """Seconds since the demo started (one decimal)."""
        return round(time.perf_counter() - self.started, 1)


def format_cell(value: Any) -> str:
    """A summary table cell: a dash for nothing, three decimals for a float."""
    return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def before_after_table(title: str, rows: Iterable[Mapping[str, Any]]) -> "Table":
    """The metric / split / before / after / note table of a summary's ``rows``."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("metric", "split", "before", "after", "note"):
        table.add_column(column, justify="right" if column in ("before", "after") else "left")
    for row in rows:
        table.add_row(row["metric"], row["split"], format_cell(row["before"]), format_cell(row["after"]), row["note"])
    return table


def print_targets(console: "Console", targets: Mapping[str, bool]) -> None:
    """One line a target: met (green) or missed (red)."""
    for check, ok in targets.items():
        console.print(f"  {'[green]met[/green]' if ok else '[red]missed[/red]'}  {check}")
