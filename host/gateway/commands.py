"""One-shot control jobs, queued by `microfang mcp`'s control tools: a message to an agent (the
job's answer is what the agent publishes next) and the lifecycle commands suspend, resume and
reclaim (sent on ctl). Each runs as its own task; deploys and migrations are transfers.py's.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from microfang.firmware import protocol
from microfang.gateway.jobs import Boards
from microfang.request import publish_text

MESSAGE = "message"
KINDS = (MESSAGE, *protocol.LIFECYCLE)  # job kinds carried out here


class Commands:
    def __init__(self, gateway: Boards) -> None:
        self.gw = gateway
        self.running: set[int] = set()

    def take(self, row: dict[str, Any]) -> None:
        """Start a queued command job (once: it stays active in the store until it has ended)."""
        if row["id"] not in self.running:
            self.running.add(row["id"])
            asyncio.get_running_loop().create_task(self._run(row), name=f"microfang[job {row['id']}].{row['kind']}")

    async def _run(self, row: dict[str, Any]) -> None:
        store = self.gw.store
        assert store is not None
        device, agent, kind = row["device"], row["agent"], row["kind"]
        timeout = 10.0
        source = "mcp"
        try:
            if device not in self.gw.devices:
                raise KeyError(f"unknown device {device!r}")
            if kind == MESSAGE:
                asked = json.loads(store.job_data(row["id"]) or b"{}")
                timeout = float(asked.get("timeout", 10))
                source = "a2a" if asked.get("from") == "a2a" else "mcp"  # who asked: microfang mcp or a2aserve
                answer = await self.gw.ask(device, agent, {"text": str(asked.get("text", "")), "from": source},
                                           timeout)
                ok, detail = True, publish_text(answer)
            else:
                self.gw.send(device, agent, kind, 0, control=True)
                ok, detail = True, f"{kind} sent to {agent} on {device}"
        except TimeoutError:
            ok, detail = False, f"{agent} on {device} did not answer in {timeout:.0f} s"
        except KeyError as e:
            ok, detail = False, str(e.args[0])
        store.update_job(row["id"], state="done" if ok else "failed", detail=detail)
        store.audit(device, agent, f"{source} {kind}", {"job": row["id"], "ok": ok})
        self.running.discard(row["id"])
