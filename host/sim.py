"""`microfang sim`: a fleet of simulated boards against a real gateway and broker.

Boards are provisioned exactly as `microfang flash` provisions real ones: a fresh identity in
the gateway's registry (`--db`, default sim.db: a sim never touches the production gateway.db
unless told to), the operator's public keys from the sim's own keyring (NAME-signing.keys beside
the database, made on first use: a sim never uses the production keys), /config.cbor and
/agents on their flash, their agents' manifests registered. So `microfang deploy --fleet`,
`migrate`, `status` and `jobs` work against a running sim from another terminal, with the
same `--db` (and `--signing-keys sim-signing.keys` to deploy). Each board boots the real firmware the way firmware/main.py boots a board: in this
process on CPython (flash in RAM), or as a MicroPython process (microfang's unix port at a
board's heap profile, flash in an image file). Without `--broker`, a private broker is started
on a free localhost port (broker.py).

Which boards run which agents: `--boards N --agents a,b` (N identical boards), or a fleet file:

    fleet = "garden"                # default "sim"
    runtime = "cpython"             # every board's default: cpython | micropython
    profile = "esp32"               # heap of MicroPython boards: esp32 | esp32s3-psram

    [boards.kitchen]
    agents = ["plant/agent.toml", "echo"]   # example names, manifests (built) or bundles (.mfa)

    [boards.kitchen.sensors]        # what sensor_read(channel) reads (firmware/sensors.py)
    temperature = { mean = 3200 }   # channel 0 held at 32.00 C (a constant)
    moisture = { mean = 2500, amplitude = 1000, period_ms = 8000 }   # channel 1: 15-35 %, a wave

    [boards.attic]
    runtime = "micropython"         # no agents: a board to deploy or migrate to

Agent paths are relative to the fleet file. A top-level [sensors] table is every board's
default; without one a board reads the firmware's simulated channels (firmware/sensors.py
SIMULATED: temperature 15-35 C over 4 s, ...), on either runtime.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from microfang import console, signing
from microfang.boards import PROFILES
from microfang.broker import local_broker
from microfang.config import read_toml
from microfang.firmware import main as firmware_main
from microfang.firmware import protocol
from microfang.firmware.blockdev import RAMBlockDevice
from microfang.firmware.board import Board
from microfang.firmware.bundle import decode
from microfang.firmware.errors import MicrofangError
from microfang.firmware.port import Flash
from microfang.firmware.sensors import SensorError, check_all
from microfang.flash import board_config, read_agents, register_agents
from microfang.gateway import Gateway
from microfang.provision import BLOCK, write_flash, write_image
from microfang.signing import Keyring
from microfang.tools.build import SDK_DIR, build

EXAMPLES = SDK_DIR / "examples"
RUNTIMES = ("cpython", "micropython")
FLASH_BLOCKS = 64  # 256 KiB of LittleFS per board, as provision.write_image lays out
TELEMETRY_MS = 5000
MAX_BOARDS = 1000  # per sim process; bench/loadgen.py emulates more boards on the wire


def example_names() -> list[str]:
    return sorted(p.name for p in EXAMPLES.iterdir() if (p / "agent.toml").is_file())


def load_agent(spec: str, base: Path, tmp: Path) -> bytes:
    """One agent's bundle from an example name, a manifest (.toml, built now) or a bundle (.mfa)."""
    path = base / spec
    if spec.endswith(".toml"):
        if not path.is_file():
            raise MicrofangError(f"{path}: no such manifest")
        out, _ = build(path, tmp / f"{len(list(tmp.iterdir()))}.mfa")
        return out.read_bytes()
    if spec.endswith(".mfa"):
        return read_agents([path])[0]
    manifest = EXAMPLES / spec / "agent.toml"
    if "/" in spec or not manifest.is_file():
        raise MicrofangError(f"unknown agent {spec!r}: give a manifest (.toml), a bundle (.mfa) or an example "
                             f"name ({', '.join(example_names())})")
    out, _ = build(manifest, tmp / f"{spec}.mfa")
    return out.read_bytes()


