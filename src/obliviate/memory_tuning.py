"""Fewer page faults in CPU training: keep freed memory for reuse instead of handing it back.

A training step allocates and frees the same large activation tensors over and over. By default
glibc serves blocks above a (dynamic) threshold with fresh ``mmap`` calls and unmaps them on
free, and every first touch of a fresh 4 KiB page is a page fault; inside a virtual machine a
fault costs microseconds. Measured on the default model (BENCHMARKS.md): ~1.6 million faults in
a 5-step LoRA benchmark, element-wise ops running at a few GB/s, and a 6.7 MB matrix product at
half the speed it reaches on reused memory.

Two settings, both applied only where the user has not chosen otherwise:

* ``THP_MEM_ALLOC_ENABLE=1`` — PyTorch's CPU allocator then aligns large tensors to 2 MiB and
  asks the kernel for transparent huge pages (one fault per 2 MiB instead of 512). It is read
  once, when torch first allocates, so it must be set before torch is imported.
* glibc ``mallopt``: serve blocks up to 32 MiB from the heap (the largest threshold glibc
  allows) and do not trim the heap's top on free, so a freed activation's pages are reused by
  the next step's.

Who applies them: the ``obliviate`` command, first thing (``obliviate.cli.main``); in Python,
``obliviate.tune_memory()`` called before torch is imported. ``import obliviate`` applies nothing:
a library should not change a process's allocator behind its owner's back.

Opt out with ``OBLIVIATE_MEMORY_TUNING=0``, or set ``THP_MEM_ALLOC_ENABLE`` /
``MALLOC_MMAP_THRESHOLD_`` yourself (yours win). Nothing here changes results, only speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB, far above a step's churn


def enabled() -> bool:
    return os.environ.get("OBLIVIATE_MEMORY_TUNING", "1").strip().lower() not in {"0", "false", "no", "off"}


def tune() -> dict[str, bool]:
    """Apply both settings where allowed; returns what was applied (for logs and tests).

    The huge-page setting is skipped once torch is imported (too late to take effect).
    """
    applied = {"thp": False, "malloc": False}
    if not enabled() or not sys.platform.startswith("linux"):
        return applied
    if "THP_MEM_ALLOC_ENABLE" not in os.environ and "torch" not in sys.modules:
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
        applied["thp"] = True
    user_set = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"))
    if not user_set:
        applied["malloc"] = _glibc_mallopt()
    return applied


def _glibc_mallopt() -> bool:
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    return ok
