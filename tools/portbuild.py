"""`microfang port build`: MicroPython with the wasm3 module and the firmware frozen in.

The MicroPython source is Debian trixie's `micropython` source package (the full tree with
ports/unix and ports/esp32), fetched with `apt-get source` through a private sources list so
the system's apt configuration is never touched, checked against pinned sha256 sums, patched
with Debian's series and cached under ~/.cache/microfang by version. Builds are cached by a
key over everything that goes into them (firmware, C module, board files, build flags).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from microfang.firmware.errors import MicrofangError

VERSION = "1.25.0+ds-1"
TREE = "micropython-1.25.0"
SOURCE_FILES = {
    "micropython_1.25.0+ds.orig.tar.xz": "7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea",
    "micropython_1.25.0+ds-1.debian.tar.xz": "87cd89f7900c86b963885dabe25acf3e5348815993f1500278ad8f6464465af4",
}
APT_SOURCES = """Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# Left out of the unix build: their sources are not in Debian's tree (BTREE, axTLS) or need
# system libraries (mbedTLS, FFI). Kept: socket, select, asyncio, hashlib, VfsLfs2.
# MICROPY_FORCE_32BIT: a 32-bit build (like the ESP32) spends heap per object and per wasm3
# structure the way a board does; a 64-bit build needs ~1.6x the heap for the same agents.
UNIX_FLAGS = ["MICROPY_PY_BTREE=0", "MICROPY_SSL_AXTLS=0", "MICROPY_SSL_MBEDTLS=0", "MICROPY_PY_SSL=0",
              "MICROPY_PY_FFI=0", "MICROPY_FORCE_32BIT=1"]

Progress = Callable[[str], None]


class PortBuildError(MicrofangError):
    """The MicroPython port could not be fetched or built."""


def cache_dir() -> Path:
    return Path(os.environ.get("MICROFANG_CACHE", Path.home() / ".cache" / "microfang"))


def source_root() -> Path:
    """The microfang checkout holding firmware/cmodules and boards/ (not shipped in the wheel)."""
    candidates = [Path(__file__).resolve().parent.parent, *Path.cwd().resolve().parents, Path.cwd().resolve()]
    for root in candidates:
        if (root / "firmware" / "cmodules" / "wasm3" / "micropython.mk").is_file() and (root / "boards").is_dir():
            return root
    raise PortBuildError("port builds need a microfang source checkout (firmware/cmodules, boards/): "
                         "run this from the repository")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path | None = None, step: Progress | None = None, what: str = "") -> None:
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
        raise PortBuildError(f"{what or cmd[0]} failed (exit {proc.returncode}):\n  {detail}")


def fetch_source(step: Progress) -> Path:
    """Download, verify, extract and patch the MicroPython tree; return its path (cached)."""
    base = cache_dir() / "micropython" / VERSION
    tree = base / TREE
    if (tree / ".microfang-ready").is_file():
        return tree
    downloads = base / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    missing = [name for name, digest in SOURCE_FILES.items()
               if not (downloads / name).is_file() or _sha256(downloads / name) != digest]
    if missing:
        apt_get = shutil.which("apt-get")
        if apt_get is None:
            raise PortBuildError("apt-get is needed to fetch Debian's micropython source package")
        apt = base / "apt"
        (apt / "sources.list.d").mkdir(parents=True, exist_ok=True)
        (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (apt / "sources.list.d" / "trixie.sources").write_text(APT_SOURCES, encoding="utf-8")
        opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
                "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", "Debug::NoDropPrivs=1",
                "-o", "APT::Sandbox::User=root"]
        step("apt-get update (private trixie source list)")
        _run([apt_get, *opts, "update"], step=step, what="apt-get update")
        step("apt-get source micropython")
        _run([apt_get, *opts, "source", "--download-only", f"micropython={VERSION}"], cwd=downloads, step=step,
             what="apt-get source")
    for name, digest in SOURCE_FILES.items():
        got = _sha256(downloads / name)
        if got != digest:
            raise PortBuildError(f"{name}: sha256 {got} does not match the pinned {digest}")
    if tree.exists():
        shutil.rmtree(tree)
    step("extracting")
    with tarfile.open(downloads / "micropython_1.25.0+ds.orig.tar.xz") as tar:
        tar.extractall(base, filter="data")
    with tarfile.open(downloads / "micropython_1.25.0+ds-1.debian.tar.xz") as tar:
        tar.extractall(tree, filter="data")  # debian/ inside the tree, as dpkg-source lays it out
    for patch in (tree / "debian" / "patches" / "series").read_text(encoding="utf-8").split():
        step(f"patch {patch}")
        _run(["patch", "-p1", "-s", "-i", str(tree / "debian" / "patches" / patch)], cwd=tree, what=f"patch {patch}")
    (tree / ".microfang-ready").write_text(VERSION, encoding="utf-8")
    return tree


