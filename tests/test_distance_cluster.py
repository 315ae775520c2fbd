"""distance_cluster: each term against hand-computed values, k-means, setup, and a real unlearning run."""

import math

import numpy as np
import pytest
import torch

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.methods import build_method, losses
from obliviate.methods.base import BatchContext, Reference
from obliviate.methods.distance_cluster import (
    REFUSAL_TEMPLATES,
    cluster_pull,
    first_answer_tokens,
    hinge_distance,
    kmeans,
    nearest_centroid_cosine,
    representation_distance,
    response_mean_pool,
)
from obliviate.testing import tiny_model, tiny_tokenizer
from obliviate.train.loop import Encoder, TrainData, run_training
from tests.conftest import FORGET, RETAIN, write_jsonl

LN3 = math.log(3.0)


def _logits(rows):
    """(1, T, 2) logits from a list of per-position [logit0, logit1]."""
    return torch.tensor([rows], dtype=torch.float32)


# ----------------------------------------------------------------------------- the negative term


def test_hinge_distance_by_hand():
    labels = torch.tensor([[-100, 0, 1]])  # positions 0 and 1 predict labels 0 and 1
    current = _logits([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # log p = -ln 2 on both tokens
    reference = _logits([[LN3, 0.0], [0.0, LN3], [0.0, 0.0]])  # p = 0.75 on both: log p = ln 0.75
    ratio = -math.log(2) - math.log(0.75)  # log p_cur - log p_ref = -0.4055 per token
    loss, active = hinge_distance(current, reference, labels, margin=1.0)
    assert loss.item() == pytest.approx(ratio + 1.0, abs=1e-6)
    assert active.item() == 1.0
    # Past the margin the term is exactly zero: it has stopped pushing.
    loss, active = hinge_distance(current, reference, labels, margin=0.3)
    assert loss.item() == 0.0 and active.item() == 0.0


def test_hinge_distance_mixes_tokens_and_examples():
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 1]])
    current = torch.zeros(2, 3, 2)
    reference = torch.tensor([[[LN3, 0.0], [0.0, 0.0], [0, 0]], [[0, 0], [0.0, 0.0], [0, 0]]])
    # example 1: token 1 ratio -0.4055 -> relu(-0.1055)=0; token 2 ratio 0 -> 0.3; mean 0.15
    # example 2: one token, ratio 0 -> 0.3
    loss, active = hinge_distance(current, reference, labels, margin=0.3)
    assert loss.item() == pytest.approx((0.15 + 0.3) / 2, abs=1e-6)
    assert active.item() == pytest.approx(2 / 3)


def test_hinge_has_no_gradient_past_the_margin_and_none_into_the_reference():
    labels = torch.tensor([[-100, 0]])
    current = torch.tensor([[[0.0, 5.0], [0.0, 0.0]]], requires_grad=True)  # log p(0) ~ -5: far below
    reference = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    loss, _ = hinge_distance(current, reference, labels, margin=1.0)
    loss.backward()
    assert loss.item() == 0.0 and current.grad.abs().sum() == 0
    assert reference.grad is None


def test_first_answer_tokens_keeps_the_opening_of_each_answer():
    labels = torch.tensor([[-100, -100, 5, 6, 7, 8], [-100, 4, 3, -100, -100, -100], [-100] * 6])
    kept = first_answer_tokens(labels, 2)
    assert kept.tolist() == [[-100, -100, 5, 6, -100, -100], [-100, 4, 3, -100, -100, -100], [-100] * 6]
    assert first_answer_tokens(labels, None) is labels
    assert torch.equal(first_answer_tokens(labels, 10), labels)


