"""`microfang sim`: a fleet of simulated boards against a real gateway and broker.

Each board is the real firmware (Board: supervisor, sandboxes, memory logs, MQTT link) on
CPython in this process, with its own LittleFS image in RAM and its own key. Without
`--broker`, a private broker is started on a free localhost port (broker.py).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from rich.live import Live
from rich.markup import escape
from rich.table import Table

from microfang import console
from microfang.broker import local_broker
from microfang.firmware.blockdev import RAMBlockDevice
from microfang.firmware.board import Board
from microfang.firmware.errors import MicrofangError
from microfang.firmware.port import Flash
from microfang.gateway import Gateway
from microfang.tools.build import SDK_DIR, build

EXAMPLES = SDK_DIR / "examples"
DEFAULT_AGENTS = ("echo", "hello", "threshold")


def build_examples(names: list[str]) -> list[bytes]:
    """Bundles of the SDK's example agents, by name (tools/sdk/examples/<name>)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            manifest = EXAMPLES / name / "agent.toml"
            if not manifest.is_file():
                raise MicrofangError(f"unknown example agent {name!r} (have: {', '.join(sorted(p.name for p in EXAMPLES.iterdir() if (p / 'agent.toml').is_file()))})")
            path, _ = build(manifest, Path(tmp) / f"{name}.mfa")
            out.append(path.read_bytes())
    return out


def register_manifests(gateway: Gateway, device: str, bundles: list[bytes]) -> None:
    """Record the agents a simulated board runs, as `microfang flash` does for a real one: the
    gateway takes permissions (tools, A2A peers, shared memory) from these records."""
    from microfang.firmware.bundle import decode

    assert gateway.store is not None
    for data in bundles:
        gateway.store.register_manifest(device, decode(data)[0])


def _table(boards: list[tuple[Board, dict]], gateway: Gateway, started: float) -> Table:
    table = Table(title=f"microfang sim: {len(boards)} boards, {time.monotonic() - started:.0f} s, gateway "
                        f"{gateway.metrics['requests']} requests / {gateway.metrics['replies']} replies")
    for column in ("board", "link", "agents", "events", "fuel used", "sent", "received", "last log"):
        table.add_column(column, justify="left" if column in ("board", "link", "last log") else "right")
    for board, info in boards[:40]:
        stats = board.supervisor.stats()
        table.add_row(board.device, "online" if board.link.connected else "offline", str(len(stats)),
                      str(sum(s["events"] for s in stats.values())), f"{sum(s['fuel_used'] for s in stats.values()):,}",
                      str(board.link.stats["sent"]), str(board.link.stats["received"]), escape(info.get("last", "")[:40]))
    if len(boards) > 40:
        table.caption = f"... and {len(boards) - 40} more boards"
    return table


async def simulate_micropython(boards: int, bundles: list[bytes], seconds: float | None, broker: str, db: Path,
                               folder: Path) -> dict:
    """Boards as real MicroPython processes (microfang's unix port, ESP32 heap), each booting
    from its own flash image as a board does (firmware/main.py)."""
    from microfang.boards import PROFILES
    from microfang.provision import write_image
    from microfang.tools import portbuild

    with console.stage("port build --board unix") as step:
        micropython = portbuild.build_unix(step)
    async with Gateway(broker=broker, db=db, quiet=True) as gateway:
        procs = []
        for n in range(boards):
            device = f"mp{n:03d}"
            key = gateway.add_device(device, fleet="sim")
            register_manifests(gateway, device, bundles)
            image = folder / f"{device}.img"
            write_image(image, {"device": device, "fleet": "sim", "key": key, "host": gateway.host,
                                "port": gateway.port, "telemetry_ms": 5000}, bundles)
            args = [str(micropython), "-X", PROFILES["esp32"].heapsize_arg(), "-m", "microfang.firmware.main", str(image)]
            if seconds is not None:
                args.append(str(seconds))
            proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            procs.append((device, proc, {"last": ""}))

        async def follow(proc: asyncio.subprocess.Process, info: dict) -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                info["last"] = line.decode(errors="replace").strip()

        readers = [asyncio.create_task(follow(p, info)) for _, p, info in procs]
        started = time.monotonic()

        def table() -> Table:
            t = Table(title=f"microfang sim (MicroPython): {len(procs)} boards, {time.monotonic() - started:.0f} s, "
                            f"gateway {gateway.metrics['requests']} requests / {gateway.metrics['replies']} replies")
            for column in ("board", "process", "presence", "last line"):
                t.add_column(column)
            for device, proc, info in procs:
                state = "running" if proc.returncode is None else f"exited {proc.returncode}"
                online = "online" if gateway.devices.get(device, {}).get("online") else "offline"
                t.add_row(device, state, online, escape(info["last"][:60]))
            return t

        try:
            with Live(table(), console=console.out, refresh_per_second=2) as live:
                while any(p.returncode is None for _, p, _ in procs):
                    await asyncio.sleep(0.5)
                    live.update(table())
        finally:
            for _, proc, _ in procs:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
            await asyncio.gather(*readers, return_exceptions=True)
        return dict(gateway.metrics)


async def simulate(boards: int, bundles: list[bytes], seconds: float | None, broker: str, db: Path) -> dict:
    fleet: list[tuple[Board, dict]] = []
    async with Gateway(broker=broker, db=db, quiet=True) as gateway:
        host, port = gateway.host, gateway.port
        for n in range(boards):
            device = f"sim{n:04d}"
            key = gateway.add_device(device, fleet="sim")
            info: dict = {}

            def report(agent_id: str, kind: str, text: str, info: dict = info) -> None:
                if kind in ("log", "fault"):
                    info["last"] = f"{agent_id}: {text}"

            flash = Flash(RAMBlockDevice(4096, 32))
            board = Board({"device": device, "fleet": "sim", "key": key, "host": host, "port": port,
                           "telemetry_ms": 5000}, flash, report=report)
            for data in bundles:
                board.spawn(data)
            register_manifests(gateway, device, bundles)
            fleet.append((board, info))
        started = time.monotonic()
        duration_ms = None if seconds is None else int(seconds * 1000)
        runs = [asyncio.create_task(board.run(duration_ms)) for board, _ in fleet]
        with Live(_table(fleet, gateway, started), console=console.out, refresh_per_second=2) as live:
            while not all(r.done() for r in runs):
                await asyncio.sleep(0.5)
                live.update(_table(fleet, gateway, started))
        for r in runs:
            r.result()
        return dict(gateway.metrics)


def run_sim(boards: int, agents: list[str], seconds: float | None, broker: str | None, db: Path | None,
            runtime: str = "cpython") -> dict:
    bundles = build_examples(agents)  # first: a bad agent name fails before anything starts
    with tempfile.TemporaryDirectory(prefix="microfang-sim-") as tmp:
        db_path = db or Path(tmp) / "gateway.db"

        def go(url: str) -> dict:
            if runtime == "micropython":
                return asyncio.run(simulate_micropython(boards, bundles, seconds, url, db_path, Path(tmp)))
            return asyncio.run(simulate(boards, bundles, seconds, url, db_path))

        if broker is not None:
            return go(broker)
        with local_broker() as (port, kind):
            console.err_console.print(f"broker: {kind} on 127.0.0.1:{port}", markup=False)
            return go(f"mqtt://127.0.0.1:{port}")
