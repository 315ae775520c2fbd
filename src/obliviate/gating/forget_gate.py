"""The evaluator gates the forget set during training: a dialogue is unlearnt only while the judge still flags it.

``obliviate detect`` picks the dialogues to unlearn once, before training. Every ``every``
optimizer steps the gate asks the model to answer each forget prompt again (greedy,
``max_new_tokens``) and the judge to read the answers; a prompt whose answer the judge no longer
flags (a refusal, a corrected answer, or a broken one) leaves the forget terms until a later
check flags it again. The push thus stops where it has done its work, while the retain term keeps
training on every step: the collateral damage of unlearning grows with how long and how hard the
forget terms push, and a prompt that is already refused gains nothing from more of it.

Each check is a line of ``run_dir/forget_gate.jsonl`` (step, how many prompts are still
active, the judge's labels, seconds). A method holds a gate and asks ``active(prompt)`` when it
builds a batch; the training loop builds the gate from the method's block, hands it to the method's setup and runs it after each step, before any stop hook (``gate(state)``).

Under several processes every process generates the same greedy answers and so keeps the same
gate; that is redundant work, accepted because the gate is small next to training.
The gate is not saved with checkpoints: a resumed run treats every prompt as flagged until its
next check.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from obliviate.methods.distance_cluster import ForgetGateConfig


class ForgetGate:
    """Which forget prompts the judge still flags; see the module docstring.

    ``rows``: the forget rows (dicts with ``prompt`` and whatever the judge reads per row), one per
    prompt. Every prompt starts active: detection flagged all of them.
    """

    def __init__(self, config: ForgetGateConfig, judge, rows: Sequence[Mapping[str, Any]], *, template: str = "auto"):
        unique = {str(r["prompt"]): dict(r) for r in rows}
        if not unique:
            raise ValueError("forget_gate needs at least one forget prompt")
        self.config = config
        self.judge = judge
        self.rows = list(unique.values())
        self.template = template
        if hasattr(judge, "attach_rows"):
            judge.attach_rows(self.rows)
        self._active = set(unique)

    def active(self, prompt: str) -> bool:
        return prompt in self._active

    @property
    def share(self) -> float:
        return len(self._active) / len(self.rows)

    def update(self, model, tokenizer, step: int) -> dict[str, Any]:
        """Answer every forget prompt and keep those the judge flags; returns the logged record."""
        from obliviate.judges.base import label_counts
        from obliviate.models.generation import generate

        started = time.perf_counter()
        prompts = [r["prompt"] for r in self.rows]
        answers = generate(model, tokenizer, prompts, max_new_tokens=self.config.max_new_tokens,
                           batch_size=self.config.batch_size, template=self.template)
        verdicts = self.judge(prompts, answers)
        self._active = {p for p, v in zip(prompts, verdicts) if v.harmful}
        labels = label_counts(verdicts)
        record = {"step": step, "active": len(self._active), "of": len(prompts), "labels": labels,
                  "seconds": round(time.perf_counter() - started, 3)}
        return record

    def __call__(self, state) -> None:
        """The per-step hook: re-judge on every ``every``-th step (not after the last, which ends training)."""
        if state.step % self.config.every != 0 or state.step >= state.total_steps:
            return None
        record = self.update(state.model, state.tokenizer, state.step)
        run_dir: Optional[Path] = state.run_dir
        if state.is_main and run_dir is not None and Path(run_dir).is_dir():
            from obliviate.io import append_jsonl

            append_jsonl(Path(run_dir) / "forget_gate.jsonl", record)
        return None


def build_gate(config: ForgetGateConfig | Mapping[str, Any], rows, *, judge=None, template: str = "auto") -> ForgetGate:
    """A gate from a ``forget_gate`` block; ``judge`` overrides ``config.judge`` (tests pass a scripted one)."""
    if not isinstance(config, ForgetGateConfig):
        config = ForgetGateConfig.model_validate(dict(config))
    if judge is None:
        from obliviate.judges.registry import judge_from_spec

        judge = judge_from_spec(config.judge)
    return ForgetGate(config, judge, rows, template=template)
