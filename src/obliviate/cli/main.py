"""The ``obliviate`` command line: a thin layer over the Python API.

Every sub-command module lives in ``obliviate.cli`` and exposes a ``typer.Typer`` called
``app`` (a group) or a function ``register(app)`` that adds plain commands.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from obliviate.errors import TrainingDiverged, UserError

app = typer.Typer(
    name="obliviate",
    help="Machine unlearning for large language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_DEBUG = "--debug" in sys.argv

# (module, group name or None for modules that register plain commands)
_COMMAND_MODULES = [
    ("obliviate.cli.unlearn", None),
    ("obliviate.cli.models", "models"),
    ("obliviate.cli.data", "data"),
    ("obliviate.cli.judge", "judge"),
    ("obliviate.cli.eval", None),
    ("obliviate.cli.detect", None),
    ("obliviate.cli.demo", None),
    ("obliviate.cli.finetune", None),
]


def _register_commands() -> None:
    for module_name, group in _COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is None:
            continue  # a command family not built yet
        module = importlib.import_module(module_name)
        if group is None:
            module.register(app)
        else:
            app.add_typer(module.app, name=group)


_register_commands()


def main() -> None:
    argv = [a for a in sys.argv[1:] if a != "--debug"]
    try:
        app(args=argv, prog_name="obliviate")
    except UserError as err:
        if _DEBUG:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except TrainingDiverged as err:
        if _DEBUG:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
