"""The harmful demo's report: the generic run report of the demo folder.

``obliviate report runs/demo-harmful`` rebuilds the same page from the files; the demo passes the
results it holds in memory (the same figures). The page: the before/after table of the summary,
the rates, similarity and on-topic plots, side-by-side answers per split, the training curves and
the timings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obliviate.report import collect_run, write_run_report


def write_harmful_report(run_dir: Path, before: dict, after: dict, summary: dict, config: Any) -> Path:
    run = collect_run(
        run_dir,
        evals={"harmful": {"before": before, "after": after}},
        summary=summary,
        config=config.model_dump(mode="json") if hasattr(config, "model_dump") else config,
    )
    return write_run_report(run, title="Harmful-response unlearning")
