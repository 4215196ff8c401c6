"""microfang.llm (the repo's host/llm/): LLM calls for agents, providers behind one small
interface and the `llm` request handler. A gateway plug-in: imports only microfang.request
and microfang.config of the host."""

from microfang.llm.handler import llm_handler
from microfang.llm.providers import LocalProvider, OpenAIProvider, Provider, ProviderError

__all__ = ["LocalProvider", "OpenAIProvider", "Provider", "ProviderError", "llm_handler"]
