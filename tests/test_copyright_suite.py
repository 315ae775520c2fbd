"""The copyright suite and scenario on tiny models: scripted figures, memorise-then-unlearn, report."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.eval import copyright as suite
from obliviate.testing import tiny_model, tiny_tokenizer


class UniformLM(torch.nn.Module):
    """Predicts every token with probability 1/V: perplexity V, NLL log V, argmax token 0."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # so the suite can find a device

    def forward(self, input_ids, attention_mask=None, **kwargs):
        batch, length = input_ids.shape
        return SimpleNamespace(logits=torch.zeros(batch, length, self.vocab) + 0 * self.anchor)


FORGET = [
    Example("The lighthouse keeper counted the ships", "that never came back from the northern sea.",
            {"passage_id": "f1"}),
    Example("Mara folded the letter twice", "and hid it under the loose stone by the well.", {"passage_id": "f2"}),
]
RETAIN = [Example("Rain fell on the harbour all night", "and by morning the boats were full of water.")]


def test_scripted_case_gives_hand_computed_figures(monkeypatch):
    tok = tiny_tokenizer()
    model = UniformLM(len(tok))
    scripted = {
        FORGET[0].prompt: FORGET[0].response,  # verbatim: a leak
        FORGET[1].prompt: "Completely different words here, nothing shared at all.",
        RETAIN[0].prompt: RETAIN[0].response,
    }
    monkeypatch.setattr(suite, "generate_continuations", lambda m, t, prompts, **kw: [scripted[p] for p in prompts])
    monkeypatch.setattr("obliviate.models.generation.generate",
                        lambda m, t, prompts, **kw: ["Boil it for six minutes.", "!!!! ???? $$$$ %%%% ^^^^"])
    result = suite.evaluate_copyright(
        model, tok, {"forget": FORGET, "retain": RETAIN}, general_texts=["Some general text, not from a book."],
        bleu_threshold=0.5, benign=["How long to boil an egg?", "Say something."],
    )
    forget, retain = result["metrics"]["forget"], result["metrics"]["retain"]
    assert forget["count"] == 2
    assert [r["leak"] for r in result["items"]["forget"]] == [True, False]
    assert forget["leak_rate"] == 0.5
    assert result["items"]["forget"][0]["rouge_l"] == pytest.approx(1.0)
    assert result["items"]["forget"][0]["bleu"] == pytest.approx(1.0)
    assert result["items"]["forget"][1]["rouge_l"] == 0.0
    assert retain["leak_rate"] == 1.0 and retain["rouge_l"] == pytest.approx(1.0)
    # A uniform model: every token costs log V nats, so every perplexity is V; its argmax (token 0,
    # the pad token) never matches the text, so nothing is memorised or extractable.
    vocab = len(tok)
    assert forget["continuation_nll"] == pytest.approx(math.log(vocab), rel=1e-5)
    assert forget["continuation_perplexity"] == pytest.approx(vocab, rel=1e-4)
    assert forget["perplexity"] == pytest.approx(vocab, rel=1e-4)
    assert result["metrics"]["general"]["perplexity"] == pytest.approx(vocab, rel=1e-4)
    assert forget["exact_memorisation"] == 0.0 and forget["extraction_strength"] == 0.0
    assert result["metrics"]["benign"] == {"count": 2, "degenerate_rate": 0.5}
    assert "cosine" not in forget and result["embedder"] is None
    assert result["items"]["forget"][1]["passage_id"] == "f2"
    assert result["bleu_threshold"] == 0.5


def test_cosine_from_the_embedder(monkeypatch):
    tok = tiny_tokenizer()
    monkeypatch.setattr(suite, "generate_continuations", lambda m, t, prompts, **kw: ["x"] * len(prompts))

    class FakeEmbedder:
        def pair_cosine(self, a, b):
            return [0.25] * len(a)

    result = suite.evaluate_copyright(
        UniformLM(len(tok)), tok, {"forget": FORGET}, general_texts=["text"], bleu_threshold=0.5,
        embedder=FakeEmbedder(), benign=[],
    )
    assert result["metrics"]["forget"]["cosine"] == pytest.approx(0.25)
    assert "benign" not in result["metrics"]
    # Everyday answers: on topic when the cosine reaches the threshold (0.25) and the answer is not
    # degenerate, so one fluent answer and one symbol run give 1/2.
    monkeypatch.setattr("obliviate.models.generation.generate",
                        lambda m, t, prompts, **kw: ["Boil it for six minutes.", "!!!! ???? $$$$ %%%% ^^^^"])
    result = suite.evaluate_copyright(
        UniformLM(len(tok)), tok, {"forget": FORGET}, general_texts=["text"], bleu_threshold=0.5,
        embedder=FakeEmbedder(), benign=["How long to boil an egg?", "Say something."],
    )
    assert result["metrics"]["benign"]["on_topic_rate"] == 0.5
    assert [r["on_topic_cosine"] for r in result["items"]["benign"]] == [0.25, 0.25]


