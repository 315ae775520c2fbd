"""The allocator settings obliviate applies at import, and every way to keep them off."""

import os
import subprocess
import sys

import pytest

PROBE = "import obliviate, os, json; print(json.dumps([os.environ.get('THP_MEM_ALLOC_ENABLE'), obliviate._memory_tuning.tune()]))"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the settings are Linux-only")


def _probe(env_changes: dict, code: str = PROBE):
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "OBLIVIATE_MEMORY_TUNING")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_enables_huge_pages_and_glibc_reuse():
    thp, second_call = _probe({})
    assert thp == "1"
    # A second call finds the variable already set (by the first) and does not claim it again,
    # while mallopt succeeds again on glibc.
    assert second_call["thp"] is False and second_call["malloc"] is True


def test_user_choice_wins():
    thp, _ = _probe({"THP_MEM_ALLOC_ENABLE": "0"})
    assert thp == "0"


def test_opt_out_leaves_everything_alone():
    thp, applied = _probe({"OBLIVIATE_MEMORY_TUNING": "0"})
    assert thp is None and applied == {"thp": False, "malloc": False}


def test_too_late_after_torch_is_imported():
    thp, _ = _probe({}, "import torch; " + PROBE)
    assert thp is None  # torch has read the variable already: setting it now would be a lie
