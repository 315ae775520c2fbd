"""The contract every registered method keeps, checked for each one without a test of its own.

Parametrised over ``available_methods()`` when the tests are collected, so a method is tested
here as soon as it registers. On the tiny model, for each method, with LoRA and with full
fine-tuning:

* its terms are finite scalars and their weighted sum is ``loss().total``;
* backpropagating the terms one by one (what the loop does in one process) gives the gradient
  of one backward pass of the total (what it does under several processes);
* a run interrupted after a checkpoint and resumed ends with the weights and the logged losses
  of an uninterrupted run;
* two processes with batch b end where one process with batch 2b ends (the README's promise;
  one ``torchrun`` launch trains every method in turn, through the ``obliviate unlearn`` command).

A method reads the reference model only if it declares ``needs_reference`` and a retain set only
if it declares ``needs_retain``: it gets neither otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from obliviate.methods import available_methods, build_method, get_method_class
from tests.conftest import FORGET, RETAIN, write_jsonl

REPO = Path(__file__).resolve().parents[1]
METHODS = sorted(available_methods())
MODES = ("lora", "full")

# What a method needs beyond its default options and the shared rows (forget: FORGET; retain:
# RETAIN when it declares needs_retain; random answers: the retain responses). A method absent
# here runs on that default path; add an entry only for data it cannot run without, or to reach
# a code path its defaults skip.
SPECIAL: dict[str, dict] = {
    # two random answers per forget prompt keep the mismatch group small
    "ga_mismatch_kl": {"options": {"num_random_answers": 2}},
    # Half the rows carry their own expected outputs (the rest fall back to the templates), and
    # two are drawn per prompt each step: the seeded draw must survive a resume and be the same
    # on every process.
    "distance_cluster": {
        "options": {"expected_per_prompt": 2, "num_clusters": 2},
        "forget": [
            {**row, "expected": ["I would rather not say.", "That is not something I can share."]} if i % 2 == 0 else row
            for i, row in enumerate(FORGET)
        ],
    },
}


def options(name: str) -> dict:
    return dict(SPECIAL.get(name, {}).get("options", {}))


def forget_rows(name: str) -> list[dict]:
    return SPECIAL.get(name, {}).get("forget", FORGET)


def run_config(name: str, mode: str, folder: Path, **train) -> dict:
    """A run config (as a mapping) of method ``name`` on the tiny model; ``train`` keys override."""
    cls = get_method_class(name)
    data = {"forget": {"path": str(write_jsonl(folder / f"forget-{name}.jsonl", forget_rows(name)))}}
    if cls.needs_retain:
        data["retain"] = {"path": str(write_jsonl(folder / "retain.jsonl", RETAIN))}
    data["random_answers"] = {"path": str(write_jsonl(folder / "answers.jsonl", RETAIN))}
    return {
        "model": {"name": str(folder / "model")},
        "data": data,
        "method": {"name": name, **options(name)},
        # fp32: the contract is about the loop's arithmetic, not rounding, and bf16 autocast
        # (what "auto" picks on a CPU with bf16 instructions) is several times slower on a model this small.
        "train": {
            "lr": 1e-2, "max_steps": 4, "batch_size": 2, "save_every": 0, "seed": 0, "precision": "fp32",
            **train, "lora": {"enabled": mode == "lora", **train.get("lora", {})},
        },
    }


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: the tiny model's products are too small to share out,
    and two threads that wait on each other for every one of them ran these tests five times
    slower on two cores shared with other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir) -> Path:
    """A folder with the tiny model at ``model/`` (a link to the session's copy) for run configs."""
    folder = tmp_path_factory.mktemp("contract")
    (folder / "model").symlink_to(tiny_model_dir, target_is_directory=True)
    return folder


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor the run saved in ``model/`` (the adapter under LoRA, all weights otherwise)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted((run_dir / "model").glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    assert tensors, f"no weights in {run_dir / 'model'}"
    return tensors


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def assert_trained(run_dir: Path, mode: str, tiny_model_dir: Path) -> None:
    """Training changed the saved weights (so the comparisons are not between two untouched models)."""
    saved = weights(run_dir)
    if mode == "lora":  # B starts at zero
        moved = max(t.abs().max().item() for k, t in saved.items() if "lora_B" in k)
    else:
        start = load_file(str(tiny_model_dir / "model.safetensors"))
        moved = max((saved[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3, f"{run_dir}: training left the weights where they started"


def quiet(message: str) -> None:
    pass


# ----------------------------------------------------------------------------- the loss itself


def prepared(name: str, mode: str):
    """(method, model, reference, batch) set up as the loop sets them up, on the first micro-batch.

    The reference differs from the trained model (random LoRA B, or another random model as the
    frozen copy), so a KL or distance term has a gradient at the first step too.
    """
    from obliviate.config import load_config
    from obliviate.data.examples import Example
    from obliviate.methods.base import Reference
    from obliviate.testing import tiny_model, tiny_tokenizer
    from obliviate.train.loop import Encoder, TrainData, _micro_batch, attach_lora

    method = build_method(name, options(name))
    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer), seed=1)
    frozen = None
    if mode == "lora":
        config = load_config(None, data={"data": {"forget": {"path": "unused.jsonl"}}})
        model = attach_lora(model, config, seed=0)
        if config.train.lora.fused:
            from obliviate.models.lora_fused import fuse_lora_layers

            fuse_lora_layers(model)
        with torch.no_grad():
            for key, param in model.named_parameters():
                if "lora_B" in key:
                    param.normal_(0, 0.3)
    elif method.needs_reference:
        frozen = tiny_model(len(tokenizer), seed=2).eval().requires_grad_(False)
    model.train()
    reference = Reference(model, frozen) if method.needs_reference else None

    def examples(rows):
        return [Example(r["prompt"], r["response"], {k: v for k, v in r.items() if k not in ("prompt", "response")}) for r in rows]

    data = TrainData(
        forget=examples(forget_rows(name)),
        retain=examples(RETAIN) if method.needs_retain else None,
        random_answers=[r["response"] for r in RETAIN],
    )
    encoder = Encoder(tokenizer, 256, "auto")
    device = torch.device("cpu")
    method.setup(model, reference, {"tokenizer": tokenizer, "encoder": encoder, "data": data, "device": device})
    groups = _micro_batch(method, data, 0, 2, 1, 0, seed=0)
    batch = {group: encoder.batch(rows, device) for group, rows in groups.items() if rows}
    return method, model, reference, batch


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", METHODS)
def test_terms_are_finite_and_sum_to_the_loss(name, mode):
    from obliviate.methods.base import LossTerm

    method, model, reference, batch = prepared(name, mode)
    terms = list(method.terms(model, batch, reference))
    assert terms, f"{name} yields no loss term"
    names = [term.name for term in terms]
    assert len(set(names)) == len(names), f"{name}: term names repeat: {names}"
    for term in terms:
        assert isinstance(term, LossTerm)
        assert term.value.ndim == 0, f"{name}.{term.name}: value is not a scalar"
        assert torch.isfinite(term.value), f"{name}.{term.name} = {term.value.item()}"
        assert isinstance(term.weight, (int, float)) and torch.isfinite(torch.tensor(float(term.weight)))
        assert all(isinstance(v, float) and torch.isfinite(torch.tensor(v)) for v in term.extra.values()), term.extra
    assert any(term.value.requires_grad and term.weight != 0 for term in terms), f"{name}: nothing to train"

    out = method.loss(model, batch, reference)
    summed = sum(term.weight * term.value for term in terms)
    assert torch.isfinite(out.total)
    assert torch.allclose(out.total, summed, rtol=1e-5, atol=1e-6), (out.total.item(), summed.item())
    for term in terms:  # every term is logged as loss/<name>, unweighted
        assert out.parts[term.name] == pytest.approx(term.value.item(), rel=1e-5, abs=1e-6), term.name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", METHODS)
def test_term_by_term_backward_gives_the_gradient_of_the_total(name, mode):
    from obliviate.train.loop import _backward_term_by_term, make_accelerator

    method, model, reference, batch = prepared(name, mode)
    trainable = [(key, p) for key, p in model.named_parameters() if p.requires_grad]
    out = method.loss(model, batch, reference)
    (out.total / 2).backward()  # one micro-batch of two, as with grad_accum 2
    once = {key: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for key, p in trainable}
    model.zero_grad(set_to_none=True)
    parts = _backward_term_by_term(make_accelerator("fp32"), method, model, batch, reference, accum=2)
    assert parts["total"] == pytest.approx(out.total.item(), rel=1e-5, abs=1e-6)
    assert max(g.abs().max().item() for g in once.values()) > 0, f"{name}: the loss has no gradient"
    for key, param in trainable:
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        torch.testing.assert_close(grad, once[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


# ----------------------------------------------------------------------------- runs


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", METHODS)
def test_resume_reaches_the_uninterrupted_run(name, mode, workspace, tiny_model_dir, tmp_path):
    """4 steps, a checkpoint every 2, a crash after step 3 was logged; the resumed run redoes step 3."""
    from obliviate.config import load_config
    from obliviate.train.loop import run_training

    # LoRA dropout draws random masks: the checkpoint must carry the RNG state for them
    train = {"save_every": 2, "warmup_steps": 1, "lora": {"dropout": 0.1}}
    config = lambda: load_config(None, data=run_config(name, mode, workspace, **train))  # noqa: E731
    run_training(config(), tmp_path / "full", progress=False, log=quiet)
    assert_trained(tmp_path / "full", mode, tiny_model_dir)

    def crash_after_step_3(state):
        if state.step == 3:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run_training(config(), tmp_path / "cut", stop_hooks=[crash_after_step_3], progress=False, log=quiet)
    assert not (tmp_path / "cut" / "model").exists()
    assert [line["step"] for line in log_lines(tmp_path / "cut")] == [1, 2, 3]
    run_training(config(), tmp_path / "cut", resume=True, progress=False, log=quiet)

    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    full, cut = log_lines(tmp_path / "full"), log_lines(tmp_path / "cut")
    assert [line["step"] for line in cut] == [1, 2, 3, 4]
    for x, y in zip(full, cut):
        figures = sorted(k for k in x if k.startswith("loss/") or k in ("lr", "grad_norm"))
        assert figures == sorted(k for k in y if k.startswith("loss/") or k in ("lr", "grad_norm"))
        for key in figures:
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-6), (x["step"], key)


def _two_process_jobs(folder: Path) -> list[dict]:
    jobs = []
    for name in METHODS:
        for mode in MODES:
            job = {"name": name, "mode": mode, "run_dir": str(folder / f"{name}-{mode}")}
            for batch_size in (1, 2):
                config = run_config(name, mode, folder, max_steps=2, batch_size=batch_size, lr=5e-3)
                path = folder / f"{name}-{mode}-batch{batch_size}.yaml"
                path.write_text(yaml.safe_dump(config))
                job[f"config_batch{batch_size}"] = str(path)
            jobs.append(job)
    return jobs


@pytest.fixture(scope="module")
def two_process_runs(workspace) -> dict[tuple[str, str], dict]:
    """Every (method, mode) trained by two gloo processes with batch 1, in one ``torchrun`` launch."""
    jobs = _two_process_jobs(workspace)
    jobs_file = workspace / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "tests.test_method_contract", str(jobs_file)]
    launched = subprocess.run(launcher, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-4000:]
    return {(job["name"], job["mode"]): job for job in jobs}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", METHODS)
def test_two_processes_match_one(name, mode, two_process_runs, tiny_model_dir, tmp_path):
    from obliviate.config import load_config
    from obliviate.train.loop import run_training

    job = two_process_runs[(name, mode)]
    two = Path(job["run_dir"])
    errors = sorted(two.glob("error-rank*.txt"))
    assert not errors, errors[0].read_text()[-4000:]
    assert json.loads((two / "train_summary.json").read_text())["processes"] == 2

    # One process, batch 2: the config-file path of `obliviate unlearn`, in this process.
    run_training(load_config(job["config_batch2"]), tmp_path / "one", progress=False, log=quiet)
    assert_trained(tmp_path / "one", mode, tiny_model_dir)
    a, b = weights(tmp_path / "one"), weights(two)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)
    # Loss terms are means over examples, so the mean over processes is the one-process loss.
    one_log, two_log = log_lines(tmp_path / "one"), log_lines(two)
    assert [line["step"] for line in two_log] == [line["step"] for line in one_log] == [1, 2]
    for x, y in zip(one_log, two_log):
        assert y["loss/total"] == pytest.approx(x["loss/total"], rel=1e-3, abs=1e-4), x["step"]


def test_special_entries_name_registered_methods():
    """A renamed or removed method leaves no stale entry behind."""
    assert set(SPECIAL) <= set(METHODS), set(SPECIAL) - set(METHODS)


# ----------------------------------------------------------------------------- the launched side


def _train_jobs(jobs_file: str) -> None:
    """Run under ``torchrun``: each job through the ``obliviate unlearn`` command, in turn.

    A failing job leaves ``error-rank<R>.txt`` in its run folder and the next job starts, so each
    method's test reports its own failure.
    """
    from obliviate.cli.main import app

    rank = os.environ.get("RANK", "0")
    for job in json.loads(Path(jobs_file).read_text()):
        try:
            app(["unlearn", "--no-progress", "-c", job["config_batch1"], "--run-dir", job["run_dir"]],
                standalone_mode=False)
        except Exception:  # noqa: BLE001 - reported by the test of this job
            Path(job["run_dir"]).mkdir(parents=True, exist_ok=True)
            (Path(job["run_dir"]) / f"error-rank{rank}.txt").write_text(traceback.format_exc())


if __name__ == "__main__":
    _train_jobs(sys.argv[1])
