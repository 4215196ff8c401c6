"""All terminal output of the CLI goes through here: messages, errors, progress, tables."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.live import Live

out = Console(highlight=False)
if not out.is_terminal:
    # Piped or captured output: rich would assume 80 columns and wrap the stats tables.
    out = Console(highlight=False, width=120)


def printable(text: str) -> str:
    """Text from an agent or the wire, safe for a terminal: control characters (ESC sequences
    that would retitle, recolour or clear the user's terminal) shown as \\xNN instead."""
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" if ord(c) < 0x100 else "\ufffd"
                   for c in text)


def info(message: str) -> None:
    out.print(message, soft_wrap=True)  # one message, one line: paths must not break mid-way


def error(message: str) -> None:
    """A failure that does not end the command (one of several jobs, say): one line on stderr."""
    print(f"microfang: {message}", file=sys.stderr, flush=True)


def die(message: str, code: int = 1) -> int:
    """Print `microfang: message` on stderr (no traceback) and return the exit code."""
    sys.stdout.flush()
    # Plain print, not rich: an error stays one line however narrow the terminal.
    print(f"microfang: {message}", file=sys.stderr, flush=True)
    return code


@contextmanager
def live(renderable: RenderableType, refresh_per_second: float = 2) -> Iterator[Live]:
    """A view redrawn in place (the sim and demo tables); `.update(renderable)` redraws it.
    Piped, rich leaves the last frame without its newline: add it so later lines start clean."""
    try:
        with Live(renderable, console=out, refresh_per_second=refresh_per_second) as view:
            yield view
    finally:
        if not out.is_terminal:
            out.line()


@contextmanager
def stage(title: str) -> Iterator[Callable[[str], None]]:
    """Show a spinner with the latest line of a long job; yields the `step(line)` callback.

    Lines starting with two spaces are tool output (compiler lines). On a terminal the latest
    line updates in place; otherwise stage lines are printed and tool output is sampled, so CI
    logs show progress without thousands of lines.
    """
    if not err_console.is_terminal:
        seen = [0]
        print(f"[{title}] ...", file=sys.stderr, flush=True)

        def step(line: str) -> None:
            if line.startswith("  "):
                seen[0] += 1
                if seen[0] % 40:
                    return
            print(f"[{title}] {line.strip()}", file=sys.stderr, flush=True)

        yield step
        return
    with err_console.status(title) as status:

        def step(line: str) -> None:
            status.update(f"{title}: {line.strip()[:100]}")

        yield step
    err_console.print(f"{title}: done", markup=False)


err_console = Console(stderr=True, highlight=False)