def build_examples(names: list[str]) -> list[bytes]:
    """Bundles of the SDK's example agents, by name (tools/sdk/examples/<name>)."""
    with tempfile.TemporaryDirectory() as tmp:
        return [load_agent(name, Path.cwd(), Path(tmp)) for name in names]


@dataclass
class BoardPlan:
    name: str
    agents: list[bytes] = field(default_factory=list)
    runtime: str = "cpython"
    profile: str = "esp32"
    sensors: dict[int, dict] | None = None  # /config.cbor "sensors"; None: the firmware's simulated ones


@dataclass
class FleetPlan:
    fleet: str
    boards: list[BoardPlan]


def once(bundles: list[bytes], where: str) -> None:
    """Refuse an agent listed twice for one board (a board runs one of each agent id)."""
    seen: set[str] = set()
    for data in bundles:
        agent_id = decode(data)[0]["agent_id"]
        if agent_id in seen:
            raise MicrofangError(f"{where}: agent {agent_id!r} listed twice (a board runs one of each)")
        seen.add(agent_id)


def _check_choice(where: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    if value not in choices:
        raise MicrofangError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def read_sensors(where: str, table: Any) -> dict[int, dict]:
    """A fleet file's sensors table ({channel name or number: spec}) as /config.cbor holds it;
    simulated channels only: a sim board has no ADC to read."""
    if not isinstance(table, dict):
        raise MicrofangError(f"{where}: must be a table of channels ([...sensors])")
    channels = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in table.items()}
    try:
        specs = check_all(channels)
    except SensorError as e:
        raise MicrofangError(f"{where}: {e}") from None
    for n, spec in specs.items():
        if "pin" in spec:
            raise MicrofangError(f"{where}: sensor {n}: a sim board has no ADC pins; give a simulated channel "
                                 f"(mean, amplitude, period_ms, phase_ms)")
    return specs


def plan_from_flags(boards: int, agents: list[str], runtime: str, profile: str, fleet: str) -> FleetPlan:
    """N identical boards sim0000, sim0001, ..., each running every agent in `agents`."""
    if not 1 <= boards <= MAX_BOARDS:
        raise MicrofangError(f"--boards must be 1 to {MAX_BOARDS} (a sim's boards share one process)")
    if not protocol.name_ok(fleet):
        raise MicrofangError(f"--fleet: {fleet!r} is not a valid name ({protocol.NAME_RULE})")
    _check_choice("--profile", profile, sorted(PROFILES))
    with tempfile.TemporaryDirectory() as tmp:
        bundles = [load_agent(spec, Path.cwd(), Path(tmp)) for spec in agents]
    once(bundles, "--agents")
    return FleetPlan(fleet, [BoardPlan(f"sim{n:04d}", bundles, runtime, profile) for n in range(boards)])


def read_fleet_file(path: Path) -> FleetPlan:
    """A FleetPlan from a fleet file (format in this module's docstring)."""
    doc = read_toml(path)
    unknown = sorted(set(doc) - {"fleet", "runtime", "profile", "sensors", "boards"})
    if unknown:
        raise MicrofangError(f"{path}: unknown key {unknown[0]!r} (have: fleet, runtime, profile, sensors, boards)")
    fleet = doc.get("fleet", "sim")
    if not isinstance(fleet, str) or not protocol.name_ok(fleet):
        raise MicrofangError(f"{path}: fleet: {fleet!r} is not a valid name ({protocol.NAME_RULE})")
    runtime = _check_choice(f"{path}: runtime", doc.get("runtime", "cpython"), RUNTIMES)
    profile = _check_choice(f"{path}: profile", doc.get("profile", "esp32"), sorted(PROFILES))
    sensors = read_sensors(f"{path}: sensors", doc["sensors"]) if "sensors" in doc else None
    tables = doc.get("boards")
    if not isinstance(tables, dict) or not tables:
        raise MicrofangError(f"{path}: boards: list at least one board as a [boards.NAME] table")
    if len(tables) > MAX_BOARDS:
        raise MicrofangError(f"{path}: boards: {len(tables)} boards, at most {MAX_BOARDS} per sim")
    plans = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
            where = f"{path}: boards.{name}"
            if not protocol.name_ok(name):
                raise MicrofangError(f"{where}: not a valid board name ({protocol.NAME_RULE})")
            if not isinstance(table, dict):
                raise MicrofangError(f"{where}: must be a table ([boards.{name}])")
            extra = sorted(set(table) - {"agents", "runtime", "profile", "sensors"})
            if extra:
                raise MicrofangError(f"{where}: unknown key {extra[0]!r} (have: agents, runtime, profile, sensors)")
            specs = table.get("agents", [])
            if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
                raise MicrofangError(f"{where}.agents: must be a list of names or paths")
            bundles = []
            for spec in specs:
                try:
                    bundles.append(load_agent(spec, path.parent, Path(tmp)))
                except MicrofangError as e:
                    raise MicrofangError(f"{where}.agents: {e}") from None
            once(bundles, f"{where}.agents")
            plans.append(BoardPlan(name, bundles,
                                   _check_choice(f"{where}.runtime", table.get("runtime", runtime), RUNTIMES),
                                   _check_choice(f"{where}.profile", table.get("profile", profile), sorted(PROFILES)),
                                   read_sensors(f"{where}.sensors", table["sensors"]) if "sensors" in table else sensors))
    return FleetPlan(fleet, plans)


