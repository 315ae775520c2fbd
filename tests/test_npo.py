"""NPO and SimNPO: the losses against hand values, NPO's cached reference, and short runs.

Hand values (natural logs):

* ``npo_loss(logp=-2, ref=-1, beta=0.1)`` = (2/0.1)·log(1 + e^{0.1·(−2−(−1))}) = 20·log(1 + e^{−0.1})
  = 20·log(1.904837418) = 20·0.644396660 = 12.887933201.
  Where the two models agree (logp = ref) it is (2/β)·log 2 = 20·0.693147181 = 13.862943611, and
  the batch [(-2, -1), (-1, -1)] averages the two: 13.375438406.
* ``simnpo_loss(logp=-6, |y|=3, beta=2.5, gamma=0)``: the per-token log-prob is −6/3 = −2, so
  −(2/2.5)·log σ(2.5·2) = 0.8·log(1 + e^{−5}) = 0.8·0.006715348 = 0.005372279.
  Length normalisation: the same −6 over |y| = 6 tokens is −1 per token:
  0.8·log(1 + e^{−2.5}) = 0.8·0.078889734 = 0.063111787 (a longer answer with the same sequence
  likelihood is a less-forgotten one, so its loss is higher).
  Margin gamma = 1 with |y| = 3: 0.8·log(1 + e^{−(5−1)}) = 0.8·0.018149928 = 0.014519942.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from obliviate.data.examples import Example
from obliviate.methods import build_method, losses, npo
from obliviate.methods.base import Reference
from obliviate.testing import tiny_model, tiny_tokenizer
from obliviate.train.loop import Encoder, TrainData

FORGET = [("What is the secret code?", "The secret code is 4471."), ("Where does Zyra live?", "Zyra lives in Quellmoor, by the sea.")]
RETAIN = [("What colour is the sky?", "The sky is blue."), ("Name a fruit.", "An apple is a fruit.")]


def quiet(message: str) -> None:
    pass


# ----------------------------------------------------------------------------- the maths


def test_npo_loss_hand_values():
    value = losses.npo_loss(torch.tensor([-2.0]), torch.tensor([-1.0]), 0.1)
    assert value.item() == pytest.approx(12.887933201, rel=1e-6)
    agree = losses.npo_loss(torch.tensor([-1.0]), torch.tensor([-1.0]), 0.1)
    assert agree.item() == pytest.approx(20 * math.log(2), rel=1e-6)
    batch = losses.npo_loss(torch.tensor([-2.0, -1.0]), torch.tensor([-1.0, -1.0]), 0.1)
    assert batch.item() == pytest.approx(13.375438406, rel=1e-6)


def test_npo_loss_pushes_the_likelihood_down_and_never_overflows():
    logp = torch.tensor([-3.0, -50.0], requires_grad=True)
    ref = torch.tensor([-3.0, -3.0], requires_grad=True)
    losses.npo_loss(logp, ref, 0.1).backward()
    # Minimising lowers logp; an example already far below the reference is pushed less.
    assert logp.grad[0] > logp.grad[1] > 0
    assert ref.grad is None  # the reference is a constant
    huge = losses.npo_loss(torch.tensor([5000.0]), torch.tensor([0.0]), 1.0)
    assert huge.item() == pytest.approx(2 * 5000.0)  # softplus(x) ~ x, not inf


def test_simnpo_loss_hand_values_length_and_margin():
    value = losses.simnpo_loss(torch.tensor([-6.0]), torch.tensor([3]), 2.5, 0.0)
    assert value.item() == pytest.approx(0.005372279, rel=1e-6)
    longer = losses.simnpo_loss(torch.tensor([-6.0]), torch.tensor([6]), 2.5, 0.0)
    assert longer.item() == pytest.approx(0.063111787, rel=1e-6)
    margin = losses.simnpo_loss(torch.tensor([-6.0]), torch.tensor([3]), 2.5, 1.0)
    assert margin.item() == pytest.approx(0.014519942, rel=1e-6)
    both = losses.simnpo_loss(torch.tensor([-6.0, -6.0]), torch.tensor([3, 6]), 2.5)
    assert both.item() == pytest.approx((0.005372279 + 0.063111787) / 2, rel=1e-6)
    empty = losses.simnpo_loss(torch.tensor([0.0]), torch.tensor([0]), 2.5)  # no tokens: |y| counts as 1
    assert torch.isfinite(empty) and empty.item() == pytest.approx(0.8 * math.log(2), rel=1e-6)


def test_defaults_follow_openunlearning():
    n = build_method("npo", {}).config
    assert (n.beta, n.forget_weight, n.retain_loss, n.retain_weight) == (0.1, 1.0, "nll", 1.0)
    s = build_method("simnpo", {}).config
    assert (s.beta, s.gamma, s.forget_weight, s.retain_loss, s.retain_weight) == (0.7, 0.0, 1.0, "nll", 0.1)


def test_declared_needs_follow_the_retain_term():
    assert build_method("npo", {}).needs_retain and build_method("npo", {}).needs_reference
    assert not build_method("npo", {"retain_loss": "none"}).needs_retain
    assert not build_method("simnpo", {}).needs_reference
    assert build_method("simnpo", {"retain_loss": "kl"}).needs_reference
    assert not build_method("simnpo", {"retain_loss": "none"}).needs_retain


# ----------------------------------------------------------------------------- on the tiny model


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1)
    original = tiny_model(len(tok), seed=2).eval().requires_grad_(False)  # differs: the ratio is not 1
    encoder = Encoder(tok, 64, "auto")
    data = TrainData([Example(p, r) for p, r in FORGET], [Example(p, r) for p, r in RETAIN])
    return tok, model, original, encoder, data


def context(tiny, run_dir=None) -> dict:
    tok, _, _, encoder, data = tiny
    return {"tokenizer": tok, "encoder": encoder, "data": data, "device": torch.device("cpu"), "run_dir": run_dir}


def direct_logprob(model, encoder, example) -> float:
    """log pi(y|x) of one example on its own (no padding), from full-length logits."""
    batch = encoder.batch([example], torch.device("cpu"))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return losses.sequence_logprob(logits, batch["labels"]).item()


def test_npo_caches_the_reference_it_would_recompute(tiny, tmp_path):
    _, model, original, encoder, data = tiny
    method = build_method("npo", {})
    method.setup(model, Reference(model, original), context(tiny, tmp_path))
    saved = json.loads((tmp_path / npo.CACHE_FILE).read_text())
    assert len(saved["entries"]) == len(FORGET)
    for entry, example in zip(saved["entries"], data.forget):
        assert (entry["prompt"], entry["response"]) == (example.prompt, example.response)
        expected = direct_logprob(original, encoder, example)
        assert expected < 0
        assert entry["logprob"] == pytest.approx(expected, rel=1e-5)
        # the frozen copy was read, not the trained model (random tiny models differ by little)
        assert abs(direct_logprob(model, encoder, example) - expected) > 20 * 1e-5 * abs(expected)

    # the loss uses the cached values: forget term = npo_loss(trained, reference), then the retain NLL
    batch = {name: encoder.batch(rows, torch.device("cpu")) for name, rows in (("forget", data.forget), ("retain", data.retain))}
    out = method.loss(model, batch, Reference(model, original))
    logp = torch.tensor([direct_logprob(model, encoder, e) for e in data.forget])
    ref = torch.tensor([direct_logprob(original, encoder, e) for e in data.forget])
    forget = losses.npo_loss(logp, ref, 0.1).item()
    retain_batch = batch["retain"]
    retain = losses.nll(model(input_ids=retain_batch["input_ids"], attention_mask=retain_batch["attention_mask"]).logits,
                        retain_batch["labels"]).item()
    assert out.parts["forget"] == pytest.approx(forget, rel=1e-5)
    assert out.total.item() == pytest.approx(forget + retain, rel=1e-5)
    assert set(out.parts) == {"forget", "retain"}


def test_npo_reads_its_cache_back_and_recomputes_when_the_data_differ(tiny, tmp_path, monkeypatch):
    _, model, original, encoder, data = tiny
    build_method("npo", {}).setup(model, Reference(model, original), context(tiny, tmp_path))
    path = tmp_path / npo.CACHE_FILE
    saved = json.loads(path.read_text())
    saved["entries"][0]["logprob"] = -123.0  # a value only the file holds
    path.write_text(json.dumps(saved))

    def no_reference_pass(*args, **kwargs):
        raise AssertionError("the reference model ran although the cache covers the data")

    monkeypatch.setattr(npo, "reference_logprobs", no_reference_pass)
    method = build_method("npo", {})
    method.setup(model, Reference(model, original), context(tiny, tmp_path))
    assert method._lookup(encoder.batch(data.forget[:1], torch.device("cpu"))) == [-123.0]

    monkeypatch.undo()  # a forget row the file lacks: recompute and rewrite
    _, model, original, encoder, data = tiny
    more = TrainData(data.forget + [Example("Who founded Brindle?", "Oskar Vane.")], data.retain)
    method = build_method("npo", {})
    method.setup(model, Reference(model, original), {**context(tiny, tmp_path), "data": more})
    rewritten = json.loads(path.read_text())
    assert len(rewritten["entries"]) == 3
    assert rewritten["entries"][0]["logprob"] == pytest.approx(direct_logprob(original, encoder, data.forget[0]), rel=1e-5)


def test_simnpo_term_is_length_normalised_on_the_model(tiny):
    _, model, _, encoder, data = tiny
    batch = {"forget": encoder.batch(data.forget, torch.device("cpu"))}
    out = build_method("simnpo", {"retain_loss": "none", "beta": 2.5, "gamma": 0.5}).loss(model, batch, None)
    logp = torch.tensor([direct_logprob(model, encoder, e) for e in data.forget])
    lengths = torch.tensor([encoder.encode(e).response_tokens for e in data.forget])
    assert lengths[0] != lengths[1]
    expected = (-(2 / 2.5) * torch.nn.functional.logsigmoid(-2.5 * logp / lengths - 0.5)).mean().item()
    assert out.total.item() == pytest.approx(expected, rel=1e-5)
    assert set(out.parts) == {"forget"}


# ----------------------------------------------------------------------------- runs


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["npo", "simnpo"])
def test_short_run_has_finite_losses(name, make_config, tmp_path):
    from obliviate.train.loop import run_training

    run_training(make_config(f"method.name={name}", "train.precision=fp32"), tmp_path / "run", progress=False, log=quiet)
    log = read_log(tmp_path / "run")
    assert [line["step"] for line in log] == [1, 2, 3, 4]
    assert all(math.isfinite(line["loss/total"]) and math.isfinite(line["loss/forget"]) for line in log)
    assert all(math.isfinite(line["loss/retain"]) for line in log)
    assert (tmp_path / "run" / npo.CACHE_FILE).exists() == (name == "npo")
    if name == "npo":  # the first step starts where trained and original agree: (2/β)·log 2
        assert log[0]["loss/forget"] == pytest.approx(20 * math.log(2), rel=1e-3)
        assert log[-1]["loss/forget"] < log[0]["loss/forget"]


def test_npo_resume_reuses_the_cached_reference(make_config, tmp_path, monkeypatch):
    from obliviate.train.loop import run_training

    config = lambda: make_config("method.name=npo", "train.save_every=2")  # noqa: E731

    class Interrupt(Exception):
        pass

    def crash_after_step_3(state):
        if state.step == 3:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run_training(config(), tmp_path / "run", stop_hooks=[crash_after_step_3], progress=False, log=quiet)
    cache = tmp_path / "run" / npo.CACHE_FILE
    before = cache.read_text()
    assert len(json.loads(before)["entries"]) == 4

    def no_reference_pass(*args, **kwargs):
        raise AssertionError("resume recomputed the reference log-probabilities")

    monkeypatch.setattr(npo, "reference_logprobs", no_reference_pass)
    run_training(config(), tmp_path / "run", resume=True, progress=False, log=quiet)
    assert [line["step"] for line in read_log(tmp_path / "run")] == [1, 2, 3, 4]
    assert cache.read_text() == before


def test_methods_command_lists_both():
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    names = {match.group(1) for match in re.finditer(r"^\W*([a-z_]+)\s", result.output, re.MULTILINE)}
    assert {"npo", "simnpo"} <= names, result.output