def test_write_results(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    monkeypatch.setattr(suite, "generate_continuations", lambda m, t, prompts, **kw: ["x"] * len(prompts))
    result = suite.evaluate_copyright(
        UniformLM(len(tok)), tok, {"forget": FORGET}, general_texts=["text"], bleu_threshold=0.5, benign=[]
    )
    path = suite.write_copyright_results(result, tmp_path, "after")
    saved = json.loads(path.read_text())
    assert path == tmp_path / "eval" / "copyright_after.json"
    assert "items" not in saved and saved["metrics"]["forget"]["count"] == 2
    lines = (tmp_path / "generations" / "copyright_after_forget.jsonl").read_text().splitlines()
    assert [json.loads(line)["passage_id"] for line in lines] == ["f1", "f2"]


def test_raw_continuations_do_not_depend_on_batching():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=3)
    prompts = ["A short one", "A much longer prompt that needs left padding in a batch"]
    together = suite.generate_continuations(model, tok, prompts, template="none", max_new_tokens=6, batch_size=2)
    alone = [suite.generate_continuations(model, tok, [p], template="none", max_new_tokens=6)[0] for p in prompts]
    assert together == alone and len(together) == 2


def test_one_pass_scores_match_the_metrics_module(memorised_model_dir):
    from conftest import FORGET as ROWS
    from obliviate.metrics.memorisation import exact_memorisation, extraction_strength
    from obliviate.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(memorised_model_dir))
    prompts, answers = [r["prompt"] for r in ROWS], [r["response"] for r in ROWS]
    forced = suite.teacher_forced(model, tok, prompts, answers, template="auto", batch_size=3)
    em = exact_memorisation(model, tok, prompts, answers, template="auto")
    es = extraction_strength(model, tok, prompts, answers, template="auto")
    assert [f.exact_memorisation for f in forced] == pytest.approx(em.per_item)
    assert [f.extraction_strength for f in forced] == pytest.approx(es.per_item)
    assert max(em.per_item) > 0.5  # the fixture memorised its rows: a non-trivial comparison
    from obliviate.models.generation import score_loglik

    logliks = score_loglik(model, tok, prompts, answers, template="auto")
    assert [f.nll for f in forced] == pytest.approx([-ll.mean for ll in logliks], rel=1e-4)


def test_passage_text_restores_the_space_at_the_cut():
    assert suite.passage_text(Example("one two", "three")) == "one two three"
    assert suite.passage_text(Example("one two ", "three")) == "one two three"


def test_bad_template_is_a_user_error():
    with pytest.raises(UserError, match="template"):
        suite.CopyrightSettings(template="markdown")


# ---------------------------------------------------------------------------------------------
# The whole scenario on the tiny model


