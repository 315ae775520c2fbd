"""``obliviate data build NAME``: turn raw dataset rows into the files ``obliviate unlearn`` reads.

Three builds give the data roles of the seed papers' harmful-response recipe (arXiv 2310.10683,
2405.15152), using the builders of :mod:`obliviate.data.builders`:

* ``pku-forget``: PKU-SafeRLHF rows -> (prompt, response) rows, unsafe responses only (forget set);
* ``truthfulqa-normal``: TruthfulQA question + best answer rows (the papers' "normal" set, our
  ``data.retain``);
* ``truthfulqa-pool``: every TruthfulQA correct and incorrect answer once, as ``{"response": ...}``
  rows (``data.random_answers``).

The source is a local CSV / JSON / JSONL / parquet file, a folder of such files (or one saved by
``datasets``), or ``hub:ID[@REVISION]`` (``hub:`` alone: the dataset's usual hub id). The output
is written atomically: on any error nothing is written and an existing file is left as it was.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from obliviate.data import builders, fetch
from obliviate.data.loaders import iter_rows
from obliviate.errors import UserError
from obliviate.io import write_jsonl

LOCAL_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class Build:
    """One build: where its rows usually come from, the columns each row needs, the builder."""

    name: str
    description: str
    hub: str  # key of obliviate.data.fetch.HUB_SPECS: default hub id, config and split
    required: tuple[tuple[str, ...], ...]
    make: Callable[[list[dict[str, Any]], list[str], Counter], list[dict[str, Any]]]


def _pku_forget(rows, locations, counts):
    return [e.to_dict() for e in builders.pku_forget_pairs(rows, locations, counts)]


def _truthfulqa_normal(rows, locations, counts):
    return [e.to_dict() for e in builders.truthfulqa_retain(rows, locations, counts)]


def _truthfulqa_pool(rows, locations, counts):
    return [{"response": answer, "source": "truthfulqa"}
            for answer in builders.truthfulqa_answer_pool(rows, locations, counts)]


_ANSWER_COLUMNS = (("Correct Answers", "correct_answers"), ("Incorrect Answers", "incorrect_answers"))

BUILDS: dict[str, Build] = {
    "pku-forget": Build(
        "pku-forget", "PKU-SafeRLHF -> (prompt, unsafe response) forget pairs", "pku-saferlhf",
        fetch.HUB_SPECS["pku-saferlhf"].required, _pku_forget,
    ),
    "truthfulqa-normal": Build(
        "truthfulqa-normal", "TruthfulQA -> (question, best answer) normal/retain pairs", "truthfulqa",
        (("Question", "question"), ("Best Answer", "best_answer")), _truthfulqa_normal,
    ),
    "truthfulqa-pool": Build(
        "truthfulqa-pool", "TruthfulQA -> every correct and incorrect answer once (random-answer pool)",
        "truthfulqa", _ANSWER_COLUMNS, _truthfulqa_pool,
    ),
}


@dataclass(frozen=True)
class BuildResult:
    name: str
    path: Path
    read: int  # source rows
    written: int
    dropped: dict[str, int]  # reason -> count (safe, empty, duplicate, over --limit)


def _hub_rows(build: Build, target: str, split: Optional[str]) -> list[tuple[str, dict[str, Any]]]:
    spec = fetch.HUB_SPECS[build.hub]
    dataset_id, _, revision = target.partition("@")
    dataset_id = dataset_id or spec.hub_id
    # The usual dataset's config (TruthfulQA's "generation") applies only to that dataset.
    config = spec.config if dataset_id == spec.hub_id else None
    split = split or spec.split
    reason = fetch._hub_unreachable_reason()
    if reason is None:
        try:
            rows = load_hub_split(dataset_id, config, split, revision or None)
        except Exception as err:  # no network, no such repo or revision, a gated dataset...
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
    if reason is not None:
        raise UserError(
            f"hub:{target}: could not load {dataset_id} from the Hugging Face hub ({reason}); download "
            f"{spec.example_file} and pass it: obliviate data build {build.name} --from FILE"
        )
    where = f"hub:{dataset_id}" + (f"@{revision}" if revision else "")
    return [(f"{where}: row {index}", dict(row)) for index, row in enumerate(rows, start=1)]


def load_hub_split(dataset_id: str, config: Optional[str], split: str, revision: Optional[str]) -> list[dict[str, Any]]:
    """One split of a hub dataset through ``datasets`` (a seam tests replace: they run offline)."""
    import datasets

    return datasets.load_dataset(dataset_id, config, split=split, revision=revision).to_list()


def _local_rows(path: Path, split: str) -> list[tuple[str, Any]]:
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; give a CSV/JSON/JSONL/parquet file, a folder, or hub:ID[@REVISION]")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return list(iter_rows(path, "hf", split))
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES)
        if not files:
            raise UserError(f"{path}: folder holds no {', '.join(LOCAL_SUFFIXES)} file")
        return [item for file in files for item in iter_rows(file)]
    return list(iter_rows(path))


def read_source(build: Build, source: str, split: Optional[str] = None) -> list[tuple[str, Any]]:
    """(location, row) pairs of ``source``: a local file or folder, or ``hub:ID[@REVISION]``."""
    if source.startswith("hub:"):
        return _hub_rows(build, source.removeprefix("hub:"), split)
    return _local_rows(Path(source).expanduser(), split or "train")


def _check_row(build: Build, where: str, row: Any) -> None:
    """A one-line error naming the location and the first missing column, and listing the valid ones."""
    valid = ", ".join(" or ".join(repr(name) for name in alts) for alts in build.required)
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object with fields {valid}, got {type(row).__name__}")
    for alts in build.required:
        if not any(name in row for name in alts):
            found = ", ".join(map(str, row)) or "(none)"
            raise UserError(
                f"{where}: field {' or '.join(repr(n) for n in alts)} missing (row has: {found}); "
                f"a {build.name} source row needs {valid}"
            )


def build_dataset(
    name: str,
    source: str,
    out: str | Path,
    *,
    limit: Optional[int] = None,
    seed: int = 0,
    split: Optional[str] = None,
) -> BuildResult:
    """Build ``name`` from ``source`` into the JSONL ``out``.

    ``limit`` keeps a seeded random sample of that many output rows (``seed`` picks it; they stay
    in source order); without it every row is kept and ``seed`` has no effect.
    """
    key = name.strip().lower()
    if key not in BUILDS:
        raise UserError(f"unknown build {name!r}; choose one of {', '.join(BUILDS)}")
    if limit is not None and limit <= 0:
        raise UserError(f"--limit: {limit} is not a positive number of rows")
    build = BUILDS[key]
    pairs = read_source(build, str(source), split)
    for where, row in pairs:
        _check_row(build, where, row)
    if not pairs:
        raise UserError(f"{source}: holds no rows for {build.name}")
    counts: Counter = Counter()
    rows = build.make([row for _, row in pairs], [where for where, _ in pairs], counts)
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
        counts["over --limit"] += len(rows) - limit
        rows = [rows[i] for i in keep]
    if not rows:
        raise UserError(f"{source}: no {build.name} rows left after dropping {dict(counts) or 'nothing'}; check the source")
    written = write_jsonl(out, rows)
    return BuildResult(build.name, Path(out), len(pairs), written, dict(counts))


__all__ = ["BUILDS", "Build", "BuildResult", "build_dataset", "load_hub_split", "read_source"]
