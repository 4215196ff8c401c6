"""The microfang gateway (microfang.gateway, the repo's host/gateway/): registry, envelope
checks, request router, audit, replicas, telemetry, deploy and migration jobs for a fleet.

Plug-ins do not import this package: they depend on microfang.request."""

from microfang.gateway.core import Gateway
from microfang.gateway.router import Budget, RateLimiter, Router

__all__ = ["Budget", "Gateway", "RateLimiter", "Router"]