def sim_keyring(db: Path) -> Keyring:
    """The sim's operator keys, beside its database (made on first use)."""
    path = db.with_name(f"{db.stem}-signing.keys")
    return signing.load(path) if path.exists() else signing.generate(path)


def provision(plan: FleetPlan, db: Path, host: str, port: int, keyring: Keyring) -> list[dict]:
    """Register every board as `microfang flash` does; return their /config.cbor contents."""
    configs = []
    for board in plan.boards:
        config = board_config(db, board.name, plan.fleet, f"mqtt://{host}:{port}", None, None, keyring)
        config["telemetry_ms"] = TELEMETRY_MS
        if board.sensors is not None:
            config["sensors"] = board.sensors
        register_agents(db, board.name, board.agents)
        configs.append(config)
    return configs


class InProcessBoard:
    """The firmware on CPython in this process, booted from a RAM flash the way main.py boots."""

    runtime = "cpython"

    def __init__(self, plan: BoardPlan, config: dict, sensors: Callable[[str, int], int] | None = None,
                 keyring: Keyring | None = None) -> None:
        self.name = plan.name
        self.last = ""
        flash = Flash(RAMBlockDevice(BLOCK, FLASH_BLOCKS))
        write_flash(flash, config, plan.agents, keyring)
        # `sensors` None: the board reads its config's channels (firmware/sensors.py), as a
        # MicroPython board does.
        self.board: Board = firmware_main.load(flash, report=self._report, sensors=sensors)
        self.task: asyncio.Task | None = None

    def _report(self, agent_id: str, kind: str, text: str) -> None:
        if kind in ("log", "fault"):
            self.last = f"{agent_id}: {text}"

    async def start(self, seconds: float | None) -> None:
        self.task = asyncio.create_task(self.board.run(None if seconds is None else int(seconds * 1000)))

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def agents(self, gateway: Gateway) -> dict[str, dict]:
        return self.board.supervisor.stats()

    async def stop(self) -> None:
        if self.task is not None:
            self.board.stop()
            await asyncio.gather(self.task, return_exceptions=True)

    def result(self) -> None:
        if self.task is not None and self.task.done() and not self.task.cancelled():
            self.task.result()  # a firmware bug in the simulator is a bug: keep its traceback


class ProcessBoard:
    """microfang's MicroPython (unix port) at a board's heap, booting from a flash image file."""

    runtime = "micropython"

    def __init__(self, plan: BoardPlan, config: dict, keyring: Keyring, folder: Path, micropython: Path) -> None:
        self.name = plan.name
        self.last = ""
        self.image = folder / f"{plan.name}.img"
        write_image(self.image, config, plan.agents, FLASH_BLOCKS, keyring)
        self.args = [str(micropython), "-X", PROFILES[plan.profile].heapsize_arg(), "-m", "microfang.firmware.main",
                     str(self.image)]
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task | None = None

    async def start(self, seconds: float | None) -> None:
        args = self.args + ([] if seconds is None else [str(seconds)])
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.STDOUT)
        self.reader = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            if text:
                self.last = text

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def agents(self, gateway: Gateway) -> dict[str, dict]:
        tele = gateway.store.latest_telemetry(self.name) if gateway.store is not None else None
        agents = tele.get("agents") if isinstance(tele, dict) else None
        return agents if isinstance(agents, dict) else {}

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)

    def result(self) -> None:
        if self.proc is not None and self.proc.returncode not in (0, None, -15):
            self.last = f"exited {self.proc.returncode}: {self.last}"


