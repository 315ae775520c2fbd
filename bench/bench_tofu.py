"""The TOFU benchmark on a laptop, one command and a seed (recipe: scenarios/recipes/tofu.yaml).

    .venv/bin/python bench/bench_tofu.py --tofu-dir ../shared/data/tofu                    # everything
    .venv/bin/python bench/bench_tofu.py --tofu-dir ../shared/data/tofu --methods ga npo    # some methods
    .venv/bin/python bench/bench_tofu.py --tofu-dir ../shared/data/tofu --seed 1 unlearn.train.max_steps=40

It fine-tunes the default model into the full model and one retain model per forget split, runs
the TOFU and membership-inference suites on them, unlearns every forget split with every method
of the recipe and measures each result against its split's retain model. Runs go to
runs/tofu-bench/<tag>/ (finished pieces are kept: run it again to continue a stopped benchmark);
the table to bench/results/tofu_<tag>.json and stdout (markdown); one comparison report per
split (forget quality against model utility, the retain and full models marked) to
runs/tofu-bench/<tag>/report-<split>.html.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import obliviate

obliviate.tune_memory()  # before torch is imported

RESULTS = Path(__file__).resolve().parent / "results"


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 10 ** -digits else f"{value:.{digits}f}"
    return str(value)


def table(rows: list[dict]) -> str:
    """The benchmark's markdown table: one row per (split, model)."""
    head = ("| split | model | forget quality | model utility | forget truth ratio | forget prob. | "
            "forget ROUGE-L | MIA AUC (Min-K%) | PrivLeak (Min-K%) | train s | eval s |")
    lines = [head, "|" + "|".join("---" for _ in range(11)) + "|"]
    for row in rows:
        tofu, mia = row.get("tofu") or {}, row.get("mia") or {}
        lines.append("| " + " | ".join([
            row["split"], row["run"], _cell(tofu.get("forget_quality")), _cell(tofu.get("model_utility")),
            _cell(tofu.get("forget_truth_ratio")), _cell(tofu.get("forget_probability")),
            _cell(tofu.get("forget_rouge_l_recall")), _cell(mia.get("auc_min_k")), _cell(mia.get("privleak_min_k"), 1),
            _cell(row.get("train_seconds"), 0), _cell(row.get("eval_seconds"), 0),
        ]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tofu-dir", type=Path, required=True, help="TOFU's files in the hub layout")
    parser.add_argument("--recipe", type=Path, default=None, help="a recipe file (default: the packaged one)")
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of the recipe's methods")
    parser.add_argument("--seed", type=int, default=0, help="seed of every fine-tuning and unlearning run")
    parser.add_argument("--tag", default=None, help="name of this run (default: seed<N>)")
    parser.add_argument("--out", type=Path, default=Path("runs/tofu-bench"))
    parser.add_argument("--overwrite", action="store_true", help="redo finished pieces too")
    parser.add_argument("overrides", nargs="*", help="name=value recipe settings")
    args = parser.parse_args(argv)

    from obliviate.models.hardware import measure_matmul_gflops
    from obliviate.report.run_report import build_report
    from obliviate.scenarios.tofu import load_tofu_recipe, run_benchmark

    tag = args.tag or f"seed{args.seed}"
    recipe = load_tofu_recipe(args.recipe, [*args.overrides, f"finetune.train.seed={args.seed}",
                                            f"unlearn.train.seed={args.seed}"], tofu_dir=args.tofu_dir)
    peak = measure_matmul_gflops()
    started = time.perf_counter()
    out = args.out / tag
    summary = run_benchmark(out, recipe, methods=args.methods, overwrite=args.overwrite, progress=False,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
    reports = {}
    for split in recipe.forget_splits:
        runs = [out / row["run"] for row in summary["rows"] if row["split"] == split]
        reports[split] = str(build_report(runs, out=out / f"report-{split}.html", title=f"TOFU benchmark, {split}",
                                          tag=split))
    seconds = round(time.perf_counter() - started, 1)
    result = {
        "recipe": recipe.model_dump(), "seed": args.seed, "rows": summary["rows"], "sizes": summary["manifest"]["sizes"],
        "finetune_seconds": summary["manifest"]["seconds"], "seconds": seconds, "matmul_peak_gflops": peak,
        "reports": reports, "command": "python bench/bench_tofu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tofu_{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(summary["rows"]))
    print(f"\n{seconds / 60:.1f} min in all (matmul peak {peak:.0f} GFLOP/s); wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
