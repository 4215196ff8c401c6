"""The gateway's /metrics in the Prometheus text format (`promtool check metrics` clean: every
family has its HELP and TYPE, counters end in _total, base units):

- the gateway's own counters and gauges (messages, requests, drops by reason, the router's
  counts, LLM calls and tokens when an LLM answers requests), build info;
- the fleet as this gateway sees it: each registered board's presence, and from the latest
  telemetry it took from each board (`FleetTelemetry`, kept in memory: a scrape reads no
  telemetry from the store) free heap, uptime and each agent's state, fuel, traps, events,
  restarts and memory;
- the jobs in the store (deploys, migrations, commands) by kind and state, and the staged
  rollouts by state: two queries.

With several gateways on one store each takes a share of the boards' telemetry: it exports the
boards it heard from (query across instances with max by (device, agent)).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version
from typing import Any, Protocol

from microfang.firmware.errors import MicrofangError
from microfang.gateway.router import Router
from microfang.gateway.store import Store

Labels = dict[str, str]
Sample = tuple[Labels, float]

# HELP text of the gateway's counters (gateway.metrics, router.counts) and gauges.
HELP = {
    "messages": "envelopes received from boards", "requests": "agent requests received",
    "replies": "replies sent to agents", "telemetry": "telemetry reports stored",
    "log_records": "memory-log records replicated", "publishes": "agent publishes received",
    "presence": "presence changes seen", "denied": "requests refused by the registered manifest",
    "undelivered": "replies a board reported it could not deliver to its agent",
    "lines": "agents' log lines received from boards (microfang logs)",
    "store_failures": "store transactions that failed (the work was tried again)",
    "dropped": "messages dropped, by reason", "batches": "store transactions of board messages and deferred writes",
    "refused_unverified": "requests over their rate limit refused before their HMAC was checked",
    "fenced": "replay windows closed over requests refused unverified (overlimit.py)",
    "replies_resent": "kept replies published again by a gateway finishing another's (or its own earlier) requests",
    "llm_calls": "llm requests answered by the LLM provider", "llm_errors": "llm requests that failed",
    "llm_tokens": "tokens the LLM provider generated for agents",
    "router_requests": "requests routed", "router_replies_ok": "requests answered",
    "router_replies_error": "requests answered with an error", "router_rate_limited": "requests over the rate limit",
    "router_over_budget": "requests over the budget", "router_unknown_kind": "requests of a kind nobody handles",
    "router_busy": "requests refused while their handler was busy", "router_timeouts": "requests whose handler timed out",
    "devices": "devices registered", "devices_online": "devices online",
    "broker_connected": "1 while the gateway is connected to its broker",
    "requests_pending": "requests waiting for their handler", "jobs_active": "jobs this gateway is carrying out",
    "build_info": "the running microfang, by version",
}

# Per-agent series from telemetry: (family, telemetry field, kind, help).
AGENT_SERIES = (
    ("agent_fuel_used", "fuel_used", "counter", "fuel the agent has used (wasm instructions metered)"),
    ("agent_traps", "traps", "counter", "traps of the agent (it restarts after one)"),
    ("agent_events", "events", "counter", "events delivered to the agent"),
    ("agent_restarts", "restarts", "counter", "restarts of the agent by its board's supervisor"),
    ("agent_memory_bytes", "memory", "gauge", "linear memory the agent's sandbox holds"),
)
# Per-device series from telemetry: (family, telemetry field, kind, scale, help).
DEVICE_SERIES = (
    ("device_free_heap_bytes", "free_heap", "gauge", 1.0, "free heap on the board"),
    ("device_uptime_seconds", "uptime_ms", "gauge", 0.001, "time since the board started"),
    ("device_flash_used_bytes", "flash_used", "gauge", 1.0, "flash the board's filesystem uses"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Exposition:
    """Lines of the text format, one family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, samples: Iterable[Sample], help_text: str | None = None) -> None:
        metric = f"microfang_{name}" + ("_total" if kind == "counter" else "")
        rows = list(samples)
        self.lines += [f"# HELP {metric} {help_text or HELP.get(name, name.replace('_', ' '))}", f"# TYPE {metric} {kind}"]
        for labels, value in rows:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{metric}{{{text}}} {_number(value)}" if text else f"{metric} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def gateway_families(out: Exposition, metrics: dict[str, int], router_counts: dict[str, int],
                     health: dict[str, Any]) -> None:
    """The gateway's counters and gauges, and build info."""
    out.family("build_info", "gauge", [({"version": version("microfang")}, 1)])
    for name, value in sorted(metrics.items()):
        if not name.startswith("dropped_"):
            out.family(name, "counter", [({}, value)])
    out.family("dropped", "counter", [({"reason": name[8:]}, value) for name, value in sorted(metrics.items())
                                      if name.startswith("dropped_")])
    for name, value in sorted(router_counts.items()):
        out.family(f"router_{name}", "counter", [({}, value)])
    for name, key in (("devices", "devices"), ("devices_online", "online"), ("requests_pending", "pending_requests"),
                      ("jobs_active", "active_jobs")):
        if key in health:
            out.family(name, "gauge", [({}, health[key])])
    out.family("broker_connected", "gauge", [({}, int(health["broker_connected"]))])


