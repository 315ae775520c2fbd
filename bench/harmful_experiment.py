"""Run the harmful demo with chosen settings and print the headline figures (for tuning).

    python bench/harmful_experiment.py --out runs/exp1 lr=1e-4 steps=40 random_answers=refusals

The settings are the packaged harmful recipe (``scenarios/recipes/harmful.yaml``, or ``--recipe
FILE``) with ``name=value`` overrides, read and checked exactly as ``obliviate demo`` does.
"""

import argparse
import json
import sys

from obliviate.errors import UserError
from obliviate.scenarios.harmful import load_recipe, run_harmful_demo

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--recipe", default=None, help="a recipe file (default: the packaged harmful recipe)")
parser.add_argument("settings", nargs="*", help="name=value recipe settings, e.g. method_options.retain_weight=6")
args = parser.parse_args()
try:
    recipe = load_recipe(args.recipe, args.settings)
except UserError as err:
    sys.exit(f"error: {err}")
summary = run_harmful_demo(args.out, recipe, overwrite=True, progress=False)
print(json.dumps({k: summary[k] for k in ("unseen_harmful_reduction", "unlearned_harmful_reduction", "over_refusal_increase_points", "timings_s")}, indent=1))
for row in summary["rows"]:
    print(f"{row['metric']:28s} {row['split']:10s} {row['before']!s:>8.8} -> {row['after']!s:>8.8}")
