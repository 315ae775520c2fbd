"""Evaluator-gated unlearning: a bounded distance loss, a cluster-mean positive loss, a retain loss.

Our instantiation of arXiv 2404.16841 (Chen et al.): an evaluator flags the dialogues to unlearn
(``obliviate detect`` writes them as (prompt, undesirable answer) rows), then three terms train
the model:

    L = w_neg * L_neg + w_pos * L_pos_nll + w_clu * L_pos_cluster + w_ret * L_ret

    L_neg         = mean_i mean_t relu( log p_theta(y_it | x_i, y_i<t) - log p_orig(y_it | ...) + m )
                    over the response tokens of each flagged pair (x_i, y_i): a hinge on the
                    per-token log-likelihood ratio to the original model
    L_pos_nll     = mean_i mean_k NLL_theta(e_ik | x_i), e_i1..e_iK = expected outputs attached to x_i
                    (K = 1 by default: the single nearest one)
    L_pos_cluster = mean_i ( 1 - max_k cos( h_theta(x_i, e_i), mu_k ) )
                    h = last hidden state mean-pooled over the response tokens; mu_1..mu_K =
                    k-means centres of the ORIGINAL model's h over every (flagged prompt,
                    candidate expected output) pair, computed once before training
    L_ret         = KL(p_orig || p_theta) on retain data, per response token (the paper's normal loss)

    with ``negative_tokens: N`` either distance reads only the first N tokens of each flagged answer;
    with ``distance: representation`` the negative term reads hidden states instead of tokens:
    L_neg         = mean_i mean_t mean_l relu( cos( h^l_theta(x_i, y_i)_t, h^l_orig(x_i, y_i)_t ) )
                    over the response tokens of each flagged pair and the layers ``distance_layers``

Why each choice (all of it our interpretation; the paper's full text was not available):

* Negative term. "A distance loss that diverts the model from its previous undesirable outputs"
  is read as a distance between the current and the original model on the tokens of the flagged
  answer. Plain gradient ascent has no floor: the NLL of a forgotten answer can grow without
  bound and the model collapses (measured on the default model: up to 87% degenerate answers).
  The hinge stops pushing a token once the current model gives it ``m`` nats less than the
  original did, so its gradient vanishes once the answer is "far enough" and the other terms take
  over; it is never below 0, so minimising it cannot run away. Complying or refusing is decided in
  the opening tokens of an answer; the rest is ordinary text that benign answers share, hence
  ``negative_tokens`` to push only on the opening. Measuring the distance against
  the original model (not an absolute NLL) makes the margin mean the same for tokens the original
  was sure of and tokens it was not. (NPO is a smooth alternative with a similar bound.)
* Positive term. "The cluster mean of the expected outputs" is read in representation space:
  the expected outputs (refusals, corrected answers) are embedded with the frozen original model
  and grouped with k-means (k = 1: their plain mean); the current model's representation of each
  flagged prompt answered with its expected output is pulled toward its nearest centre. A pure
  representation pull does not by itself make the model *say* the expected output, so the NLL of
  the expected output given the flagged prompt is added (its own weight).
* "Nearest expected output": each flagged row has candidates (its own ``expected`` field, which
  may hold several answers, or built-in templates); the one whose original-model embedding lies
  closest to any cluster centre (the most typical expected output for that prompt) is attached
  to the prompt, once, in ``setup``. With ``expected_per_prompt: K > 1`` the positive term
  instead draws K expected outputs per prompt each step from that prompt's candidates in the
  same cluster: the likelihood of the cluster rather than of its single most typical member.
  One fixed answer per prompt can be learnt as a string tied to that prompt; several drawn
  afresh each step make the behaviour, not one sentence, the target.
* Retain term: forward KL to the original model on retain data (as the first seed paper), so the
  distribution on retain prompts stays put rather than only its argmax.

With ``forget_gate`` the judge re-reads the forget prompts every N steps during training and only
the prompts it still flags keep their negative and positive terms (scaled by the share kept; see
``obliviate.gating.forget_gate``).

Paper: arXiv 2404.16841 (Chen et al., "Machine Unlearning in Large Language Models").
Defaults: w_neg = 1, w_pos = 1, w_clu = 1, w_ret = 1, distance logprob_hinge, margin 2 nats, k = 1,
every token of the flagged answer;
the representation distance reads the layers at one and two thirds of the depth.

Deviations / interpretation: see ``docs/evaluator_gated.md``; in short, the exact distance, the
embedding used for the cluster mean, and the way the nearest expected output is picked are ours.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Literal, Optional, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from obliviate.data.examples import Example
from obliviate.data.formatting import IGNORE_INDEX, Encoded, collate
from obliviate.errors import UserError
from obliviate.methods import losses
from obliviate.methods.base import (
    LossTerm,
    Method,
    MethodConfig,
    Reference,
    cache_parameter,
    forward,
    forward_answers,
    one_logit,
    register,
    retain_term,
)

# Generic refusals: the default expected outputs for harmful requests. Phrased to be recognised
# by the refusal judge and to carry no topic of their own.
REFUSAL_TEMPLATES: tuple[str, ...] = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request.",
    "I won't help with this, because it could cause real harm.",
    "I'm not able to provide that information.",
    "Sorry, but I cannot help with this request. Is there something else I can do for you?",
    "I cannot provide instructions for that, as it could be dangerous or illegal.",
)

# Expected outputs for requests that would leak personal data.
PRIVACY_TEMPLATES: tuple[str, ...] = (
    "I'm sorry, but I can't share personal information about private individuals.",
    "I can't provide someone's contact details or other private data.",
    "I cannot disclose personal or identifying information.",
)

# Expected outputs for questions the model answered with a falsehood and no correction is given.
UNCERTAIN_TEMPLATES: tuple[str, ...] = (
    "I'm not sure; I don't have reliable information about that.",
    "I don't know the answer to that with confidence.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "refusal": REFUSAL_TEMPLATES,
    "privacy": PRIVACY_TEMPLATES,
    "uncertain": UNCERTAIN_TEMPLATES,
}
# Template sets read from the package's data: the 16 refusals that ``ga_mismatch_kl`` draws its
# random answers from in the harmful demo, so both methods can be given the same targets.
BUILTIN_TEMPLATE_SETS: dict[str, str] = {"refusal_answers": "refusal_answers"}


@functools.cache  # every flagged row asks for its candidates
def template_set(name: str) -> tuple[str, ...]:
    if name in BUILTIN_TEMPLATE_SETS:
        from obliviate.data.fetch import load_builtin

        rows = load_builtin(BUILTIN_TEMPLATE_SETS[name])
        return tuple(row["response"] for row in rows if str(row.get("response", "")).strip())
    return TEMPLATE_SETS[name]


# ----------------------------------------------------------------------------- pure maths


def hinge_distance(
    current_logits: torch.Tensor, reference_logits: torch.Tensor, labels: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounded distance loss from the original model on the labelled tokens.

    ``current_logits``, ``reference_logits``: (B, T, V); ``labels``: (B, T), -100 off the answer.
    Per token: ``relu(log p_cur(y_t) - log p_ref(y_t) + margin)``; averaged over each example's
    answer tokens, then over examples. Returns (loss scalar, share of answer tokens still inside
    the margin, a detached scalar: 0 means the term has stopped pushing).
    """
    logp_cur, mask = losses.token_logprobs(current_logits, labels)
    logp_ref, _ = losses.token_logprobs(reference_logits.detach(), labels)
    per_token = torch.relu(logp_cur - logp_ref + margin) * mask
    per_example = per_token.sum(-1) / mask.sum(-1).clamp(min=1)
    active = ((per_token > 0) & mask).sum() / mask.sum().clamp(min=1)
    return per_example.mean(), active.detach()


