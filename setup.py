"""Builds microfang's one C extension: wasm3 for CPython (see firmware/cmodules/wasm3/)."""

from glob import glob

from setuptools import Extension, setup

WASM3 = "firmware/cmodules/wasm3"

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
        )
    ]
)
