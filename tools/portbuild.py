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
from pathlib import Path

from microfang.tools import debsource

VERSION = "1.25.0+ds-1"
TREE = "micropython-1.25.0"
SOURCE_FILES = {
    "micropython_1.25.0+ds.orig.tar.xz": "7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea",
    "micropython_1.25.0+ds-1.debian.tar.xz": "87cd89f7900c86b963885dabe25acf3e5348815993f1500278ad8f6464465af4",
}
# Left out of the unix build: their sources are not in Debian's tree (BTREE, axTLS) or need
# system libraries (mbedTLS, FFI). Kept: socket, select, asyncio, hashlib, VfsLfs2.
# MICROPY_FORCE_32BIT: a 32-bit build (like the ESP32) spends heap per object and per wasm3
# structure the way a board does; a 64-bit build needs ~1.6x the heap for the same agents.
UNIX_FLAGS = ["MICROPY_PY_BTREE=0", "MICROPY_SSL_AXTLS=0", "MICROPY_SSL_MBEDTLS=0", "MICROPY_PY_SSL=0",
              "MICROPY_PY_FFI=0", "MICROPY_FORCE_32BIT=1"]

Progress = debsource.Progress


class PortBuildError(debsource.SourceError):
    """The MicroPython port could not be fetched or built."""


def cache_dir() -> Path:
    return Path(os.environ.get("MICROFANG_CACHE", Path.home() / ".cache" / "microfang"))


