"""A real Mosquitto on 127.0.0.1 for tests and benches (free port, TCP_NODELAY, in a temp dir)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """Start/stop/restart a mosquitto process; `persistence` keeps QoS 1 sessions across restarts."""

    def __init__(self, folder: Path, persistence: bool = False) -> None:
        self.folder = folder
        self.port = free_port()
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "set_tcp_nodelay true",
                 "max_queued_messages 100000", f"persistence {'true' if self.persistence else 'false'}",
                 f"persistence_location {self.folder}/", "autosave_interval 1", "log_dest none"]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to the "mosquitto" user, which cannot write its
            # persistence file under a test's private temp folder.
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
