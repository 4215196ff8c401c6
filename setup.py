"""Builds microfang's C extensions: wasm3 (firmware/cmodules/wasm3/) and Ed25519 verification
(firmware/cmodules/ed25519/) for CPython, from the same C the board's firmware is built with."""

from glob import glob

from setuptools import Extension, setup

WASM3 = "firmware/cmodules/wasm3"
ED25519 = "firmware/cmodules/ed25519"

setup(
    ext_modules=[
        Extension(
            "microfang._wasm3",
            sources=sorted(glob(f"{WASM3}/wasm3/*.c")) + [f"{WASM3}/cpython/_wasm3.c"],
            include_dirs=[f"{WASM3}/wasm3"],
            # Same flags as pywasm3 0.5.0, whose sources these are.
            extra_compile_args=["-g0", "-O3", "-fomit-frame-pointer", "-fno-stack-check",
                                "-fno-stack-protector", "-DDEBUG", "-DNASSERTS",
                                "-Dd_m3RecordBacktraces=1", "-Wno-unused"],
        ),
        Extension(
            "microfang._ed25519",
            sources=[f"{ED25519}/cpython/_ed25519.c", f"{ED25519}/mf_ed25519.c", f"{ED25519}/monocypher/monocypher.c",
                     f"{ED25519}/sha512/sha512-blocks.c", f"{ED25519}/sha512/sha512-hash.c"],
            extra_compile_args=["-O2", "-Wno-unused"],
        ),
    ]
)
