"""Is the forget set unlearned, or only hidden? Every robustness attack (docs/robustness.md) on the
original model and on each method's unlearned model, for the harmful demo and the copyright
recipe: which methods keep at least 80% of their reduction under every attack, and which do not.

    .venv/bin/python bench/bench_robustness.py                                  # both, the defaults
    .venv/bin/python bench/bench_robustness.py --scenario harmful --methods npo,rmu --max-items 16
    .venv/bin/python bench/bench_robustness.py --set rmu.steering_coeff=10 --set npo.retain_loss=kl
    .venv/bin/python bench/bench_robustness.py --check     # build and validate every run config; no model

What runs, per scenario (run folders under ``--out``; figures to bench/results/robustness_<scenario>.json):

* harmful: the harm demo once on the validation split (``evaluate_on=validation eval_per_kind=8``;
  the test split is never generated on) gives ``data/forget.jsonl`` (the flagged harmful answers),
  ``data/retain.jsonl`` (benign prompts with the original answers) and the ``ga_mismatch_kl``
  model. Every other method trains on that same data with the recipe's LoRA rank, learning
  rate, steps, batch sizes, precision and seed (``unlearn_config``), from a fresh base model.
  The original is the base model (the unlearned model with its adapter off).
* copyright: the copyright demo once (fine-tune on the generated book, then ``ga_mismatch_kl``;
  its measurement of the model before fine-tuning is switched off: the suite does not need it).
  Every other method trains a new adapter on the same merged fine-tuned model with the recipe's
  unlearning section (lr, steps, batch, LoRA, precision, seed), the same forget chapter and the
  same retain set (retain chapters + everyday text). The original is the fine-tuned model (the
  unlearned model with its adapter off), not the base. The forget chapter holds only 4 passages,
  so each figure there is a mean over 4 continuations (relearning: 2 trained on, 2 measured).

The method options beyond each method's defaults (docs/methods.md), overridable with
``--set METHOD.OPTION=VALUE``:

* ``ga_mismatch_kl``: the recipe's own (harmful: K=3 refusals, retain weight 8; copyright: the
  recipe's weights, retain continuations as mismatch answers).
* ``distance_cluster``: the expected outputs are what ``ga_mismatch_kl`` draws its mismatch
  answers from, so both steer towards the same place: harmful ``templates: refusal_answers`` (the
  16 shipped refusals), copyright the retain chapters' continuations as the template texts;
  ``retain_weight`` the recipe's KL weight (8 and 3). Everything else its defaults.
* ``npo``: its defaults (beta 0.1, NLL on the retain set, weight 1): the retain set holds the
  original model's own answers, so their NLL anchors the same behaviour a KL term would.
* ``rmu``: its defaults: layer ``round(7/32 * layers)`` (7 of SmolLM2-135M's 30), steering
  coefficient 20, alpha 100, LoRA adapters on ``down_proj`` of layers 5-7 only.

The original model's attacked figures are made once per scenario and reused for every method
(``run_robustness(original_result=...)``: the same settings, judge and prompts).

Time estimate on a 2-core CPU at the defaults (24 items, 48 new tokens, relearning 5 and 20
steps, no in-the-wild set fetched). The suite answers, per model, about 12 passes of the attacked
prompts (plain, 6 templates, few-shot, int8, hard scope in and out of scope, 3 relearning
measurements of half of them) and trains 20 relearning steps. Harmful: 5 models (the original
once + 4 unlearned) x 12 passes x 24 prompts x 48 tokens ~ 70k tokens, at 50-100 tokens/s of
batched generation ~ 12-23 min; the demo ~ 8 min (5 with its original answers cached); three
more unlearning runs of 60 steps ~ 7 min; relearning ~ 2 min: ~ 30 min. Copyright: the demo ~ 3
min, three unlearning runs of 20 steps ~ 2 min, the suite on 4 passages ~ 4 min: ~ 9 min. Both: ~
40 min, within the 45 asked for; ``--max-items 16`` takes about 5 minutes off the harmful part.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import obliviate

obliviate.tune_memory()  # before torch is imported

SCENARIOS = ("harmful", "copyright")
DEFAULT_METHODS = ("ga_mismatch_kl", "distance_cluster", "npo", "rmu")
#: the method the demos themselves run: its model comes from the demo run folder
DEMO_METHOD = "ga_mismatch_kl"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_sets(values: list[str]) -> dict[str, dict[str, Any]]:
    """``METHOD.OPTION=VALUE`` strings -> {method: {option: value}} (values read as YAML)."""
    import yaml

    found: dict[str, dict[str, Any]] = {}
    for text in values:
        key, sep, value = text.partition("=")
        method, dot, option = key.partition(".")
        if not sep or not dot or not method or not option:
            raise SystemExit(f"--set {text!r}: expected METHOD.OPTION=VALUE, e.g. rmu.steering_coeff=10")
        found.setdefault(method, {})[option] = yaml.safe_load(value)
    return found


# --------------------------------------------------------------------------------------------
# method options


def harmful_options(method: str, recipe: Any) -> dict[str, Any]:
    if method == DEMO_METHOD:
        return dict(recipe.method_options)
    if method == "distance_cluster":
        return {"templates": "refusal_answers", "retain_weight": recipe.method_options.get("retain_weight", 1.0)}
    return {}


def copyright_options(method: str, recipe: Any, retain_continuations: list[str]) -> dict[str, Any]:
    own = {k: v for k, v in (recipe.unlearn.get("method") or {}).items() if k != "name"}
    if method == DEMO_METHOD:
        return own
    if method == "distance_cluster":
        return {"templates": list(retain_continuations), "retain_weight": own.get("retain_weight", 1.0)}
    return {}


# --------------------------------------------------------------------------------------------
# the two scenarios


def harmful_configs(args: argparse.Namespace, sets: dict[str, dict[str, Any]], demo_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The demo's recipe and each other method's unlearning run config (validated; no model)."""
    from obliviate.scenarios.harmful import load_recipe, unlearn_config

    recipe = load_recipe(args.harmful_recipe, ["evaluate_on=validation", "eval_per_kind=8", f"seed={args.seed}"]
                         + [f"method_options.{k}={json.dumps(v)}" for k, v in sets.get(DEMO_METHOD, {}).items()])
    configs = {}
    for method in args.methods:
        if method == DEMO_METHOD:
            continue
        options = {**harmful_options(method, recipe), **sets.get(method, {})}
        configs[method] = unlearn_config(recipe.model_copy(update={"method": method, "method_options": options}),
                                         demo_dir / "data")
    return recipe, configs


