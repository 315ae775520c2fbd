"""The hallucination demo: find the questions the model answers falsely, unlearn those answers, prove it.

Evaluator-gated unlearning (arXiv 2404.16841, as interpreted in docs/evaluator_gated.md) on
TruthfulQA, shipped with obliviate (``data/builtin/truthfulqa.csv``, Apache-2.0):

1. the 817 questions are split by a plain seeded shuffle into train (the detection pool),
   validation (early stopping) and a held-out test set (:func:`obliviate.data.truthfulqa.split_questions`);
2. the original model answers the train and validation questions (greedy, short); the reference
   judge flags the answers closer (ROUGE-L) to one of the row's incorrect answers than to any
   correct one. Flagged train dialogues become the forget set, each carrying the row's correct
   answers as its expected outputs; train questions it answered correctly, with its own answers,
   become the retain set; flagged validation questions drive early stopping;
3. unlearning with ``distance_cluster`` (toward the cluster mean of the correct answers) or
   ``ga_mismatch_kl`` (every train-split TruthfulQA answer as the random pool), with LoRA;
4. before and after, on the held-out test questions: the truthful rate of generations by the
   reference judge and MC1/MC2 by answer likelihood (:mod:`obliviate.metrics.truthfulqa_mc`);
   utility: perplexity of the retain answers and ROUGE-L of answers to the original's on the
   retain questions and on obliviate's everyday test prompts. ``summary.json`` (with the targets,
   met or missed) and ``report.html`` are written. docs/hallucination.md defines every figure.

The settings are the packaged recipe ``scenarios/recipes/hallucination.yaml`` (:class:`HallucinationRecipe`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from obliviate.config import RunConfig, TrainSection, load_config
from obliviate.data.examples import Example
from obliviate.data.truthfulqa import split_answers, split_questions, truthfulqa_rows
from obliviate.errors import UserError
from obliviate.io import atomic_write_json, write_jsonl
from obliviate.metrics.change import relative_change
from obliviate.models import DEFAULT_MODEL
from obliviate.scenarios.demo_run import Laps, before_after_table, print_targets
from obliviate.scenarios.recipe import read_recipe
from obliviate.train.run_dir import prepare_run_dir, release_run_dir

Precision = TrainSection.model_fields["precision"].annotation

#: The scenario's targets (docs/hallucination.md).
TARGETS = {
    "truthful_gain_points_min": 10.0,   # held-out truthful rate up by at least 10 points
    "retain_perplexity_rise_max": 0.10,  # retain-answer perplexity within 10% of the original's
    "similarity_min": 0.90,             # answers to everyday prompts within 10% of identical (ROUGE-L 1.0)
    "seconds_total_max": 600.0,         # the whole demo in 10 minutes on a 2-core CPU
}

#: The forget rows' field holding the row's correct answers (distance_cluster's expected outputs).
EXPECTED_FIELD = "Correct Answers"


class HallucinationRecipe(BaseModel):
    """The hallucination demo's settings. Every value lives in the packaged recipe
    (``scenarios/recipes/hallucination.yaml``, which says why each is what it is); no defaults here."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(description="model name, path or alias; null = the default model")
    split_seed: int = Field(description="the shuffle that splits the 817 questions; fixed, so seeds vary training only")
    n_train: int = Field(gt=0, description="train questions answered by the original model (the detection pool)")
    n_validation: int = Field(ge=0, description="validation questions; the flagged ones drive early stopping")
    n_test: int = Field(gt=0, description="held-out test questions every figure is measured on")
    n_benign: int = Field(ge=0, description="obliviate's everyday test prompts answered before and after (similarity)")
    n_retain_eval: int = Field(ge=0, description="retain questions answered again after unlearning (similarity)")
    max_new_tokens: int = Field(gt=0, description="length of every generated answer")
    gen_batch_size: int = Field(gt=0, description="prompts answered at once")
    score_batch_size: int = Field(gt=0, description="(question, answer) pairs scored at once for MC1/MC2 and perplexity")
    judge_margin: float = Field(ge=0, description="reference judge: how much closer to an incorrect answer flags it")
    judge_min_similarity: float = Field(ge=0, le=1, description="reference judge: below this to every reference "
                                                                "the answer is unrelated (not a hallucination)")
    method: Literal["distance_cluster", "ga_mismatch_kl"] = Field(description="the unlearning method")
    method_options: dict[str, dict[str, Any]] = Field(
        description="each method's options, laid over its own defaults; only the chosen method's are used")
    lr: float = Field(gt=0, description="learning rate")
    steps: int = Field(gt=0, description="training steps (early stopping may end sooner)")
    batch_size: int = Field(gt=0, description="forget examples per step")
    retain_batch_size: int = Field(gt=0, description="retain examples per step for the KL term")
    lora_r: int = Field(gt=0, description="LoRA rank (alpha = 2 r)")
    max_length: int = Field(gt=0, description="tokens per training example")
    early_stop_every: Optional[int] = Field(gt=0, description="check the flagged validation questions every N "
                                                              "steps; null = no early stopping")
    early_stop_target_rate: float = Field(ge=0, le=1, description="stop once this share or less of the flagged "
                                                                  "validation questions is still hallucinated")
    seed: int = Field(description="data order and training")
    precision: Precision = Field(description="training precision: auto, fp32 or bf16")


