"""LLM calls for agents: providers behind one small interface and the router handler."""

from microfang.llm.handler import llm_handler
from microfang.llm.providers import LocalProvider, OpenAIProvider, Provider, ProviderError

__all__ = ["LocalProvider", "OpenAIProvider", "Provider", "ProviderError", "llm_handler"]
