"""`microfang dashboard`: the fleet in a web page, served from the gateway's store (SQLite or
PostgreSQL, as `status` and `mcp` read it) behind a bearer token: boards with presence and its
age, agents with state, fuel, memory, events, traps and restarts, their log lines as they come, the
LLM's latest answers, staged rollouts and jobs with progress. The page (page.html: plain HTML and a small script, no framework, nothing
fetched from elsewhere) is public; what it shows comes from /api/fleet, which needs the token
(httpguard.py). The URL printed carries the token in its fragment (#token=...), which browsers
never send to a server.

    snapshot(store, since=0)   # the JSON /api/fleet serves; `since`: the last log line seen
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Any

from microfang.gateway.agentlines import AgentLines
from microfang.gateway.answers import Answers
from microfang.gateway.presence import reader_view
from microfang.gateway.rollouts import Rollouts
from microfang.gateway.store import Store
from microfang.logs import line_json

LINES_AT_ONCE = 200  # log lines per answer
JOBS_SHOWN = 20
ROLLOUTS_SHOWN = 5
ANSWERS_SHOWN = 10
PAGE = files(__package__).joinpath("page.html").read_bytes()


def _agents(telemetry: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    agents = (telemetry or {}).get("agents")
    return {str(name): a for name, a in agents.items() if isinstance(a, dict)} if isinstance(agents, dict) else {}


def snapshot(store: Store, since: int = 0) -> dict[str, Any]:
    """The fleet now, and the log lines numbered above `since`."""
    now, online = time.time(), reader_view(store)
    boards = []
    for device, d in sorted(store.devices().items()):
        telemetry = store.latest_telemetry(device)
        agents = [{"agent": name, "state": str(a.get("state", "?")), "fuel_used": a.get("fuel_used", 0),
                   "events": a.get("events", 0), "traps": a.get("traps", 0), "restarts": a.get("restarts", 0),
                   "memory": a.get("memory", 0)}
                  for name, a in sorted(_agents(telemetry).items())]
        boards.append({"device": device, "fleet": d["fleet"], "online": online(d, now),
                       "seen_s_ago": None if d["last_seen"] is None else round(now - d["last_seen"], 1),
                       "free_heap": (telemetry or {}).get("free_heap"), "agents": agents})
    lines = AgentLines(store)
    fresh = lines.after(since, limit=LINES_AT_ONCE) if since else lines.latest(LINES_AT_ONCE)
    jobs = [{k: job[k] for k in ("id", "kind", "device", "target", "agent", "version", "state", "detail", "progress",
                                 "size")} for job in store.jobs()[-JOBS_SHOWN:]]
    rollouts = [{k: r[k] for k in ("id", "fleet", "agent", "version", "state", "wave", "waves", "detail", "jobs")}
                for r in Rollouts(store).get(limit=ROLLOUTS_SHOWN)]
    return {"time": now, "boards": boards, "lines": [line_json(line) for line in fresh], "jobs": jobs[::-1],
            "rollouts": rollouts[::-1], "answers": Answers(store).latest(ANSWERS_SHOWN)}


def app(where: str) -> Any:
    """The dashboard's ASGI app on the store at `where` (one connection, opened at startup)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from microfang.ops import open_store

    held: dict[str, Store] = {}

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        held["store"] = open_store(where)
        try:
            yield
        finally:
            held["store"].close()

    async def page(request: Request) -> Response:
        return Response(PAGE, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                                            "style-src 'unsafe-inline'"})

    async def fleet(request: Request) -> Response:
        try:
            since = max(0, int(request.query_params.get("since", "0")))
        except ValueError:
            return JSONResponse({"error": "since must be an integer"}, status_code=400)
        return JSONResponse(snapshot(held["store"], since))

    return Starlette(routes=[Route("/", page), Route("/api/fleet", fleet)], lifespan=lifespan)


async def serve(where: str, port: int, token: str, host: str = "127.0.0.1", ready: Any = None) -> None:
    """Serve the dashboard on host:port until cancelled; `ready()` once the port is bound."""
    from microfang import httpguard

    sock = httpguard.bind(host, port, "--port")
    sock.listen(httpguard.MAX_CONNECTIONS)  # connections wait for the server from now on, none refused
    if ready is not None:
        ready()
    guarded = httpguard.HttpGuard(app(where), token, port, hosts=(host, "localhost"), public=("/",))
    await httpguard.server(guarded, lifespan="on").serve(sockets=[sock])
