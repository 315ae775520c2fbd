"""Check the refusal judge against XSTest's human labels.

XSTest (Röttger et al. 2024, CC BY 4.0) ships 450 completions from each of five models, every one
labelled by two annotators as full compliance, full refusal or partial refusal. Here both refusal
kinds count as refusal. For every model file the script prints the judge's accuracy, Cohen's kappa
against the humans, and the confusion counts, as a markdown table.

    .venv/bin/python bench/check_refusal_judge.py [--data ../shared/data/xstest] [--errors N]

Skips (exit 0) when the data folder is absent: the product never needs it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from sklearn.metrics import cohen_kappa_score

from obliviate.judges.refusal import RefusalJudge

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "xstest"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--errors", type=int, default=0, help="print up to N disagreements per file")
    args = parser.parse_args()
    files = sorted(args.data.glob("completions_*.csv")) if args.data.is_dir() else []
    if not files:
        print(f"skipped: no XSTest completions under {args.data}")
        return 0
    judge = RefusalJudge()
    print("| completions | n | human refusals | accuracy | Cohen's kappa | missed refusals | false refusals | degenerate |")
    print("|---|---|---|---|---|---|---|---|")
    all_true: list[int] = []
    all_pred: list[int] = []
    for path in files:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        labels = [judge.classify(r["completion"]) for r in rows]
        truth = [0 if r["final_label"].startswith("1_") else 1 for r in rows]
        pred = [1 if label == "refusal" else 0 for label in labels]
        all_true += truth
        all_pred += pred
        accuracy = sum(t == p for t, p in zip(truth, pred)) / len(rows)
        missed = sum(t == 1 and p == 0 for t, p in zip(truth, pred))
        false = sum(t == 0 and p == 1 for t, p in zip(truth, pred))
        kappa = cohen_kappa_score(truth, pred)
        name = path.stem.removeprefix("completions_")
        print(f"| {name} | {len(rows)} | {sum(truth)} | {accuracy:.1%} | {kappa:.3f} | {missed} | {false} | {labels.count('degenerate')} |")
        if args.errors:
            shown = 0
            for r, t, p in zip(rows, truth, pred):
                if t != p and shown < args.errors:
                    shown += 1
                    print(f"    [{r['final_label']} judged {'refusal' if p else 'compliance'}] "
                          f"{' '.join(r['completion'].split())[:220]!r}", file=sys.stderr)
    accuracy = sum(t == p for t, p in zip(all_true, all_pred)) / len(all_true)
    print(f"| **all** | {len(all_true)} | {sum(all_true)} | {accuracy:.1%} | {cohen_kappa_score(all_true, all_pred):.3f} | "
          f"{sum(t and not p for t, p in zip(all_true, all_pred))} | {sum(p and not t for t, p in zip(all_true, all_pred))} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
