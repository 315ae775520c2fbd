"""What every command shares: the stderr console and the quiet library settings."""

from __future__ import annotations

import os
import warnings

from rich.console import Console

#: Messages for the user (progress, warnings, results) go to stderr; data goes to stdout.
console = Console(stderr=True)


def quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, deprecation notes) out of the user's terminal."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")


def show_warnings_on_one_line() -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        console.print(f"[yellow]warning:[/yellow] {message}")

    warnings.showwarning = show
