"""Evaluator-gated unlearning (distance_cluster + early stopping) against the three-loss baseline.

Both methods unlearn the same detected forget set on the default model (or --model):

1. HarmBench prompts are split into forget candidates and held-out "unseen" prompts; the built-in
   benign prompts into a retain-training set, a held-out benign set and a few prompts for the
   early-stopping utility check (all disjoint);
2. the original model answers; ``obliviate.gating.detect`` flags the compliant answers to forget
   candidates with the refusal judge (a few flagged rows are held out to drive early stopping);
3. each variant starts from a fresh copy of the original model (LoRA r 8) and trains;
4. the harmful suite runs on every variant: harmful rate on unseen prompts, over-refusal and
   degenerate rate on benign prompts, ROUGE-L similarity of benign answers to the original's,
   and the steps and seconds to stop.

    python bench/compare_evaluator_gated.py --out runs/compare-evaluator-gated
    python bench/compare_evaluator_gated.py --out runs/cmp --variants distance_cluster_es --steps 60
    python bench/compare_evaluator_gated.py --out runs/cmp-big --n-unseen 72 --benign-xstest 250 --precision fp32

Writes ``OUT/results.json``, ``OUT/results.md`` (the table, also printed) and ``OUT/report.html``
(the table, bar charts of the rates, the early-stopping checks, loss curves and side-by-side
answers of every variant).

Runs into the same OUT accumulate: the original model's evaluation and the detected forget set
are cached in ``OUT/baseline.json`` and reused while the data settings (sizes, seed, lengths,
model) are the same, and the variants of earlier runs stay in the table unless run again.
``--label`` names a variant run, so one setting can sit beside another of the same method:

    python bench/compare_evaluator_gated.py --out runs/cmp --variants distance_cluster_es \
        --label dc_opening8 --dc-set negative_tokens=8

Early stopping aimed at the baseline: ``--monitor`` gives the fixed-length baseline the same
validation checks without stopping it, and ``--target-from LABEL`` stops the early-stopped run
once its validation harmful rate is down to where that run ended (fewer steps for the same cut):

    python bench/compare_evaluator_gated.py --out runs/cmp --val-size 16 --variants ga_mismatch_kl --monitor
    python bench/compare_evaluator_gated.py --out runs/cmp --val-size 16 --variants distance_cluster_es \
        --target-from ga_mismatch_kl

A slice of 16 prompts reads a harmful rate to about ±0.12. ``--val-donotanswer N`` answers N
Do-Not-Answer malicious-use prompts with the original model as well and adds those it answers
harmfully to the validation slice, so the stop signal is finer while the forget set (and so the
baseline's result) stays the one without them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

VARIANTS = ("ga_mismatch_kl", "ga_mismatch_kl_es", "distance_cluster_es")


def parse_args(argv=None):
    import typing

    from obliviate.scenarios.harmful import Precision, load_recipe

    demo = load_recipe()  # the harmful demo's packaged recipe: its data sizes and training settings
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default=None)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    # The split sizes of the rounds logged in docs/experiments/evaluator_gated_rounds.md (HarmBench
    # forget candidates and held-out prompts, obliviate's benign prompts); the harm demo itself now
    # runs the cross-source protocol of docs/harm_protocol.md.
    parser.add_argument("--n-forget", type=int, default=128)
    parser.add_argument("--n-unseen", type=int, default=32)
    parser.add_argument("--n-retain", type=int, default=demo.n_retain)
    parser.add_argument("--n-benign", type=int, default=32)
    parser.add_argument("--n-retain-xstest", type=int, default=0,
                        help="XSTest safe prompts added to the retain set (those the original answers)")
    parser.add_argument("--benign-xstest", type=int, default=0,
                        help="also evaluate on N of XSTest's 250 safe prompts (a second, larger benign split; "
                             "disjoint from the --n-retain-xstest training prompts)")
    parser.add_argument("--precision", choices=typing.get_args(Precision), default=demo.precision,
                        help="training precision of every variant (train.precision; the demo's fp32 by default)")
    parser.add_argument("--n-stop-retain", type=int, default=8)
    parser.add_argument("--val-size", type=int, default=6)
    parser.add_argument("--val-donotanswer", type=int, default=0, metavar="N",
                        help="also answer N Do-Not-Answer malicious-use prompts with the original model; those it "
                             "answers harmfully join the validation slice (a finer early-stopping signal without "
                             "taking flagged HarmBench prompts from the forget set)")
    parser.add_argument("--lr", type=float, default=demo.lr)
    parser.add_argument("--steps", type=int, default=demo.steps, help="steps of the fixed-length baseline")
    parser.add_argument("--max-steps", type=int, default=demo.steps, help="step cap of the early-stopped variants")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--target-rate", type=float, default=0.1)
    parser.add_argument("--patience", type=int, default=1,
                        help="early-stopped variants stop after this many checks in a row at or below the target")
    parser.add_argument("--target-from", default=None, metavar="LABEL",
                        help="the early-stopped variants' target is the harmful rate on the validation slice that "
                             "this earlier variant run ended at (a run with checks: early-stopped or --monitor)")
    parser.add_argument("--monitor", action="store_true",
                        help="fixed-length variants run the same validation checks every --every steps, never "
                             "stopping: their curve sits beside the early-stopped ones'")
    parser.add_argument("--retain-batch-size", type=int, default=demo.retain_batch_size)
    # Pinned to the settings the comparison in BENCHMARKS.md ran with, not the demo's current ones, so
    # its figures stay reproducible (docs/evaluator_gated.md).
    parser.add_argument("--retain-weight", type=float, default=6.0,
                        help="weight of the KL on retain data, the same for both methods")
    parser.add_argument("--num-random-answers", type=int, default=2)
    parser.add_argument("--train-answer-tokens", type=int, default=demo.train_answer_tokens)
    parser.add_argument("--max-new-tokens", type=int, default=demo.max_new_tokens)
    parser.add_argument("--seed", type=int, default=demo.seed)
    parser.add_argument("--dc-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="further distance_cluster options, e.g. margin=4 positive_weight=2")
    parser.add_argument("--ga-set", nargs="*", default=[], metavar="KEY=VALUE", help="further ga_mismatch_kl options")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild OUT/results.md and OUT/report.html from OUT/results.json; train nothing")
    parser.add_argument("--label", default=None,
                        help="name of this variant run in the table and its run folder (one variant only; "
                             "default: the variant's name)")
    args = parser.parse_args(argv)
    if args.label is not None and len(args.variants) != 1:
        parser.error("--label names one variant run; give exactly one --variants")
    return args


# The settings that fix the data and the original model's answers: runs into one OUT that agree on
# them share the cached baseline and can sit in one table.
BASELINE_KEYS = ("model", "n_forget", "n_unseen", "n_retain", "n_benign", "n_retain_xstest", "benign_xstest",
                 "n_stop_retain", "val_size", "train_answer_tokens", "max_new_tokens", "seed")
# Keys added later: they join the key only when set, so older OUT folders keep their cache.
OPTIONAL_BASELINE_KEYS = ("val_donotanswer",)


def baseline_key(args: dict) -> dict:
    return {k: args.get(k) for k in BASELINE_KEYS} | {k: args[k] for k in OPTIONAL_BASELINE_KEYS if args.get(k)}


def method_settings(items: list[str]) -> dict:
    """``KEY=VALUE`` strings as a dict, each value read as YAML (numbers, booleans, lists), by the
    parser run configs and recipes use."""
    from obliviate.config import apply_overrides
    from obliviate.errors import UserError

    try:
        return apply_overrides({}, list(items))
    except UserError as err:
        raise SystemExit(f"error: {err}") from None


def splits(args):
    from obliviate.scenarios.harmful import (
        donotanswer_prompts,
        split_benign_prompts,
        split_harmful_prompts,
        xstest_safe_prompts,
    )

    forget_candidates, unseen = split_harmful_prompts(args.n_forget, args.n_unseen, args.seed)
    rest, benign = split_benign_prompts(args.n_benign, args.seed, instructions=False)
    retain = rest[: args.n_retain]
    stop_retain = rest[args.n_retain : args.n_retain + args.n_stop_retain]
    # One seeded order of XSTest's safe prompts: the first ones may join the retain (training)
    # set, the next ones are the held-out XSTest evaluation split.
    xstest = xstest_safe_prompts(args.n_retain_xstest + args.benign_xstest, args.seed)
    contrast, xstest_eval = xstest[: args.n_retain_xstest], xstest[args.n_retain_xstest :]
    val_extra = donotanswer_prompts(args.val_donotanswer, args.seed)
    return forget_candidates, unseen, benign, retain, stop_retain, contrast, xstest_eval, val_extra


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    from obliviate.config import load_config
    from obliviate.eval.harmful import GenerationSettings, HarmfulSplits, evaluate_harmful
    from obliviate.gating.detect import detect, write_detection
    from obliviate.gating.early_stopping import build_stopper
    from obliviate.judges import get_judge
    from obliviate.models.generation import generate
    from obliviate.models.hardware import choose_precision
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.scenarios.harmful import load_recipe
    from obliviate.train.loop import run_training

    demo = load_recipe()  # batch size, LoRA rank and example length of the harmful demo
    out = args.out
    if args.report_only:
        if not (out / "results.json").is_file():
            raise SystemExit(f"error: {out / 'results.json'} does not exist; run the comparison first")
        results = json.loads((out / "results.json").read_text())
        (out / "results.md").write_text(render(results))
        print(render(results))
        print(f"report: {write_html_report(out, results)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    forget_candidates, unseen, benign, retain_prompts, stop_retain, contrast, xstest_eval, val_extra = splits(args)
    judge = get_judge("refusal")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, seed=args.seed)
    key = baseline_key(vars(args))
    # XSTest's safe prompts are evaluated as the suite's "retain" split (reported as "XSTest safe").
    eval_splits = HarmfulSplits(unlearned=forget_candidates, unseen=unseen, benign=benign, retain=xstest_eval)
    cache = out / "baseline.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else None
    if cached is not None and cached.get("key") == key:
        before, retain_rows, val_extra_answers = cached["before"], cached["retain"], cached.get("val_extra", [])
        print(f"reusing the original model's evaluation and retain answers from {cache}", flush=True)
    else:
        from obliviate.scenarios.harmful import with_contrast_answers

        model, tok = load_model_and_tokenizer(args.model)
        before = evaluate_harmful(model, tok, eval_splits, judge, settings=settings)
        retain_answers = generate(model, tok, retain_prompts + contrast, max_new_tokens=args.train_answer_tokens)
        retain_prompts, retain_answers = with_contrast_answers(retain_prompts, contrast, retain_answers)
        retain_rows = [{"prompt": p, "response": a} for p, a in zip(retain_prompts, retain_answers)]
        # Answered as the suite answers (greedy, the same length), so detection judges alike.
        val_extra_answers = generate(model, tok, val_extra, max_new_tokens=args.max_new_tokens) if val_extra else []
        cache.write_text(json.dumps({"key": key, "before": before, "retain": retain_rows, "val_extra": val_extra_answers}))
        del model
    answers = {name: [r["response"] for r in rows] for name, rows in before["items"].items()}
    detection = detect(None, None, [{"prompt": p} for p in forget_candidates], judge,
                       responses=answers["unlearned"], val_size=args.val_size, seed=args.seed)
    if val_extra:
        # Every flagged Do-Not-Answer prompt validates; none is forgotten, so the forget set is the
        # one a run without them has and their results compare.
        extra = detect(None, None, [{"prompt": p} for p in val_extra], judge, responses=val_extra_answers)
        detection.validation = detection.validation + extra.forget
        detection.summary["validation"] = len(detection.validation)
        detection.summary["validation_donotanswer"] = len(extra.forget)
    write_detection(detection, out / "detect", overwrite=True)
    write_jsonl(out / "data" / "retain.jsonl", retain_rows)
    print(f"detected {detection.summary['flagged']} of {len(forget_candidates)} (forget {len(detection.forget)}, "
          f"validation {len(detection.validation)}); baseline {time.perf_counter() - started:.0f} s", flush=True)
    results = {"before": before["metrics"], "detection": detection.summary, "variants": {}, "args": vars(args) | {"out": str(out)}}
    answers_by_variant = {"original": {name: before["items"][name][:8] for name in ("unseen", "benign")}}
    earlier = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else None
    if earlier is not None and baseline_key(earlier.get("args", {})) == key:
        # The same data and original answers: earlier variant runs stay in the table.
        results["variants"] = dict(earlier.get("variants", {}))
        answers_by_variant |= {k: v for k, v in earlier.get("answers", {}).items() if k != "original"}
    target_rate = args.target_rate
    if args.target_from is not None:
        target_rate = matched_target(results["variants"], args.target_from)
        print(f"target harmful rate on the validation slice: {target_rate:.3f}, where {args.target_from} ended", flush=True)
    results["args"]["target_rate"] = target_rate
    stop_block = {"every": args.every, "judge": "refusal", "target_rate": target_rate,
                  "val_size": max(1, len(detection.validation)),
                  "retain_size": len(stop_retain), "max_new_tokens": args.max_new_tokens, "patience": args.patience}
    for variant in args.variants:
        label = args.label or variant
        method = "distance_cluster" if variant.startswith("distance_cluster") else "ga_mismatch_kl"
        if method == "ga_mismatch_kl":
            options = {"num_random_answers": args.num_random_answers, "retain_weight": args.retain_weight,
                       **method_settings(args.ga_set)}
        else:
            options = {"retain_weight": args.retain_weight, **method_settings(args.dc_set)}
        early = variant.endswith("_es")
        steps = args.max_steps if early else args.steps
        config = load_config(None, data={
            "run": {"name": label},
            "model": {"name": args.model or "smollm2-135m-instruct"},
            "data": {"forget": {"path": str(out / "detect" / "forget.jsonl")},
                     "retain": {"path": str(out / "data" / "retain.jsonl")},
                     "random_answers": {"path": "builtin:refusal_answers"}, "max_length": demo.max_length},
            "method": {"name": method, **options},
            "train": {"lr": args.lr, "max_steps": steps, "batch_size": demo.batch_size, "seed": args.seed, "save_every": 0,
                      "precision": args.precision,
                      "retain_batch_size": args.retain_batch_size,
                      "warmup_steps": max(1, steps // 10), "lora": {"r": demo.lora_r, "alpha": 2 * demo.lora_r}},
        })
        fresh, fresh_tok = load_model_and_tokenizer(args.model)
        hooks, check_seconds = [], 0.0
        checked = early or args.monitor
        if checked:
            block = stop_block if early else stop_block | {"restore_best": False}
            stopper = build_stopper(block, flagged=detection.validation, retain=stop_retain, judge=judge)
            t = time.perf_counter()
            stopper.prepare(fresh, fresh_tok, keep_weights=False)  # LoRA is attached later: step 0 = adapters off
            check_seconds += time.perf_counter() - t
            # Monitoring runs the same checks but its verdict is dropped: the run takes every step.
            hooks = [stopper] if early else [lambda state: stopper(state) and None]
        print(f"== {label}: training (up to {steps} steps)", flush=True)
        t = time.perf_counter()
        result = run_training(config, out / label, overwrite=True, model=fresh, tokenizer=fresh_tok,
                              stop_hooks=hooks, progress=False, log=lambda m: print("  " + m, flush=True))
        train_seconds = time.perf_counter() - t
        trained = result.model if getattr(result, "model", None) is not None else fresh
        after = evaluate_harmful(trained, fresh_tok, eval_splits, judge, original_answers=answers, settings=settings)
        answers_by_variant[label] = {name: after["items"][name][:8] for name in ("unseen", "benign")}
        checks = []
        if checked:
            checks = [{"step": c.step, "harmful": c.harmful_rate, "degenerate": c.degenerate_rate, "similarity": c.similarity,
                       "seconds": c.seconds} for c in stopper.checks]
            check_seconds += sum(c.seconds for c in stopper.checks if c.step > 0)
        gate_log = out / label / "forget_gate.jsonl"  # written when distance_cluster's forget gate is on
        gate = [json.loads(line) for line in gate_log.read_text().splitlines()] if gate_log.is_file() else []
        results["variants"][label] = {
            "variant": variant, "method_options": options, "precision": args.precision, "lr": args.lr,
            "metrics": after["metrics"], "steps": result.steps, "stop_reason": result.stop_reason,
            "chosen_step": getattr(stopper, "chosen_step", None) if early else result.steps,
            "train_seconds_incl_checks": round(train_seconds, 1), "check_seconds": round(check_seconds, 1),
            "tokens_per_s": round(result.tokens_per_s, 1), "checks": checks,
            "target_rate": target_rate if early else None,
            "forget_gate": gate, "gate_seconds": round(sum(r["seconds"] for r in gate), 1),
        }
        print(json.dumps({k: v for k, v in results["variants"][label].items() if k not in ("metrics", "checks")}), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        del fresh, trained

    results["precision"] = choose_precision(args.precision)
    results["answers"] = answers_by_variant
    results["seconds_total"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = render(results)
    (out / "results.md").write_text(table)
    print(table)
    print(f"report: {write_html_report(out, results)}")
    return 0


def matched_target(variants: dict, label: str) -> float:
    """The harmful rate on the validation slice at the last check of the variant run ``label``:
    an early-stopped run aiming there stops once it is as far as that run got."""
    if label not in variants:
        known = ", ".join(variants) or "none yet"
        raise SystemExit(f"error: --target-from {label}: no such variant run in this OUT (runs: {known})")
    checks = variants[label].get("checks") or []
    if not checks:
        raise SystemExit(f"error: --target-from {label}: that run has no validation checks; "
                         "run it with --monitor (or as an early-stopped variant)")
    return float(checks[-1]["harmful"])


def write_html_report(out: Path, results: dict) -> Path:
    """One HTML report of the comparison (table, plots, answers), built from ``results``."""
    from obliviate.report import Section, plots, write_report

    names = ["original", *results["variants"]]
    metrics = [results["before"]] + [v["metrics"] for v in results["variants"].values()]
    rows = [
        {
            "variant": name,
            "unseen harmful": m["unseen"]["harmful_rate"],
            "unlearned harmful": m["unlearned"]["harmful_rate"],
            "benign over-refusal": m["benign"]["refusal_rate"],
            "degenerate (benign)": m["benign"]["degenerate_rate"],
            "degenerate (unseen)": m["unseen"]["degenerate_rate"],
            "similarity to original (benign)": m["benign"].get("similarity_to_original", 1.0),
            **({"XSTest over-refusal": m["retain"]["refusal_rate"], "XSTest degenerate": m["retain"]["degenerate_rate"],
                "XSTest similarity": m["retain"].get("similarity_to_original", 1.0)} if "retain" in m else {}),
            "steps": results["variants"].get(name, {}).get("steps", 0),
            "stopped at / reason": (f"{v['chosen_step']} ({v['stop_reason']})" if (v := results["variants"].get(name)) else "-"),
            "train s (of it checks)": (f"{v['train_seconds_incl_checks']} ({v['check_seconds']})" if v else "-"),
        }
        for name, m in zip(names, metrics)
    ]
    rows = [{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    plot_dir = out / "plots"
    made = [plots.grouped_bars(
        {key: [row[key] for row in rows] for key in
         ("unseen harmful", "benign over-refusal", "degenerate (unseen)", "similarity to original (benign)")},
        names, plot_dir / "variants.png", "Same forget set, each method (lower harm, higher similarity is better)",
    )]
    # The original sits far off at (its harmful rate, 1): left out, so the methods' differences show.
    trade = {row["variant"]: {"benign": (row["unseen harmful"], row["similarity to original (benign)"]),
                              **({"XSTest safe": (row["unseen harmful"], row["XSTest similarity"])}
                                 if "XSTest similarity" in row else {})}
             for row in rows if row["variant"] != "original"}
    if trade:
        made.append(plots.trade_off(trade, plot_dir / "trade_off.png",
                                    "Harm against similarity (up and to the left is better)",
                                    xlabel="harmful rate on unseen prompts", ylabel="ROUGE-L similarity to the original"))
    curves = {f"{name}: harmful (validation)": [(c["step"], c["harmful"]) for c in v["checks"]]
              for name, v in results["variants"].items() if v["checks"]}
    # The forget gate's share of forget prompts still flagged, on the same axis (1 at step 0: all were).
    curves |= {f"{name}: still flagged (forget gate)": [(0, 1.0)] + [(g["step"], g["active"] / g["of"]) for g in v["forget_gate"]]
               for name, v in results["variants"].items() if v.get("forget_gate")}
    targets = {f"target {t:.3f}": t for t in sorted({v["target_rate"] for v in results["variants"].values()
                                                       if v.get("target_rate") is not None})}
    if curves:
        made.append(plots.metric_curves(curves, plot_dir / "early_stopping.png", "Early-stopping checks",
                                        ylabel="harmful rate (validation: held-out flagged prompts)", levels=targets))
    for name in results["variants"]:
        log = out / name / "train_log.jsonl"
        if log.is_file():
            made.append(plots.loss_curves(log, plot_dir / f"loss_{name}.png", f"Losses: {name}"))
    examples = []
    for split, count in (("unseen", 4), ("benign", 4)):
        for i, row in enumerate(results["answers"]["original"][split][:count]):
            for name in results["variants"]:
                new = results["answers"][name][split][i]
                examples.append({
                    "split": f"{split} · {name}", "prompt": row["prompt"], "before": row["response"], "after": new["response"],
                    "before_label": row["label"], "after_label": new["label"],
                })
    detection = results["detection"]
    return write_report(
        out,
        title="Evaluator-gated unlearning vs the three-loss update",
        summary_rows=rows,
        sections=[Section(
            title="How to read this",
            text=("Every variant starts from the original model and unlearns the same detected forget set (the "
                  "refusal judge flagged the compliant answers). 'unseen' prompts are held-out harmful prompts; "
                  "benign prompts are held out too. Similarity is ROUGE-L F1 of benign answers against the original "
                  "model's. '_es' variants stop early once the judge's harmful rate on a few held-out flagged prompts "
                  "falls to the target (the dashed line of the checks plot); their train time includes those checks. "
                  "A fixed-length variant with checks was monitored: the same checks, no stop."),
        )],
        plots=made,
        examples=examples,
        meta={"model": results["args"].get("model") or "smollm2-135m-instruct",
              "method": ", ".join(results["variants"]), "judge": "refusal",
              "forget set": f"{detection.get('flagged')} flagged", "config": results["args"]},
    )


def render(results) -> str:
    b = results["before"]

    def fmt(x):
        return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)

    xstest = "retain" in b

    def xs(m, similarity):
        if not xstest:
            return ""
        return (f" {fmt(m['retain']['refusal_rate'])} | {fmt(m['retain']['degenerate_rate'])} | "
                f"{fmt(similarity if similarity is not None else m['retain'].get('similarity_to_original'))} |")

    lines = [
        "| variant | unseen harmful | unlearned harmful | benign over-refusal | benign degenerate | unseen degenerate "
        "| similarity to original (benign) |" + (" XSTest over-refusal | XSTest degenerate | XSTest similarity |" if xstest else "")
        + " steps (chosen) | train s (checks s) |",
        "|---|---|---|---|---|---|---|" + ("---|---|---|" if xstest else "") + "---|---|",
        f"| original | {fmt(b['unseen']['harmful_rate'])} | {fmt(b['unlearned']['harmful_rate'])} | "
        f"{fmt(b['benign']['refusal_rate'])} | {fmt(b['benign']['degenerate_rate'])} | {fmt(b['unseen']['degenerate_rate'])} | 1.00 |"
        f"{xs(b, 1.0)} 0 | 0 |",
    ]
    for name, v in results["variants"].items():
        m = v["metrics"]
        lines.append(
            f"| {name} | {fmt(m['unseen']['harmful_rate'])} | {fmt(m['unlearned']['harmful_rate'])} | "
            f"{fmt(m['benign']['refusal_rate'])} | {fmt(m['benign']['degenerate_rate'])} | {fmt(m['unseen']['degenerate_rate'])} | "
            f"{fmt(m['benign'].get('similarity_to_original'))} |{xs(m, None)} {v['steps']} ({fmt(v['chosen_step'])}) | "
            f"{v['train_seconds_incl_checks']} ({v['check_seconds']}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
