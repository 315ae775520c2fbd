"""Where a relative path in a run config points, old key names, and `config show`'s file check."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.config import load_config
from obliviate.errors import UserError


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """configs/run.yaml naming data/forget.jsonl (relative to the config file), and a second
    forget file in the folder the user works in."""
    (tmp_path / "configs" / "data").mkdir(parents=True)
    (tmp_path / "configs" / "data" / "forget.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.jsonl").write_text('{"prompt": "c", "response": "d"}\n')
    config = tmp_path / "configs" / "run.yaml"
    config.write_text("data:\n  forget: {path: data/forget.jsonl}\nmethod: {name: ga}\n")
    monkeypatch.chdir(work)
    return config, work


def test_a_path_inside_the_config_is_taken_from_the_config_files_folder(layout):
    config, _ = layout
    cfg = load_config(config)
    assert cfg.resolve_path(cfg.data.forget.path) == config.parent / "data" / "forget.jsonl"
    cfg.check_files()  # exists there, not in the working directory


def test_an_override_path_is_taken_from_the_current_directory(layout):
    config, work = layout
    cfg = load_config(config, ["data.forget.path=mine.jsonl"])
    assert Path(cfg.resolve_path(cfg.data.forget.path)) == work / "mine.jsonl"
    cfg.check_files()


def test_builtin_sets_and_model_aliases_given_as_overrides_stay_as_they_are(layout):
    config, _ = layout
    cfg = load_config(config, ["data.forget.path=builtin:benign_prompts", "model.name=smollm2-135m-instruct"])
    assert cfg.data.forget.path == "builtin:benign_prompts"
    assert cfg.model.name == "smollm2-135m-instruct"


@pytest.mark.parametrize(
    "override, old, new",
    [
        ("method.normal_weight=2", "method.normal_weight", "method.retain_weight"),
        ("method.answer_pool=x", "method.answer_pool", "data.random_answers"),
        ("data.normal={path: r.jsonl}", "data.normal", "data.retain"),
        ("method.early_stopping={every: 2}", "method.early_stopping", "top-level early_stopping"),
    ],
)
def test_old_keys_name_the_new_one(layout, override, old, new):
    config, _ = layout
    with pytest.raises(UserError) as err:
        load_config(config, [override])
    message = str(err.value)
    assert f"'{old}' was renamed" in message and new in message
    assert "\n" not in message


def test_old_key_in_a_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  forget: {path: f.jsonl}\nmethod:\n  name: distance_cluster\n  normal_weight: 2\n")
    with pytest.raises(UserError, match=rf"^{path}:5: 'method.normal_weight' was renamed; use method.retain_weight$"):
        load_config(path)


def test_config_show_stops_on_a_missing_data_file_with_its_line(tmp_path):
    from obliviate.cli.main import app

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  forget: {path: nothere.jsonl}\n")
    result = CliRunner().invoke(app, ["config", "show", "-c", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)
    assert str(result.exception) == f"{path}:2: data.forget.path: data file {tmp_path / 'nothere.jsonl'} does not exist"


def test_version_flag_prints_the_version():
    from obliviate.cli.main import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("obliviate ")
