"""Run folders are only ever obliviate's: a marker, a careful --overwrite, inputs kept apart, a lock."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from obliviate.errors import UserError
from obliviate.train.run_dir import MARKER_FILE, PROJECT_FILES, PROJECT_FOLDERS, prepare_run_dir, release_run_dir
from obliviate.train.run_lock import LOCK_FILE, holds_lock
from tests.conftest import FORGET, RETAIN, write_jsonl
from tests.test_cli_errors import one_line_error, run_cli


@pytest.fixture
def config_file(tmp_path, tiny_model_dir, data_files):
    def make(model=None, **data_paths):
        paths = {"forget": str(data_files["forget"]), "retain": str(data_files["retain"]), **data_paths}
        data = {
            "model": {"name": str(model or tiny_model_dir)},
            "data": {role: {"path": str(path)} for role, path in paths.items()},
            "train": {"max_steps": 2, "lr": 1e-3, "save_every": 0},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return make


def snapshot(folder):
    """Every file under ``folder`` with its bytes (lock files aside)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(LOCK_FILE)
    }


def marked_run(folder):
    """A run folder as obliviate leaves it: marker, log, a checkpoint, a model."""
    prepare_run_dir(folder)
    release_run_dir(folder)
    (folder / "train_log.jsonl").write_text('{"step": 1}\n')
    (folder / "checkpoints" / "step-1").mkdir(parents=True)
    (folder / "checkpoints" / "step-1" / "optimizer.pt").write_bytes(b"opt")
    (folder / "model").mkdir()
    (folder / "model" / "adapter_config.json").write_text("{}")
    return folder


# ------------------------------------------------------------------------------------ the marker


def test_a_new_run_folder_gets_a_marker_with_version_and_creation_time(tmp_path):
    folder = prepare_run_dir(tmp_path / "run")
    release_run_dir(folder)
    marker = json.loads((folder / MARKER_FILE).read_text())
    assert marker["obliviate_run"] == 1 and marker["created"][:2] == "20"


def test_an_empty_folder_without_marker_is_fine(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    prepare_run_dir(folder)
    release_run_dir(folder)
    assert (folder / MARKER_FILE).is_file()


def test_overwrite_removes_only_what_obliviate_wrote_and_keeps_the_users_files(tmp_path):
    folder = marked_run(tmp_path / "run")
    (folder / "notes.txt").write_text("my notes")
    (folder / "mine").mkdir()
    (folder / "mine" / "weights.bin").write_bytes(b"\x00\x01")
    (folder / ".config.yaml.x1y2.tmp").write_text("half")  # a torn atomic write of obliviate's
    prepare_run_dir(folder, overwrite=True)
    release_run_dir(folder)
    assert (folder / "notes.txt").read_text() == "my notes"
    assert (folder / "mine" / "weights.bin").read_bytes() == b"\x00\x01"
    for gone in ("train_log.jsonl", "checkpoints", "model", ".config.yaml.x1y2.tmp"):
        assert not (folder / gone).exists(), gone
    assert (folder / MARKER_FILE).is_file()


def test_overwrite_clears_a_demos_stage_folders_by_the_same_rules(tmp_path):
    demo = marked_run(tmp_path / "demo")
    stage = marked_run(demo / "unlearn")
    (stage / "keep.md").write_text("mine")
    prepare_run_dir(demo, overwrite=True)
    release_run_dir(demo)
    assert not (stage / "train_log.jsonl").exists() and not (stage / "model").exists()
    assert (stage / "keep.md").read_text() == "mine"


def test_a_folder_without_marker_is_refused_even_with_overwrite(tmp_path, config_file, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "train_log.jsonl").write_text("not obliviate's\n")
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8jpeg")
    before = snapshot(folder)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(), "--run-dir", folder, "--overwrite")
    line = one_line_error(code, err)
    assert "not an obliviate run folder" in line and "--run-dir" in line
    assert snapshot(folder) == before
    with pytest.raises(UserError, match="not an obliviate run folder"):
        prepare_run_dir(folder, overwrite=True)
    assert snapshot(folder) == before and not (folder / MARKER_FILE).exists()


def test_the_project_names_cover_what_the_project_writes():
    from obliviate.methods.npo import CACHE_FILE
    from obliviate.report.html import PLOTS_DIR, REPORT_NAME

    assert {CACHE_FILE, REPORT_NAME}.issubset(PROJECT_FILES) and PLOTS_DIR in PROJECT_FOLDERS


def test_cli_overwrite_of_its_own_run_keeps_a_users_file(tmp_path, config_file, monkeypatch, capsys):
    run = tmp_path / "run"
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(), "--run-dir", run, "--no-progress")
    assert code == 0, err
    assert (run / MARKER_FILE).is_file() and not holds_lock(run)  # the lock goes with the run
    (run / "analysis.ipynb").write_text("{}")
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(), "--run-dir", run, "--overwrite", "--no-progress")
    assert code == 0, err
    assert (run / "analysis.ipynb").read_text() == "{}" and (run / "model").is_dir()


def test_the_api_overwrites_its_run_with_rows_given_in_memory(tmp_path, tiny_model_dir):
    import obliviate

    fast = {"lr": 1e-2, "max_steps": 1, "batch_size": 2, "save_every": 0, "seed": 0}
    folder = tmp_path / "run"
    for _ in range(2):  # the second time its own data/ files lie in the folder: not an input to refuse
        obliviate.unlearn(model=str(tiny_model_dir), forget=FORGET, retain=RETAIN, run_dir=folder, train=fast,
                          overwrite=True, progress=False, log=None)
    assert (folder / "data" / "forget.jsonl").is_file() and (folder / MARKER_FILE).is_file()


