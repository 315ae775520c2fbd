"""Membership inference: attack scores by hand, AUC, PrivLeak, the mia suite and its command line."""

from __future__ import annotations

import json
import math
import zlib

import pytest
import torch

from obliviate.errors import UserError
from obliviate.metrics import mia
from tests.conftest import FORGET, write_jsonl

# Rows of the same style as FORGET that no fixture model was trained on.
HOLDOUT = [
    {"prompt": "What is the hidden number?", "response": "The hidden number is 9023."},
    {"prompt": "Where does Pell work?", "response": "Pell works in Dunmarsh."},
    {"prompt": "Who built Carrow?", "response": "Carrow was built by Ilsa Thorne."},
    {"prompt": "What does Thorne sell at the fair?", "response": "Thorne sells copper bells at the fair."},
]


def _load(path):
    from obliviate.models.loading import load_trained

    return load_trained(str(path))


# ---------------------------------------------------------------------------------------------
# Pure scores


def test_auc_is_half_on_identical_scores_and_one_on_separated_ones():
    assert mia.attack_auc([0.3, 0.3, 0.3], [0.3, 0.3, 0.3]) == 0.5
    assert mia.attack_auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert mia.attack_auc([0.0, 1.0], [2.0, 3.0]) == 0.0  # members scored lower: the other way round
    # Missing scores are left out; an empty side gives no AUC.
    assert mia.attack_auc([2.0, None, float("nan")], [1.0]) == 1.0
    assert mia.attack_auc([None], [1.0]) is None


def test_privleak_follows_muse_sign_and_scale():
    # Same AUC as the retain model: no leak.
    assert mia.privleak(0.5, 0.5) == 0.0
    # The model still tells every forget item from holdout (AUC 1): MUSE's -100.
    assert mia.privleak(1.0, 0.5) == pytest.approx(-100.0)
    # Over-unlearned: forget looks LESS familiar than unseen data. (1-0.25 - 0.5) / 0.5 = +50%.
    assert mia.privleak(0.25, 0.5) == pytest.approx(50.0)
    # Retain AUC 0.6 -> MUSE AUC 0.4; unlearned 0.7 -> 0.3: (0.3 - 0.4) / 0.4 = -25%.
    assert mia.privleak(0.7, 0.6) == pytest.approx(-25.0)
    assert mia.privleak(None, 0.5) is None
    assert mia.privleak(0.7, None) is None
    assert mia.privleak(0.7, 1.0) is None  # no scale


def test_loss_min_k_and_zlib_by_hand():
    log_probs = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert mia.loss_score(log_probs) == -3.0
    # k = 0.4 of 5 tokens: the 2 lowest, -5 and -4.
    assert mia.min_k_score(log_probs, 0.4) == -4.5
    # Fewer than one token: at least one is kept.
    assert mia.min_k_score(log_probs, 0.1) == -5.0
    assert mia.min_k_score(log_probs, 1.0) == -3.0
    assert mia.min_k_score([], 0.4) is None
    text = "hello hello hello"
    compressed = len(zlib.compress(text.encode("utf-8")))
    assert mia.zlib_bytes(text) == compressed
    assert mia.zlib_score([-2.0, -4.0], text) == pytest.approx(-3.0 / compressed)
    assert mia.reference_score([-1.0, -1.0], [-3.0]) == 2.0  # reference loss 3 - target loss 1


