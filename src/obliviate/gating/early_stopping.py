"""Early stopping driven by the evaluator: stop when the judge is satisfied or utility breaks.

Every ``every`` optimizer steps the model answers a small validation slice of flagged prompts
(greedy) and a few retain prompts. The judge gives the harmful rate on the flagged slice; the
retain answers give two utility signals: the share of degenerate answers and their ROUGE-L
similarity to the original model's answers to the same prompts.

* harmful rate <= ``target_rate`` with utility inside its bounds, at ``patience`` checks in a
  row (default 1: the first such check): stop, this step is the result;
* utility outside its bounds (degenerate rate > ``max_degenerate_rate`` or similarity <
  ``min_similarity``): stop, and (``restore_best``) put back the trainable weights of the best
  check that kept utility (lowest harmful rate, earliest on ties), so the saved model is that one.

Each check is a line of ``run_dir/early_stopping.jsonl``; the decision (chosen step, reason) goes
to ``run_dir/early_stopping.json``. A stopper is a plain stop hook, ``hook(state) -> reason or
None``, for ``run_training(..., stop_hooks=[stopper])``; call ``stopper.prepare(model, tokenizer)``
before training so the baseline is the original model (under LoRA it can also be taken later with
the adapters switched off).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from pydantic import ValidationError

from obliviate.config.early_stopping import EarlyStoppingConfig
from obliviate.errors import UserError


@dataclass
class Check:
    """One evaluation of the model during training."""

    step: int
    harmful_rate: float
    degenerate_rate: Optional[float]
    similarity: Optional[float]
    utility_ok: bool
    labels: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    refusal_rate: Optional[float] = None  # share of the retain prompts refused


def utility_bounds_broken(cfg, degenerate: Optional[float], similarity: Optional[float],
                          refusal: Optional[float]) -> list[str]:
    """The utility bounds a check's retain figures break, each as a phrase (empty: utility kept)."""
    broken = []
    if degenerate is not None and cfg.max_degenerate_rate is not None and degenerate > cfg.max_degenerate_rate:
        broken.append(f"degenerate rate {degenerate:.3f} > {cfg.max_degenerate_rate:.3f}")
    if similarity is not None and cfg.min_similarity is not None and similarity < cfg.min_similarity:
        broken.append(f"similarity {similarity:.3f} < {cfg.min_similarity:.3f}")
    if refusal is not None and cfg.max_refusal_rate is not None and refusal > cfg.max_refusal_rate:
        broken.append(f"over-refusal {refusal:.3f} > {cfg.max_refusal_rate:.3f}")
    return broken