def test_hinge_on_the_first_answer_token_only_by_hand():
    # Token 1: ratio -0.4055 -> relu(1 - 0.4055) = 0.5945; token 2 (ratio 0 -> 1.0) is cut off.
    labels = torch.tensor([[-100, 0, 1]])
    current = _logits([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    reference = _logits([[LN3, 0.0], [0.0, 0.0], [0.0, 0.0]])
    loss, active = hinge_distance(current, reference, first_answer_tokens(labels, 1), margin=1.0)
    assert loss.item() == pytest.approx(1.0 - math.log(2) - math.log(0.75), abs=1e-6)
    full, _ = hinge_distance(current, reference, labels, margin=1.0)
    assert full.item() == pytest.approx((loss.item() + 1.0) / 2, abs=1e-6)


def test_representation_distance_by_hand():
    labels = torch.tensor([[-100, 0, 1], [-100, -100, 1]])
    ref = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    # Row 1: token 1 unchanged (cos 1), token 2 at 60 degrees... (0.5, sqrt(3)/2): cos 0.5 -> mean 0.75.
    # Row 2: its one answer token is opposite (cos -1) -> relu 0. The prompt position (9, 9) is ignored.
    cur = torch.tensor([[[-5.0, 1.0], [2.0, 0.0], [0.5, math.sqrt(3) / 2]], [[1.0, 1.0], [1.0, 1.0], [0.0, -3.0]]])
    loss, active = representation_distance([cur], [ref], labels)
    assert loss.item() == pytest.approx((0.75 + 0.0) / 2, abs=1e-6)
    assert active.item() == pytest.approx(2 / 3)
    # Two layers average per token: the second layer unchanged everywhere adds 1 per token.
    loss2, active2 = representation_distance([cur, ref], [ref, ref], labels)
    assert loss2.item() == pytest.approx(((0.75 + 1) / 2 + (0 + 1) / 2) / 2, abs=1e-6)
    assert active2.item() == pytest.approx(5 / 6)


def test_representation_distance_is_bounded_and_blind_to_the_reference_gradient():
    labels = torch.tensor([[-100, 0]])
    ref = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], requires_grad=True)
    orthogonal = torch.tensor([[[3.0, 3.0], [0.0, 2.0]]], requires_grad=True)
    loss, active = representation_distance([orthogonal], [ref], labels)
    loss.backward()
    assert loss.item() == 0.0 and active.item() == 0.0
    assert orthogonal.grad.abs().sum() == 0 and ref.grad is None
    with pytest.raises(ValueError, match="same non-empty list"):
        representation_distance([orthogonal], [], labels)


# ----------------------------------------------------------------------------- the positive term


def test_response_mean_pool_averages_answer_positions_only():
    hidden = torch.tensor([[[100.0, 100.0], [1.0, 2.0], [3.0, 6.0]]])
    labels = torch.tensor([[-100, 7, 8]])
    assert response_mean_pool(hidden, labels).tolist() == [[2.0, 4.0]]


def test_cluster_pull_uses_the_nearest_centre():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert cluster_pull(emb, torch.tensor([[2.0, 0.0]])).item() == pytest.approx(0.5)  # (0 + 1) / 2
    two = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    cos, index = nearest_centroid_cosine(emb, two)
    assert index.tolist() == [0, 1]
    assert cluster_pull(emb, two).item() == pytest.approx((0 + 1 - 1 / math.sqrt(2)) / 2, abs=1e-6)


def test_kmeans_finds_known_clusters():
    gen = torch.Generator().manual_seed(0)
    truth = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]])
    points = torch.cat([c + 0.3 * torch.randn(20, 2, generator=gen) for c in truth])
    centres, labels = kmeans(points, 3)
    for block in range(3):
        assert len(set(labels[block * 20 : (block + 1) * 20].tolist())) == 1  # one cluster per blob
    assert len(set(labels.tolist())) == 3
    for c in truth:  # each true mean has a centre within noise
        assert torch.cdist(c[None], centres).min() < 0.3
    again, again_labels = kmeans(points, 3)
    assert torch.equal(centres, again) and torch.equal(labels, again_labels)  # deterministic


def test_kmeans_one_cluster_is_the_mean_and_k_is_clamped():
    points = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 6.0]])
    centres, labels = kmeans(points, 1)
    assert centres.tolist() == [[2.0, 2.0]] and labels.tolist() == [0, 0, 0]
    centres, _ = kmeans(torch.tensor([[1.0, 1.0], [1.0, 1.0]]), 5)
    assert centres.shape == (1, 2)


# ----------------------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def parts():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1)
    original = tiny_model(len(tok), seed=2)
    encoder = Encoder(tok, 64, "auto")
    forget = [
        Example("secret?", "code 12", {"expected": "I cannot share that."}),
        Example("where?", "in Quellmoor"),
    ]
    data = TrainData(forget, [Example("sky?", "blue"), Example("cat legs?", "four")])
    return tok, model, Reference(model, original), encoder, data


