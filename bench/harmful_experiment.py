"""Run the harmful demo with chosen settings and print the headline figures (for tuning).

    python bench/harmful_experiment.py --out runs/exp1 lr=1e-4 steps=40 random_answers=refusals
"""

import argparse
import json

import yaml

from obliviate.scenarios.harmful import HarmfulDemoOptions, run_harmful_demo

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("settings", nargs="*", help="option=value (HarmfulDemoOptions fields)")
args = parser.parse_args()
options = HarmfulDemoOptions()
for item in args.settings:
    key, value = item.split("=", 1)
    setattr(options, key, yaml.safe_load(value))
summary = run_harmful_demo(args.out, options, overwrite=True, progress=False)
print(json.dumps({k: summary[k] for k in ("unseen_harmful_reduction", "unlearned_harmful_reduction", "over_refusal_increase_points", "timings_s")}, indent=1))
for row in summary["rows"]:
    print(f"{row['metric']:28s} {row['split']:10s} {row['before']!s:>8.8} -> {row['after']!s:>8.8}")
