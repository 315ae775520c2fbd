"""``obliviate eval --suite NAME``: run an evaluation suite on a model or a run folder (``obliviate.api.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from obliviate.errors import UserError

console = Console(stderr=True)
SUITES = ("harmful", "copyright", "tofu", "lm-eval", "mia", "muse", "robustness")
HARMFUL_COLUMNS = ("harmful_rate", "refusal_rate", "degenerate_rate", "on_topic_rate", "perplexity_under_original", "count")
TOFU_COLUMNS = (
    "probability", "rouge_l_recall", "truth_ratio", "paraphrased_probability", "perturbed_probability",
    "extraction_strength", "exact_memorisation", "count",
)
COPYRIGHT_COLUMNS = ("rouge_l", "bleu", "leak_rate", "exact_memorisation", "perplexity")


def evaluate(
    suite: str = typer.Option(..., "--suite", help="harmful | copyright | tofu | lm-eval | mia | muse | robustness"),
    model_argument: Optional[str] = typer.Argument(None, metavar="[MODEL]", help="the same as --model"),
    model: Optional[str] = typer.Option(None, "--model", help="run folder, adapter folder, model folder, .gguf, alias"),
    harmful: Optional[Path] = typer.Option(None, "--harmful", help="held-out harmful prompts ('unseen')"),
    forget: Optional[Path] = typer.Option(None, "--forget", help="the forget set's prompts ('unlearned')"),
    benign: Optional[Path] = typer.Option(None, "--benign", help="benign prompts (default: obliviate's builtin set)"),
    unseen: Optional[Path] = typer.Option(None, "--unseen", help="copyright: held-out passages (prefix/continuation)"),
    retain: Optional[Path] = typer.Option(None, "--retain", help="retained set (copyright: passages; harmful: prompts)"),
    general: Optional[Path] = typer.Option(None, "--general", help="copyright: general text for perplexity"),
    prompt_field: str = typer.Option("prompt", "--prompt-field"),
    judge: str = typer.Option("refusal", "--judge", help="refusal | classifier:DIR | llm[:MODEL|URL,...]"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="default: 48 (tofu: 200)"),
    tofu_dir: Optional[str] = typer.Option(None, "--tofu-dir", help="tofu: folder with the hub's files, or hub:locuslab/TOFU[@rev]"),
    forget_split: str = typer.Option("forget10", "--forget-split", help="tofu: forget01 | forget05 | forget10"),
    retain_result: Optional[Path] = typer.Option(None, "--retain-result", help="the retain model's eval JSON of the same suite"),
    retain_authors: Optional[int] = typer.Option(
        None, "--retain-authors", help="tofu: score the first N retain authors only (the ones `finetune --benchmark tofu` trained on)"
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="prompts per forward pass"),
    limit: Optional[int] = typer.Option(None, "--limit", help="at most N items per split"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="lm-eval: task names, e.g. mmlu,wmdp_bio (pip install 'obliviate[lm-eval]')"),
    include_path: Optional[Path] = typer.Option(None, "--include-path", help="lm-eval: folder of local task YAML files"),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", help="lm-eval: few-shot examples (default: each task's own)"),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="mia: non-member question/answer rows; muse: unseen passages"),
    reference_model: Optional[str] = typer.Option(None, "--reference-model", help="mia: reference model for the reference attack"),
    forget_qa: Optional[Path] = typer.Option(None, "--forget-qa", help="muse: question/answer rows about the forget text"),
    retain_qa: Optional[Path] = typer.Option(None, "--retain-qa", help="muse: question/answer rows about the retain text"),
    mode: str = typer.Option("harmful", "--mode", help="robustness: harmful | memorisation"),
    attacks: Optional[str] = typer.Option(None, "--attacks", help="robustness: attack names, e.g. plain,encoding,relearn (default: all)"),
    original_model: Optional[str] = typer.Option(
        None, "--original-model", help="robustness: the model before unlearning (default: MODEL with its LoRA adapter off)"),
    retain_model: Optional[str] = typer.Option(None, "--retain-model", help="robustness: a model trained without the forget set"),
    max_items: Optional[int] = typer.Option(None, "--max-items", help="robustness: forget rows attacked (default 40)"),
    relearn_steps: Optional[str] = typer.Option(None, "--relearn-steps", help="robustness: relearning measure steps (default 5,10,20)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for eval/ and generations/ (default: the run folder)"),
    tag: str = typer.Option("eval", "--tag", help="name of this evaluation (file names)"),
) -> None:
    """Evaluate a model with a suite and write eval/<suite>_<tag>.json and generations/."""
    from obliviate.cli.console import quiet_libraries

    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}' (known: {', '.join(SUITES)})")
    if model_argument is not None and model is not None and model_argument != model:
        raise UserError(f"two models given: MODEL {model_argument} and --model {model}; give one")
    model = model or model_argument
    if suite == "copyright" and forget is None:
        raise UserError("the copyright suite needs --forget FILE (prefix/continuation pairs; --unseen, --retain, --general optional)")
    if suite == "harmful" and harmful is None and forget is None:
        raise UserError("the harmful suite needs --harmful FILE and/or --forget FILE (JSONL/CSV/JSON/Parquet with a prompt field)")
    if suite == "tofu" and tofu_dir is None:
        raise UserError("the tofu suite needs --tofu-dir DIR (a folder with the TOFU hub's files, or hub:locuslab/TOFU[@revision])")
    if suite == "lm-eval" and not tasks:
        raise UserError("the lm-eval suite needs --tasks a,b (e.g. --tasks mmlu,wmdp_bio; local tasks: --include-path DIR)")
    if suite == "mia" and tofu_dir is None and (forget is None or holdout is None):
        raise UserError("the mia suite needs --forget FILE and --holdout FILE (question/answer rows), or --tofu-dir DIR --forget-split forget10")
    if suite == "muse" and forget is None:
        raise UserError("the muse suite needs --forget FILE (passages: .txt or prefix/continuation rows; --forget-qa, --retain-qa, --holdout optional)")
    quiet_libraries()
    from obliviate.api import evaluate as run_suite

    target = out or (Path(model) if model and (Path(model) / "config.yaml").exists() else Path("runs") / "eval")
    if suite == "tofu":
        return _run_tofu(run_suite, model, target, tag, tofu_dir, forget_split, retain_result, batch_size, limit, max_new_tokens,
                         retain_authors)
    if suite == "lm-eval":
        return _run_lm_eval(run_suite, model, target, tag, tasks, include_path, num_fewshot, limit, batch_size)
    if suite == "robustness":
        return _run_robustness(run_suite, model, target, tag, dict(
            forget=forget, retain=retain, mode=mode, attacks=attacks, original_model=original_model,
            retain_model=retain_model, max_items=max_items, relearn_steps=_steps(relearn_steps),
            max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge, prompt_field=prompt_field))
    if suite in ("mia", "muse"):
        return _run_mia_muse(
            run_suite, suite, model, target, tag,
            dict(forget=forget, holdout=holdout, retain=retain, forget_qa=forget_qa, retain_qa=retain_qa, tofu_dir=tofu_dir,
                 forget_split=forget_split, retain_result=retain_result, reference_model=reference_model,
                 batch_size=batch_size, limit=limit, max_new_tokens=max_new_tokens),
        )
    max_new_tokens = 48 if max_new_tokens is None else max_new_tokens
    result = run_suite(
        model, suite=suite, run_dir=target, tag=tag, forget=forget, harmful=harmful, benign=benign, unseen=unseen,
        retain=retain, general=general, judge=judge, prompt_field=prompt_field, max_new_tokens=max_new_tokens,
    )
    if suite == "harmful":
        _print_table(f"harmful suite — judge: {result['judge']}", result["metrics"], HARMFUL_COLUMNS)
    else:
        _print_table("copyright suite", result["metrics"], COPYRIGHT_COLUMNS)
    console.print(f"wrote {result['path']}")


def _run_tofu(run_suite, model, target, tag, tofu_dir, forget_split, retain_result, batch_size, limit, max_new_tokens,
              retain_authors=None) -> None:
    result = run_suite(
        model, suite="tofu", run_dir=target, tag=tag, tofu_dir=tofu_dir, forget_split=forget_split,
        retain_result=retain_result, batch_size=batch_size, limit=limit, max_new_tokens=max_new_tokens,
        retain_authors=retain_authors,
    )
    _print_table(f"tofu suite — {forget_split}", result["metrics"], TOFU_COLUMNS)
    summary = result["metrics"]["summary"]
    console.print(
        "model utility " + _cell(summary["model_utility"]) + " · forget quality " + _cell(summary["forget_quality"])
        + " · forget truth ratio " + _cell(summary["forget_truth_ratio"]) + f" · {result['seconds']:.1f} s"
    )
    console.print(f"wrote {result['path']}")


def _run_lm_eval(run_suite, model, target, tag, tasks, include_path, num_fewshot, limit, batch_size) -> None:
    result = run_suite(
        model, suite="lm-eval", run_dir=target, tag=tag, tasks=tasks, include_path=include_path, num_fewshot=num_fewshot,
        limit=limit, batch_size=batch_size,
    )
    per_task = {name: values for name, values in result["metrics"].items() if name != "summary"}
    columns = list(dict.fromkeys(key for values in per_task.values() for key in values if key != "count")) + ["count"]
    _print_table("lm-eval suite (lm-evaluation-harness)", per_task, tuple(columns))
    main = result["settings"].get("main_metric", {})
    console.print(" · ".join(f"{task} {main.get(task) or ''} {_cell(value)}".replace("  ", " ")
                             for task, value in result["metrics"]["summary"].items()) + f" · {result['seconds']:.1f} s")
    console.print(f"wrote {result['path']}")


MIA_COLUMNS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference", "count")
MUSE_COLUMNS = ("verbmem_rouge_l", "knowmem_rouge_l", "min_k", "count")


def _run_mia_muse(run_suite, suite: str, model, target, tag: str, inputs: dict[str, Any]) -> None:
    result = run_suite(model, suite=suite, run_dir=target, tag=tag, **inputs)
    summary = result["metrics"]["summary"]
    if suite == "mia":
        splits = {k: v for k, v in result["metrics"].items() if k != "summary"}
        _print_table("mia suite — mean attack score (higher = more member-like)", splits, MIA_COLUMNS)
        auc = " · ".join(f"{a} {_cell(summary[f'auc_{a}'])}" for a in MIA_COLUMNS[:-1])
        leak = " · ".join(f"{a} {_cell(summary[f'privleak_{a}'])}" for a in MIA_COLUMNS[:-1])
        console.print(f"AUC forget vs holdout: {auc}")
        console.print(f"PrivLeak % (MUSE sign: -100 = remembers, 0 = like retain): {leak}")
    else:
        splits = {k: v for k, v in result["metrics"].items() if k != "summary"}
        _print_table("muse suite", splits, MUSE_COLUMNS)
        console.print(" · ".join(f"{k.replace('_', ' ')} {_cell(summary[k])}"
                                 for k in ("verbmem_forget", "knowmem_forget", "knowmem_retain", "privleak", "utility")))
    console.print(f"{result['seconds']:.1f} s · wrote {result['path']}")


def _steps(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--relearn-steps {text}: expected whole numbers separated by commas, e.g. 5,10,20") from None


def _run_robustness(run_suite, model, target, tag: str, inputs: dict[str, Any]) -> None:
    if inputs["forget"] is None and not (model and (Path(model) / "data" / "forget.jsonl").is_file()):
        raise UserError("the robustness suite needs --forget FILE (prompt/response rows), or a run folder with data/forget.jsonl")
    result = run_suite(model, suite="robustness", run_dir=target, tag=tag, **inputs)
    table = Table(title=f"robustness suite ({result['mode']}) — {result['figure']}")
    for column in ("attack", "original", "unlearned", "kept share", "verdict"):
        table.add_column(column, justify="left" if column in ("attack", "verdict") else "right")
    for name, entry in result["attacks"].items():
        figure = {m: (entry.get(m) or {}).get("figure") for m in ("original", "unlearned")}
        table.add_row(name, _cell(figure["original"]), _cell(figure["unlearned"]), _cell(entry["kept_share"]),
                      robustness_verdict(entry))
    Console().print(table)
    console.print(f"wrote {result['path']}")


def robustness_verdict(entry: dict[str, Any]) -> str:
    """One word per attack: kept (>= 80% of the unlearning survives), lost, skipped or undecided."""
    if entry.get("skipped"):
        return "skipped: " + str(entry["skipped"])
    return {True: "kept", False: "lost"}.get(entry.get("keeps_80"), "undecided (no plain reduction)")


def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("—" if value is None else str(value))


def _print_table(title: str, metrics: dict[str, Any], columns: tuple[str, ...]) -> None:
    table = Table(title=title)
    table.add_column("split")
    for key in columns:
        table.add_column(key.replace("_", " "), justify="right")
    for split, values in metrics.items():
        if isinstance(values, dict):
            table.add_row(split, *[_cell(values.get(key)) for key in columns])
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
