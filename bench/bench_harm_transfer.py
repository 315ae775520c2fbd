"""The harm demo over several training seeds, on the validation or the test split of the harm
protocol (docs/harm_protocol.md): mean and range of each headline figure over the seeds, every
figure with its 95% bootstrap interval per seed.

    .venv/bin/python bench/bench_harm_transfer.py --split validation --tag v-base           # tuning
    .venv/bin/python bench/bench_harm_transfer.py --split test --seeds 0 1 2 --tag shipped  # the report
    .venv/bin/python bench/bench_harm_transfer.py --split validation --tag v-w12 method_options.retain_weight=12

Runs go to runs/harm-transfer/<tag>/seed<N>; the figures to bench/results/harm_transfer_<tag>.json;
a markdown row per split is printed. The original model's answers are made once and reused by
the later seeds (reuse_original_answers), so the first seed's wall time is the demo's cold time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import obliviate

obliviate.tune_memory()  # before torch is imported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tag", required=True, help="name of this configuration (results file and run folders)")
    parser.add_argument("--out", type=Path, default=Path("runs/harm-transfer"))
    parser.add_argument("overrides", nargs="*", help="name=value recipe settings, as `obliviate demo` takes them")
    args = parser.parse_args(argv)

    from obliviate.metrics.intervals import seed_summary
    from obliviate.models.hardware import measure_matmul_gflops
    from obliviate.scenarios.harmful import load_recipe, run_harmful_demo

    peak = measure_matmul_gflops()
    per_seed = []
    for seed in args.seeds:
        # The whole split unless told otherwise (the demo's recipe evaluates a part of it).
        recipe = load_recipe(None, ["eval_per_kind=null", *args.overrides, f"evaluate_on={args.split}", f"seed={seed}"])
        started = time.perf_counter()
        summary = run_harmful_demo(args.out / args.tag / f"seed{seed}", recipe, overwrite=True, progress=False,
                                   log=lambda m: print(m, file=sys.stderr))
        per_seed.append({
            "seed": seed, "seconds": round(time.perf_counter() - started, 1),
            "harmful_cut": summary["harmful_cut"], "harmful_before": summary["harmful_before"],
            "harmful_after": summary["harmful_after"],
            "benign_answered_change_points": summary["benign_answered_change_points"],
            "benign_answered_before": summary["benign_answered_before"],
            "benign_answered_after": summary["benign_answered_after"],
            "degenerate_after": summary["degenerate_after"],
            "by_source": summary["by_source"], "forget_set_size": summary["forget_set_size"],
        })
        print(f"seed {seed}: cut {100 * summary['harmful_cut']['value']:.1f}% "
              f"[{100 * summary['harmful_cut']['low']:.1f}, {100 * summary['harmful_cut']['high']:.1f}], "
              f"benign answered {summary['benign_answered_change_points']['value']:+.1f} pts, "
              f"{per_seed[-1]['seconds']:.0f} s", file=sys.stderr)

    def over_seeds(pick):
        return seed_summary([pick(s) for s in per_seed])

    sources = list(per_seed[0]["by_source"])
    result = {
        "split": args.split, "tag": args.tag, "overrides": args.overrides, "seeds": args.seeds,
        "matmul_peak_gflops": round(peak, 1), "protocol": summary["protocol"],
        "harmful_cut": over_seeds(lambda s: s["harmful_cut"]["value"]),
        "benign_answered_change_points": over_seeds(lambda s: s["benign_answered_change_points"]["value"]),
        "degenerate_after_max": over_seeds(lambda s: max(d["rate"] for d in s["degenerate_after"].values())),
        "by_source": {
            source: {key: over_seeds(lambda s, source=source, key=key: s["by_source"][source][key]["value"])
                     for key in ("harmful_cut", "benign_answered_change_points") if key in per_seed[0]["by_source"][source]}
            for source in sources
        },
        "per_seed": per_seed,
    }
    path = Path("bench/results") / f"harm_transfer_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")

    def fmt(figure, scale=100.0, unit="%"):
        return f"{scale * figure['mean']:.1f}{unit} ({scale * figure['min']:.1f}–{scale * figure['max']:.1f})"

    print(f"| {args.tag} | {args.split} | {len(args.seeds)} | {fmt(result['harmful_cut'])} | "
          f"{fmt(result['benign_answered_change_points'], 1.0, ' pts')} | {fmt(result['degenerate_after_max'])} | "
          f"{' '.join(args.overrides) or 'recipe'} |")
    for source, figures in result["by_source"].items():
        for key, figure in figures.items():
            scale, unit = (100.0, "%") if key == "harmful_cut" else (1.0, " pts")
            print(f"|   {source} | {key} | {fmt(figure, scale, unit)} |")
    print(f"results: {path}; matmul peak {peak:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
