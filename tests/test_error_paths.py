"""Failures that used to end in a traceback or a misleading line: each is one line with the right
exit code, and a diverged run says honestly which checkpoint holds finite-loss weights."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from obliviate.errors import TrainingDiverged, UserError
from obliviate.methods import losses
from obliviate.train.loop import run_training
from tests.conftest import FORGET
from tests.test_cli_errors import one_line_error, run_cli


def write_config(path, tiny_model_dir, data_files, **train):
    data = {
        "model": {"name": str(tiny_model_dir)},
        "data": {"forget": {"path": str(data_files["forget"])}, "retain": {"path": str(data_files["retain"])}},
        "train": {"max_steps": 2, "lr": 1e-3, "save_every": 0, "seed": 0, **train},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class _Pickled:
    """Not a tensor or a plain container: torch.load(weights_only=True) refuses it."""


# ----------------------------------------------------------------------------- 1. config files


CONFIG_TEXTS = [
    ("top-level list", b"- model\n- data\n", ":", "the top level must be a mapping of sections", "not a list"),
    ("top-level string", b"just words\n", ":", "the top level must be a mapping of sections", "not a str"),
    ("latin-1 bytes", b"model:\n  name: caf\xe9\n", ":2:", "not UTF-8 text", ""),
    ("alias in its own sequence", b"data: &loop [*loop]\n", ":1:", "contains an alias to itself", ""),
    ("alias in its own mapping", b"run:\n  name: x\ndata: &loop\n  forget: *loop\n", ":4:", "contains an alias to itself", ""),
]


@pytest.mark.parametrize("command", [("unlearn", "--config"), ("config", "show", "-c")], ids=["unlearn", "config-show"])
@pytest.mark.parametrize("name,content,where,expected,also", CONFIG_TEXTS, ids=[c[0] for c in CONFIG_TEXTS])
def test_unreadable_config_is_one_line_exit_2(name, content, where, expected, also, command, tmp_path, monkeypatch, capsys):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    code, err = run_cli(monkeypatch, capsys, *command, path, *(["--run-dir", tmp_path / "run"] if command[0] == "unlearn" else []))
    line = one_line_error(code, err)
    assert f"{path}{where}" in line and expected in line and also in line
    assert not (tmp_path / "run").exists()


def test_anchors_reused_without_a_loop_still_load(tmp_path, tiny_model_dir, data_files):
    from obliviate.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(
        f"model: {{name: {tiny_model_dir}}}\n"
        f"data:\n  forget: &set {{path: {data_files['forget']}}}\n  retain: *set\n"
        "train: &t {lr: 0.001, max_steps: 2}\n"
    )
    config = load_config(path)
    assert config.data.retain.path == str(data_files["forget"]) and config.train.lr == 0.001


# ----------------------------------------------------------------------------- 2. finite numbers


@pytest.mark.parametrize("key", ["lr", "max_grad_norm", "weight_decay", "epochs", "lora.alpha"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_train_numbers_are_refused_naming_the_field(key, value, tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    path = write_config(tmp_path / "config.yaml", tiny_model_dir, data_files)
    code, err = run_cli(monkeypatch, capsys, "config", "show", "-c", path, f"train.{key}={value}")
    line = one_line_error(code, err)
    assert f"train.{key}:" in line
    # nan already failed the "> 0" bounds; inf passed them. Both now fail as non-finite.
    assert "finite number" in line


def test_infinite_lr_in_the_file_names_its_line(tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(write_config(path, tiny_model_dir, data_files).read_text().replace("lr: 0.001", "lr: .inf"))
    lr_line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "lr:" in text)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", path, "--run-dir", tmp_path / "run")
    assert f"{path}:{lr_line}: train.lr: Input should be a finite number" in one_line_error(code, err)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 3. disk full

# Runs the real CLI in a child process whose file size limit drops to 1 KiB just before the
# checkpoint of step 2 is written (SIGXFSZ ignored, so the write fails with EFBIG instead of
# killing the process): what a full disk looks like to the writer.
_FULL_DISK_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    from obliviate.train import checkpoint

    real_save = checkpoint.save_checkpoint

    def save_then_fill_the_disk(folder, step, *args, **kwargs):
        if step == 2:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return real_save(folder, step, *args, **kwargs)

    checkpoint.save_checkpoint = save_then_fill_the_disk
    from obliviate.cli.main import main

    sys.argv = ["obliviate", "unlearn", "-c", sys.argv[1], "--run-dir", sys.argv[2], "--no-progress"]
    main()
""")


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX resource limits")
def test_full_disk_during_a_checkpoint_is_one_line_exit_4_and_cleans_up(tmp_path, tiny_model_dir, data_files):
    from safetensors.torch import load_file

    config = write_config(tmp_path / "config.yaml", tiny_model_dir, data_files, max_steps=4, save_every=1, keep_checkpoints=5)
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_SCRIPT, str(config), str(run)],
        capture_output=True, text=True, timeout=300,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr
    assert f"checkpoint of step 2 in {run / 'checkpoints'}" in errors[0]
    assert "free space" in errors[0]
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-1"]  # no .tmp-step-2 left behind
    assert load_file(str(checkpoints / "step-1" / "trainable.safetensors"))  # the earlier one is whole
    assert torch.load(checkpoints / "step-1" / "trainer_state.pt", weights_only=True)["step"] == 1