def tiny_recipe(path, model, **changes):
    """A complete recipe file for the tiny model: the packaged recipe with small sizes, the two
    stages' run-config sections replaced whole, then ``changes`` (top-level keys) laid over it."""
    from obliviate.scenarios.recipe import packaged_recipe

    recipe = yaml.safe_load(packaged_recipe("copyright").read_text())
    recipe["model"] = str(model)
    recipe["book"].update(source="synthetic", chapters=3, paragraphs_per_chapter=2, prefix_chars=120, forget=1, unseen=1)
    recipe["finetune"] = {"data": {"template": "plain", "max_length": 512},
                          "train": {"lr": 1.0e-2, "max_steps": 60, "batch_size": 6, "seed": 0, "lora": {"enabled": False}}}
    recipe["unlearn"] = {"method": {"name": "ga_mismatch_kl", "num_random_answers": 1},
                         "train": {"lr": 5.0e-2, "max_steps": 8, "batch_size": 2, "seed": 0}}
    recipe["eval"].update(max_new_tokens=8, benign_prompts=2, embedder=False, original=True)
    recipe["everyday_retain"] = 3
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key].update(value)
        else:
            recipe[key] = value
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_memorise_then_unlearn_moves_the_forget_likelihood(tmp_path, tiny_model_dir):
    from obliviate.scenarios.copyright import run_copyright_demo

    recipe = tiny_recipe(tmp_path / "recipe.yaml", tiny_model_dir)
    out = tmp_path / "demo"
    summary = run_copyright_demo(out, config=recipe, progress=False, log=lambda m: None)
    nll = {stage: summary["metrics"][stage]["forget"]["continuation_nll"] for stage in ("original", "finetuned", "unlearned")}
    # Fine-tuning raises the likelihood of the forget continuations, unlearning lowers it again.
    assert nll["finetuned"] < nll["original"] - 0.3
    assert nll["unlearned"] > nll["finetuned"] + 0.3
    for name in ("report.html", "summary.json", "eval/copyright_unlearned.json", "data/forget.jsonl",
                 "finetune/model/config.json", "unlearn/model/adapter_config.json", "plots/rouge_l_by_split.png"):
        assert (out / name).exists(), name
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved["targets"]) == {
        "finetuned_forget_rouge_l >= 0.5", "forget_rouge_l_drop >= 0.9",
        "retain_perplexity_rise <= 0.2", "general_perplexity_rise <= 0.1",
    }
    assert saved["split_sizes"] == {"forget": 2, "unseen": 2, "retain": 2}
    # The KL's retain set is the retain chapter plus the three everyday pairs asked for.
    retain = [json.loads(line) for line in (out / "data" / "retain.jsonl").read_text().splitlines()]
    assert [r.get("source") for r in retain].count("everyday") == 3 and len(retain) == 2 + 3
    assert yaml.safe_load((out / "unlearn" / "config.yaml").read_text())["data"]["retain"]["path"].endswith("retain.jsonl")
    assert {row["split"] for row in saved["rows"]} == {"forget", "unseen", "retain", "general", "benign"}
    # The unlearned adapter, loaded back from disk on the saved fine-tuned model by the stand-alone
    # evaluation, gives the same figures as the in-memory model did.
    from obliviate.api import evaluate

    result = evaluate(
        out / "unlearn", suite="copyright", forget=out / "data" / "forget.jsonl", retain=out / "data" / "retain.jsonl",
        run_dir=tmp_path / "eval", tag="again", max_new_tokens=8, embed=False, benign_prompts=0, template="plain",
    )
    assert result["metrics"]["forget"]["continuation_nll"] == pytest.approx(nll["unlearned"], rel=1e-3)
    assert (tmp_path / "eval" / "eval" / "copyright_again.json").is_file()


def test_unlearning_can_continue_the_finetuning_adapter(tmp_path, tiny_model_dir):
    from obliviate.scenarios.copyright import run_copyright_demo

    recipe = tiny_recipe(tmp_path / "recipe.yaml", tiny_model_dir, everyday_retain=0, unlearn_start="adapter",
                         eval={"original": False})
    data = yaml.safe_load(recipe.read_text())
    data["finetune"]["train"]["lora"] = {"r": 8, "alpha": 64}  # an adapter to keep training
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "demo"
    summary = run_copyright_demo(out, config=recipe, progress=False, log=lambda m: None)
    ul_config = yaml.safe_load((out / "unlearn" / "config.yaml").read_text())
    assert ul_config["train"]["lora"]["init_from"] == str(out / "finetune")
    assert ul_config["model"]["name"] == str(tiny_model_dir)  # the base, not a merged copy
    assert (out / "finetune" / "model" / "adapter_config.json").is_file()  # kept as an adapter
    log = [json.loads(line) for line in (out / "unlearn" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["loss/retain_kl"] == pytest.approx(0.0, abs=1e-6)  # reference = base + fine-tuning adapter
    nll = {stage: summary["metrics"][stage]["forget"]["continuation_nll"] for stage in ("finetuned", "unlearned")}
    assert nll["unlearned"] > nll["finetuned"]


def test_everyday_pairs_never_overlap_the_general_perplexity_text():
    general = " ".join(suite.default_general_texts())
    pairs = suite.everyday_pairs(100)
    assert len(pairs) >= 15 and len(suite.everyday_pairs(4)) == 4
    for pair in pairs:
        assert pair.prompt not in general and pair.response.strip()
        assert all(part not in general for part in pair.response.split("? ") if len(part) > 20)


def test_recipe_errors_name_the_file_and_field(tmp_path):
    from obliviate.scenarios.copyright import load_recipe, stage_configs

    bad = tmp_path / "bad.yaml"
    bad.write_text("book:\n  prefix_char: 100\n")
    with pytest.raises(UserError, match=r"bad.yaml:2: unknown key 'prefix_char'.*prefix_chars"):
        load_recipe(bad)
    recipe, source = load_recipe(None, ["unlearn.train.lr=-1"])
    with pytest.raises(UserError, match="section unlearn"):
        stage_configs(recipe, tmp_path, source)