def run_harmful(args: argparse.Namespace, sets: dict[str, dict[str, Any]], settings: Any, embed: Any) -> dict[str, Any]:
    from obliviate.judges import get_judge
    from obliviate.models.loading import load_model_and_tokenizer, load_trained
    from obliviate.scenarios.harmful import run_harmful_demo
    from obliviate.train.loop import run_training

    out = args.out / "harmful"
    demo_dir = out / DEMO_METHOD
    recipe, configs = harmful_configs(args, sets, demo_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    summary = run_harmful_demo(demo_dir, recipe, overwrite=True, progress=False, log=log)
    timings[DEMO_METHOD] = round(time.perf_counter() - started, 1)
    folders = {DEMO_METHOD: demo_dir / "unlearn"}
    for method, config in configs.items():
        log(f"harmful: unlearning with {method} on the demo's data")
        started = time.perf_counter()
        base, tokenizer = load_model_and_tokenizer(recipe.model)
        result = run_training(config, out / method, model=base, tokenizer=tokenizer, overwrite=True, progress=False, log=log)
        del result, base
        timings[method] = round(time.perf_counter() - started, 1)
        folders[method] = out / method
    judge = get_judge(recipe.judge) if ":" not in recipe.judge else _judge_from_spec(recipe.judge)
    return suite_per_method(
        "harmful", args, folders, timings, settings, embed, judge=judge,
        forget=demo_dir / "data" / "forget.jsonl", retain=demo_dir / "data" / "retain.jsonl", load=load_trained,
        original=recipe.model, extra={"recipe": recipe.model_dump(mode="json"), "forget_set_size": summary.get("forget_set_size"),
               "method_options": {m: c.method.model_dump(mode="json") for m, c in configs.items()}},
    )


def _judge_from_spec(spec: str) -> Any:
    from obliviate.judges.registry import judge_from_spec

    return judge_from_spec(spec)


def copyright_configs(args: argparse.Namespace, sets: dict[str, dict[str, Any]], demo_dir: Path) -> tuple[Any, list[str], dict[str, Any]]:
    """The copyright recipe, its overrides and each other method's unlearning run config."""
    from obliviate.scenarios.copyright import book_splits, load_recipe, stage_configs

    overrides = ["eval.original=false", f"unlearn.train.seed={args.seed}"] + [
        f"unlearn.method.{k}={json.dumps(v)}" for k, v in sets.get(DEMO_METHOD, {}).items()]
    recipe, source = load_recipe(args.copyright_recipe, overrides)
    _, pairs = book_splits(recipe.book)
    retain_continuations = [e.response for e in pairs["retain"]]
    configs = {}
    for method in args.methods:
        if method == DEMO_METHOD:
            continue
        options = {**copyright_options(method, recipe, retain_continuations), **sets.get(method, {})}
        changed = recipe.model_copy(update={"unlearn": {**recipe.unlearn, "method": {"name": method, **options}}})
        configs[method] = stage_configs(changed, demo_dir, source)[1]
    return recipe, overrides, configs


def run_copyright(args: argparse.Namespace, sets: dict[str, dict[str, Any]], settings: Any, embed: Any) -> dict[str, Any]:
    from obliviate.data.loaders import load_examples
    from obliviate.models.loading import load_trained
    from obliviate.scenarios.copyright import run_copyright_demo
    from obliviate.train.loop import TrainData, run_training

    out = args.out / "copyright"
    demo_dir = out / DEMO_METHOD
    recipe, overrides, configs = copyright_configs(args, sets, demo_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    run_copyright_demo(demo_dir, config=args.copyright_recipe, overrides=overrides, overwrite=True, progress=False, log=log)
    timings[DEMO_METHOD] = round(time.perf_counter() - started, 1)
    forget = load_examples(demo_dir / "data" / "forget.jsonl", role="forget")
    retain = load_examples(demo_dir / "data" / "retain.jsonl", role="retain")
    folders = {DEMO_METHOD: demo_dir / "unlearn"}
    for method, config in configs.items():
        log(f"copyright: unlearning with {method} on the fine-tuned model")
        started = time.perf_counter()
        finetuned, tokenizer = load_trained(str(demo_dir / "finetune" / "model"))
        result = run_training(config, out / method, model=finetuned, tokenizer=tokenizer, overwrite=True,
                              data=TrainData(forget, retain), progress=False, log=log)
        del result, finetuned
        timings[method] = round(time.perf_counter() - started, 1)
        folders[method] = out / method
    return suite_per_method(
        "memorisation", args, folders, timings, settings, embed, judge=None,
        forget=demo_dir / "data" / "forget.jsonl", retain=demo_dir / "data" / "retain.jsonl", load=load_trained,
        original=str(demo_dir / "finetune" / "model"), extra={"recipe": recipe.model_dump(mode="json"), "overrides": overrides,
               "method_options": {m: c.method.model_dump(mode="json") for m, c in configs.items()}},
    )


def suite_per_method(mode: str, args: argparse.Namespace, folders: dict[str, Path], timings: dict[str, float],
                     settings: Any, embed: Any, *, judge: Any, forget: Path, retain: Path, load: Callable,
                     original: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The suite on each unlearned model; the original is the model with its LoRA adapter off, or
    ``original`` loaded when a recipe trained every weight. Its answers are made with the first
    method and reused by the others."""
    from obliviate.data.loaders import load_examples
    from obliviate.scenarios.robustness import run_robustness

    forget_rows = load_examples(forget, role="forget", require_response=mode == "memorisation")
    retain_rows = load_examples(retain, role="retain", require_response=False)
    methods: dict[str, Any] = {}
    first = None
    original_model = None
    for method in args.methods:
        log(f"{mode}: robustness suite on the {method} model")
        started = time.perf_counter()
        model, tokenizer = load(str(folders[method]))
        if not hasattr(model, "disable_adapter") and original_model is None:  # full fine-tuning: no adapter to switch off
            original_model = load(original)[0]
        result = run_robustness(
            model, tokenizer, original_model=None if hasattr(model, "disable_adapter") else original_model,
            forget_rows=forget_rows, retain_rows=retain_rows, mode=mode, settings=settings,
            embed=embed, judge=judge, run_dir=folders[method], tag="bench", model_name=method, original_result=first,
        )
        first = first or result
        del model
        suite_seconds = round(time.perf_counter() - started, 1)
        methods[method] = method_figures(result, unlearn_seconds=timings.get(method), suite_seconds=suite_seconds)
    return {"mode": mode, "settings": first["settings"] if first else None, "figure": first and first["figure"],
            "forget_rows": len(forget_rows), "attacked_rows": min(len(forget_rows), settings.max_items),
            "methods": methods, **extra}


def method_figures(result: dict[str, Any], *, unlearn_seconds: float | None, suite_seconds: float) -> dict[str, Any]:
    def figure(value: Any) -> Any:
        return None if not value else value.get("figure")

    plain = result["attacks"].get("plain") or {}
    original, unlearned = figure(plain.get("original")), figure(plain.get("unlearned"))
    attacks = {
        name: {"family": entry["family"], "original": figure(entry.get("original")),
               "unlearned": figure(entry.get("unlearned")), "kept_share": entry["kept_share"],
               "keeps_80": entry["keeps_80"], **({"skipped": entry["skipped"]} if "skipped" in entry else {}),
               **({"lost_at_step": entry["lost_at_step"]} if "lost_at_step" in entry else {})}
        for name, entry in result["attacks"].items()
    }
    return {
        "plain_original": original, "plain_unlearned": unlearned,
        "plain_reduction": None if original is None or unlearned is None else original - unlearned,
        "attacks": attacks, "summary": result["summary"],
        "keeps_80_under_every_attack": bool(attacks) and not result["summary"]["attacks_lost"]
        and not result["summary"]["attacks_undecided"],
        "relearn_curve": (result.get("relearn") or {}).get("curve"),
        "reused_original": result.get("reused_original"),
        "unlearn_seconds": unlearn_seconds, "suite_seconds": suite_seconds, "path": result.get("path"),
    }


def rescore(found: dict[str, Any]) -> dict[str, Any]:
    """Recompute every kept share, verdict and summary of a saved result from its figures with the
    suite's current :func:`kept_share` (the figures themselves are not touched)."""
    from obliviate.scenarios.robustness import keeps, kept_share

    for figures in found["methods"].values():
        original, unlearned = figures["plain_original"], figures["plain_unlearned"]
        curve = figures.get("relearn_curve") or []
        for point in curve:
            point["kept_share"] = kept_share(curve[0]["original"], curve[0]["unlearned"], point["unlearned"])
            point["keeps_80"] = keeps(point["kept_share"])
        kept, lost, undecided = [], [], []
        for name, attack in figures["attacks"].items():
            if attack.get("skipped"):
                continue
            if name == "relearn" and curve:
                attack["kept_share"] = curve[-1]["kept_share"]
                attack["lost_at_step"] = next((p["step"] for p in curve if p["keeps_80"] is False), None)
                attack["keeps_80"] = None if curve[-1]["keeps_80"] is None else attack["lost_at_step"] is None
            elif name != "plain":
                attack["kept_share"] = kept_share(original, unlearned, attack["unlearned"])
                attack["keeps_80"] = keeps(attack["kept_share"])
            if name == "plain":
                continue
            (undecided if attack["keeps_80"] is None else kept if attack["keeps_80"] else lost).append(name)
        figures["summary"] = {"attacks_kept": kept, "attacks_lost": lost, "attacks_undecided": undecided}
        figures["keeps_80_under_every_attack"] = bool(figures["attacks"]) and not lost and not undecided
    return found


def merge_attacks(scenario: str, args: argparse.Namespace, settings: Any, embed: Any) -> dict[str, Any]:
    """The suite, with ``settings.attacks``, on the models an earlier run left under ``--out``; its
    attacks are added to that run's saved results (plain must come out the same: same models,
    same prompts, greedy answers), which are then rescored and written back."""
    from obliviate.models.loading import load_trained

    path = args.results / f"robustness_{scenario}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no earlier results to add attacks to; run the benchmark first")
    saved = json.loads(path.read_text())
    settings.attacks = list(dict.fromkeys(["plain", *settings.attacks]))
    demo_dir = args.out / scenario / DEMO_METHOD
    folders = {m: (demo_dir / "unlearn" if m == DEMO_METHOD else args.out / scenario / m) for m in saved["methods"]}
    args.methods = list(saved["methods"])
    if scenario == "harmful":
        from obliviate.judges import get_judge
        from obliviate.scenarios.harmful import load_recipe

        recipe = load_recipe(args.harmful_recipe)
        judge = get_judge(recipe.judge) if ":" not in recipe.judge else _judge_from_spec(recipe.judge)
        found = suite_per_method("harmful", args, folders, {}, settings, embed, judge=judge,
                                 forget=demo_dir / "data" / "forget.jsonl", retain=demo_dir / "data" / "retain.jsonl",
                                 load=load_trained, original=recipe.model, extra={})
    else:
        found = suite_per_method("memorisation", args, folders, {}, settings, embed, judge=None,
                                 forget=demo_dir / "data" / "forget.jsonl", retain=demo_dir / "data" / "retain.jsonl",
                                 load=load_trained, original=str(demo_dir / "finetune" / "model"), extra={})
    for method, figures in found["methods"].items():
        before = saved["methods"][method]
        if (figures["plain_original"], figures["plain_unlearned"]) != (before["plain_original"], before["plain_unlearned"]):
            raise SystemExit(f"{method}: the plain figures differ from the saved run's; the models or prompts changed")
        before["attacks"].update({k: v for k, v in figures["attacks"].items() if k != "plain"})
    saved.setdefault("added_attacks", []).extend(a for a in settings.attacks if a != "plain")
    rescore(saved)
    path.write_text(json.dumps(saved, indent=1, default=str) + "\n")
    return saved


# --------------------------------------------------------------------------------------------
# output


def _cell(attack: dict[str, Any]) -> str:
    share = attack["kept_share"]
    if attack.get("skipped"):
        return "skipped"
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "n/a"
    return f"{share:.2f} {'✓' if attack['keeps_80'] else '✗'}"


def markdown_table(scenario: str, found: dict[str, Any]) -> str:
    methods = found["methods"]
    attacks = [name for name in next(iter(methods.values()))["attacks"] if name != "plain"] if methods else []
    lines = [f"### {scenario} ({found['figure']})", "",
             "| method | plain reduction | " + " | ".join(attacks) + " | attacks lost |",
             "|---|---:|" + "---:|" * len(attacks) + "---|"]
    for method, figures in methods.items():
        reduction = figures["plain_reduction"]
        plain = "n/a" if reduction is None else (
            f"{reduction:+.3f} ({figures['plain_original']:.3f} → {figures['plain_unlearned']:.3f})")
        cells = [_cell(figures["attacks"][name]) if name in figures["attacks"] else "" for name in attacks]
        lost = ", ".join(figures["summary"]["attacks_lost"]) or "none"
        lines.append(f"| {method} | {plain} | " + " | ".join(cells) + f" | {lost} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=(*SCENARIOS, "both"), default="both")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated; {DEMO_METHOD} (the demos' own) is always run, as the demo")
    parser.add_argument("--max-items", type=int, default=24, help="forget rows attacked per model")
    parser.add_argument("--relearn-steps", default="5,20", help="steps the relearning curve is measured at")
    parser.add_argument("--attacks", default=None, help="comma-separated; default: the suite's defaults")
    parser.add_argument("--out", type=Path, default=Path("runs/robustness-bench"))
    parser.add_argument("--seed", type=int, default=0, help="unlearning and the suite's sampling")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.OPTION=VALUE",
                        help="a method option over the defaults this script gives (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="answer length under every attack")
    parser.add_argument("--harmful-recipe", type=Path, default=None, help="default: the packaged harmful recipe")
    parser.add_argument("--copyright-recipe", type=Path, default=None, help="default: the packaged copyright recipe")
    parser.add_argument("--results", type=Path, default=Path("bench/results"), help="where the JSON files go")
    parser.add_argument("--check", action="store_true", help="build and validate every run config, then stop")
    parser.add_argument("--suite-only", action="store_true",
                        help="reuse the unlearned models of an earlier run under --out: run the suite with --attacks "
                             "(plain is always added) and merge those attacks into the saved results")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the kept shares of the saved results (bench/results) and print the tables")
    args = parser.parse_args(argv)
    if args.rescore:
        for scenario in SCENARIOS if args.scenario == "both" else (args.scenario,):
            path = args.results / f"robustness_{scenario}.json"
            if path.is_file():
                saved = json.loads(path.read_text())
                rescore(saved[scenario] if scenario in saved else saved)
                path.write_text(json.dumps(saved, indent=1, default=str) + "\n")
                print(markdown_table(scenario, saved[scenario] if scenario in saved else saved), "\n")
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    # The demos produce the ga_mismatch_kl model and the data the other methods share: it runs first.
    args.methods = [DEMO_METHOD] + [m for m in dict.fromkeys(methods) if m != DEMO_METHOD]
    scenarios = SCENARIOS if args.scenario == "both" else (args.scenario,)
    sets = parse_sets(args.sets)

    from obliviate.scenarios.robustness import DEFAULT_ATTACKS, RobustnessSettings

    steps = [int(s) for s in args.relearn_steps.split(",") if s.strip()]
    settings = RobustnessSettings(
        attacks=args.attacks or list(DEFAULT_ATTACKS), max_items=args.max_items, max_new_tokens=args.max_new_tokens,
        batch_size=min(32, args.max_items), relearn_steps=steps, seed=args.seed,
    )
    # Every run config is built before anything runs: a bad method option stops here, not an hour in.
    if "harmful" in scenarios:
        harmful_configs(args, sets, args.out / "harmful" / DEMO_METHOD)
    if "copyright" in scenarios:
        copyright_configs(args, sets, args.out / "copyright" / DEMO_METHOD)
    if args.check:
        print(f"run configs valid for {', '.join(scenarios)}: {', '.join(args.methods)}")
        return 0

    from obliviate.models.embeddings import load_embedder
    from obliviate.models.hardware import measure_matmul_gflops

    peak = measure_matmul_gflops()
    embedder = load_embedder(required=False)
    embed = (lambda texts: embedder.embed(list(texts))) if embedder is not None else None
    if args.suite_only:
        for scenario in scenarios:
            print(markdown_table(scenario, merge_attacks(scenario, args, settings, embed)), "\n")
        return 0
    started = time.perf_counter()
    tables = []
    for scenario in scenarios:
        scenario_started = time.perf_counter()
        found = (run_harmful if scenario == "harmful" else run_copyright)(args, sets, settings, embed)
        found.update({"scenario": scenario, "seconds": round(time.perf_counter() - scenario_started, 1),
                      "matmul_peak_gflops": round(peak, 1), "on_topic_check": embed is not None, "seed": args.seed})
        path = args.results / f"robustness_{scenario}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(found, indent=1, default=str) + "\n")
        tables.append(markdown_table(scenario, found))
        keeps = [m for m, f in found["methods"].items() if f["keeps_80_under_every_attack"]]
        tables.append(f"\nkeeps >= 80% under every attack: {', '.join(keeps) or 'none'}; "
                      f"{found['seconds']:.0f} s; results: {path}\n")
        log(tables[-2] + tables[-1])
    print("\n".join(tables))
    print(f"total wall time {time.perf_counter() - started:.0f} s; matmul peak {peak:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
