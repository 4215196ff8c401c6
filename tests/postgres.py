"""A private PostgreSQL + pgvector on 127.0.0.1 for the tests, and pgvector's install.

`PostgresCluster` is to PostgreSQL what brokers.Mosquitto is to MQTT: initdb in a temp folder,
a free port on 127.0.0.1, gone when stopped. Debian bookworm has no pgvector package, so
`python tests/postgres.py install` (run by tests/run) builds Debian trixie's pgvector source
package against the installed PostgreSQL (postgresql-server-dev-N) and installs it; the build is
cached under the microfang cache by version.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from microfang.broker import free_port

PGVECTOR_VERSION = "0.8.0-1"
PGVECTOR_FILES = {
    "pgvector_0.8.0.orig.tar.gz": "867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0",
}


class PostgresMissing(RuntimeError):
    """No PostgreSQL server with pgvector on this machine."""


def bindir() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise PostgresMissing("no PostgreSQL server installed (Debian: apt install postgresql); tests/run sets "
                              "up everything the tests need")
    return found[-1].parent


def has_pgvector(bin_dir: Path) -> bool:
    major = bin_dir.parent.name
    return Path(f"/usr/share/postgresql/{major}/extension/vector.control").is_file()


class PostgresCluster:
    """initdb + postgres on a free 127.0.0.1 port in `folder`, with the vector extension created
    in database `microfang`; `dsn` is what MICROFANG_PG_DSN would hold."""

    def __init__(self, folder: Path | None = None) -> None:
        self.bin = bindir()
        if not has_pgvector(self.bin):
            raise PostgresMissing(f"PostgreSQL {self.bin.parent.name} has no pgvector extension: run "
                                  f"`python tests/postgres.py install` (tests/run does)")
        # Under /tmp (world-traversable) in a folder of its own: the postgres user must reach it,
        # and no parent folder of the caller's needs its mode changed for that.
        self.folder = folder or Path(tempfile.mkdtemp(prefix="microfang-pg-"))
        self.data = self.folder / "pgdata"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/microfang"

    def _as_postgres(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)

    def start(self) -> PostgresCluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        init = self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                  "--no-sync", "-E", "UTF8"])
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        self.start_server()
        for sql in ("CREATE DATABASE microfang", None):
            args = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-v",
                    "ON_ERROR_STOP=1", "-q"]
            if sql is None:
                args += ["-d", "microfang", "-c", "CREATE EXTENSION vector"]
            else:
                args += ["-d", "postgres", "-c", sql]
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return self

    def start_server(self) -> None:
        """Run the server on the cluster (again, after stop_server: same data, same port)."""
        cmd = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.folder),
               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True, check=False)
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.proc.stderr.read().decode()}")
            time.sleep(0.1)
        raise RuntimeError("postgres did not start within 20 s")

    def stop_server(self) -> None:
        """Stop the server (a fast shutdown: sessions are ended), keeping the cluster's data."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT to the postmaster itself (runuser passes no SIGINT on; SIGTERM would wait
            # for every client to leave)
            os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
            self.proc.wait(timeout=20)
        self.proc = None

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.folder, ignore_errors=True)


def install_pgvector() -> str:
    """Build Debian trixie's pgvector for the installed PostgreSQL and install it (needs root)."""
    from microfang.tools import debsource, portbuild

    bin_dir = bindir()
    if has_pgvector(bin_dir):
        return f"pgvector already installed for PostgreSQL {bin_dir.parent.name}"
    pg_config = bin_dir / "pg_config"
    if not pg_config.is_file():
        raise PostgresMissing(f"building pgvector needs postgresql-server-dev-{bin_dir.parent.name}")
    base = portbuild.cache_dir() / "pgvector" / PGVECTOR_VERSION
    say = lambda line: print(line, flush=True)  # noqa: E731
    downloads = debsource.fetch("pgvector", PGVECTOR_VERSION, PGVECTOR_FILES, base, say)
    tree = base / f"build-pg{bin_dir.parent.name}"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    debsource.extract(downloads / "pgvector_0.8.0.orig.tar.gz", tree)
    src = next(p for p in tree.iterdir() if p.is_dir())
    debsource.run(["make", "-C", str(src), f"PG_CONFIG={pg_config}", "-j2"], what="pgvector build")
    as_root = [] if os.geteuid() == 0 else ["sudo"]  # the build stays the user's; installing needs root
    debsource.run([*as_root, "make", "-C", str(src), f"PG_CONFIG={pg_config}", "install"], what="pgvector install")
    return f"pgvector {PGVECTOR_VERSION} installed for PostgreSQL {bin_dir.parent.name}"


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python tests/postgres.py install")
    try:
        print(install_pgvector())
    except Exception as e:  # a setup step: one line, then fail
        sys.exit(f"tests/postgres.py: {e}")
