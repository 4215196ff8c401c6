"""All terminal output of the CLI goes through here: messages, errors, progress, tables."""

from __future__ import annotations

import sys

from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    out.print(message)


def die(message: str, code: int = 1) -> int:
    """Print `microfang: message` on stderr (no traceback) and return the exit code."""
    sys.stdout.flush()
    err.print(f"microfang: {message}", markup=False)
    return code