def apply_port_patches(tree: Path, patches: Path, step: Progress) -> None:
    """Apply microfang's own patches (boards/<port>/patches/*.patch) to a pristine tree: files a
    previous build patched are restored from their backups first, so a changed patch applies."""
    for backup in tree.rglob("*.microfang-orig"):
        shutil.copy2(backup, backup.with_suffix(""))
        backup.unlink()
    for patch in sorted(patches.glob("*.patch")):
        step(f"patch {patch.name}")
        _run(["patch", "-p1", "-s", "-b", "-z", ".microfang-orig", "-i", str(patch)], cwd=tree, what=f"patch {patch.name}")


def build_key(root: Path, extra: list[str]) -> str:
    """A digest of everything a firmware build depends on."""
    h = hashlib.sha256(VERSION.encode())
    for folder in ("firmware", "boards"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    h.update(" ".join(extra).encode())
    return h.hexdigest()[:16]


def _check_m32() -> None:
    probe = subprocess.run(["gcc", "-m32", "-x", "c", "-", "-o", os.devnull], input="int main(void){return 0;}\n",
                           capture_output=True, text=True, check=False)
    if probe.returncode:
        raise PortBuildError("the unix port is built 32-bit like an ESP32 and needs gcc -m32 "
                             "(Debian: apt install gcc-multilib)")


def build_unix(step: Progress, jobs: int = 2) -> Path:
    """Build the unix port with wasm3 and the frozen firmware; return the binary (cached)."""
    root = source_root()
    key = build_key(root, UNIX_FLAGS)
    binary = cache_dir() / "bin" / f"micropython-microfang-{key}"
    if binary.is_file():
        step(f"cached build {key}")
        return binary
    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise PortBuildError("building the unix port needs make and gcc (Debian: apt install build-essential)")
    _check_m32()
    tree = fetch_source(step)
    apply_port_patches(tree, root / "boards" / "unix" / "patches", step)
    if not (tree / "mpy-cross" / "build" / "mpy-cross").is_file():
        step("building mpy-cross")
        _run(["make", "-C", "mpy-cross", f"-j{jobs}"], cwd=tree, step=step, what="mpy-cross build")
    build = f"build-microfang-{key}"
    step("building the unix port")
    _run(["make", "-C", "ports/unix", f"-j{jobs}", f"BUILD={build}", "PROG=micropython",
          f"USER_C_MODULES={root / 'firmware' / 'cmodules'}", f"FROZEN_MANIFEST={root / 'boards' / 'unix' / 'manifest.py'}",
          *UNIX_FLAGS], cwd=tree, step=step, what="unix port build")
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tree / "ports" / "unix" / build / "micropython", binary)
    shutil.rmtree(tree / "ports" / "unix" / build, ignore_errors=True)
    latest = binary.parent / "micropython-microfang"
    latest.unlink(missing_ok=True)
    latest.symlink_to(binary.name)
    return binary


def esp32_firmware_path(board: str) -> Path:
    """Where `microfang port build --board esp32|esp32s3` leaves firmware.bin."""
    from microfang.boards import BOARD_DEFS

    spec = BOARD_DEFS[board]
    return cache_dir() / "micropython" / VERSION / TREE / "ports" / "esp32" / f"build-{spec.MICROPYTHON_BOARD}" / \
        "firmware.bin"


def build_esp32(board: str, step: Progress, jobs: int = 2) -> Path:
    """Build an ESP32 firmware with ESP-IDF (idf.py must be on PATH); return firmware.bin."""
    from microfang.boards import BOARD_DEFS

    if board not in BOARD_DEFS or BOARD_DEFS[board].PORT != "esp32":
        raise PortBuildError(f"unknown ESP32 board {board!r} (known: esp32, esp32s3)")
    spec = BOARD_DEFS[board]
    if shutil.which("idf.py") is None or not os.environ.get("IDF_PATH"):
        raise PortBuildError(
            f"building --board {board} needs ESP-IDF {spec.IDF_VERSION}: idf.py is not on PATH and IDF_PATH is not "
            f"set. Run `. $IDF_PATH/export.sh` from an ESP-IDF {spec.IDF_VERSION} install, or use the container "
            f"image espressif/idf:v{spec.IDF_VERSION} (recipe: docs/boards.md)")
    root = source_root()
    tree = fetch_source(step)
    if not (tree / "mpy-cross" / "build" / "mpy-cross").is_file():
        step("building mpy-cross")
        _run(["make", "-C", "mpy-cross", f"-j{jobs}"], cwd=tree, step=step, what="mpy-cross build")
    board_dir = root / "boards" / spec.MICROPYTHON_BOARD
    build = f"build-{spec.MICROPYTHON_BOARD}"
    step(f"idf.py build for {spec.MICROPYTHON_BOARD}")
    _run(["make", "-C", "ports/esp32", f"BOARD_DIR={board_dir}", f"BUILD={build}",
          f"USER_C_MODULES={root / 'firmware' / 'cmodules' / 'micropython.cmake'}"],
         cwd=tree, step=step, what="ESP-IDF build")
    return esp32_firmware_path(board)