SimBoard = InProcessBoard | ProcessBoard


def view(boards: list[SimBoard], gateway: Gateway, fleet: str, started: float, db: Path, rows: int) -> Table:
    """The live table: one row per board, kept to 80 columns and to `rows` rows."""
    m = gateway.metrics
    title = (f"sim {fleet}: {len(boards)} boards, {time.monotonic() - started:.0f} s, "
             f"{m['requests']} requests / {m['replies']} replies")
    table = Table(title=title, title_justify="left", expand=False, pad_edge=False, box=None,
                  caption=Text(f"deploy: microfang deploy BUNDLE --fleet {fleet} --db {db}", no_wrap=True,
                               overflow="ellipsis"), caption_justify="left", caption_style="dim")
    table.add_column("board", no_wrap=True, max_width=14, overflow="ellipsis")
    table.add_column("rt", no_wrap=True)
    table.add_column("link", no_wrap=True)
    table.add_column("agents", justify="right", no_wrap=True)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("last log", no_wrap=True, overflow="ellipsis", max_width=36)
    for b in boards[:rows]:
        stats = b.agents(gateway)
        events = sum(s.get("events", 0) for s in stats.values() if isinstance(s, dict))
        online = gateway.devices.get(b.name, {}).get("online")
        link = "online" if online else ("offline" if b.running else "stopped")
        table.add_row(b.name, "mpy" if b.runtime == "micropython" else "py", link, str(len(stats)), f"{events:,}",
                      escape(console.printable(b.last)))
    if len(boards) > rows:
        table.add_row(f"+{len(boards) - rows} more", "", "", "", "", "")
    return table


async def simulate(plan: FleetPlan, seconds: float | None, broker: str, db: Path, folder: Path,
                   http_port: int | None = None) -> dict:
    from microfang.config import parse_broker

    host, port, _ = parse_broker(broker)
    keyring = sim_keyring(db)
    configs = provision(plan, db, host, port, keyring)  # before the gateway loads the registry
    micropython = None
    if any(b.runtime == "micropython" for b in plan.boards):
        from microfang.tools import portbuild

        with console.stage("port build --board unix") as step:
            micropython = portbuild.build_unix(step)
    async with Gateway(broker=broker, db=db, http_port=http_port, quiet=True) as gateway:
        boards: list[SimBoard] = []
        for board, config in zip(plan.boards, configs):
            if board.runtime == "micropython":
                assert micropython is not None
                boards.append(ProcessBoard(board, config, keyring, folder, micropython))
            else:
                boards.append(InProcessBoard(board, config, keyring=keyring))
        started = time.monotonic()
        for b in boards:
            await b.start(seconds)
        rows = max(3, console.out.size.height - 6)
        try:
            with console.live(view(boards, gateway, plan.fleet, started, db, rows)) as live:
                while any(b.running for b in boards):
                    await asyncio.sleep(0.5)
                    live.update(view(boards, gateway, plan.fleet, started, db, rows))
        finally:
            for b in boards:
                await b.stop()
        for b in boards:
            b.result()
        return dict(gateway.metrics)


def run_sim(plan: FleetPlan, seconds: float | None, broker: str | None, db: Path, http_port: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="microfang-sim-") as tmp:

        def go(url: str) -> dict:
            try:
                return asyncio.run(simulate(plan, seconds, url, db, Path(tmp), http_port))
            except ConnectionError as e:
                raise MicrofangError(str(e)) from None

        if broker is not None:
            return go(broker)
        with local_broker() as (port, kind):
            console.err_console.print(f"broker: {kind} on 127.0.0.1:{port}", markup=False)
            return go(f"mqtt://127.0.0.1:{port}")
