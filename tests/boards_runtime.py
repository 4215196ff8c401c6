"""One board on either runtime, for fault tests: the real firmware in this process (CPython) or
microfang's MicroPython at the ESP32 heap booting from a flash image (a process of its own).
Both report in main.py's line format ("[board] link disconnected: ..."), so a test reads them
the same way."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from fleet import make_board

from microfang.boards import PROFILES
from microfang.provision import write_image

RUNTIMES = ("cpython", "micropython")


def _line(agent_id: str, kind: str, text: str) -> str:
    return "[%s] %s %s" % (agent_id or "board", kind, text)


class RunningBoard:
    """A board started with start(); lines() is what it reported so far; stop() ends it."""

    def __init__(self, runtime: str, config: dict, folder: Path, bundles: list[bytes], micropython: Path | None,
                 profile: str = "esp32", heap: str | None = None) -> None:
        self.runtime = runtime
        self.config = config
        self.folder = folder
        self.bundles = bundles
        self.micropython = micropython
        self.profile = profile
        self.heap = heap or PROFILES[profile].heapsize_arg()  # MicroPython's -X heapsize=...
        self.board = None
        self.proc: asyncio.subprocess.Process | None = None
        self._lines: list[str] = []
        self._task: asyncio.Task | None = None

    async def start(self) -> RunningBoard:
        if self.runtime == "cpython":
            cfg = dict(self.config)
            self.board, rec = make_board(cfg.pop("device"), cfg.pop("key"), cfg.pop("port"), **cfg)
            self._rec = rec
            for data in self.bundles:
                self.board.spawn(data)
            self._task = asyncio.create_task(self.board.run(120_000))
            return self
        image = self.folder / f"{self.config['device']}.img"
        write_image(image, self.config, self.bundles)
        assert self.micropython is not None
        self.proc = await asyncio.create_subprocess_exec(
            str(self.micropython), "-X", self.heap, "-m", "microfang.firmware.main",
            str(image), "120", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self._lines.append(raw.decode(errors="replace").rstrip("\n"))

    def lines(self) -> list[str]:
        if self.runtime == "cpython":
            return [_line(*seen) for seen in self._rec.seen]
        return list(self._lines)

    def alive(self) -> bool:
        """The board's process (or task) still runs."""
        if self.runtime == "cpython":
            return self._task is not None and not self._task.done()
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> list[str]:
        if self.runtime == "cpython":
            assert self.board is not None and self._task is not None
            self.board.stop()
            await asyncio.wait_for(self._task, 30)
        elif self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)
            await asyncio.wait_for(self._task, 10)
        return self.lines()
