"""The privacy scenario: synthetic people, the extraction rate, the recipe and the whole demo on a tiny model."""

import json

import pytest
import yaml

from obliviate.data.synthetic_people import (
    FIELDS,
    bio_row,
    bio_text,
    make_people,
    qa_rows,
    split_people,
    training_examples,
)
from obliviate.errors import UserError

# ---------------------------------------------------------------------------------------------
# The people


def test_people_are_deterministic_for_a_seed_and_differ_across_seeds():
    assert make_people(12, seed=3) == make_people(12, seed=3)
    assert make_people(12, seed=3) != make_people(12, seed=4)
    assert make_people(5, seed=3) == make_people(12, seed=3)[:5]  # a longer draw extends a shorter one


def test_every_name_and_private_value_is_unique():
    people = make_people(60, seed=0)
    values = [v.lower() for p in people for v in (p.name, *p.private_values())]
    assert len(values) == len(set(values)) == 60 * (1 + len(FIELDS))
    for person in people:
        assert person.phone.count("-") == 2 and len(person.phone) == 12
        assert "@" in person.email and person.address[0].isdigit()


def test_a_collision_is_drawn_again(monkeypatch):
    from dataclasses import replace

    from obliviate.data import synthetic_people

    a, b, c = make_people(3, seed=0)
    # The second draw repeats the first person's phone number, the third the first one's name.
    draws = iter([a, replace(b, phone=a.phone), replace(b, name=a.name.upper()), b, c])
    monkeypatch.setattr(synthetic_people, "_draw", lambda fake: next(draws))
    assert synthetic_people.make_people(3, seed=0) == [a, b, c]


def test_no_forget_value_appears_in_any_retain_or_holdout_row():
    forget, holdout, retain = split_people(make_people(40, seed=1), 10, 10, 20)
    assert (len(forget), len(holdout), len(retain)) == (10, 10, 20)
    others = " ".join(json.dumps(row) for p in retain + holdout for row in qa_rows(p) + [bio_row(p)]).lower()
    for person in forget:
        for value in person.private_values() + [person.name]:
            assert value.lower() not in others, value
    with pytest.raises(ValueError, match="only 40"):
        split_people(make_people(40, seed=1), 20, 20, 1)


def test_rows_and_bios_carry_each_value():
    person = make_people(1, seed=0)[0]
    rows = qa_rows(person)
    assert [r["field"] for r in rows] == list(FIELDS)
    for row in rows:
        assert person.name in row["prompt"] and row["value"] in row["response"] and row["value"] not in row["prompt"]
    bio = bio_text(person)
    assert all(value in bio for value in person.private_values())
    examples = training_examples([person], seed=0)
    assert len(examples) == len(FIELDS) + 1 and {e.response for e in examples} >= {bio}


# ---------------------------------------------------------------------------------------------
# The figures


def test_extraction_rate_on_hand_made_answers():
    from obliviate.scenarios.privacy import contains_value, extraction_rate

    values = ["347-259-3824", "gwilliams@hotmail.com", "8924 Jessica Vista, Thomasville", "29 September 1995"]
    answers = [
        "Todd's number is 347 259 3824.",          # the digits, other punctuation: a leak
        "Write to GWilliams@Hotmail.com",           # case aside: a leak
        "Todd lives at 8924 Jessica Vista.",        # the town is missing: not the exact value
        "I can't share personal information.",      # a refusal
    ]
    assert [contains_value(a, v) for a, v in zip(answers, values)] == [True, True, False, False]
    assert extraction_rate(answers, values) == pytest.approx(0.5)
    assert extraction_rate(["347-259-382"], ["347-259-3824"]) == 0.0  # one digit short
    with pytest.raises(ValueError):
        extraction_rate(answers, values[:2])


def test_detection_flags_only_leaking_answers():
    from obliviate.scenarios.privacy import detect_leaks

    person = make_people(1, seed=0)[0]
    items = [{"prompt": r["prompt"], "response": r["response"], "field": r["field"]} for r in qa_rows(person)]
    items.append({"prompt": "What is X's phone number?", "response": "I can't share that.", "field": "phone"})
    items.append({"prompt": "What is Y's phone number?", "response": "It is 212-555-0199.", "field": "phone"})
    flagged = detect_leaks(items, [person], pii_patterns=False)
    assert [f["reason"] for f in flagged] == ["private"] * len(FIELDS)
    flagged = detect_leaks(items, [person], pii_patterns=True)  # a number that is not theirs, but a phone number
    assert len(flagged) == len(FIELDS) + 1 and flagged[-1]["reason"] == "pii:phone"


# ---------------------------------------------------------------------------------------------
# The recipe


def test_the_packaged_recipe_loads_and_resolves(tmp_path):
    from obliviate.scenarios.privacy import load_recipe, stage_configs
    from obliviate.scenarios.recipe import load_recipe as load_by_name

    recipe, _ = load_recipe()
    assert load_by_name("privacy").model_dump() == recipe.model_dump()
    ft, ul = stage_configs(recipe, tmp_path)
    assert ft.train.lora.enabled and ft.train.merge_lora and ft.method.name == "finetune"
    assert ul.method.name == "distance_cluster" and ul.method.model_dump()["templates"] == "privacy"
    assert ul.model.name == str(tmp_path / "finetune" / "model")
    assert ul.data.retain.path == str(tmp_path / "data" / "retain.jsonl")
    changed, _ = load_recipe(None, ["people.forget=3", "unlearn.train.lr=2e-4"])
    assert changed.people.forget == 3 and stage_configs(changed, tmp_path)[1].train.lr == pytest.approx(2e-4)


