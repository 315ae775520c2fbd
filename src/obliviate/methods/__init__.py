"""Unlearning methods, each a loss registered by name (see ``docs/methods.md``)."""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from obliviate.errors import UserError
from obliviate.methods.base import LossOutput, Method, MethodConfig, Reference, registry

_loaded = False


def _load_all() -> None:
    """Import every module of this package so each method registers itself."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def available_methods() -> dict[str, type[Method]]:
    _load_all()
    return dict(sorted(registry().items()))


def get_method_class(name: str) -> type[Method]:
    methods = available_methods()
    if name not in methods:
        close = difflib.get_close_matches(name, list(methods), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown method '{name}'{hint} (known: {', '.join(methods)})")
    return methods[name]


def build_method(name: str, options: dict) -> Method:
    cls = get_method_class(name)
    return cls(cls.Config.model_validate(options))


__all__ = ["LossOutput", "Method", "MethodConfig", "Reference", "available_methods", "build_method", "get_method_class"]
