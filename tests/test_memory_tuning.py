"""The allocator settings: applied by the command line or an explicit call, never by ``import obliviate``,
and every way to keep them off."""

import json
import os
import subprocess
import sys

import pytest

REPORT = "import os, json; print(json.dumps([os.environ.get('THP_MEM_ALLOC_ENABLE'), applied]))"
EXPLICIT = "import obliviate; applied = obliviate.tune_memory(); " + REPORT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the settings are Linux-only")


def _probe(env_changes: dict, code: str = EXPLICIT):
    env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "OBLIVIATE_MEMORY_TUNING")}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_explicit_call_enables_huge_pages_and_glibc_reuse():
    thp, applied = _probe({})
    assert thp == "1" and applied == {"thp": True, "malloc": True}


def test_importing_the_package_changes_nothing():
    thp, applied = _probe({}, "import obliviate; applied = None; " + REPORT)
    assert thp is None


def test_the_command_line_tunes_before_torch_is_imported():
    # What the console script and ``python -m obliviate`` import first; the command modules it
    # registers import torch, so the setting must already be there.
    code = "import sys; import obliviate.cli.main; applied = 'torch' in sys.modules; " + REPORT
    thp, torch_loaded = _probe({}, code)
    assert thp == "1" and torch_loaded
    # A second call finds the variable already set (by the first) and does not claim it again,
    # while mallopt succeeds again on glibc.
    thp, second = _probe({}, "import obliviate.cli.main, obliviate; applied = obliviate.tune_memory(); " + REPORT)
    assert thp == "1" and second == {"thp": False, "malloc": True}


def test_user_choice_wins():
    thp, applied = _probe({"THP_MEM_ALLOC_ENABLE": "0"})
    assert thp == "0" and applied["thp"] is False


def test_opt_out_leaves_everything_alone():
    thp, applied = _probe({"OBLIVIATE_MEMORY_TUNING": "0"})
    assert thp is None and applied == {"thp": False, "malloc": False}
    thp, _ = _probe({"OBLIVIATE_MEMORY_TUNING": "0"}, "import obliviate.cli.main; applied = None; " + REPORT)
    assert thp is None


def test_too_late_after_torch_is_imported():
    thp, applied = _probe({}, "import torch; " + EXPLICIT)
    assert thp is None and applied["thp"] is False  # torch has read the variable already: setting it now would be a lie
