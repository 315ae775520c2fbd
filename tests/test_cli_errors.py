"""Bad input gets one clear line, exit code 2, and loses nothing."""

import json
import sys

import pytest
import yaml

from tests.conftest import FORGET, write_jsonl


def run_cli(monkeypatch, capsys, *args):
    from obliviate.cli import main as cli

    monkeypatch.setattr(sys, "argv", ["obliviate", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


@pytest.fixture
def config_file(tmp_path, tiny_model_dir, data_files):
    def make(**sections):
        data = {
            "model": {"name": str(tiny_model_dir)},
            "data": {"forget": {"path": str(data_files["forget"])}, "retain": {"path": str(data_files["retain"])}},
            "train": {"max_steps": 2, "lr": 1e-3, "save_every": 0},
        }
        for key, value in sections.items():
            data.setdefault(key, {}).update(value)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def one_line_error(code, err):
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


CASES = [
    ("missing data file", {"data": {"forget": {"path": "nowhere.jsonl"}}}, [], "nowhere.jsonl does not exist"),
    ("unknown method", {"method": {"name": "ga_mismtch_kl"}}, [], "did you mean 'ga_mismatch_kl'"),
    ("unknown key", {"train": {"max_step": 3}}, [], "unknown key 'max_step' in train; did you mean 'max_steps'"),
    ("negative lr", {}, ["train.lr=-0.1"], "train.lr"),
    ("zero batch", {}, ["train.batch_size=0"], "train.batch_size"),
    ("zero steps", {}, ["train.max_steps=0"], "train.max_steps"),
    ("missing model", {"model": {"name": "/no/such/model"}}, [], "/no/such/model does not exist"),
    ("bad method option", {"method": {"name": "ga", "forget_wieght": 2}}, [], "did you mean 'forget_weight'"),
]


@pytest.mark.parametrize("name,sections,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_line_exit_2(name, sections, overrides, expected, config_file, monkeypatch, capsys, tmp_path):
    path = config_file(**sections)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", path, "--run-dir", tmp_path / "run", *overrides)
    line = one_line_error(code, err)
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_error_names_the_config_line(config_file, monkeypatch, capsys, tmp_path):
    path = config_file(train={"lr": -1})
    code, err = run_cli(monkeypatch, capsys, "config", "show", "-c", path)
    line = one_line_error(code, err)
    lr_line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "lr:" in text)
    assert f"{path}:{lr_line}: train.lr" in line


def test_row_missing_field_names_file_line_and_field(config_file, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(FORGET[0]) + "\n" + json.dumps({"prompt": "q", "answer": "a"}) + "\n")
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(data={"forget": {"path": str(bad)}}), "--run-dir", tmp_path / "r")
    line = one_line_error(code, err)
    assert f"{bad}:2: field 'response' missing (row has: prompt, answer); set data.forget.response_field" in line


def test_csv_row_errors_give_the_line(config_file, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,response\nq1,a1\nq2,\n")
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(data={"forget": {"path": str(bad)}}), "--run-dir", tmp_path / "r")
    assert f"{bad}:3: field 'response' must be a non-empty string" in one_line_error(code, err)


def test_empty_forget_set(config_file, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(data={"forget": {"path": str(empty)}}), "--run-dir", tmp_path / "r")
    assert "is empty" in one_line_error(code, err)


def test_unreadable_data_file(config_file, tmp_path, monkeypatch, capsys):
    binary = tmp_path / "forget.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(data={"forget": {"path": str(binary)}}), "--run-dir", tmp_path / "r")
    assert str(binary) in one_line_error(code, err)


def test_existing_run_folder_is_refused_and_untouched(config_file, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text("precious\n")
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(), "--run-dir", run)
    assert "already exists" in one_line_error(code, err)
    assert (run / "train_log.jsonl").read_text() == "precious\n"


def test_long_prompts_are_truncated_with_a_counted_warning(config_file, tmp_path, monkeypatch, capsys):
    long_rows = [{"prompt": "word " * 200, "response": "short"}] * 2 + FORGET
    path = write_jsonl(tmp_path / "long.jsonl", long_rows)
    code, err = run_cli(
        monkeypatch, capsys, "unlearn", "-c", config_file(data={"forget": {"path": str(path)}, "max_length": 128}),
        "--run-dir", tmp_path / "r", "--no-progress",
    )
    assert code == 0, err
    assert "2 of 6 rows of data.forget have prompts longer than data.max_length=128" in err


def test_successful_run_and_config_show(config_file, tmp_path, monkeypatch, capsys):
    path = config_file()
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", path, "--run-dir", tmp_path / "ok", "--no-progress")
    assert code == 0, err
    assert (tmp_path / "ok" / "model").exists()
    code, _ = run_cli(monkeypatch, capsys, "config", "show", "-c", path, "method.num_random_answers=3")
    assert code == 0


def test_demo_trains_in_fp32_unless_asked_and_refuses_a_bad_precision_before_any_work(monkeypatch, capsys, tmp_path):
    from obliviate.scenarios.harmful import load_recipe

    assert load_recipe().precision == "fp32"  # its figures were measured in fp32
    out = tmp_path / "demo"
    code, err = run_cli(monkeypatch, capsys, "demo", "--out", out, "precision=fp16")
    assert code == 2
    assert err.strip() == "error: setting 'precision=fp16': precision: Input should be 'auto', 'fp32' or 'bf16' (got 'fp16')"
    assert not out.exists()  # nothing started, nothing written
