"""The ``obliviate`` command line: a thin layer over the Python API.

Every sub-command module lives in ``obliviate.cli`` and exposes a ``typer.Typer`` called
``app`` (a group) or a function ``register(app)`` that adds plain commands.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from obliviate.errors import StorageError, TrainingDiverged, UserError
from obliviate.memory_tuning import tune as _tune_memory

# The console script imports this module first: apply the allocator settings here, before the
# command modules registered below import torch, which reads THP_MEM_ALLOC_ENABLE once
# (obliviate.memory_tuning says why). The library itself changes no setting on import.
_tune_memory()

app = typer.Typer(
    name="obliviate",
    help="Machine unlearning for large language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_DEBUG = "--debug" in sys.argv


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("obliviate")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"obliviate {_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Machine unlearning for large language models."""

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
    ("obliviate.cli.in_context", None),
    ("obliviate.cli.report", None),
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


def _one_line(err: BaseException) -> str:
    """The message with each line break shown as \\n: a message quotes the user's own text (a
    key, a CSV header cell), which may hold one, and the error must stay one line for scripts."""
    return "\\n".join(str(err).splitlines())


def main() -> None:
    argv = [a for a in sys.argv[1:] if a != "--debug"]
    try:
        app(args=argv, prog_name="obliviate")
    except UserError as err:
        if _DEBUG:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (TrainingDiverged, StorageError) as err:
        if _DEBUG:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)