def _setup(parts, **options):
    tok, model, reference, encoder, data = parts
    method = build_method("distance_cluster", options)
    method.setup(model, reference, {"tokenizer": tok, "encoder": encoder, "data": data, "device": torch.device("cpu")})
    return method


def test_setup_attaches_own_expected_or_a_template(parts):
    method = _setup(parts, num_clusters=2)
    assert method.expected[("secret?", "code 12")] == "I cannot share that."
    assert method.expected[("where?", "in Quellmoor")] in REFUSAL_TEMPLATES
    assert method.centroids.shape == (2, 32)
    assert sum(method.cluster_sizes) == 1 + len(REFUSAL_TEMPLATES)  # every candidate embedded once
    groups = method.build_batch(parts[4].forget, parts[4].retain, BatchContext(np.random.default_rng(0), []))
    assert [e.prompt for e in groups["positive"]] == ["secret?", "where?"]
    assert groups["positive"][0].response == "I cannot share that."


def test_attached_template_is_the_one_nearest_a_centre(parts):
    tok, model, reference, encoder, data = parts
    method = _setup(parts, expected_source="templates")
    pairs = [Example("where?", t) for t in REFUSAL_TEMPLATES]
    unit = torch.nn.functional.normalize(method.embed(reference, encoder, pairs, "cpu"), dim=-1)
    closeness, _ = nearest_centroid_cosine(unit, method.centroids)
    assert method.expected[("where?", "in Quellmoor")] == REFUSAL_TEMPLATES[int(closeness.argmax())]


def test_several_expected_outputs_are_drawn_from_the_prompts_nearest_cluster(parts):
    tok, model, reference, encoder, data = parts
    method = _setup(parts, expected_source="templates", num_clusters=3, expected_per_prompt=4)
    pairs = [Example("where?", t) for t in REFUSAL_TEMPLATES]
    unit = torch.nn.functional.normalize(method.embed(reference, encoder, pairs, "cpu"), dim=-1)
    closeness, nearest = nearest_centroid_cosine(unit, method.centroids)
    cluster = int(nearest[int(closeness.argmax())])  # the cluster of the prompt's nearest template
    members = {t for t, c in zip(REFUSAL_TEMPLATES, nearest.tolist()) if c == cluster}
    assert set(method.cluster_members[("where?", "in Quellmoor")]) == members
    assert len(members) < len(REFUSAL_TEMPLATES)  # the draw is narrower than "any template"
    drawn = set()
    for step in range(20):
        groups = method.build_batch(data.forget, data.retain, BatchContext(np.random.default_rng(step), []))
        assert [e.prompt for e in groups["positive"]] == ["secret?"] * 4 + ["where?"] * 4
        drawn |= {e.response for e in groups["positive"] if e.prompt == "where?"}
    assert drawn == members  # every member is drawn, nothing outside the cluster


def test_expected_source_field_requires_the_field(parts):
    from obliviate.errors import UserError

    with pytest.raises(UserError, match="has no non-empty field 'expected'"):
        _setup(parts, expected_source="field")


def test_separator_splits_expected_answers():
    method = build_method("distance_cluster", {"expected_field": "Correct Answers", "expected_separator": ";"})
    assert method.candidates(Example("q", "bad", {"Correct Answers": "Yes; It is ; "})) == ["Yes", "It is"]