def test_a_failed_checkpoint_write_leaves_no_temporary_folder(make_config, tmp_path, monkeypatch):
    import errno

    from obliviate.errors import StorageError
    from obliviate.train import checkpoint

    real_save = torch.save

    def no_space(obj, file, *args, **kwargs):
        if "trainer_state" in str(file):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    with pytest.raises(StorageError, match=r"No space left on device.*free space in"):
        run_training(make_config("train.save_every=1"), tmp_path / "run", progress=False, log=lambda m: None)
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []
    assert StorageError.exit_code not in (UserError.exit_code, TrainingDiverged.exit_code)


# ----------------------------------------------------------------------------- 4. refused pickles


def test_pickled_object_in_a_checkpoint_is_refused_by_name(tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, data_files, max_steps=3, save_every=1)
    run = tmp_path / "run"
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config, "--run-dir", run, "--no-progress")
    assert code == 0, err
    poisoned = run / "checkpoints" / "step-2" / "optimizer.pt"
    torch.save({"state": {}, "param_groups": [], "extra": _Pickled()}, poisoned)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config, "--run-dir", run, "--resume", "--no-progress")
    line = one_line_error(code, err)
    assert line.startswith(f"error: {poisoned}: holds pickled Python objects") and "will not load it" in line
    assert "weights_only" not in err


@pytest.fixture
def pickled_adapter(make_config, tmp_path):
    """A real LoRA adapter folder whose weights were re-saved as a .bin holding a foreign object."""
    from safetensors.torch import load_file

    run_training(make_config("train.max_steps=1"), tmp_path / "adapter_run", progress=False, log=lambda m: None)
    source = tmp_path / "adapter_run" / "model"
    folder = tmp_path / "pickled_adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text((source / "adapter_config.json").read_text())
    weights = {**load_file(str(source / "adapter_model.safetensors")), "extra": _Pickled()}
    torch.save(weights, folder / "adapter_model.bin")
    return folder


def test_pickled_adapter_is_refused_when_loaded(pickled_adapter):
    from obliviate.models.loading import load_trained

    with pytest.raises(UserError) as info:
        load_trained(pickled_adapter)
    message = str(info.value)
    assert message.startswith(f"{pickled_adapter / 'adapter_model.bin'}: holds pickled Python objects")
    assert "weights_only" not in message and "\n" not in message


def test_pickled_adapter_is_refused_as_init_from(pickled_adapter, tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, data_files)
    code, err = run_cli(
        monkeypatch, capsys, "unlearn", "-c", config, "--run-dir", tmp_path / "run", f"train.lora.init_from={pickled_adapter}"
    )
    assert f"{pickled_adapter / 'adapter_model.bin'}: holds pickled Python objects" in one_line_error(code, err)
    assert "weights_only" not in err


# ----------------------------------------------------------------------------- 5. divergence


def _poison_loss_from_call(monkeypatch, first_bad_call: int) -> None:
    calls = {"n": 0}
    real = losses.gradient_ascent

    def poisoned(logits, labels):
        calls["n"] += 1
        value = real(logits, labels)
        return value * float("nan") if calls["n"] >= first_bad_call else value

    monkeypatch.setattr(losses, "gradient_ascent", poisoned)


