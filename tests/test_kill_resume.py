"""A run killed with SIGKILL (no cleanup, no exception handler) mid-run or in the middle of writing
a checkpoint, then resumed, reaches bit-identical weights to a run never interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from tests.test_error_paths import write_config

# The real CLI in a child process that kills itself with SIGKILL at a chosen moment:
# "mid-run": right after step 3 is logged (checkpoint of step 2 on disk, step 3 lost);
# "mid-checkpoint": after the weights of the step-4 checkpoint are written to its temporary
# folder and before the rest (a half checkpoint on disk).
_KILLING_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from obliviate.train import checkpoint, loop

    moment = sys.argv[3]
    if moment == "mid-checkpoint":
        real_save_file = checkpoint.save_file

        def save_then_die(tensors, path, *args, **kwargs):
            real_save_file(tensors, path, *args, **kwargs)
            if ".tmp-step-4" in str(path):
                os.kill(os.getpid(), signal.SIGKILL)

        checkpoint.save_file = save_then_die
    elif moment == "mid-run":
        real_append = loop.append_jsonl

        def append_then_die(path, record, *args, **kwargs):
            real_append(path, record, *args, **kwargs)
            if record.get("step") == 3:
                os.kill(os.getpid(), signal.SIGKILL)

        loop.append_jsonl = append_then_die
    from obliviate.cli.main import main

    sys.argv = ["obliviate", "unlearn", "-c", sys.argv[1], "--run-dir", sys.argv[2], "--no-progress", *sys.argv[4:]]
    main()
""")


def _cli(config, run, moment="none", *extra):
    return subprocess.run([sys.executable, "-c", _KILLING_SCRIPT, str(config), str(run), moment, *extra],
                          capture_output=True, text=True, timeout=300)


def _weights(run):
    return load_file(str(run / "model" / "adapter_model.safetensors"))


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
@pytest.mark.parametrize("moment", ["mid-run", "mid-checkpoint"])
def test_sigkill_then_resume_reaches_bit_identical_weights(moment, tmp_path, tiny_model_dir, data_files):
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, data_files, max_steps=6, save_every=2,
                          lr=1e-2, keep_checkpoints=5, warmup_steps=1)
    whole = _cli(config, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed = _cli(config, tmp_path / "killed", moment)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "killed" / "model").exists()
    leftovers = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    if moment == "mid-checkpoint":
        assert ".tmp-step-4" in leftovers and "step-4" not in leftovers  # a half checkpoint really was on disk

    resumed = _cli(config, tmp_path / "killed", "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-identical, not merely close
    steps = [line for line in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines() if line.strip()]
    assert len(steps) == 6  # the lines past the resumed checkpoint were dropped, none repeated