def test_loss_is_the_weighted_sum_of_the_three_terms(parts):
    tok, model, reference, encoder, data = parts
    weights = {"negative_weight": 0.7, "positive_weight": 1.3, "cluster_weight": 0.4, "retain_weight": 2.0, "margin": 1.5}
    method = _setup(parts, **weights)
    groups = method.build_batch(data.forget, data.retain, BatchContext(np.random.default_rng(0), []))
    batch = {k: encoder.batch(v, "cpu") for k, v in groups.items()}
    out = method.loss(model, batch, reference)

    def run(b, **kw):
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **kw)

    with torch.no_grad():
        f = batch["forget"]
        neg = hinge_distance(run(f).logits, reference.logits(f), f["labels"], 1.5)[0].item()
        p = batch["positive"]
        pos_out = run(p, output_hidden_states=True)
        nll = losses.nll(pos_out.logits, p["labels"]).item()
        pooled = response_mean_pool(pos_out.hidden_states[-1], p["labels"])
        pull = (1 - torch.nn.functional.cosine_similarity(pooled[:, None], method.centroids[None], dim=-1).max(1).values).mean().item()
        r = batch["retain"]
        kl = losses.forward_kl(reference.logits(r), run(r).logits, r["labels"]).item()
    assert neg > 0 and nll > 0 and 0 < pull < 2 and kl > 0
    expected = 0.7 * neg + 1.3 * nll + 0.4 * pull + 2.0 * kl
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    assert out.parts["negative"] == pytest.approx(neg, rel=1e-5)
    assert set(out.parts) == {"negative", "negative_active", "positive", "positive_nll", "cluster", "retain_kl"}
    # negative_tokens: the same hinge over the first two tokens of each flagged answer only.
    opening = _setup(parts, **weights, negative_tokens=2).loss(model, batch, reference)
    with torch.no_grad():
        first = hinge_distance(run(f).logits, reference.logits(f), first_answer_tokens(f["labels"], 2), 1.5)[0].item()
    assert first != pytest.approx(neg, rel=1e-3)  # the flagged answers are longer than two tokens
    assert opening.parts["negative"] == pytest.approx(first, rel=1e-5)


def test_representation_distance_term_reads_the_chosen_hidden_states(parts):
    tok, model, reference, encoder, data = parts
    method = _setup(parts, distance="representation", distance_layers=[1, -1], negative_weight=0.5)
    groups = method.build_batch(data.forget, data.retain, BatchContext(np.random.default_rng(0), []))
    batch = {k: encoder.batch(v, "cpu") for k, v in groups.items()}
    out = method.loss(model, batch, reference)
    f = batch["forget"]
    with torch.no_grad():
        cur = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"], output_hidden_states=True).hidden_states
        ref = reference.forward(f, output_hidden_states=True).hidden_states
        neg, _ = representation_distance([cur[1], cur[2]], [ref[1], ref[2]], f["labels"])  # tiny model: 2 layers
    assert 0 < neg.item() < 1  # two different random models: neither identical nor opposed
    assert out.parts["negative"] == pytest.approx(neg.item(), rel=1e-5)
    # Default layers: one and two thirds of the depth (10 and 20 of SmolLM2's 30).
    assert _setup(parts, distance="representation").layers_for(31) == [10, 20]
    assert _setup(parts, distance="representation").layers_for(3) == [1]
    with pytest.raises(UserError, match="distance_layers: 5 is not a hidden-state index"):
        _setup(parts, distance="representation", distance_layers=[5]).layers_for(3)
    with pytest.raises(UserError, match="distance_layers: 5 is not a hidden-state index"):
        _setup(parts, distance="representation", distance_layers=[5])  # caught in setup, before any step


def test_unknown_template_set_is_rejected():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown template set"):
        build_method("distance_cluster", {"templates": "polite"})


def test_refusal_answers_set_is_the_demo_pool():
    """The ``refusal_answers`` set is the shipped pool ga_mismatch_kl draws from in the demo, so
    the two methods can be compared on the same targets."""
    from obliviate.data.loaders import iter_rows

    pool = [row["response"] for _, row in iter_rows("builtin:refusal_answers")]
    method = build_method("distance_cluster", {"templates": "refusal_answers"})
    assert method.config.template_texts() == pool
    assert len(pool) == 16 and set(pool) != set(REFUSAL_TEMPLATES)


# ----------------------------------------------------------------------------- it unlearns


def _mean_logprob(model, tok, pairs):
    from obliviate.models.generation import score_loglik

    scores = score_loglik(model, tok, [p for p, _ in pairs], [r for _, r in pairs])
    return sum(s.mean for s in scores) / len(scores)


