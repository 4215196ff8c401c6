"""Debian source packages, fetched without touching the system's apt configuration.

`microfang port build` takes MicroPython from Debian trixie's `micropython` source package and
the test setup builds pgvector from trixie's `pgvector` (bookworm has neither): `apt-get source`
runs with a private sources list and private package lists under the cache, and every file is
checked against the sha256 pinned by the caller before it is used.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from microfang.firmware.errors import MicrofangError

Progress = Callable[[str], None]

SUITE = "trixie"
APT_SOURCES = f"""Types: deb-src
URIs: http://deb.debian.org/debian
Suites: {SUITE}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


class SourceError(MicrofangError):
    """A Debian source package could not be fetched or did not match its pinned sums."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list[str], cwd: Path | None = None, step: Progress | None = None, what: str = "") -> None:
    """Run a command, feeding its output lines to `step`; raise with the tail of it on failure."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        if step is not None and line:
            step("  " + line)  # tool output: the progress display samples it
    if proc.wait():
        detail = "\n  ".join(tail)
        raise SourceError(f"{what or cmd[0]} failed (exit {proc.returncode}):\n  {detail}")


def extract(archive: Path, dest: Path) -> None:
    """Unpack a source tarball under `dest`, refusing members that would land outside it. Python
    3.11.4+ does that with tarfile's "data" filter; Debian bookworm's 3.11.2 predates it, so the
    same check is made here first."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = dest.resolve()
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not (target == root or root in target.parents) or member.issym() and Path(member.linkname).is_absolute():
                raise SourceError(f"{archive.name}: member {member.name!r} would be written outside {dest}")
            if member.isdev():
                raise SourceError(f"{archive.name}: member {member.name!r} is a device file")
        tar.extractall(dest)


def fetch(package: str, version: str, files: dict[str, str], base: Path, step: Progress) -> Path:
    """Download `package`=`version`'s source files into base/downloads (cached) and return that
    folder; every file in `files` (name -> sha256) must be there and match."""
    downloads = base / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    missing = [name for name, digest in files.items()
               if not (downloads / name).is_file() or sha256(downloads / name) != digest]
    if missing:
        apt_get = shutil.which("apt-get")
        if apt_get is None:
            raise SourceError(f"apt-get is needed to fetch Debian's {package} source package")
        apt = base / "apt"
        (apt / "sources.list.d").mkdir(parents=True, exist_ok=True)
        (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (apt / "sources.list.d" / f"{SUITE}.sources").write_text(APT_SOURCES, encoding="utf-8")
        opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
                "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", "Debug::NoDropPrivs=1",
                "-o", "APT::Sandbox::User=root"]
        step(f"apt-get update (private {SUITE} source list)")
        run([apt_get, *opts, "update"], step=step, what="apt-get update")
        step(f"apt-get source {package}")
        run([apt_get, *opts, "source", "--download-only", f"{package}={version}"], cwd=downloads, step=step,
            what="apt-get source")
    for name, digest in files.items():
        got = sha256(downloads / name)
        if got != digest:
            raise SourceError(f"{name}: sha256 {got} does not match the pinned {digest}")
    return downloads
