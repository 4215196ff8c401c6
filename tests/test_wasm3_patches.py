"""The vendored wasm3 is the pristine pywasm3 0.5.0 sources plus the numbered patches, exactly
(firmware/cmodules/wasm3/README.md): every change to the engine is a patch someone can read."""

import hashlib
import subprocess
import sys
from pathlib import Path

from microfang.tools import debsource

WASM3 = Path(__file__).resolve().parent.parent / "firmware" / "cmodules" / "wasm3"
SDIST_SHA256 = "5a47c8a39f7f6ae71b3316b2e5d86c9d0db6e771a65f09a86e4d4aa3a19aefcc"


def test_patches_on_the_pristine_sdist_reproduce_the_vendored_engine(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "pywasm3==0.5.0", "-d", str(tmp_path)], check=True, capture_output=True, timeout=300)
    sdist = tmp_path / "pywasm3-0.5.0.tar.gz"
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == SDIST_SHA256
    debsource.extract(sdist, tmp_path)
    tree = tmp_path / "pywasm3-0.5.0"
    for patch in sorted((WASM3 / "patches").glob("*.patch")):
        subprocess.run(["patch", "-p1", "-s", "-i", str(patch)], cwd=tree, check=True, timeout=60)
    vendored = {p.relative_to(WASM3 / "wasm3"): p.read_bytes() for p in (WASM3 / "wasm3").rglob("*") if p.is_file()}
    patched = {p.relative_to(tree / "wasm3"): p.read_bytes() for p in (tree / "wasm3").rglob("*") if p.is_file()}
    vendored.pop(Path("LICENSE"))  # the MIT licence, copied from the sdist's top folder
    assert sorted(vendored) == sorted(patched)
    assert [name for name in sorted(patched) if patched[name] != vendored[name]] == []