@pytest.mark.parametrize("distance", ["logprob_hinge", "representation"])
def test_unlearns_flagged_answers_and_learns_expected_ones(make_config, memorised_model_dir, tmp_path, distance):
    from obliviate.models.loading import load_model_and_tokenizer

    expected = "I can't share that."
    rows = [{**r, "expected": expected} for r in FORGET]
    write_jsonl(tmp_path / "flagged.jsonl", rows)
    cfg = make_config(
        f"data.forget.path={tmp_path / 'flagged.jsonl'}", "method.name=distance_cluster", f"method.distance={distance}",
        "train.lora.enabled=false", "train.max_steps=6", "train.lr=5e-3", "train.batch_size=4",
    )
    model, tok = load_model_and_tokenizer(str(memorised_model_dir))
    flagged = [(r["prompt"], r["response"]) for r in FORGET]
    wanted = [(r["prompt"], expected) for r in FORGET]
    retain = [(r["prompt"], r["response"]) for r in RETAIN]
    before = [_mean_logprob(model, tok, x) for x in (flagged, wanted, retain)]
    run_training(cfg, tmp_path / "run", model=model, tokenizer=tok, progress=False, log=lambda m: None)
    after = [_mean_logprob(model, tok, x) for x in (flagged, wanted, retain)]
    assert after[0] < before[0] - 0.5, (before, after)  # flagged answers much less likely
    assert after[1] > before[1] + 0.5, (before, after)  # the expected output much more likely
    # retain answers move far less than the flagged ones (the KL term; on this tiny model both sets
    # share one character distribution, so they cannot stay exactly put)
    assert before[2] - after[2] < (before[0] - after[0]) / 3, (before, after)
    log = (tmp_path / "run" / "train_log.jsonl").read_text()
    assert "loss/negative_active" in log and "loss/cluster" in log


@pytest.mark.parametrize("recipe", ["evaluator_gated_harmful", "evaluator_gated_privacy", "evaluator_gated_hallucination"])
def test_shipped_recipes_are_valid_unlearning_configs(recipe):
    from pathlib import Path

    from obliviate.config import load_config

    config = load_config(Path(__file__).parents[1] / "configs" / f"{recipe}.yaml")
    assert config.method.name == "distance_cluster"
    assert config.early_stopping is not None  # every recipe stops on its judge
    if recipe == "evaluator_gated_harmful":  # the setting BENCHMARKS.md measured best
        assert (config.method.negative_tokens, config.method.negative_weight) == (8, 0.25)


def test_embedding_in_length_sorted_batches_returns_rows_in_input_order(parts):
    tok, model, reference, encoder, data = parts
    method = _setup(parts, expected_source="templates", embed_batch_size=3)
    # lengths deliberately out of order, so the sorted batches differ from the input order
    pairs = [Example("where?", t) for t in (REFUSAL_TEMPLATES[4], REFUSAL_TEMPLATES[1], REFUSAL_TEMPLATES[5],
                                              REFUSAL_TEMPLATES[0], REFUSAL_TEMPLATES[2])]
    lengths = [len(encoder.encode(p).input_ids) for p in pairs]
    assert lengths != sorted(lengths)
    batched = method.embed(reference, encoder, pairs, "cpu")
    one_by_one = torch.cat([method.embed(reference, encoder, [p], "cpu") for p in pairs])
    assert batched.shape == one_by_one.shape
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-5)


def test_a_prompts_candidates_embedded_over_one_cached_prompt_pass_match_full_passes(parts):
    tok, model, reference, encoder, data = parts
    shared = _setup(parts, expected_source="templates", embed_batch_size=4)
    full = _setup(parts, expected_source="templates", embed_batch_size=4, embed_shared_prompts=False)
    # Two prompts with six candidates each (two batches after each cached prompt), and one pair alone.
    pairs = [Example(q, t) for q in ("where?", "how do I pick a lock?") for t in REFUSAL_TEMPLATES]
    pairs.append(Example("what is the secret code?", "I cannot share that."))
    calls = []
    original_forward = reference.forward

    def counting(batch, **kwargs):
        calls.append((tuple(batch["input_ids"].shape), "cache" in kwargs or "past_key_values" in kwargs))
        return original_forward(batch, **kwargs)

    reference.forward = counting
    try:
        cached = shared.embed(reference, encoder, pairs, "cpu")
    finally:
        reference.forward = original_forward
    # per prompt: one prompt pass and two answer batches on its cache; the single pair runs in full
    assert sum(1 for _, on_cache in calls if on_cache) == 4 and len(calls) == 7
    assert all(shape[0] <= 4 for shape, _ in calls)
    torch.testing.assert_close(cached, full.embed(reference, encoder, pairs, "cpu"), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shared.centroids, full.centroids, rtol=1e-4, atol=1e-5)
    assert shared.expected == full.expected