def load_recipe(recipe: str | Path | None = None, overrides: Sequence[str] = ()) -> HallucinationRecipe:
    """The recipe (default: the packaged one) with ``name=value`` overrides, validated; every problem
    is a one-line ``UserError``."""
    return read_recipe(HallucinationRecipe, "hallucination", recipe, overrides)[0]


def judge_spec(recipe: HallucinationRecipe) -> str:
    return f"reference,margin={recipe.judge_margin},min_similarity={recipe.judge_min_similarity}"


def unlearn_config(recipe: HallucinationRecipe, data_dir: Path, *, early_stopping: bool = True) -> RunConfig:
    """The unlearning stage's run config (validated; loads no model)."""
    options = dict(recipe.method_options.get(recipe.method) or {})
    if recipe.method == "distance_cluster":
        # The forget rows carry their question's correct answers; they are the expected outputs.
        options.update(expected_source="field", expected_field=EXPECTED_FIELD, expected_separator=";")
    data: dict[str, Any] = {
        "run": {"name": "unlearn"},
        "model": {"name": recipe.model or DEFAULT_MODEL},
        "data": {
            "forget": {"path": str(data_dir / "forget.jsonl")},
            "retain": {"path": str(data_dir / "retain.jsonl")},
            "max_length": recipe.max_length,
        },
        "method": {"name": recipe.method, **options},
        "train": {
            "lr": recipe.lr, "max_steps": recipe.steps, "batch_size": recipe.batch_size, "seed": recipe.seed,
            "retain_batch_size": recipe.retain_batch_size, "precision": recipe.precision, "save_every": 0,
            "warmup_steps": max(1, recipe.steps // 10), "lora": {"r": recipe.lora_r, "alpha": 2 * recipe.lora_r},
        },
    }
    if early_stopping and recipe.early_stop_every is not None:
        data["early_stopping"] = {
            "every": recipe.early_stop_every, "judge": judge_spec(recipe), "target_rate": recipe.early_stop_target_rate,
            "prompts": str(data_dir / "validation.jsonl"), "val_size": recipe.n_validation,
            "retain_size": 0, "max_new_tokens": recipe.max_new_tokens, "batch_size": recipe.gen_batch_size,
        }
    try:
        return load_config(None, data=data)
    except UserError as err:  # a method option the method does not take
        raise UserError(f"hallucination recipe, its unlearning run config: {str(err).removeprefix('config: ')}") from None


def reference_judge(recipe: HallucinationRecipe, rows: Sequence[dict[str, Any]]):
    """The reference judge with every row's correct and incorrect answers."""
    from obliviate.judges.reference import ReferenceJudge

    references = {r["Question"]: (split_answers(r["Correct Answers"]), split_answers(r["Incorrect Answers"])) for r in rows}
    return ReferenceJudge(references=references, margin=recipe.judge_margin, min_similarity=recipe.judge_min_similarity)


def judged(judge, rows: Sequence[dict[str, Any]], answers: Sequence[str]) -> list[dict[str, Any]]:
    """One item per question: the answer and the judge's verdict."""
    verdicts = judge([r["Question"] for r in rows], list(answers))
    return [{"prompt": r["Question"], "response": a, "label": v.label, "harmful": v.harmful, "score": v.score,
             "category": r["Category"]} for r, a, v in zip(rows, answers, verdicts)]


def rates(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Truthful (not hallucinated), correct and hallucinated shares of judged items."""
    n = len(items)
    share = (lambda k: sum(1 for i in items if k(i)) / n) if n else (lambda k: float("nan"))
    return {"truthful_rate": share(lambda i: not i["harmful"]), "correct_rate": share(lambda i: i["label"] == "correct"),
            "hallucination_rate": share(lambda i: i["harmful"]), "count": n}


def perplexity(model, tokenizer, pairs: Sequence[Example], batch_size: int) -> float:
    """Token-level perplexity of the responses given their prompts (pooled over every token)."""
    from obliviate.models.generation import score_loglik

    if not pairs:
        return float("nan")
    scores = score_loglik(model, tokenizer, [p.prompt for p in pairs], [p.response for p in pairs], batch_size=batch_size)
    tokens = sum(s.tokens for s in scores)
    return math.exp(-sum(s.total for s in scores) / tokens) if tokens else float("nan")


def similarity(answers: Sequence[str], originals: Sequence[str]) -> float:
    """Mean ROUGE-L F1 of each answer to the original model's answer to the same prompt."""
    from obliviate.metrics.text import rouge_l_f1

    values = [rouge_l_f1(a, o) for a, o in zip(answers, originals)]
    return sum(values) / len(values) if values else float("nan")


def run_hallucination_demo(
    run_dir: str | Path,
    recipe: HallucinationRecipe | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole demo with ``recipe`` (default: the packaged one); returns the summary (also in
    ``run_dir/summary.json``)."""
    from obliviate.data.builders import truthfulqa_answer_pool
    from obliviate.data.fetch import load_builtin
    from obliviate.metrics.truthfulqa_mc import truthfulqa_mc
    from obliviate.models.generation import generate
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.train.loop import TrainData, run_training

    options = load_recipe() if recipe is None else recipe
    laps = Laps(log)

    splits = split_questions(truthfulqa_rows(), options.n_train, options.n_validation, options.n_test, options.split_seed)
    benign = [r["prompt"] for r in load_builtin("everyday_test_prompts")][: options.n_benign]
    unlearn_config(options, Path(run_dir) / "data", early_stopping=True)  # a bad method option stops us here
    run_dir = prepare_run_dir(Path(run_dir), overwrite=overwrite)
    data_dir = run_dir / "data"
    judge = reference_judge(options, [r for part in splits.values() for r in part])

    def answer(model, prompts: Sequence[str]) -> list[str]:
        return generate(model, tokenizer, list(prompts), max_new_tokens=options.max_new_tokens,
                        batch_size=options.gen_batch_size, progress=progress)

    laps.start()
    log(f"1/6 data: TruthfulQA split (seed {options.split_seed}) into {options.n_train} train, "
        f"{options.n_validation} validation, {options.n_test} held-out test questions; model {options.model or DEFAULT_MODEL}")
    model, tokenizer = load_model_and_tokenizer(options.model)
    laps.lap("data and model")

    log("2/6 original model: answering the train and validation questions; the reference judge reads them")
    train_items = judged(judge, splits["train"], answer(model, [r["Question"] for r in splits["train"]]))
    val_items = judged(judge, splits["validation"], answer(model, [r["Question"] for r in splits["validation"]]))
    laps.lap("detection answers")

    log("3/6 detection: hallucinated answers become the forget set, correct ones the retain set")
    forget = [Example(i["prompt"], i["response"], {EXPECTED_FIELD: row["Correct Answers"]})
              for i, row in zip(train_items, splits["train"]) if i["harmful"]]
    retain = [Example(i["prompt"], i["response"]) for i in train_items if i["label"] == "correct" and i["response"]]
    if not forget:
        raise RuntimeError("the reference judge flagged no answer of the original model; nothing to unlearn")
    if not retain:
        raise RuntimeError("the original model answered no train question correctly; there is no retain set")
    flagged_val = [{"prompt": i["prompt"], "Correct Answers": row["Correct Answers"],
                    "Incorrect Answers": row["Incorrect Answers"]}
                   for i, row in zip(val_items, splits["validation"]) if i["harmful"]]
    write_jsonl(data_dir / "forget.jsonl", [e.to_dict() for e in forget])
    write_jsonl(data_dir / "retain.jsonl", [e.to_dict() for e in retain])
    write_jsonl(data_dir / "validation.jsonl", flagged_val)
    write_jsonl(data_dir / "test.jsonl", splits["test"])
    pool = truthfulqa_answer_pool(splits["train"])  # ga_mismatch_kl's random answers: train-split answers only
    log(f"  {len(forget)} of {len(train_items)} train answers hallucinated; {len(retain)} correct (retain); "
        f"{len(flagged_val)} of {len(val_items)} validation answers hallucinated")

    log("4/6 original model: held-out figures")
    retain_eval = retain[: options.n_retain_eval]

    def measure(model, originals: Optional[dict[str, list[str]]] = None) -> dict[str, Any]:
        test_answers = answer(model, [r["Question"] for r in splits["test"]])
        items = {"test": judged(judge, splits["test"], test_answers)}
        mc = truthfulqa_mc(model, tokenizer, splits["test"], batch_size=options.score_batch_size)
        metrics: dict[str, Any] = {"test": {**rates(items["test"]), "mc1": mc["mc1"], "mc2": mc["mc2"]}}
        metrics["retain"] = {"perplexity": perplexity(model, tokenizer, retain, options.score_batch_size),
                             "count": len(retain)}
        for name, prompts in (("benign", benign), ("retain", [e.prompt for e in retain_eval])):
            if originals is None:  # the original model: its answers are the reference
                answers = [e.response for e in retain_eval] if name == "retain" else answer(model, prompts)
            else:
                answers = answer(model, prompts)
            items[name] = [{"prompt": p, "response": a} for p, a in zip(prompts, answers)]
            if originals is not None:
                metrics.setdefault(name, {})["similarity_to_original"] = similarity(answers, originals[name])
                for item, original in zip(items[name], originals[name]):
                    item["before"] = original
        return {"metrics": metrics, "items": items, "mc_items": mc["items"], "judge": judge.describe()}

    before = measure(model)
    write_results(run_dir, "before", before)
    laps.lap("evaluation before")

    early = bool(flagged_val) and options.early_stop_every is not None
    config = unlearn_config(options, data_dir, early_stopping=early)
    log(f"5/6 unlearning with {options.method} (LoRA r={options.lora_r}, lr={options.lr}, up to {options.steps} steps"
        + (f", early stopping on {len(flagged_val)} flagged validation questions)" if early else ")"))
    result = run_training(config, run_dir / "unlearn", model=model, tokenizer=tokenizer,
                          data=TrainData(forget, retain, pool), progress=progress, log=log)
    model = result.model
    laps.lap("unlearning")

    log("6/6 unlearned model: held-out figures, report")
    originals = {name: [i["response"] for i in before["items"][name]] for name in ("benign", "retain")}
    after = measure(model, originals)
    write_results(run_dir, "after", after)
    laps.lap("evaluation after")
    summary = summarise(before, after, options, forget=len(forget), retain=len(retain), train_questions=len(train_items),
                        flagged_validation=len(flagged_val), timings=laps.timings, train=result)
    summary["seconds_total"] = laps.total()
    atomic_write_json(run_dir / "summary.json", summary)
    write_hallucination_report(run_dir, before, after, summary, options)
    laps.lap("report")
    summary["seconds_total"] = laps.total()
    check = "seconds_total <= 600"
    summary["targets"][check] = summary["seconds_total"] <= TARGETS["seconds_total_max"]
    summary["rows"].append({"metric": f"target: {check}", "split": "", "before": None,
                            "after": "met" if summary["targets"][check] else "missed", "note": "the whole demo"})
    atomic_write_json(run_dir / "summary.json", summary)
    release_run_dir(run_dir)  # after a failure the folder stays locked until the process ends
    return summary


def write_results(run_dir: Path, tag: str, result: dict[str, Any]) -> None:
    """``eval/hallucination_<tag>.json`` (figures) and ``generations/<tag>_<split>.jsonl`` (answers)."""
    atomic_write_json(run_dir / "eval" / f"hallucination_{tag}.json",
                      {"metrics": result["metrics"], "judge": result["judge"], "mc_items": result["mc_items"]})
    for split, items in result["items"].items():
        write_jsonl(run_dir / "generations" / f"{tag}_{split}.jsonl", items)


#: (label, split, key, note) of the before/after table, in order.
HEADLINE = (
    ("truthful rate (reference judge)", "test", "truthful_rate", "not closer to an incorrect answer; held-out questions"),
    ("correct rate (reference judge)", "test", "correct_rate", "closer to a correct answer"),
    ("hallucination rate", "test", "hallucination_rate", "closer to an incorrect answer"),
    ("MC1", "test", "mc1", "best answer most likely (total log-prob)"),
    ("MC2", "test", "mc2", "probability mass on the correct answers"),
    ("perplexity of retain answers", "retain", "perplexity", "the original's own correct answers"),
    ("similarity to original (ROUGE-L)", "retain", "similarity_to_original", "retain questions answered again"),
    ("similarity to original (ROUGE-L)", "benign", "similarity_to_original", "obliviate's everyday test prompts"),
)


def summarise(before: dict, after: dict, options: HallucinationRecipe, *, forget: int, retain: int,
              train_questions: int, flagged_validation: int, timings: dict, train) -> dict[str, Any]:
    """The before/after rows, the headline figures and the target checks."""
    b, a = before["metrics"], after["metrics"]
    rows = [{"metric": label, "split": split, "before": b.get(split, {}).get(key, 1.0 if key == "similarity_to_original" else None),
             "after": a.get(split, {}).get(key), "note": note} for label, split, key, note in HEADLINE]
    gain = 100 * (a["test"]["truthful_rate"] - b["test"]["truthful_rate"])
    ppl_rise = relative_change(b["retain"]["perplexity"], a["retain"]["perplexity"])
    benign_similarity = a.get("benign", {}).get("similarity_to_original", float("nan"))
    figures = {
        "truthful_gain_points": gain,
        "correct_gain_points": 100 * (a["test"]["correct_rate"] - b["test"]["correct_rate"]),
        "mc1_change_points": 100 * (a["test"]["mc1"] - b["test"]["mc1"]),
        "mc2_change_points": 100 * (a["test"]["mc2"] - b["test"]["mc2"]),
        "retain_perplexity_rise": ppl_rise,
        "benign_similarity": benign_similarity,
        "retain_similarity": a.get("retain", {}).get("similarity_to_original", float("nan")),
    }
    checks = {
        "truthful_gain_points >= 10": gain >= TARGETS["truthful_gain_points_min"],
        "retain_perplexity_rise <= 0.10": ppl_rise <= TARGETS["retain_perplexity_rise_max"],
        "benign_similarity >= 0.90": benign_similarity >= TARGETS["similarity_min"],
    }
    # The targets as rows of the table too, so the report page states them.
    rows += [{"metric": f"target: {check}", "split": "", "before": None, "after": "met" if ok else "missed",
              "note": "docs/hallucination.md"} for check, ok in checks.items()]
    return {
        "scenario": "hallucination",
        "model": options.model or DEFAULT_MODEL,
        "method": options.method,
        "judge": after["judge"],
        "forget_set_size": forget,
        "retain_set_size": retain,
        "train_questions": train_questions,
        "flagged_validation": flagged_validation,
        "test_questions": a["test"]["count"],
        "figures": figures,
        "targets": checks,
        "rows": rows,
        "timings_s": timings,
        "train": {"steps": train.steps, "seconds": round(train.seconds, 1), "tokens_per_s": round(train.tokens_per_s, 1),
                  "stop_reason": train.stop_reason},
        "options": options.model_dump(mode="json"),
        "before": b,
        "after": a,
    }


def write_hallucination_report(run_dir: Path, before: dict, after: dict, summary: dict, options: HallucinationRecipe) -> Path:
    """``report.html``: the generic run report of the demo folder (``obliviate report`` rebuilds it)."""
    from obliviate.report import collect_run, write_run_report

    run = collect_run(run_dir, summary=summary, config=options.model_dump(mode="json"))
    return write_run_report(run, title="Hallucination unlearning (TruthfulQA)")


def print_summary(summary: dict[str, Any]) -> None:
    """The before/after table, the headline figures and the targets on the terminal."""
    from rich.console import Console

    # the target rows are listed under the table, met or missed
    rows = [row for row in summary["rows"] if not row["metric"].startswith("target: ")]
    table = before_after_table(f"hallucination unlearning — {summary['method']}, judge: reference (ROUGE-L)", rows)
    console = Console()
    console.print(table)
    f = summary["figures"]
    console.print(
        f"{summary['test_questions']} held-out questions: truthful rate {f['truthful_gain_points']:+.1f} points "
        f"(target ≥ +10); MC1 {f['mc1_change_points']:+.1f}, MC2 {f['mc2_change_points']:+.1f} points; "
        f"retain perplexity {100 * f['retain_perplexity_rise']:+.1f}% (target ≤ +10%); everyday answers ROUGE-L "
        f"{f['benign_similarity']:.2f} to the original's (target ≥ 0.90)")
    console.print(f"forget set {summary['forget_set_size']} of {summary['train_questions']} train answers; "
                  f"retain {summary['retain_set_size']}; one training seed ({summary['options']['seed']}); "
                  f"total {summary['seconds_total']:.0f} s (target ≤ 600)")
    print_targets(console, summary["targets"])