def package_root() -> Path:
    """The folder holding firmware/ (with cmodules/) and boards/: the checkout, or the installed
    `microfang` package, whose wheel ships the C module sources and board files for this."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "firmware" / "cmodules" / "wasm3" / "micropython.mk").is_file() or \
            not (root / "boards" / "manifest.py").is_file():
        raise PortBuildError(f"{root}: this microfang install lacks the firmware sources (firmware/cmodules, "
                             f"boards/): reinstall it with pip")
    return root


def _source_files(root: Path) -> list[Path]:
    """Every file of firmware/ and boards/ a firmware build reads, relative to `root`, sorted."""
    files = []
    for folder in ("firmware", "boards"):
        for path in (root / folder).rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and not path.is_symlink() and "__pycache__" not in rel.parts and \
                    rel.parts[:2] != ("boards", "frozen") and path.suffix not in (".pyc", ".so"):
                files.append(rel)
    return sorted(files)


def stage_sources(root: Path, key: str) -> Path:
    """A copy of firmware/ and boards/ under the cache, laid out as the MicroPython build reads
    them (boards/frozen/microfang/firmware links to firmware/), the same from a checkout and from
    a pip install."""
    stage = cache_dir() / "src" / key
    if (stage / ".microfang-ready").is_file():
        return stage
    if stage.exists():
        shutil.rmtree(stage)
    for rel in _source_files(root):
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, stage / rel)
    frozen = stage / "boards" / "frozen" / "microfang"
    frozen.mkdir(parents=True, exist_ok=True)
    (frozen / "__init__.py").write_text("", encoding="utf-8")
    (frozen / "firmware").symlink_to(Path("..", "..", "..", "firmware"))
    (stage / ".microfang-ready").write_text(key, encoding="utf-8")
    return stage


def fetch_source(step: Progress) -> Path:
    """Download, verify, extract and patch the MicroPython tree; return its path (cached)."""
    base = cache_dir() / "micropython" / VERSION
    tree = base / TREE
    if (tree / ".microfang-ready").is_file():
        return tree
    downloads = debsource.fetch("micropython", VERSION, SOURCE_FILES, base, step)
    if tree.exists():
        shutil.rmtree(tree)
    step("extracting")
    debsource.extract(downloads / "micropython_1.25.0+ds.orig.tar.xz", base)
    debsource.extract(downloads / "micropython_1.25.0+ds-1.debian.tar.xz", tree)  # debian/ inside, as dpkg-source lays it
    for patch in (tree / "debian" / "patches" / "series").read_text(encoding="utf-8").split():
        step(f"patch {patch}")
        debsource.run(["patch", "-p1", "-s", "-i", str(tree / "debian" / "patches" / patch)], cwd=tree, what=f"patch {patch}")
    (tree / ".microfang-ready").write_text(VERSION, encoding="utf-8")
    return tree


def apply_port_patches(tree: Path, boards: Path, port: str, step: Progress) -> None:
    """Apply microfang's own patches to a pristine tree: boards/patches/*.patch (MicroPython's
    core, every port) then boards/<port>/patches/*.patch. Files a previous build patched are
    restored from their backups first, so a changed patch applies."""
    for backup in tree.rglob("*.microfang-orig"):
        shutil.copy2(backup, backup.with_suffix(""))
        backup.unlink()
    for patches in (boards / "patches", boards / port / "patches"):
        for patch in sorted(patches.glob("*.patch")):
            step(f"patch boards/{patch.relative_to(boards)}")
            debsource.run(["patch", "-p1", "-s", "-b", "-z", ".microfang-orig", "-i", str(patch)], cwd=tree,
                          what=f"patch {patch.name}")


def build_key(root: Path, extra: list[str]) -> str:
    """A digest of everything a firmware build depends on."""
    h = hashlib.sha256(VERSION.encode())
    for rel in _source_files(root):
        h.update(str(rel).encode())
        h.update((root / rel).read_bytes())
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
    key = build_key(package_root(), UNIX_FLAGS)
    binary = cache_dir() / "bin" / f"micropython-microfang-{key}"
    if binary.is_file():
        step(f"cached build {key}")
        return binary
    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise PortBuildError("building the unix port needs make and gcc (Debian: apt install build-essential)")
    _check_m32()
    root = stage_sources(package_root(), key)
    tree = fetch_source(step)
    apply_port_patches(tree, root / "boards", "unix", step)
    if not (tree / "mpy-cross" / "build" / "mpy-cross").is_file():
        step("building mpy-cross")
        debsource.run(["make", "-C", "mpy-cross", f"-j{jobs}"], cwd=tree, step=step, what="mpy-cross build")
    build = f"build-microfang-{key}"
    step("building the unix port")
    debsource.run(["make", "-C", "ports/unix", f"-j{jobs}", f"BUILD={build}", "PROG=micropython",
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
        known = ", ".join(name for name, spec in BOARD_DEFS.items() if spec.PORT == "esp32")
        raise PortBuildError(f"unknown ESP32 board {board!r} (known: {known})")
    spec = BOARD_DEFS[board]
    if shutil.which("idf.py") is None or not os.environ.get("IDF_PATH"):
        raise PortBuildError(
            f"building --board {board} needs ESP-IDF {spec.IDF_VERSION}: idf.py is not on PATH and IDF_PATH is not "
            f"set. Run `. $IDF_PATH/export.sh` from an ESP-IDF {spec.IDF_VERSION} install, or use the container "
            f"image espressif/idf:v{spec.IDF_VERSION} (recipe: docs/boards.md)")
    root = package_root()
    root = stage_sources(root, build_key(root, [board]))
    tree = fetch_source(step)
    apply_port_patches(tree, root / "boards", "esp32", step)
    if not (tree / "mpy-cross" / "build" / "mpy-cross").is_file():
        step("building mpy-cross")
        debsource.run(["make", "-C", "mpy-cross", f"-j{jobs}"], cwd=tree, step=step, what="mpy-cross build")
    board_dir = root / "boards" / spec.MICROPYTHON_BOARD
    build = f"build-{spec.MICROPYTHON_BOARD}"
    step(f"idf.py build for {spec.MICROPYTHON_BOARD}")
    debsource.run(["make", "-C", "ports/esp32", f"BOARD_DIR={board_dir}", f"BUILD={build}",
          f"USER_C_MODULES={root / 'firmware' / 'cmodules' / 'micropython.cmake'}"],
         cwd=tree, step=step, what="ESP-IDF build")
    return esp32_firmware_path(board)