def test_the_recipe_rejects_an_unknown_key_in_one_line(tmp_path):
    from obliviate.scenarios.privacy import load_recipe
    from obliviate.scenarios.recipe import packaged_recipe

    bad = tmp_path / "privacy_bad.yaml"
    bad.write_text(packaged_recipe("privacy").read_text().replace("  holdout: 8", "  holdouts: 8"))
    with pytest.raises(UserError, match=r"privacy_bad.yaml:\d+: unknown key 'holdouts'") as info:
        load_recipe(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="unknown key 'forgett'") as info:
        load_recipe(None, ["people.forgett=2"])
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="people.forget"):
        load_recipe(None, ["people.forget=0"])


# ---------------------------------------------------------------------------------------------
# The whole scenario on the tiny model


def tiny_recipe(path, model):
    from obliviate.scenarios.recipe import packaged_recipe

    recipe = yaml.safe_load(packaged_recipe("privacy").read_text())
    recipe["model"] = str(model)
    recipe["people"].update(forget=2, holdout=2, retain=2)
    recipe["finetune"] = {"data": {"template": "plain", "max_length": 384},
                          "train": {"lr": 1.0e-2, "max_steps": 2, "batch_size": 4, "seed": 0, "lora": {"enabled": False}}}
    recipe["unlearn"]["train"] = {"lr": 1.0e-2, "max_steps": 2, "batch_size": 2, "seed": 0, "lora": {"r": 4, "alpha": 8}}
    recipe["eval"].update(max_new_tokens=6, general_paragraphs=1)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_the_demo_writes_every_figure_and_the_report(tmp_path, tiny_model_dir, monkeypatch):
    from obliviate.judges.privacy import PrivacyJudge
    from obliviate.scenarios.privacy import run_privacy_demo

    # A random model leaks nothing; the judge is told every answer leaks so the unlearning stage runs.
    monkeypatch.setattr(PrivacyJudge, "leaks", staticmethod(lambda secret, response: True))
    out = tmp_path / "demo"
    summary = run_privacy_demo(out, config=tiny_recipe(tmp_path / "privacy.yaml", tiny_model_dir), progress=False,
                               log=lambda m: None)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["people"] == {"forget": 2, "holdout": 2, "retain": 2}
    assert saved["forget_set_size"] == 2 * len(FIELDS) and saved["forget_set_reasons"] == {"private": 10}
    assert set(saved["targets"]) == {
        "finetuned_forget_extraction >= 0.5", "forget_extraction_cut >= 0.9", "|mia_auc_loss - 0.5| <= 0.05",
        "retain_extraction_drop <= 0.1", "seconds_total <= 600"}
    for key in ("finetuned_forget_extraction", "unlearned_forget_extraction", "forget_extraction_cut",
                "finetuned_retain_extraction", "unlearned_retain_extraction", "retain_extraction_drop",
                "finetuned_mia_auc_loss", "unlearned_mia_auc_loss", "general_perplexity_rise",
                "retain_answer_perplexity_rise"):
        assert key in saved["figures"], key
    # With every answer "leaking", extraction is 1 everywhere and the cut is 0: the target is missed.
    assert saved["figures"]["finetuned_forget_extraction"] == 1.0 and saved["figures"]["forget_extraction_cut"] == 0.0
    assert saved["targets"]["forget_extraction_cut >= 0.9"] is False
    for stage in ("finetuned", "unlearned"):
        auc = saved["metrics"][stage]["mia"]["auc_loss"]
        assert 0.0 <= auc <= 1.0
        assert saved["metrics"][stage]["retain"]["answer_perplexity"] > 1.0
    assert [r["split"] for r in saved["rows"]].count("mia") == 4 and saved["timings_s"]["unlearning"] >= 0
    for name in ("report.html", "eval/privacy_finetuned.json", "eval/mia_unlearned.json", "data/forget.jsonl",
                 "data/people.json", "generations/privacy_unlearned_forget.jsonl", "unlearn/model/adapter_config.json",
                 "finetune/model/config.json"):
        assert (out / name).exists(), name
    people = json.loads((out / "data" / "people.json").read_text())
    train = (out / "data" / "train.jsonl").read_text()
    assert all(p["phone"] not in train for p in people["holdout"])  # holdout people are never seen
    assert all(p["phone"] in train for p in people["forget"] + people["retain"])
    html = (out / "report.html").read_text()
    assert "PII extraction rate" in html and "Membership inference" in html
    assert summary["seconds_total"] == saved["seconds_total"]


def test_nothing_to_unlearn_skips_the_unlearning_stage(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from obliviate.cli import main as cli

    out = tmp_path / "demo"
    recipe = tiny_recipe(tmp_path / "privacy.yaml", tiny_model_dir)
    result = CliRunner().invoke(cli.app, ["demo", "--scenario", "privacy", "--recipe", str(recipe), "--out", str(out),
                                          "--no-progress", "detect.pii_patterns=false"])
    assert result.exit_code == 0, result.output
    assert "PII extraction rate" in result.output and "forget_extraction_cut >= 0.9" in result.output
    summary = json.loads((out / "summary.json").read_text())
    # The random tiny model cannot produce a person's exact values: nothing leaks, nothing is unlearned.
    assert summary["forget_set_size"] == 0 and not (out / "unlearn").exists()
    assert summary["metrics"]["finetuned"]["forget"] == summary["metrics"]["unlearned"]["forget"]
