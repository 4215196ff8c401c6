"""`microfang` commands run as processes of their own (a sim, `logs -f`, the dashboard), each in
its own session so that stopping it stops its children (a sim's broker and boards) too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def started(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`microfang ARGS...` in `cwd`, its stdout and stderr one text pipe."""
    return subprocess.Popen([sys.executable, "-m", "microfang", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def stopped(*procs: subprocess.Popen | None) -> None:
    """SIGTERM to each one's session, SIGKILL if it is still there after 30 s."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def until(check, seconds: float):
    """Poll `check()` every 0.2 s until it gives something true (returned) or `seconds` pass (None)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    return None