def test_the_in_context_baseline_marks_its_folder(tmp_path, tiny_model_dir):
    import obliviate

    folder = obliviate.in_context_baseline(str(tiny_model_dir), forget=["What is the secret code?"], run_dir=tmp_path / "ic")
    assert (folder / MARKER_FILE).is_file() and not holds_lock(folder)
    (folder / "mine.txt").write_text("x")
    obliviate.in_context_baseline(str(tiny_model_dir), forget=["Where does Zyra live?"], run_dir=folder, overwrite=True)
    assert (folder / "mine.txt").read_text() == "x"


# ------------------------------------------------------------------------ inputs kept apart


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir):
    """A model folder that even carries a run marker, so only the input check can save it."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "my-model")
    (folder / MARKER_FILE).write_text('{"obliviate_run": 1}\n')
    return folder


def test_the_model_folder_as_run_folder_is_refused_and_survives(model_copy, config_file, monkeypatch, capsys):
    before = snapshot(model_copy)
    code, err = run_cli(
        monkeypatch, capsys, "unlearn", "-c", config_file(), f"model.name={model_copy}", "--run-dir", model_copy,
        "--overwrite",
    )
    line = one_line_error(code, err)
    assert "model.name" in line and "input" in line
    assert snapshot(model_copy) == before


def test_a_run_folder_inside_the_model_folder_is_refused(model_copy, config_file, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(model=model_copy), "--run-dir", model_copy / "run")
    assert "lies inside" in one_line_error(code, err)
    assert not (model_copy / "run").exists()


def test_a_data_file_inside_the_run_folder_is_refused_and_survives(tmp_path, config_file, monkeypatch, capsys):
    run = marked_run(tmp_path / "run")
    (run / "data").mkdir()
    forget = write_jsonl(run / "data" / "forget.jsonl", FORGET)  # data/ is a folder --overwrite clears
    before = snapshot(run)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(forget=forget), "--run-dir", run, "--overwrite")
    line = one_line_error(code, err)
    assert "data.forget.path" in line and "holds" in line
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------- run names


@pytest.mark.parametrize("name", ["../x", "/ABS/x", "a\\b", ".."])
def test_a_run_name_is_one_folder_name(name, tmp_path, config_file, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    name = name.replace("/ABS", str(tmp_path / "abs"))
    path = config_file()
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", path, f"run.name={name}")
    line = one_line_error(code, err)
    assert "run.name" in line and "--run-dir" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not any(work.iterdir())


# ----------------------------------------------------------------------- writable, before loading


@pytest.fixture
def no_model_loads(monkeypatch):
    import obliviate.models.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the run folder was checked")

    monkeypatch.setattr(loading, "load_model_and_tokenizer", refuse)


def test_an_output_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path, config_file, monkeypatch, capsys,
                                                                          no_model_loads):
    blocker = tmp_path / "runs"
    blocker.write_text("a file")
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(), f"run.output_dir={blocker}")
    assert "is a file, not a folder" in one_line_error(code, err)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(), "--run-dir", blocker)
    assert "is a file, not a folder" in one_line_error(code, err)
    assert blocker.read_text() == "a file"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_parent_is_refused_before_the_model_loads(tmp_path, config_file, monkeypatch, capsys,
                                                                no_model_loads):
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(), "--run-dir", parent / "run")
        assert "is not writable" in one_line_error(code, err)
    finally:
        parent.chmod(0o700)


# ----------------------------------------------------------------------------------- the lock

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from obliviate.train.run_lock import lock_run_dir
    lock_run_dir(Path(sys.argv[1]))
    print("locked", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def held(tmp_path):
    """Hold a folder's lock from another process until the test ends; yields its pid."""
    processes = []

    def hold(folder):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        processes.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc.pid

    yield hold
    for proc in processes:
        proc.stdin.close()
        proc.wait(timeout=30)


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_folder_another_process_holds_is_refused_naming_its_pid(flag, tmp_path, config_file, monkeypatch, capsys, held):
    run = marked_run(tmp_path / "run")
    pid = held(run)
    before = snapshot(run)
    code, err = run_cli(monkeypatch, capsys, "unlearn", "-c", config_file(), "--run-dir", run, flag)
    line = one_line_error(code, err)
    assert "in use" in line and f"pid {pid}" in line
    assert snapshot(run) == before and (run / "train_log.jsonl").read_text() == '{"step": 1}\n'


def test_overwrite_never_clears_a_stage_another_process_holds(tmp_path, held):
    demo = marked_run(tmp_path / "demo")
    stage = marked_run(demo / "unlearn")
    pid = held(stage)
    before = snapshot(demo)
    with pytest.raises(UserError, match=f"pid {pid}"):
        prepare_run_dir(demo, overwrite=True)
    assert snapshot(demo) == before and (stage / LOCK_FILE).is_file()
    assert not holds_lock(demo)  # the refused call let its own lock go


def test_only_rank_zero_of_a_distributed_launch_checks_the_folder(tmp_path, monkeypatch):
    """Rank 1 starts while rank 0 is making the folder: it must not refuse rank 0's half-made folder."""
    from obliviate.train.run_dir import check_run_dir

    half_made = tmp_path / "run"
    half_made.mkdir()
    (half_made / "config.yaml").write_text("x: 1\n")  # no marker yet
    monkeypatch.setenv("RANK", "1")
    check_run_dir(half_made)  # follows rank 0
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="not an obliviate run folder"):
        check_run_dir(half_made)
