"""The seed papers' three-loss update: gradient ascent, random-answer mismatch, forward KL.

Equation (Yao et al. 2023, eq. 1-4; Gundavarapu et al. 2024):

    L = eps1 * L_fgt + eps2 * L_rdn + eps3 * L_ret
    L_fgt = -NLL_theta(y | x)                 over (x, y) in the forget batch (gradient ascent)
    L_rdn = (1/K) sum_k NLL_theta(y_k^rand | x)  K answers drawn from a pool of retain answers,
                                               attached to each forget prompt x
    L_ret = KL(p_orig || p_theta)              forward KL on retain data (the papers' L_nor, on "normal" data)

The mismatch term teaches the model to answer a forgotten prompt with something unrelated
rather than with degenerate text; the KL keeps retain behaviour close to the original model.

Papers: arXiv 2405.15152 (Gundavarapu et al.); arXiv 2310.10683 (Yao et al.), code
kevinyaobytedance/llm_unlearn.

Defaults (the papers' code): eps = (0.5, 1, 1), K = 5; with lr 2e-6, batch 2, 1000 steps in the
training section.

Deviations:
- All three terms cover response tokens only. The seed code's mismatch loss masks (almost)
  nothing, because its prompt length is the length of the tokenizer's output dict, and its KL
  averages over every position, padding included. ``reference_quirks: true`` reproduces both
  (prompt tokens in the mismatch NLL; KL as a cross-entropy over all positions).
- The answer pool defaults to the retain responses when no ``data.random_answers`` is given
  (the papers use all TruthfulQA answers; pass them as ``random_answers``).
- Random answers are drawn with a generator seeded by (seed, step), so a resumed run draws the
  same answers as an uninterrupted one.
"""

from __future__ import annotations

from pydantic import Field

from obliviate.data.examples import Example
from obliviate.methods import losses
from obliviate.methods.base import LossTerm, Method, MethodConfig, forward, forward_answers, register, retain_term


class GAMismatchKLConfig(MethodConfig):
    forget_weight: float = Field(default=0.5, ge=0, description="eps1, gradient ascent")
    mismatch_weight: float = Field(default=1.0, ge=0, description="eps2, random answers")
    retain_weight: float = Field(default=1.0, ge=0, description="eps3, forward KL on retain data")
    num_random_answers: int = Field(default=5, gt=0, description="K")
    reference_quirks: bool = False


@register
class GAMismatchKL(Method):
    name = "ga_mismatch_kl"
    Config = GAMismatchKLConfig
    needs_retain = True
    needs_reference = True

    def build_batch(self, forget, retain, ctx):
        if not ctx.random_answers:
            raise ValueError("ga_mismatch_kl needs a pool of random answers (retain set or data.random_answers)")
        picks = ctx.rng.integers(0, len(ctx.random_answers), size=(len(forget), self.config.num_random_answers))
        mismatch = [
            Example(example.prompt, ctx.random_answers[j]) for example, row in zip(forget, picks) for j in row
        ]
        return {"forget": forget, "mismatch": mismatch, "retain": retain}

    def terms(self, model, batch, reference):
        cfg = self.config
        forget, mismatch, retain = batch["forget"], batch["mismatch"], batch["retain"]
        out, labels = forward_answers(model, forget)
        yield LossTerm("forget", cfg.forget_weight, losses.gradient_ascent(out.logits, labels))
        if cfg.reference_quirks:  # both quirks read every position, so no answer window here
            rdn = losses.unmasked_nll(forward(model, mismatch).logits, mismatch["input_ids"], mismatch["attention_mask"])
            yield LossTerm("mismatch", cfg.mismatch_weight, rdn)
            nor = losses.reference_style_kl(reference.logits(retain), forward(model, retain).logits)
            yield LossTerm("retain_kl", cfg.retain_weight, nor)
            return
        # Every forget prompt carries K answers, so the mean over the K rows of one prompt and then
        # over prompts equals the plain mean over all rows.
        out, labels = forward_answers(model, mismatch)
        yield LossTerm("mismatch", cfg.mismatch_weight, losses.nll(out.logits, labels))
        yield from retain_term("ga_mismatch_kl", "kl", cfg.retain_weight, model, batch, reference)
