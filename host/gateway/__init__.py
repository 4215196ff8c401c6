"""The microfang gateway: registry, router, audit, replicas and telemetry for a fleet."""

from microfang.gateway.core import Gateway
from microfang.gateway.router import Budget, RateLimiter, Request, Router

__all__ = ["Budget", "Gateway", "RateLimiter", "Request", "Router"]
