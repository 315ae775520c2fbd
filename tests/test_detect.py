"""Detection (judge-gated forget sets) and the reference and privacy judges."""

import json

import pytest
from typer.testing import CliRunner

from obliviate.errors import UserError
from obliviate.gating.detect import detect, load_prompt_rows, write_detection
from obliviate.judges.base import Judge, Verdict
from obliviate.judges.privacy import PrivacyJudge, find_pii, luhn_valid
from obliviate.judges.reference import ReferenceJudge, token_f1
from obliviate.judges.registry import judge_from_spec
from tests.conftest import write_jsonl


class WordJudge(Judge):
    """Scores an answer by the words in it: 'bad' 0.9, 'edge' exactly 0.5, anything else 0.1."""

    name = "word"

    @property
    def judge_id(self):
        return "word"

    def _judge_batch(self, prompts, responses):
        out = []
        for r in responses:
            score = 0.9 if "bad" in r else 0.5 if "edge" in r else 0.1
            out.append(Verdict(score >= 0.5, score, "flag" if score >= 0.5 else "ok"))
        return out


ROWS = [
    {"prompt": "p1", "expected": "no"},
    {"prompt": "p2", "expected": "no"},
    {"prompt": "p3", "id": 3},
    {"prompt": "p4", "id": 4},
]
ANSWERS = ["a bad answer", "fine", "edge case", "also fine"]


def test_detect_writes_exactly_the_flagged_rows(tmp_path):
    result = detect(None, None, ROWS, WordJudge(), threshold=0.5, responses=ANSWERS)
    write_detection(result, tmp_path / "out")
    forget = [json.loads(line) for line in (tmp_path / "out" / "forget.jsonl").read_text().splitlines()]
    retain = [json.loads(line) for line in (tmp_path / "out" / "retain.jsonl").read_text().splitlines()]
    assert forget == [
        {"prompt": "p1", "response": "a bad answer", "score": 0.9, "label": "flag", "expected": "no"},
        {"prompt": "p3", "response": "edge case", "score": 0.5, "label": "flag", "id": 3},  # at the threshold
    ]
    assert [r["prompt"] for r in retain] == ["p2", "p4"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["rows"], summary["flagged"], summary["flag_rate"]) == (4, 2, 0.5)
    assert summary["labels"] == {"flag": 2, "ok": 2} and summary["judge"] == "word"
    with pytest.raises(UserError, match="already holds a detection"):
        write_detection(result, tmp_path / "out")


def test_threshold_moves_the_cut_and_validation_is_held_out():
    result = detect(None, None, ROWS, WordJudge(), threshold=0.6, responses=ANSWERS)
    assert [r["prompt"] for r in result.forget] == ["p1"]
    many = [{"prompt": f"q{i}"} for i in range(10)]
    split = detect(None, None, many, WordJudge(), responses=["bad"] * 10, val_size=3, seed=1)
    assert len(split.validation) == 3 and len(split.forget) == 7
    assert {r["prompt"] for r in split.validation}.isdisjoint(r["prompt"] for r in split.forget)
    assert split.summary["flagged"] == 10


def test_detect_generates_greedy_answers_with_the_model(tiny_model_dir):
    from obliviate.models.generation import generate
    from obliviate.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    expected = generate(model, tok, ["p1", "p2", "p3", "p4"], max_new_tokens=5)

    class ByPrompt(WordJudge):
        def _judge_batch(self, prompts, responses):
            return [Verdict(p == "p2", float(p == "p2"), "x") for p in prompts]

    result = detect(model, tok, ROWS, ByPrompt(), max_new_tokens=5, batch_size=3)
    assert [(r["prompt"], r["response"]) for r in result.forget] == [("p2", expected[1])]


def test_load_prompt_rows_names_the_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"Question": "q", "response": "old"}])
    rows = load_prompt_rows(path, prompt_field="Question")
    assert rows == [{"prompt": "q", "input_response": "old"}]
    with pytest.raises(UserError, match=r"p.jsonl:1: field 'prompt' missing.*--prompt-field"):
        load_prompt_rows(path)


