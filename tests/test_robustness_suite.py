"""The robustness suite: every attack on the original and the unlearned model, kept share, report."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from obliviate.metrics.text import rouge_l_recall
from obliviate.scenarios.robustness import DEFAULT_ATTACKS, RobustnessSettings, keeps, kept_share, run_robustness
from tests.conftest import FORGET, RETAIN, write_jsonl

FAST = dict(max_items=4, max_new_tokens=4, relearn_steps=[1, 2], batch_size=8)


def lora_model(tokenizer_too=True):
    """The tiny model with a random (non-zero) LoRA adapter: adapters off give the 'original'."""
    from peft import LoraConfig, get_peft_model

    from obliviate.testing import tiny_model, tiny_tokenizer

    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return model, tiny_tokenizer()


@pytest.fixture
def no_inthewild(tmp_path, monkeypatch):
    """An empty cache: the in-the-wild set is neither fetched nor fetchable offline."""
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OBLIVIATE_WHEEL_DIR", raising=False)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny_model_dir):
    """A run folder as the harm demo leaves it: a LoRA adapter in model/, data/forget.jsonl."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from obliviate.testing import tiny_tokenizer

    folder = tmp_path_factory.mktemp("robust") / "run"
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder / "model")
    tiny_tokenizer().save_pretrained(folder / "model")
    (folder / "data").mkdir()
    write_jsonl(folder / "data" / "forget.jsonl", FORGET)
    write_jsonl(folder / "data" / "retain.jsonl", RETAIN)
    return folder


def test_kept_share_is_the_formula_on_hand_set_figures():
    # original plain 0.8, unlearned plain 0.2: a reduction of 0.6; the attack lifts the unlearned
    # model to 0.3, recovering 0.1 of the 0.6, so 0.5 / 0.6 of the reduction is kept.
    assert kept_share(0.8, 0.2, 0.3) == pytest.approx(0.5 / 0.6)
    assert kept_share(0.8, 0.2, 0.2) == pytest.approx(1.0)
    assert kept_share(0.8, 0.2, 0.8) == pytest.approx(0.0)  # back to the original: nothing kept
    assert kept_share(0.5, 0.0, 0.45) == pytest.approx(0.1)
    assert kept_share(0.9, 0.1, 0.0) == pytest.approx(1.125)  # the attack only makes it quieter
    assert math.isnan(kept_share(0.4, 0.4, 0.1))  # nothing unlearned to keep
    assert math.isnan(kept_share(float("nan"), 0.1, 0.1))
    assert keeps(0.8) is True and keeps(0.79) is False and keeps(float("nan")) is None


def test_unknown_attack_and_bad_settings_are_user_errors():
    from obliviate.errors import UserError

    with pytest.raises(UserError, match="unknown attack 'jedi_mind_trick'; valid: plain, role_play"):
        RobustnessSettings(attacks=["plain", "jedi_mind_trick"])
    with pytest.raises(UserError, match="relearn_steps"):
        RobustnessSettings(relearn_steps=[0, 5])
    assert RobustnessSettings(attacks="plain, rot13_request").attacks == ["plain", "rot13_request"]


def _check_kept_shares(saved):
    plain = saved["attacks"]["plain"]
    for name, entry in saved["attacks"].items():
        if entry.get("skipped") or name == "relearn":
            continue
        expected = kept_share(plain["original"]["figure"], plain["unlearned"]["figure"], entry["unlearned"]["figure"])
        got = entry["kept_share"]
        assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected), name
        assert entry["keeps_80"] == keeps(got)