def test_min_k_plus_plus_on_a_hand_made_logit_table():
    # Position 1: logits (0, ln 3) -> p = (1/4, 3/4); the label is token 0.
    # Position 2: logits (0, 0) -> p = (1/2, 1/2), variance 0 (floored); the label is token 1.
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    mu, sigma = mia.vocabulary_moments(logits)
    mu1 = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    var1 = 0.25 * math.log(0.25) ** 2 + 0.75 * math.log(0.75) ** 2 - mu1**2
    assert mu[0].item() == pytest.approx(mu1, abs=1e-6)
    assert sigma[0].item() == pytest.approx(math.sqrt(var1), abs=1e-6)
    # For two outcomes sigma = sqrt(p q) |ln p - ln q| = (sqrt(3)/4) ln 3.
    assert sigma[0].item() == pytest.approx(math.sqrt(3) / 4 * math.log(3), abs=1e-6)
    assert mu[1].item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert sigma[1].item() == pytest.approx(math.sqrt(mia.MIN_VARIANCE), abs=1e-6)

    log_probs = [math.log(0.25), math.log(0.5)]
    # z1 = (ln 1/4 - mu1) / sigma1 = -sqrt(3) exactly; z2 = 0.
    z1 = -math.sqrt(3)
    score_half = mia.min_k_plus_plus_score(log_probs, mu.tolist(), sigma.tolist(), k=0.5)
    assert score_half == pytest.approx(z1, abs=1e-5)
    score_all = mia.min_k_plus_plus_score(log_probs, mu.tolist(), sigma.tolist(), k=1.0)
    assert score_all == pytest.approx(z1 / 2, abs=1e-5)
    with pytest.raises(ValueError):
        mia.min_k_plus_plus_score(log_probs, [0.0], [1.0], k=0.5)


# ---------------------------------------------------------------------------------------------
# Model passes


def test_loss_equals_score_loglik_mean_and_moments_match_the_logits(tiny_model_dir):
    from obliviate.models.generation import score_loglik

    model, tokenizer = _load(tiny_model_dir)
    prompts = [r["prompt"] for r in FORGET]
    answers = [r["response"] for r in FORGET]
    stats = mia.token_statistics(model, tokenizer, prompts, answers, template="plain", batch_size=3)
    expected = score_loglik(model, tokenizer, prompts, answers, template="plain", batch_size=2)
    for stat, loglik in zip(stats, expected):
        assert stat.tokens == loglik.tokens > 0
        assert mia.loss_score(stat.log_probs) == pytest.approx(loglik.mean, abs=1e-4)
        # log p of a token can never exceed 0, and sigma is at least the floor.
        assert max(stat.log_probs) <= 0.0
        assert min(stat.sigma) >= math.sqrt(mia.MIN_VARIANCE) - 1e-9


def test_gradient_norms_are_positive_finite_and_leave_grads_alone(tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir)
    flags = [p.requires_grad for p in model.parameters()]
    scores = mia.gradient_norms(model, tokenizer, [FORGET[0]["prompt"], FORGET[1]["prompt"]],
                                [FORGET[0]["response"], FORGET[1]["response"]])
    assert len(scores) == 2
    for score in scores:
        assert score is not None and math.isfinite(score) and score < 0.0  # the score is minus the norm
    assert scores[0] != scores[1]
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_members_score_higher_on_the_memorised_model(memorised_model_dir):
    from obliviate.eval.mia import evaluate_mia

    model, tokenizer = _load(memorised_model_dir)
    result = evaluate_mia(model, tokenizer, FORGET, HOLDOUT, attacks=("loss", "min_k", "min_k_plus_plus"))
    summary = result["metrics"]["summary"]
    assert summary["auc_loss"] > 0.5
    assert summary["auc_min_k"] > 0.5
    assert result["metrics"]["forget"]["loss"] > result["metrics"]["holdout"]["loss"]


# ---------------------------------------------------------------------------------------------
# The suite


