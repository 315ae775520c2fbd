"""A full disk while the run writes its log, its final model or its summary is the one-line
StorageError (exit 4) naming the folder, as a full disk during a checkpoint is, never a traceback;
the final model's half-written temporary folder is removed."""

import errno

import pytest
import yaml

from obliviate.errors import StorageError
from obliviate.train import loop
from tests.test_cli_errors import run_cli


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def fail_log(monkeypatch):
    monkeypatch.setattr(loop, "append_jsonl", no_space)


def fail_summary(monkeypatch):
    real = loop.atomic_write_json

    def write(path, data):
        if str(path).endswith("train_summary.json"):
            no_space()
        return real(path, data)

    monkeypatch.setattr(loop, "atomic_write_json", write)


def fail_final_model(monkeypatch):
    from peft import PeftModel

    def half_written(self, folder, **kwargs):
        from pathlib import Path

        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
        no_space()

    monkeypatch.setattr(PeftModel, "save_pretrained", half_written)


WRITERS = [
    ("train_log.jsonl", fail_log, lambda run: run),
    ("train_summary.json", fail_summary, lambda run: run),
    ("the final model", fail_final_model, lambda run: run / "model"),
]


@pytest.mark.parametrize("what,fail,folder", WRITERS, ids=[w[0] for w in WRITERS])
def test_a_full_disk_while_writing_the_run_is_one_line_exit_4(what, fail, folder, tmp_path, tiny_model_dir, data_files, monkeypatch, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": str(tiny_model_dir)},
        "data": {"forget": {"path": str(data_files["forget"])}, "retain": {"path": str(data_files["retain"])}},
        "train": {"max_steps": 1, "lr": 1e-3, "save_every": 0},
    }))
    run = tmp_path / "run"
    fail(monkeypatch)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config, "--run-dir", run, "--no-progress")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == StorageError.exit_code == 4, err
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith(f"error: could not write {what} in {folder(run)} (No space left on device); free space in {folder(run)}")
    assert not (run / ".model.tmp").exists()  # no half-written model beside the run
    if what == "the final model":
        assert not (run / "model").exists()


def test_a_full_disk_while_writing_a_diverged_summary_is_a_storage_error(make_config, tmp_path, monkeypatch):
    from tests.test_error_paths import _poison_loss_from_call

    _poison_loss_from_call(monkeypatch, 2)  # step 2 of 4 is NaN: the only summary written is the diverged one
    fail_summary(monkeypatch)
    with pytest.raises(StorageError, match=r"could not write train_summary\.json in .*free space in"):
        loop.run_training(make_config("train.max_steps=4"), tmp_path / "run", progress=False, log=lambda m: None)
    assert not (tmp_path / "run" / "train_summary.json").exists()


def test_resume_drops_a_log_line_torn_by_a_kill(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')  # killed while appending step 4
    loop._truncate_log(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