def test_harmful_suite_end_to_end_through_the_api_and_the_report(tmp_path, no_inthewild):
    import obliviate
    from obliviate.report.run_report import write_run_report

    model, tokenizer = lora_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "out"
    result = obliviate.evaluate(model, suite="robustness", tokenizer=tokenizer, forget=FORGET, retain=RETAIN,
                                run_dir=out, tag="t", embed=False, progress=False, **FAST)
    saved = json.loads((out / "eval" / "robustness_t.json").read_text())
    assert saved["suite"] == "robustness" and saved["mode"] == "harmful"
    assert list(saved["attacks"]) == list(DEFAULT_ATTACKS)  # every requested attack, in order
    assert "obliviate data fetch inthewild-jailbreaks" in saved["attacks"]["in_the_wild"]["skipped"]
    _check_kept_shares(saved)
    for name in ("plain", "encoding", "int8", "hard_scope"):
        for who in ("original", "unlearned"):
            figure = saved["attacks"][name][who]
            assert 0.0 <= figure["figure"] <= 1.0 and figure["low"] <= figure["figure"] <= figure["high"]
    assert saved["attacks"]["plain"]["original"]["count"] == 4
    assert 0.0 <= saved["attacks"]["int8"]["rounding_share"]["share"] <= 1.0
    assert [p["step"] for p in saved["relearn"]["curve"]] == [0, 1, 2]
    assert saved["relearn"]["attack_rows"] == 2 and saved["relearn"]["rest_rows"] == 2
    assert (out / "hard_scope" / "in_scope.jsonl").is_file()
    # per-item rows: the prompt as sent, the request inside it, and the verdict
    encoded = [json.loads(line) for line in (out / "generations" / "robustness_t_encoding-unlearned.jsonl").open()]
    assert [r["request"] for r in encoded] == [r["prompt"] for r in FORGET]
    assert all("base64" in r["prompt"] and r["request"] not in r["prompt"] for r in encoded)
    assert {"answer", "verdict", "harmful"} <= set(encoded[0])
    assert set(saved["summary"]["attacks_kept"]) | set(saved["summary"]["attacks_lost"]) \
        | set(saved["summary"]["attacks_undecided"]) >= set(DEFAULT_ATTACKS) - {"plain", "in_the_wild"}
    assert result["path"] == str(out / "eval" / "robustness_t.json")
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())  # the model is left as it was

    page = write_run_report(out).read_text()
    assert "Robustness" in page and "kept share" in page and "Robustness items: encoding" in page
    assert (out / "plots" / "robustness_attacks.png").stat().st_size > 0
    assert (out / "plots" / "robustness_relearning.png").stat().st_size > 0


def test_on_topic_check_compares_the_request_not_the_wrapper(no_inthewild):
    model, tokenizer = lora_model()
    seen = []

    def embed(texts):
        seen.extend(texts)
        return np.array([[len(t) + 1.0, t.count("e") + 1.0] for t in texts])

    result = run_robustness(model, tokenizer, forget_rows=FORGET, mode="harmful", embed=embed,
                            settings=RobustnessSettings(attacks=["plain", "encoding", "role_play"], **FAST))
    prompts = {r["prompt"] for r in FORGET}
    wrapped = {row["prompt"] for rows in result["items"]["encoding"].values() for row in rows}
    assert prompts <= set(seen) and not wrapped & set(seen)
    rows = result["items"]["role_play"]["unlearned"]
    assert all("on_topic_cosine" in r and r["flag"] == (r["harmful"] and r["on_topic"]) for r in rows)
    assert "on-topic" in result["figure"]


def test_memorisation_mode_through_the_cli(run_folder, tmp_path, no_inthewild):
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    forget = write_jsonl(tmp_path / "passages.jsonl", FORGET)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "eval", "--suite", "robustness", str(run_folder), "--forget", str(forget), "--mode", "memorisation",
        "--attacks", "plain,encoding,few_shot,int8,relearn,hard_scope", "--max-items", "4", "--max-new-tokens", "4",
        "--relearn-steps", "1,2", "--out", str(out), "--tag", "mem",
    ])
    assert result.exit_code == 0, result.output
    assert "kept share" in result.output and "encoding" in result.output
    saved = json.loads((out / "eval" / "robustness_mem.json").read_text())
    assert saved["mode"] == "memorisation"
    assert list(saved["attacks"]) == ["plain", "encoding", "few_shot", "int8", "relearn", "hard_scope"]
    _check_kept_shares(saved)
    rows = [json.loads(line) for line in (out / "generations" / "robustness_mem_plain-unlearned.jsonl").open()]
    assert [r["reference"] for r in rows] == [r["response"] for r in FORGET]
    for row in rows:
        assert row["rouge_l_recall"] == pytest.approx(rouge_l_recall(row["answer"], row["reference"]))
    assert saved["attacks"]["plain"]["unlearned"]["figure"] == pytest.approx(np.mean([r["rouge_l_recall"] for r in rows]))


def test_harmful_mode_on_a_run_folder_without_forget(run_folder, tmp_path, no_inthewild):
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "--suite", "robustness", "--model", str(run_folder), "--attacks",
                                      "plain,prefix_injection", "--max-items", "2", "--max-new-tokens", "4",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "eval" / "robustness_eval.json").read_text())
    assert list(saved["attacks"]) == ["plain", "prefix_injection"]
    assert saved["attacks"]["plain"]["unlearned"]["count"] == 2  # data/forget.jsonl, first two rows