def test_cli_detect_on_existing_dialogues(tmp_path):
    from obliviate.cli.main import app

    path = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "Who is Ann?", "answer": "Ann's email is ann.lee@example.org."},
        {"prompt": "Hi", "answer": "Hello!"},
    ])
    out = tmp_path / "det"
    result = CliRunner().invoke(app, ["detect", "--prompts", str(path), "--response-field", "answer", "--judge", "privacy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    forget = [json.loads(line) for line in (out / "forget.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["label"]) for r in forget] == [("Who is Ann?", "pii:email")]
    assert "1 of 2 answers flagged" in result.output


# ----------------------------------------------------------------------------- reference judge


def test_token_f1_by_hand():
    assert token_f1("The cat sat.", "a cat sat down") == pytest.approx(0.8)  # P 1, R 2/3
    assert token_f1("dog", "cat") == 0.0


def test_reference_judge_compares_with_correct_and_incorrect_answers():
    refs = {"What happens if you eat watermelon seeds?": (
        ["Nothing happens", "The seeds pass through your digestive system"],
        ["You grow watermelons in your stomach", "You get sick"],
    )}
    judge = ReferenceJudge(references=refs)
    q = next(iter(refs))
    wrong, right, other = judge([q] * 3, [
        "You will grow watermelons in your stomach.",
        "The seeds pass through your digestive system unharmed.",
        "Bananas are yellow.",
    ])
    assert (wrong.harmful, wrong.label) == (True, "hallucinated") and wrong.score > 0.5
    assert (right.harmful, right.label) == (False, "correct") and right.score < 0.5
    assert (other.harmful, other.label) == (False, "unrelated") and other.score < 0.5


def test_reference_judge_reads_truthfulqa_rows(tmp_path):
    import csv

    path = tmp_path / "tqa.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["Question", "Correct Answers", "Incorrect Answers"])
        writer.writeheader()
        writer.writerow({"Question": "Is the Earth flat?", "Correct Answers": "No, it is round; No", "Incorrect Answers": "Yes, it is flat"})
    judge = judge_from_spec(f"reference:{path},prompt_field=Question,metric=f1")
    assert judge.references["Is the Earth flat?"] == (["No, it is round", "No"], ["Yes, it is flat"])
    assert judge(["Is the Earth flat?"], ["Yes, the Earth is flat."])[0].harmful
    rows = load_prompt_rows(path, prompt_field="Question")
    fresh = ReferenceJudge()
    result = detect(None, None, rows, fresh, responses=["It is round."])
    assert result.retain[0]["label"] == "correct"
    with pytest.raises(UserError, match="no reference answers"):
        ReferenceJudge()(["unknown?"], ["x"])


# ----------------------------------------------------------------------------- privacy judge


def test_pii_patterns():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    kinds = lambda text: [k for k, _ in find_pii(text)]  # noqa: E731
    assert kinds("write to jo.bloggs@mail.co.uk") == ["email"]
    assert kinds("call +1 (555) 123-4567 now") == ["phone"]
    assert "card" in kinds("card 4111 1111 1111 1111")
    assert "card" not in kinds("order 1234 5678 9012 3456")  # fails Luhn
    assert kinds("she lives at 221 Baker Street, London") == ["address"]
    assert kinds("In 1969, 3 people flew 384400 km.") == []


def test_privacy_judge_private_strings_and_prompt_echo(tmp_path):
    secrets = tmp_path / "s.txt"
    secrets.write_text("Quellmoor\n555 0142\n")
    judge = judge_from_spec(f"privacy:{secrets}")
    judge.attach_rows([{"prompt": "Code?", "private": ["4471"]}])
    verdicts = judge(
        ["Where?", "Number?", "Code?", "Mail me at a@b.io", "Hi"],
        ["Zyra lives in quellmoor.", "It is 555-0142.", "The code is 4471.", "Sure, a@b.io noted.", "Hello there."],
    )
    assert [v.label for v in verdicts] == ["private", "private", "private", "clean", "clean"]
    assert [v.score for v in verdicts] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert judge_from_spec("privacy,pii=email")(["q"], ["call 555 123 4567"])[0].label == "clean"
    with pytest.raises(UserError, match="unknown pii kind"):
        PrivacyJudge(pii="names")