def test_diverged_run_summary_names_the_last_finite_checkpoint(make_config, tmp_path, monkeypatch):
    _poison_loss_from_call(monkeypatch, 4)  # one call per step: steps 1-3 finite, step 4 NaN
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        run_training(
            make_config("train.save_every=1", "train.max_steps=6", "train.keep_checkpoints=5"), run,
            progress=False, log=lambda m: None,
        )
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["stop_reason"] == "diverged" and summary["diverged_at_step"] == 4 and summary["steps"] == 3
    # step-3 holds the weights step 4's NaN loss was computed on; step-2's gave step 3 a finite loss.
    assert summary["last_finite_checkpoint_step"] == 2
    assert summary["last_finite_checkpoint"] == os.path.join("checkpoints", "step-2")
    assert summary["non_finite"]["total"] == "nan"
    message = str(info.value)
    assert "last good checkpoint" not in message
    assert f"finite-loss weights is {run / 'checkpoints' / 'step-2'} (step 2)" in message
    assert f"{run / 'checkpoints' / 'step-3'} holds the weights step 4 started from" in message


def test_divergence_before_any_finite_checkpoint_names_none(make_config, tmp_path, monkeypatch, capsys):
    _poison_loss_from_call(monkeypatch, 2)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="no checkpoint with finite-loss weights"):
        run_training(make_config("train.save_every=1", "train.max_steps=4"), run, progress=False, log=lambda m: None)
    summary = json.loads((run / "train_summary.json").read_text())
    assert (summary["stop_reason"], summary["diverged_at_step"]) == ("diverged", 2)
    assert summary["last_finite_checkpoint"] is None and summary["last_finite_checkpoint_step"] is None


# ----------------------------------------------------------------------------- 6. data files


def _unlearn_with_forget(path, tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, data_files)
    return run_cli(
        monkeypatch, capsys, "unlearn", "-c", config, "--run-dir", tmp_path / "run", f"data.forget.path={path}"
    )


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_non_utf8_data_file_gives_the_line(suffix, tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    bad = tmp_path / f"forget.{suffix}"
    if suffix == "jsonl":
        good = "".join(json.dumps(row) + "\n" for row in FORGET[:3]).encode()
        bad.write_bytes(good + b'{"prompt": "caf\xe9", "response": "x"}\n')
    else:
        bad.write_bytes(b"prompt,response\nq1,a1\nq2,a2\nq3,a3\ncaf\xe9,a4\n")
    code, err = _unlearn_with_forget(bad, tmp_path, tiny_model_dir, data_files, monkeypatch, capsys)
    line = one_line_error(code, err)
    assert f"{bad}:{4 if suffix == 'jsonl' else 5}: not UTF-8 text" in line
    assert "position" not in line


def test_short_csv_row_is_reported_as_short(tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    bad = tmp_path / "forget.csv"
    bad.write_text("prompt,response\nq1,a1\nq2\nq3,a3\n")
    code, err = _unlearn_with_forget(bad, tmp_path, tiny_model_dir, data_files, monkeypatch, capsys)
    line = one_line_error(code, err)
    assert f"{bad}:3: short row: 1 cell(s) where the header (prompt, response) has 2" in line
    assert "missing" not in line


def test_long_csv_row_is_reported_as_long(tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    bad = tmp_path / "forget.csv"
    bad.write_text("prompt,response\nq1,a1\nq2,a2,stray\n")
    code, err = _unlearn_with_forget(bad, tmp_path, tiny_model_dir, data_files, monkeypatch, capsys)
    assert f"{bad}:3: long row: 3 cell(s)" in one_line_error(code, err)


def test_csv_with_quoted_commas_and_blank_lines_still_loads(tmp_path):
    from obliviate.data.loaders import load_examples

    path = tmp_path / "ok.csv"
    path.write_text('prompt,response,topic\n"Where, exactly?","Here, there.",geo\n\nq2,a2,misc\n')
    examples = load_examples(path)
    assert [(e.prompt, e.response, e.extra) for e in examples] == [
        ("Where, exactly?", "Here, there.", {"topic": "geo"}), ("q2", "a2", {"topic": "misc"}),
    ]
