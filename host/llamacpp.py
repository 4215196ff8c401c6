"""Loading a GGUF model with llama-cpp-python, the one way microfang does it (the offline LLM and
the smollm2 embedder).

llama.cpp repacks a model's weights for the CPU's fastest kernels ("extra buffer types"); on CPUs
with AMX (Intel Sapphire Rapids and later, this machine among them) the AMX kernels crash the
process as soon as a batch of two or more tokens is decoded (SIGSEGV in
ggml_backend_amx_mul_mat, ggml-org/llama.cpp#20824; seen here with llama-cpp-python 0.3.36 and
SmolLM2-135M Q4_1: one-token prompts ran, any chat prompt crashed). `Llama()` takes no switch
for it, so the model is loaded with the default model parameters it asks for, less the
repacking: plain CPU kernels, the same answers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_loading = threading.Lock()  # the default parameters are swapped for the length of one load


def load(model_path: Path, **settings: Any) -> Any:
    """A `llama_cpp.Llama` for the model at `model_path` (settings as Llama takes them), its
    weights not repacked. Raises ImportError without llama-cpp-python."""
    import llama_cpp

    with _loading, _without_weight_repacking(llama_cpp.llama_cpp):
        return llama_cpp.Llama(model_path=str(model_path), **settings)


@contextlib.contextmanager
def _without_weight_repacking(low_level: Any) -> Iterator[None]:
    defaults = low_level.llama_model_default_params

    def params() -> Any:
        chosen = defaults()
        chosen.use_extra_bufts = False
        return chosen

    low_level.llama_model_default_params = params
    try:
        yield
    finally:
        low_level.llama_model_default_params = defaults
