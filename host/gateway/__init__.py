"""The microfang gateway: registry, router, audit, replicas and telemetry for a fleet."""

from microfang.gateway.core import Gateway
from microfang.gateway.router import RateLimiter, Request, Router

__all__ = ["Gateway", "RateLimiter", "Request", "Router"]
