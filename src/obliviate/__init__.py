"""obliviate: machine unlearning for large language models.

The Python API (docs/api.md)::

    import obliviate

    result = obliviate.unlearn(forget=[{"prompt": ..., "response": ...}], retain=[...])
    metrics = obliviate.evaluate(result, suite="harmful", harmful=[...])["metrics"]

``import obliviate`` stays light: it imports no torch and changes no setting. The functions load
on first use (``obliviate.api``); ``obliviate.tune_memory()`` applies the CPU allocator settings the
command line applies, and must come before anything imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Names served by ``obliviate.api``, imported when first asked for.
_API = ("unlearn", "evaluate", "load_config", "tune_memory", "in_context_baseline", "UnlearnResult")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        # By name, not a static import: lower layers import this package (for __version__) and
        # must not depend on the API above them.
        return getattr(importlib.import_module("obliviate.api"), name)
    raise AttributeError(f"module 'obliviate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*(name for name in globals() if name.startswith("__")), *_API})