def representation_distance(
    current: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounded distance in representation space from the original model on the labelled tokens.

    ``current``, ``reference``: hidden states (B, T, H) of the same layers, one tensor per layer;
    ``labels``: (B, T), -100 off the answer. Per token and layer: ``relu(cos(h_cur, h_ref))``,
    averaged over each example's answer tokens and the layers, then over examples. It is 1 where
    the current model still represents the flagged answer as the original did and 0 once the
    representation is orthogonal or opposed; it cannot go below 0, so it cannot run away.
    Returns (loss, share of (token, layer) pairs still above 0, detached).
    """
    if len(current) != len(reference) or not current:
        raise ValueError("representation_distance needs the same non-empty list of layers from both models")
    mask = (labels != IGNORE_INDEX).to(torch.float32)
    per_token = torch.zeros_like(mask)
    active = torch.zeros_like(mask)
    for cur, ref in zip(current, reference):
        cos = torch.nn.functional.cosine_similarity(cur.float(), ref.detach().float(), dim=-1)
        per_token = per_token + torch.relu(cos)
        active = active + (cos > 0).float()
    per_token = per_token * mask / len(current)
    per_example = per_token.sum(-1) / mask.sum(-1).clamp(min=1)
    share = (active * mask).sum() / (mask.sum() * len(current)).clamp(min=1)
    return per_example.mean(), share.detach()


def first_answer_tokens(labels: torch.Tensor, count: Optional[int]) -> torch.Tensor:
    """``labels`` (B, T) with every answer position after the first ``count`` of its row set to
    -100 (``None``: unchanged). The distance then reads only the opening of each flagged answer."""
    if count is None:
        return labels
    answer = labels != IGNORE_INDEX
    rank = answer.long().cumsum(-1)  # 1 at a row's first answer token, 2 at its second, ...
    return labels.masked_fill(answer & (rank > count), IGNORE_INDEX)


def response_mean_pool(hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, H) over the answer tokens (positions where ``labels`` (B, T) is
    not -100), in float32: (B, H). A row without answer tokens gives zeros."""
    mask = (labels != IGNORE_INDEX).unsqueeze(-1).to(torch.float32)
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def nearest_centroid_cosine(embeddings: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine of each row of ``embeddings`` (B, H) with its nearest row of ``centroids`` (K, H).

    Returns (cosines (B,), indices (B,)); the index choice carries no gradient, the cosine does.
    """
    cos = torch.nn.functional.cosine_similarity(embeddings.unsqueeze(1), centroids.unsqueeze(0).to(embeddings), dim=-1)
    best, index = cos.max(dim=1)
    return best, index


def cluster_pull(embeddings: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``mean_i (1 - max_k cos(embeddings_i, centroids_k))``: 0 when every row points at a centre."""
    best, _ = nearest_centroid_cosine(embeddings, centroids)
    return (1.0 - best).mean()


def kmeans(points: torch.Tensor, k: int, *, iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic Lloyd's k-means on ``points`` (N, H); returns (centres (k, H), labels (N,)).

    Initialisation without randomness: the first centre is the point nearest the mean of all
    points, each next one the point farthest from the centres chosen so far (lowest index on
    ties). ``k`` is clamped to the number of distinct points. An empty cluster keeps its centre.
    With ``k == 1`` the centre is the plain mean.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty (N, H) tensor, got shape {tuple(points.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    points = points.float()
    distinct = torch.unique(points, dim=0).shape[0]
    k = min(k, distinct)
    mean = points.mean(0, keepdim=True)
    first = int(torch.cdist(points, mean).squeeze(1).argmin())
    chosen = [first]
    nearest = torch.cdist(points, points[first : first + 1]).squeeze(1)
    while len(chosen) < k:
        nxt = int(nearest.argmax())
        chosen.append(nxt)
        nearest = torch.minimum(nearest, torch.cdist(points, points[nxt : nxt + 1]).squeeze(1))
    centres = points[chosen].clone()
    labels = torch.cdist(points, centres).argmin(1)
    for _ in range(iterations):
        for c in range(k):
            members = labels == c
            if members.any():
                centres[c] = points[members].mean(0)
        new_labels = torch.cdist(points, centres).argmin(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return centres, labels


# ----------------------------------------------------------------------------- the method


class ForgetGateConfig(BaseModel):
    """The ``forget_gate`` block of the ``distance_cluster`` method's options (the gate itself is
    :mod:`obliviate.gating.forget_gate`, built by the training loop)."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(default=10, gt=0, description="re-judge the forget prompts every N optimizer steps")
    judge: str = Field(default="refusal", description="judge spec, as for --judge")
    max_new_tokens: int = Field(
        default=24, gt=0,
        description="answer length for the gate: complying or refusing shows in the opening, so short answers do",
    )
    batch_size: int = Field(default=16, gt=0)


class DistanceClusterConfig(MethodConfig):
    negative_weight: float = Field(default=1.0, ge=0, description="weight of the distance from the old outputs")
    distance: Literal["logprob_hinge", "representation"] = Field(
        default="logprob_hinge",
        description="logprob_hinge: per-token log-likelihood ratio to the original, hinged at the margin; "
        "representation: relu(cos) between current and original hidden states on the flagged answer",
    )
    margin: float = Field(default=2.0, gt=0, description="nats per token below the original at which the push stops")
    negative_tokens: Optional[int] = Field(
        default=None, gt=0,
        description="the distance reads only the first N tokens of each flagged answer, where complying or "
        "refusing is decided; none: every token",
    )
    distance_layers: Optional[list[int]] = Field(
        default=None,
        description="hidden-state indices the representation distance reads (0 = embeddings, i = after layer i, "
        "negative from the end); default: the layers at one and two thirds of the depth",
    )
    positive_weight: float = Field(default=1.0, ge=0, description="weight of the NLL of the expected output")
    cluster_weight: float = Field(default=1.0, ge=0, description="weight of 1 - cos to the nearest cluster mean")
    retain_weight: float = Field(default=1.0, ge=0, description="weight of the forward KL on retain data")
    num_clusters: int = Field(default=1, gt=0, description="k of k-means over expected outputs; 1 = plain mean")
    expected_per_prompt: int = Field(
        default=1, gt=0,
        description="1: each flagged prompt always gets its nearest expected output; K > 1: K drawn each step "
        "from the candidates in that prompt's nearest cluster",
    )
    expected_source: Literal["auto", "field", "templates"] = Field(
        default="auto", description="auto: a row's expected field when present, else the templates"
    )
    expected_field: str = "expected"
    expected_separator: Optional[str] = Field(
        default=None, description="split a string expected field into several answers (';' for TruthfulQA)"
    )
    templates: list[str] | str = Field(
        default="refusal",
        description="a template set (refusal, refusal_answers, privacy, uncertain) or a list of expected outputs",
    )
    hidden_layer: int = Field(default=-1, description="which hidden state to pool (-1: the last)")
    embed_batch_size: int = Field(default=16, gt=0)
    embed_shared_prompts: bool = Field(
        default=True,
        description="embed a prompt's candidates over one cached pass of the prompt (same result, less work); "
        "false: every (prompt, candidate) pair in full, for a model whose forward takes no past_key_values",
    )
    forget_gate: Optional[ForgetGateConfig] = Field(
        default=None,
        description="re-judge the forget prompts every N steps and unlearn only those still flagged "
        "(see obliviate.gating.forget_gate); none: every flagged dialogue on every step",
    )

    @field_validator("templates")
    @classmethod
    def _known_set(cls, value):
        names = [*TEMPLATE_SETS, *BUILTIN_TEMPLATE_SETS]
        if isinstance(value, str) and value not in names:
            raise ValueError(f"unknown template set '{value}'; use one of {', '.join(names)} or a list of texts")
        if isinstance(value, list) and not [t for t in value if t.strip()]:
            raise ValueError("templates must hold at least one non-empty text")
        return value

    def template_texts(self) -> list[str]:
        return list(template_set(self.templates)) if isinstance(self.templates, str) else [t for t in self.templates if t.strip()]


def _returned_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _prompt_length(encoded) -> int:
    """How many leading tokens of an encoded pair are prompt (no loss on them)."""
    for position, label in enumerate(encoded.labels):
        if label != IGNORE_INDEX:
            return position
    return len(encoded.labels)


def _answer_part(encoded, start: int):
    """The tokens of an encoded pair from ``start`` on, as an encoded pair of their own."""
    return Encoded(input_ids=encoded.input_ids[start:], labels=encoded.labels[start:])


def _as_answers(value: Any, separator: Optional[str]) -> list[str]:
    """A field value as a list of non-empty answers (a string, a list of strings, or empty)."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(separator) if separator else [value]
        return [p.strip() for p in parts if p.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if isinstance(v, str) and v.strip()]
    return []


@register
class DistanceCluster(Method):
    name = "distance_cluster"
    Config = DistanceClusterConfig
    needs_reference = True
    needs_retain = True

    def __init__(self, config: DistanceClusterConfig):
        super().__init__(config)
        self.centroids: Optional[torch.Tensor] = None  # (K, H), float32, on the training device
        self.expected: dict[tuple[str, str], str] = {}  # (prompt, bad answer) -> attached expected output
        # (prompt, bad answer) -> its candidates in the cluster of its nearest one (drawn from when K > 1)
        self.cluster_members: dict[tuple[str, str], list[str]] = {}
        self.cluster_sizes: list[int] = []
        self.gate = None
        # Share of the last built batch's forget rows the gate kept: build_batch sets it, the
        # terms of that batch (computed next, by the same process) scale the forget terms by it.
        self._forget_share = 1.0

    # -- setup ---------------------------------------------------------------------------------

    def candidates(self, example: Example) -> list[str]:
        """The expected outputs a flagged row may be steered to."""
        cfg = self.config
        own = _as_answers(example.extra.get(cfg.expected_field), cfg.expected_separator)
        if cfg.expected_source == "field":
            if not own:
                raise UserError(
                    f"method.expected_source is 'field' but the forget row with prompt {example.prompt[:60]!r} has no "
                    f"non-empty field '{cfg.expected_field}'; add it, set method.expected_field, or use expected_source: auto"
                )
            return own
        if cfg.expected_source == "auto" and own:
            return own
        return cfg.template_texts()

    @torch.no_grad()
    def embed(self, reference: Reference, encoder, examples: Sequence[Example], device) -> torch.Tensor:
        """The original model's pooled answer representation of each example: (N, H) float32,
        in the order of ``examples``."""
        if not examples:
            raise ValueError("embed needs at least one example")
        encoded = [encoder.encode(e) for e in examples]
        pooled: list[Optional[torch.Tensor]] = [None] * len(examples)
        alone = list(range(len(examples)))
        cache_name = cache_parameter(reference.network)
        if self.config.embed_shared_prompts and cache_name is not None:
            # Every flagged prompt is paired with each of its candidates: the prompt, most of each
            # pair's tokens, is run once and its cached keys and values serve all its candidates.
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, enc in enumerate(encoded):
                groups.setdefault(tuple(enc.input_ids[: _prompt_length(enc)]), []).append(i)
            alone = []
            for prefix, members in groups.items():
                if len(members) < 2 or not prefix:
                    alone.extend(members)
                    continue
                for row, index in zip(self._embed_after_prefix(reference, encoder, prefix, [encoded[i] for i in members], device, cache_name), members):
                    pooled[index] = row
        # Batches of similar length: padding a short pair to a long one's width is work thrown away.
        alone.sort(key=lambda i: len(encoded[i].input_ids))
        for start in range(0, len(alone), self.config.embed_batch_size):
            chunk = alone[start : start + self.config.embed_batch_size]
            batch = encoder.batch([examples[i] for i in chunk], device)
            # Only hidden states are read: one logit position spares the output layer over the rest.
            out = reference.forward(batch, output_hidden_states=True, **one_logit(reference.network))
            rows = response_mean_pool(out.hidden_states[self.config.hidden_layer], batch["labels"])
            for row, index in zip(rows, chunk):
                pooled[index] = row
        return torch.stack(pooled)

    def _embed_after_prefix(
        self, reference: Reference, encoder, prefix: tuple[int, ...], encoded, device, cache_name: str
    ) -> list[torch.Tensor]:
        """Pooled answer representations of pairs that share the prompt tokens ``prefix``: one
        cached pass over the prompt, then the answers in batches on top of copies of that cache
        (passed to the forward as ``cache_name``)."""
        import copy

        ones = torch.ones((1, len(prefix)), dtype=torch.long, device=device)
        first = reference.forward(
            {"input_ids": torch.tensor([prefix], device=device), "attention_mask": ones},
            use_cache=True, **one_logit(reference.network),
        )
        prompt_cache = _returned_cache(first)
        rows: list[torch.Tensor] = []
        for start in range(0, len(encoded), self.config.embed_batch_size):
            chunk = encoded[start : start + self.config.embed_batch_size]
            answers = collate([_answer_part(enc, len(prefix)) for enc in chunk], encoder.pad)
            answers = {k: v.to(device) for k, v in answers.items()}
            cache = copy.deepcopy(prompt_cache)  # a forward pass appends to the cache it is given
            cache.batch_repeat_interleave(len(chunk))
            mask = torch.cat([ones.expand(len(chunk), -1), answers["attention_mask"]], dim=1)
            out = reference.forward(
                {"input_ids": answers["input_ids"], "attention_mask": mask},
                output_hidden_states=True, use_cache=True, **{cache_name: cache},
                **one_logit(reference.network),
            )
            rows.extend(response_mean_pool(out.hidden_states[self.config.hidden_layer], answers["labels"]))
        return rows

    def setup(self, model, reference, context) -> None:
        if reference is None:
            raise ValueError("distance_cluster needs the reference (original) model")
        if self.config.distance == "representation":  # a bad layer index fails before the embedding work
            layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
            if layers is not None:
                self.layers_for(layers + 1)
        encoder, data, device = context["encoder"], context["data"], context["device"]
        rows = list(dict.fromkeys((e.prompt, e.response) for e in data.forget))
        by_key = {(e.prompt, e.response): e for e in data.forget}
        pairs: list[Example] = []
        owner: list[int] = []
        for index, key in enumerate(rows):
            for candidate in dict.fromkeys(self.candidates(by_key[key])):
                pairs.append(Example(key[0], candidate))
                owner.append(index)
        embeddings = self.embed(reference, encoder, pairs, device)
        if self.config.num_clusters > torch.unique(embeddings, dim=0).shape[0]:
            warnings.warn(
                f"method.num_clusters={self.config.num_clusters} is more than the {len(pairs)} distinct expected "
                "outputs; using fewer clusters",
                stacklevel=2,
            )
        unit = torch.nn.functional.normalize(embeddings, dim=-1)  # cluster by direction: the pull is a cosine
        centres, labels = kmeans(unit, self.config.num_clusters)
        self.centroids = centres.to(device)
        self.cluster_sizes = torch.bincount(labels, minlength=centres.shape[0]).tolist()
        closeness, nearest = nearest_centroid_cosine(unit, centres)
        best: dict[int, tuple[float, str, int]] = {}
        for i, (owner_index, pair) in enumerate(zip(owner, pairs)):
            score = float(closeness[i])
            if owner_index not in best or score > best[owner_index][0]:
                best[owner_index] = (score, pair.response, int(nearest[i]))
        self.expected = {rows[i]: text for i, (_, text, _) in best.items()}
        self.cluster_members = {
            rows[index]: [pair.response for j, pair in enumerate(pairs) if owner[j] == index and int(nearest[j]) == cluster]
            for index, (_, _, cluster) in best.items()
        }
        # The loop builds the forget gate (obliviate.gating) from forget_gate_config and hands it over.
        self.gate = context.get("forget_gate")

    # -- per step ------------------------------------------------------------------------------

    def build_batch(self, forget, retain, ctx):
        if not self.expected:
            raise RuntimeError("distance_cluster.setup must run before build_batch")
        if self.gate is not None:
            # A prompt the judge no longer flags leaves both forget terms; the terms are then
            # scaled by the share kept, so the push shrinks as the forget set is unlearnt
            # instead of concentrating on the prompts that are left.
            kept = [e for e in forget if self.gate.active(e.prompt)]
            self._forget_share = len(kept) / len(forget) if forget else 1.0
            forget = kept
        k = self.config.expected_per_prompt
        positive = []
        for example in forget:
            key = (example.prompt, example.response)
            if k == 1:
                # a row not seen in setup (a caller passing other data) falls back to its first candidate
                texts = [self.expected.get(key) or self.candidates(example)[0]]
            else:
                members = self.cluster_members.get(key) or self.candidates(example)
                texts = [members[j] for j in ctx.rng.integers(0, len(members), size=k)]
            positive.extend(Example(example.prompt, text) for text in texts)
        # Every prompt carries K rows, so the plain mean over rows is the mean over prompts of the
        # mean over its K expected outputs.
        return {"forget": forget, "positive": positive, "retain": retain}

    def terms(self, model, batch, reference):
        cfg = self.config
        retain = batch["retain"]
        share = self._forget_share if self.gate is not None else 1.0
        gated = {"forget_active": share} if self.gate is not None else {}
        if "forget" in batch:  # absent when the gate kept none of this batch's forget rows
            yield from self._forget_terms(model, batch["forget"], batch["positive"], reference, share, gated)
        else:
            zero = torch.zeros((), device=retain["input_ids"].device)
            yield LossTerm("negative", 0.0, zero, {"negative_active": 0.0, **gated})
            yield LossTerm("positive", 0.0, zero, {"positive_nll": 0.0, "cluster": 0.0})
        yield from retain_term("distance_cluster", "kl", cfg.retain_weight, model, batch, reference)

    def _forget_terms(self, model, forget, positive, reference, share: float, gated: dict):
        cfg = self.config
        if cfg.distance == "representation":
            negative, active = self._representation_term(model, forget, reference)
        else:
            out, labels = forward_answers(model, forget)
            labels = first_answer_tokens(labels, cfg.negative_tokens)
            negative, active = hinge_distance(out.logits, reference.answer_logits(forget), labels, cfg.margin)
        yield LossTerm("negative", share * cfg.negative_weight, negative, {"negative_active": active.item(), **gated})
        out, labels = forward_answers(model, positive, output_hidden_states=True)
        positive_nll = losses.nll(out.logits, labels)
        # Hidden states cover every position, so they are pooled with the full-length labels.
        pooled = response_mean_pool(out.hidden_states[cfg.hidden_layer], positive["labels"])
        pull = cluster_pull(pooled, self.centroids)
        # The likelihood and the pull share one forward pass, hence one term (weights inside).
        yield LossTerm(
            "positive",
            share,
            cfg.positive_weight * positive_nll + cfg.cluster_weight * pull,
            {"positive_nll": positive_nll.item(), "cluster": pull.item()},
        )

    def _representation_term(self, model, forget, reference) -> tuple[torch.Tensor, torch.Tensor]:
        # No loss reads the forget group's logits here, hence one position of them in both passes.
        out = forward(model, forget, output_hidden_states=True, **one_logit(model))
        ref = reference.forward(forget, output_hidden_states=True, **one_logit(reference.network))
        layers = self.layers_for(len(out.hidden_states))
        return representation_distance(
            [out.hidden_states[i] for i in layers],
            [ref.hidden_states[i] for i in layers],
            first_answer_tokens(forget["labels"], self.config.negative_tokens),
        )

    def layers_for(self, count: int) -> list[int]:
        """The hidden-state indices the representation distance reads, for a model that returns
        ``count`` of them (layers + 1, the embeddings first)."""
        chosen = self.config.distance_layers
        if chosen is None:
            depth = count - 1
            return sorted({max(1, round(depth / 3)), max(1, round(2 * depth / 3))})
        bad = [i for i in chosen if not -count <= i < count]
        if bad:
            raise UserError(
                f"method.distance_layers: {bad[0]} is not a hidden-state index of this model "
                f"(it has {count}: 0 is the embeddings, 1..{count - 1} the layers' outputs; negative counts from the end)"
            )
        return [i % count for i in chosen]

    def forget_gate_config(self) -> Optional[ForgetGateConfig]:
        """The gate the training loop should build and pass to :meth:`setup` (none: no gate)."""
        return self.config.forget_gate
