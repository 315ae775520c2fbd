"""Writing a suite's results into a run folder, the same way for every suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obliviate.io import atomic_write_json, write_jsonl


def write_suite_results(result: dict[str, Any], run_dir: str | Path, *, suite: str, tag: str, generations_prefix: str) -> Path:
    """Write ``eval/<suite>_<tag>.json`` (everything but the items) and one
    ``generations/<generations_prefix><split>.jsonl`` per split (the items); returns the JSON path."""
    run_dir = Path(run_dir)
    for split, rows in result["items"].items():
        write_jsonl(run_dir / "generations" / f"{generations_prefix}{split}.jsonl", rows)
    path = run_dir / "eval" / f"{suite}_{tag}.json"
    atomic_write_json(path, {k: v for k, v in result.items() if k != "items"})
    return path