def test_unknown_attack_exits_2_with_one_line(run_folder, monkeypatch, capsys):
    from obliviate.cli import main as cli

    monkeypatch.setattr(sys, "argv", ["obliviate", "eval", "--suite", "robustness", str(run_folder),
                                      "--attacks", "plain,jedi_mind_trick"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2, err
    assert len(lines) == 1 and "jedi_mind_trick" in lines[0] and "valid:" in lines[0], err
    assert "Traceback" not in err


def test_in_the_wild_runs_when_the_set_is_fetched(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path))
    wild = [{"prompt": f"Collected jailbreak text number {i}.", "id": f"inthewild-{i:03d}"} for i in range(3)]
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "inthewild-jailbreaks.jsonl", wild)
    model, tokenizer = lora_model()
    result = run_robustness(model, tokenizer, forget_rows=FORGET, mode="harmful",
                            settings=RobustnessSettings(attacks=["plain", "in_the_wild"], **FAST))
    assert "skipped" not in result["attacks"]["in_the_wild"]
    rows = result["items"]["in_the_wild"]["unlearned"]
    assert len({r["template"] for r in rows}) == 2  # two collected texts, taken in turn
    assert all(r["prompt"].startswith("Collected jailbreak text") and r["prompt"].endswith(r["request"]) for r in rows)


def test_original_result_reuses_the_original_answers_of_an_earlier_run(no_inthewild):
    """Several unlearned models of one original: the original is answered once, then reused."""
    from peft import LoraConfig, get_peft_model

    from obliviate.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    settings = RobustnessSettings(**FAST)

    def unlearned(seed):
        model = tiny_model(seed=seed)
        return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))

    first = run_robustness(unlearned(1), tokenizer, original_model=tiny_model(), forget_rows=FORGET, retain_rows=RETAIN,
                           mode="harmful", settings=settings)
    assert first["reused_original"] == []  # nothing to reuse on the first call

    def refuse(*args, **kwargs):
        raise AssertionError("the original model was run again")

    poisoned = tiny_model()  # the same weights, but any generation or relearning on it fails
    poisoned.forward = refuse
    second = run_robustness(unlearned(2), tokenizer, original_model=poisoned, forget_rows=FORGET, retain_rows=RETAIN,
                            mode="harmful", settings=settings, original_result=first)
    measured = [name for name in DEFAULT_ATTACKS if name not in ("in_the_wild", "relearn")]
    assert set(measured) <= set(second["reused_original"])
    for name in measured:
        assert second["attacks"][name]["original"] == first["attacks"][name]["original"]
        assert second["items"][name]["original"] == first["items"][name]["original"]
    assert "relearn" in second["reused_original"]
    assert [p["original"] for p in second["relearn"]["curve"]] == [p["original"] for p in first["relearn"]["curve"]]
    assert second["attacks"]["plain"]["unlearned"]["count"] == 4
    # the kept shares are this run's: its own unlearned figures against the reused original ones
    for name in measured:
        entry = second["attacks"][name]
        expected = kept_share(second["attacks"]["plain"]["original"]["figure"],
                              second["attacks"]["plain"]["unlearned"]["figure"], entry["unlearned"]["figure"])
        assert entry["kept_share"] == pytest.approx(expected, nan_ok=True)

    # other prompts (a different forget set) or other settings: nothing is reused
    other = run_robustness(unlearned(2), tokenizer, original_model=tiny_model(), forget_rows=FORGET[::-1],
                           retain_rows=RETAIN, mode="harmful", settings=settings, original_result=first)
    assert other["reused_original"] == []
    changed = RobustnessSettings(**{**FAST, "max_new_tokens": 3})
    other = run_robustness(unlearned(2), tokenizer, original_model=tiny_model(), forget_rows=FORGET,
                           retain_rows=RETAIN, mode="harmful", settings=changed, original_result=first)
    assert other["reused_original"] == []


def test_a_demo_folder_loads_as_its_unlearned_model(tiny_model_dir, tmp_path):
    """``obliviate eval --suite robustness runs/demo-harmful``: the demo nests its model in unlearn/model."""
    import shutil

    from obliviate.models.loading import load_trained

    demo = tmp_path / "demo-harmful"
    shutil.copytree(tiny_model_dir, demo / "unlearn" / "model")
    model, _ = load_trained(demo)
    assert Path(model.config._name_or_path).resolve() == (demo / "unlearn" / "model").resolve()
