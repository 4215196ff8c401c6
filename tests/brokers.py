"""A real Mosquitto on 127.0.0.1 for tests and benches (free port, TCP_NODELAY, in a temp dir)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from microfang.broker import free_port

SHIPPED_CONF = Path(__file__).resolve().parent.parent / "docs" / "mosquitto" / "mosquitto.conf"


class Mosquitto:
    """Start/stop/restart a mosquitto process; `persistence` keeps QoS 1 sessions across restarts."""

    def __init__(self, folder: Path, persistence: bool = False, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.persistence = persistence
        self.tls = tls  # (ca, cert, key): the listener speaks TLS only
        self.config: str | None = None  # a whole mosquitto.conf instead of the test defaults (production_config)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "set_tcp_nodelay true",
                 "max_queued_messages 100000", f"persistence {'true' if self.persistence else 'false'}",
                 f"persistence_location {self.folder}/", "autosave_interval 1", "log_dest none"]
        if self.tls is not None:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        lines += _as_root()
        conf.write_text(self.config or "\n".join(lines) + "\n", encoding="utf-8")
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


def _as_root() -> list[str]:
    # As root, mosquitto would switch to the "mosquitto" user, which cannot write its
    # persistence file under a test's private temp folder.
    return ["user root"] if os.geteuid() == 0 else []


def production_config(etc: Path, port: int, plain_port: int | None = None, drop: tuple[str, ...] = ()) -> str:
    """The shipped docs/mosquitto/mosquitto.conf, word for word but for where it lives: its
    /etc/mosquitto/ files under `etc` (certs/, passwd, acl), its persistence there too, its TLS
    listener on 127.0.0.1:`port`. `plain_port`: one more listener, plain TCP on 127.0.0.1, for
    microfang's MicroPython (built without TLS); the same login and ACL hold there
    (per_listener_settings false). `drop`: settings left out (to show what one of them defends)."""
    text = SHIPPED_CONF.read_text(encoding="utf-8").replace("/etc/mosquitto/", f"{etc}/")
    text = text.replace("/var/lib/mosquitto/", f"{etc}/").replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    lines = [ln for ln in text.splitlines() if ln.split(" ", 1)[0] not in drop]
    if plain_port is not None:
        lines.append(f"listener {plain_port} 127.0.0.1")
    return "\n".join([*lines, f"log_dest file {etc}/mosquitto.log", *_as_root()]) + "\n"


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl): (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    run = lambda *args: subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=microfang test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", ext)
    return ca, cert, key