class FleetTelemetry:
    """The numbers /metrics exports from each board's latest telemetry (shapes.py checked it):
    a few per board and per agent, not the whole report."""

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, float]] = {}
        self.agents: dict[str, dict[str, tuple[str, dict[str, float]]]] = {}  # device -> agent -> (state, numbers)

    def note(self, device: str, body: dict[str, Any]) -> None:
        self.devices[device] = {field: body[field] for _, field, _, _, _ in DEVICE_SERIES
                                if isinstance(body.get(field), int | float) and not isinstance(body[field], bool)}
        self.agents[device] = {
            name: (str(stats.get("state", "unknown")),
                   {field: stats[field] for _, field, _, _ in AGENT_SERIES
                    if isinstance(stats.get(field), int | float) and not isinstance(stats[field], bool)})
            for name, stats in body.get("agents", {}).items() if isinstance(stats, dict)}

    def families(self, out: Exposition, registry: dict[str, dict[str, Any]]) -> None:
        out.family("device_online", "gauge", [({"device": d, "fleet": str(r["fleet"])}, int(bool(r.get("online"))))
                                              for d, r in sorted(registry.items())],
                   "1 while the gateway believes the board online (presence.py)")
        for name, field, kind, scale, text in DEVICE_SERIES:  # only registered boards: not a removed one's
            out.family(name, kind, [({"device": d}, numbers[field] * scale) for d, numbers in sorted(self.devices.items())
                                    if field in numbers and d in registry], text)
        agents = [(d, a, state, numbers) for d, per in sorted(self.agents.items()) if d in registry
                  for a, (state, numbers) in sorted(per.items())]
        out.family("agent_state", "gauge", [({"device": d, "agent": a, "state": state}, 1)
                                            for d, a, state, _ in agents],
                   "the agent's state in its board's latest telemetry (1 for the state it is in)")
        for name, field, kind, text in AGENT_SERIES:
            out.family(name, kind, [({"device": d, "agent": a}, numbers[field])
                                    for d, a, _, numbers in agents if field in numbers], text)


def job_families(out: Exposition, store: Store) -> None:
    """Jobs in the store by kind and state; nothing when the store cannot answer (its failure is
    in /healthz and store_failures)."""
    try:
        counts = store.job_counts()
        rollouts = store.rollout_counts()
    except MicrofangError:
        return
    out.family("jobs", "gauge", [({"kind": kind, "state": state}, n) for (kind, state), n in sorted(counts.items())],
               "jobs in the store (deploy, migrate, commands), by kind and state")
    out.family("rollouts", "gauge", [({"state": state}, n) for state, n in sorted(rollouts.items())],
               "staged rollouts in the store, by state (running, done, aborted, cancelled)")


class _Telemetry(Protocol):
    telemetry: FleetTelemetry  # board_messages.BoardMessages notes each board's latest there


class Source(Protocol):
    """What /metrics reads of the gateway (core.Gateway)."""

    metrics: dict[str, int]
    router: Router
    store: Store | None

    @property
    def board_messages(self) -> _Telemetry: ...

    @property
    def devices(self) -> dict[str, dict[str, Any]]: ...

    def health(self) -> dict[str, Any]: ...


def exposition(gateway: Source) -> str:
    """The whole /metrics page of `gateway`."""
    out = Exposition()
    gateway_families(out, gateway.metrics, gateway.router.counts, gateway.health())
    gateway.board_messages.telemetry.families(out, gateway.devices)
    if gateway.store is not None:
        job_families(out, gateway.store)
    return out.text()


def prometheus(metrics: dict[str, int], router_counts: dict[str, int], health: dict[str, Any]) -> str:
    """The gateway's own counters and gauges alone (no fleet, no store)."""
    out = Exposition()
    gateway_families(out, metrics, router_counts, health)
    return out.text()

