"""All terminal output of the CLI goes through here: messages, errors, progress, tables."""

from __future__ import annotations

import sys

from rich.console import Console

out = Console(highlight=False)
if not out.is_terminal:
    # Piped or captured output: rich would assume 80 columns and wrap the stats tables.
    out = Console(highlight=False, width=120)


def info(message: str) -> None:
    out.print(message)


def die(message: str, code: int = 1) -> int:
    """Print `microfang: message` on stderr (no traceback) and return the exit code."""
    sys.stdout.flush()
    # Plain print, not rich: an error stays one line however narrow the terminal.
    print(f"microfang: {message}", file=sys.stderr, flush=True)
    return code