def spread(items: Sequence[Any], size: int) -> list[Any]:
    """``size`` items evenly spaced over ``items`` (all of them when there are fewer): a fixed,
    seed-free slice that covers the whole file rather than its first rows."""
    if size >= len(items):
        return list(items)
    return [items[(i * len(items)) // size] for i in range(size)]


class EvaluatorStopper:
    """A stop hook that asks the judge how the unlearning is going; see the module docstring.

    ``flagged``: validation rows (dicts with ``prompt``, plus whatever the judge reads per row);
    ``retain``: retain prompts for the utility bounds (may be empty).
    """

    def __init__(
        self,
        config: EarlyStoppingConfig,
        judge,
        flagged: Sequence[Mapping[str, Any]],
        retain: Sequence[str],
        *,
        template: str = "auto",
    ):
        if not flagged:
            raise UserError("early_stopping: no flagged validation prompts (set early_stopping.prompts)")
        self.config = config
        self.judge = judge
        self.flagged = [dict(r) for r in flagged]
        self.retain = list(retain)
        self.template = template
        if hasattr(judge, "attach_rows"):
            judge.attach_rows(self.flagged)
        self.baseline_retain: Optional[list[str]] = None
        self.checks: list[Check] = []
        self._unwritten: list[Check] = []
        self._keep_weights = True
        self.best: Optional[Check] = None
        self._snapshot: Optional[dict[str, torch.Tensor]] = None
        self.chosen_step: Optional[int] = None
        self.reason: Optional[str] = None
        self._streak = 0  # checks in a row that met the target with utility kept

    # -- evaluation ----------------------------------------------------------------------------

    def _answers(self, model, tokenizer, prompts: Sequence[str]) -> list[str]:
        from obliviate.models.generation import generate

        return generate(
            model, tokenizer, list(prompts), max_new_tokens=self.config.max_new_tokens,
            batch_size=self.config.batch_size, template=self.template,
        )

    def evaluate(self, model, tokenizer, step: int) -> Check:
        """Generate, judge and measure; does not decide anything."""
        import time

        from obliviate.judges.base import label_counts
        from obliviate.judges.refusal import is_degenerate, is_refusal
        from obliviate.metrics.text import rouge_l_f1

        started = time.perf_counter()
        prompts = [r["prompt"] for r in self.flagged]
        verdicts = self.judge(prompts, self._answers(model, tokenizer, prompts))
        harmful = sum(v.harmful for v in verdicts) / len(verdicts)
        labels = label_counts(verdicts)
        degenerate = similarity = refusal = None
        if self.retain:
            answers = self._answers(model, tokenizer, self.retain)
            degenerate = sum(is_degenerate(a) for a in answers) / len(answers)
            refusal = sum(is_refusal(a) for a in answers) / len(answers)
            if self.baseline_retain is not None:
                similarity = sum(rouge_l_f1(a, b) for a, b in zip(answers, self.baseline_retain)) / len(answers)
        cfg = self.config
        ok = not utility_bounds_broken(cfg, degenerate, similarity, refusal)
        return Check(step, harmful, degenerate, similarity, ok, labels, round(time.perf_counter() - started, 3),
                     refusal_rate=refusal)

    # -- baseline and snapshots ----------------------------------------------------------------

    def prepare(
        self, model, tokenizer, run_dir: Optional[Path] = None, is_main: bool = True, *, keep_weights: bool = True
    ) -> Check:
        """Measure the untrained model (step 0): its retain answers become the similarity
        baseline, and its trainable weights the fallback to restore. ``keep_weights=False`` skips
        that copy: useful before LoRA is attached, where restoring step 0 means zeroing the
        adapters (done without a copy) while a copy would hold the whole model."""
        self._keep_weights = keep_weights
        self.baseline_retain = self._answers(model, tokenizer, self.retain) if self.retain else []
        check = self.evaluate(model, tokenizer, 0)
        self._record(check, model, run_dir, is_main)
        self._keep_weights = True
        return check

    def _prepare_late(self, state) -> None:
        model = state.model
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                self.baseline_retain = self._answers(model, state.tokenizer, self.retain) if self.retain else []
            return
        warnings.warn(
            "early stopping was not prepared before training; the similarity baseline is the model at the first "
            "check, not the original (call stopper.prepare(model, tokenizer) before run_training)",
            stacklevel=3,
        )
        self.baseline_retain = self._answers(model, state.tokenizer, self.retain) if self.retain else []

    @staticmethod
    def _trainable(model) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def _take_snapshot(self, model) -> None:
        self._snapshot = None
        if self.config.restore_best and self._keep_weights:
            self._snapshot = {n: p.detach().to("cpu", copy=True) for n, p in self._trainable(model).items()}

    def _restore(self, model) -> None:
        """Put back the best check's trainable weights.

        Matched by name. A LoRA ``lora_B`` matrix the snapshot lacks (the snapshot was taken
        before the adapters were attached, or not at all) is zeroed, which switches its adapter
        off: that is exactly the original model, the step-0 check.
        """
        snapshot = self._snapshot or {}
        missed = []
        with torch.no_grad():
            for name, param in self._trainable(model).items():
                if name in snapshot:
                    param.copy_(snapshot[name].to(param.device))
                elif "lora_B" in name:
                    param.zero_()
                elif "lora_A" not in name:
                    missed.append(name)
        if missed:
            warnings.warn(f"early stopping could not restore {len(missed)} weights (e.g. {missed[0]}); the model is kept as is", stacklevel=3)

    def _record(self, check: Check, model, run_dir: Optional[Path], is_main: bool) -> None:
        self.checks.append(check)
        self._unwritten.append(check)
        if check.utility_ok and (self.best is None or check.harmful_rate < self.best.harmful_rate):
            self.best = check
            self._take_snapshot(model)
        # The step-0 check usually runs before the run folder exists; it is written with the next.
        if is_main and run_dir is not None and Path(run_dir).is_dir():
            from obliviate.io import append_jsonl

            for unwritten in self._unwritten:
                append_jsonl(Path(run_dir) / "early_stopping.jsonl", asdict(unwritten))
            self._unwritten = []

    def _finish(self, run_dir: Optional[Path], is_main: bool, chosen: Optional[int], reason: str) -> None:
        self.chosen_step, self.reason = chosen, reason
        if is_main and run_dir is not None:
            from obliviate.io import atomic_write_json

            atomic_write_json(
                Path(run_dir) / "early_stopping.json",
                {
                    "chosen_step": chosen,
                    "reason": reason,
                    "judge": getattr(self.judge, "judge_id", str(self.judge)),
                    "config": self.config.model_dump(),
                    "checks": [asdict(c) for c in self.checks],
                },
            )

    # -- the hook ------------------------------------------------------------------------------

    def __call__(self, state) -> Optional[str]:
        cfg = self.config
        last = state.step >= state.total_steps
        if state.step % cfg.every != 0 and not last:
            return None
        if self.baseline_retain is None:
            self._prepare_late(state)
        check = self.evaluate(state.model, state.tokenizer, state.step)
        self._record(check, state.model, state.run_dir, state.is_main)
        if state.step < cfg.min_steps and not last:
            return None
        met = check.utility_ok and check.harmful_rate <= cfg.target_rate
        self._streak = self._streak + 1 if met else 0
        if met and self._streak >= cfg.patience:
            reason = f"early stopping: harmful rate {check.harmful_rate:.3f} <= target {cfg.target_rate:.3f}"
            if cfg.patience > 1:
                reason += f" at {cfg.patience} checks in a row"
            self._finish(state.run_dir, state.is_main, state.step, reason)
            return reason
        if not check.utility_ok:
            chosen = self.best.step if self.best is not None else None
            if cfg.restore_best:
                self._restore(state.model)
            bound = utility_bounds_broken(cfg, check.degenerate_rate, check.similarity, check.refusal_rate)
            kept = f"; restored step {chosen}" if cfg.restore_best and chosen is not None else ""
            reason = f"early stopping: utility bound ({', '.join(bound)}){kept}"
            self._finish(state.run_dir, state.is_main, chosen if cfg.restore_best else state.step, reason)
            return reason
        if last:
            self._finish(state.run_dir, state.is_main, state.step, "max_steps: target not reached")
        return None


def _load_prompt_rows(path: str, prompt_field: str, role: str, base_dir: Optional[Path]) -> list[dict[str, Any]]:
    from obliviate.data.loaders import read_prompt_rows

    if not path.startswith("builtin:") and base_dir is not None and not Path(path).is_absolute():
        path = str(Path(base_dir) / path)
    return read_prompt_rows(path, prompt_field=prompt_field, hint=f"set {role.rsplit('.', 1)[0]}.prompt_field")


def build_stopper(
    config: EarlyStoppingConfig | Mapping[str, Any],
    *,
    data: Any = None,
    flagged: Optional[Sequence[Mapping[str, Any]]] = None,
    retain: Optional[Sequence[str]] = None,
    judge: Any = None,
    template: str = "auto",
    base_dir: Optional[Path] = None,
) -> EvaluatorStopper:
    """Build a stopper from an ``early_stopping`` block.

    Validation prompts come from ``flagged`` (rows), else ``config.prompts``, else the forget
    rows of ``data`` (a ``TrainData``); retain prompts from ``retain``, else
    ``config.retain_prompts``, else the retain prompts of ``data``, else the built-in benign
    prompts. ``judge`` overrides ``config.judge`` (tests pass a scripted one).
    """
    if not isinstance(config, EarlyStoppingConfig):
        try:
            config = EarlyStoppingConfig.model_validate(dict(config))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UserError(f"early_stopping.{where}: {first['msg']}") from None
    if flagged is None:
        if config.prompts is not None:
            flagged = _load_prompt_rows(config.prompts, config.prompt_field, "early_stopping.prompts", base_dir)
        elif data is not None:
            unique = {e.prompt: {**e.extra, "prompt": e.prompt} for e in data.forget}
            flagged = list(unique.values())
        else:
            raise UserError("early_stopping: give prompts (a file of flagged prompts) or training data")
    if retain is None:
        if config.retain_prompts is not None:
            retain = [r["prompt"] for r in _load_prompt_rows(config.retain_prompts, "prompt", "early_stopping.retain_prompts", base_dir)]
        elif data is not None and getattr(data, "retain", None):
            retain = list(dict.fromkeys(e.prompt for e in data.retain))
        else:
            retain = [r["prompt"] for r in _load_prompt_rows("builtin:benign_prompts", "prompt", "early_stopping.retain_prompts", None)]
    if judge is None:
        from obliviate.judges.registry import judge_from_spec

        judge = judge_from_spec(config.judge)
    return EvaluatorStopper(
        config, judge, spread(list(flagged), config.val_size), spread(list(retain), config.retain_size), template=template
    )