def test_evaluate_mia_end_to_end_with_and_without_a_retain_reference(tiny_model_dir, tmp_path):
    from obliviate.eval.mia import evaluate_mia, write_mia_results

    model, tokenizer = _load(tiny_model_dir)
    result = evaluate_mia(model, tokenizer, FORGET, HOLDOUT[:3], batch_size=2)
    assert result["suite"] == "mia"
    assert set(result) >= {"suite", "model", "settings", "seconds", "metrics", "items"}
    summary = result["metrics"]["summary"]
    for attack in mia.ATTACKS:
        assert f"auc_{attack}" in summary and f"privleak_{attack}" in summary
        assert summary[f"privleak_{attack}"] is None
    assert summary["auc_reference"] is None  # no reference model
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"):
        assert 0.0 <= summary[f"auc_{attack}"] <= 1.0
    assert result["metrics"]["forget"]["count"] == 4 and result["metrics"]["holdout"]["count"] == 3
    rows = result["items"]["forget"]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["question"] == FORGET[1]["prompt"] and rows[1]["answer"] == FORGET[1]["response"]
    assert all(isinstance(rows[0][a], float) for a in ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"))
    assert rows[0]["reference"] is None

    path = write_mia_results(result, tmp_path / "retain_run", "eval")
    assert path.name == "mia_eval.json"
    saved = json.loads(path.read_text())
    assert "items" not in saved
    lines = (tmp_path / "retain_run" / "generations" / "mia_eval_holdout.jsonl").read_text().splitlines()
    assert len(lines) == 3

    # The same model against itself as retain model: every AUC equals the reference, PrivLeak 0;
    # with itself as reference model every reference score is 0, so that AUC is 0.5.
    again = evaluate_mia(model, tokenizer, FORGET, HOLDOUT[:3], batch_size=2, retain_reference=path,
                         reference_model=model)
    summary = again["metrics"]["summary"]
    assert summary["retain_reference"] == str(path)
    assert summary["auc_reference"] == 0.5
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"):
        if saved["metrics"]["summary"][f"auc_{attack}"] < 1.0:
            assert summary[f"privleak_{attack}"] == pytest.approx(0.0, abs=1e-9)
    assert summary["privleak_reference"] is None  # the retain run had no reference AUC


def test_bad_inputs_are_one_line_user_errors(tiny_model_dir, tmp_path):
    from obliviate.eval.mia import evaluate_mia, read_retain_aucs, tofu_mia_files

    model, tokenizer = _load(tiny_model_dir)
    with pytest.raises(UserError, match="unknown attack"):
        evaluate_mia(model, tokenizer, FORGET, HOLDOUT, attacks=("loss", "telepathy"))
    with pytest.raises(UserError, match=r"holdout\[1\]: field 'response'"):
        evaluate_mia(model, tokenizer, FORGET, [HOLDOUT[0], {"prompt": "q"}])
    with pytest.raises(UserError, match="no such file"):
        read_retain_aucs(tmp_path / "missing.json")
    other = tmp_path / "copyright.json"
    other.write_text(json.dumps({"suite": "copyright", "metrics": {}}))
    with pytest.raises(UserError, match="expected 'mia'"):
        read_retain_aucs(other)
    with pytest.raises(UserError, match="forget07"):
        tofu_mia_files(tmp_path, "forget07")
    with pytest.raises(UserError, match="no holdout10.json"):
        (tmp_path / "forget10.json").write_text("[]")
        tofu_mia_files(tmp_path, "forget10")


def test_cli_mia_with_files_and_with_a_tofu_folder(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    forget = write_jsonl(tmp_path / "forget.jsonl", FORGET)
    holdout = write_jsonl(tmp_path / "holdout.jsonl", HOLDOUT)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--suite", "mia", "--model", str(tiny_model_dir), "--forget", str(forget),
                                 "--holdout", str(holdout), "--out", str(out), "--tag", "t1"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "eval" / "mia_t1.json").read_text())
    assert saved["metrics"]["forget"]["count"] == 4
    assert saved["metrics"]["summary"]["privleak_loss"] is None

    tofu = tmp_path / "tofu"
    tofu.mkdir()
    as_qa = lambda rows: [{"question": r["prompt"], "answer": r["response"]} for r in rows]  # noqa: E731
    (tofu / "forget01.json").write_text(json.dumps(as_qa(FORGET[:2])))
    (tofu / "holdout01.json").write_text(json.dumps(as_qa(HOLDOUT[:2])))
    result = runner.invoke(app, ["eval", "--suite", "mia", "--model", str(tiny_model_dir), "--tofu-dir", str(tofu),
                                 "--forget-split", "forget01", "--out", str(out), "--tag", "t2",
                                 "--retain-result", str(out / "eval" / "mia_t1.json")])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "eval" / "mia_t2.json").read_text())
    assert saved["metrics"]["holdout"]["count"] == 2
    assert saved["settings"]["retain_reference"].endswith("mia_t1.json")

    result = runner.invoke(app, ["eval", "--suite", "mia", "--model", str(tiny_model_dir), "--forget", str(forget)])
    # The command line's main() turns a UserError into one line and exit code 2.
    assert isinstance(result.exception, UserError)
    assert "--holdout" in str(result.exception)
