# microfang._wasm3, the CPython binding of wasm3 built from C (firmware/cmodules/wasm3/cpython/):
# its API (Environment, Runtime, Module, fuel and memory limits) is untyped for mypy.
from typing import Any

def __getattr__(name: str) -> Any: ...
