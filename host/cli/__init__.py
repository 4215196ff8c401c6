"""microfang: an agent operating system for microcontroller fleets.

Usage:
  microfang demo [-t SECONDS | --forever]    the whole system offline in a minute: start here
  microfang build AGENT.toml [-o OUT.mfa]   validate, meter and bundle an agent
  microfang inspect FILE                     describe a bundle (.mfa) or a wasm module
  microfang run AGENT.toml|AGENT.mfa ... [-e] run agents locally and print their logs (-e: and events)
  microfang port build [--board unix|esp32|esp32s3]
                                             build the MicroPython firmware, print its path
  microfang gateway [--broker URL] [--db F]  run the gateway (/healthz, /metrics on --http)
  microfang sim [FLEET.toml | --boards N --agents a,b]
                                             simulate a provisioned fleet against a gateway
  microfang status | audit verify | keys add the fleet, the audit chain, device keys
  microfang keys generate | rotate | revoke ID | list --signing
                                             the operator's Ed25519 signing keys (no secrets shown)
  microfang broker --out DIR                 the production Mosquitto's passwd and acl from the registry
  microfang flash --board esp32 --device ID --broker URL (--port P | --out IMAGE) [--agents ...]
                                             provision a board and write it with esptool
  microfang deploy BUNDLE --device ID | --fleet NAME | --port P
                                             install an agent over the air (signed) or over USB
  microfang migrate AGENT --from D1 --to D2  move a running agent with its memory
  microfang jobs                             deploys, migrations and control jobs and their results
  microfang sniff [TOPIC...] [--db F]        the wire decoded: every envelope as a readable line

Each command is a `do_X(args)` handler plus an `argparse_X(sub)` builder in `_COMMANDS`.
Expected failures (bad input) print one line `microfang: ...` and exit 1; bugs keep their
traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
from importlib.metadata import version
from pathlib import Path
from typing import NoReturn

from microfang import console
from microfang.boards import BOARD_DEFS
from microfang.cli.args import add_json, add_secret, add_signing_keys, add_store, display, print_json, secret, store_of
from microfang.cli.jobs import argparse_deploy, argparse_jobs, argparse_migrate, do_deploy, do_jobs, do_migrate
from microfang.config import DEFAULT_DB
from microfang.firmware.errors import MicrofangError


def argparse_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="validate, fuel-meter and bundle an agent")
    p.add_argument("manifest", type=Path, help="the agent's TOML manifest")
    p.add_argument("-o", "--out", type=Path, help="bundle path (default: AGENT_ID.mfa beside the manifest)")


def do_build(args: argparse.Namespace) -> None:
    from microfang.tools.build import build

    out, s = build(args.manifest, args.out)
    console.info(f"built [bold]{out}[/bold]: agent {s['agent_id']} v{s['version']}, wasm {s['source_bytes']:,} B "
                 f"-> metered {s['metered_bytes']:,} B, bundle {s['bundle_bytes']:,} B")


def argparse_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="describe a bundle (.mfa) or a wasm module")
    p.add_argument("file", type=Path)


def do_inspect(args: argparse.Namespace) -> None:
    from rich.table import Table

    from microfang.inspector import inspect

    found = inspect(args.file)
    if found.manifest is not None:
        m = found.manifest
        fuel, memory, perms = m["fuel"], m["memory"], m["permissions"]
        timers = ", ".join(f"#{t['id']} every {t['every_ms']} ms" for t in m["timers"]) or "-"
        console.info(f"[bold]{found.path}[/bold]: bundle {found.format}, {found.size:,} bytes")
        console.info(f"  agent      {m['agent_id']} v{m['version']}  {m['description']}")
        console.info(f"  fuel       max {fuel['max']:,}, +{fuel['refuel_amount']:,} every {fuel['refuel_interval_ms']} ms")
        console.info(f"  memory     cap {memory['max_bytes']:,} B, stack {memory['stack_bytes']:,} B, "
                     f"grow limit {memory['grow_limit_pages']} pages")
        console.info(f"  host fns   allowed {', '.join(perms['allowed']) or '-'}; denied {', '.join(perms['denied']) or '-'}")
        console.info(f"  timers     {timers}")
    table = Table(title=f"module: {found.module.size:,} bytes, sha256 {found.module.sha256[:16]}")
    for column in ("kind", "name", "detail"):
        table.add_column(column)
    for row in found.module.rows:
        table.add_row(*row)
    console.out.print(table)


def argparse_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run agents locally and print their events, logs and stats")
    p.add_argument("agents", type=Path, nargs="+", help="manifests (.toml, built first) or bundles (.mfa)")
    p.add_argument("-t", "--seconds", type=float, default=3.0, help="how long to run (default 3)")
    p.add_argument("-e", "--events", action="store_true", help="also print every event delivered to an agent")
    p.add_argument("--flash", type=Path, metavar="IMAGE",
                   help="board flash image file for the agents' memory logs, kept across runs (default: RAM)")


_RUN_STYLES = {"event": "dim", "log": "white", "fault": "bold red", "state": "cyan", "request": "magenta",
               "publish": "green"}


def do_run(args: argparse.Namespace) -> None:
    from rich.table import Table

    from microfang.runner import run

    if not math.isfinite(args.seconds) or args.seconds <= 0:
        raise MicrofangError("--seconds must be a positive number")

    def report(elapsed: float, agent_id: str, kind: str, text: str) -> None:
        style = _RUN_STYLES.get(kind, "white")
        console.out.print(f"[dim]{elapsed:7.3f}[/dim] [bold]{agent_id:<10}[/bold] [{style}]{kind:<7}[/{style}] ", end="")
        console.out.print(console.printable(text), markup=False, highlight=False)

    def built(out: Path, summary: dict) -> None:
        console.info(f"[dim]built {out} ({summary['bundle_bytes']} bytes)[/dim]")

    supervisor = run(args.agents, args.seconds, report, events=args.events, flash_path=args.flash, built=built)
    table = Table(title="agents")
    for column in ("agent", "state", "events", "fuel used", "fuel left", "memory", "traps", "out of fuel", "restarts"):
        table.add_column(column, justify="left" if column in ("agent", "state") else "right")
    for agent_id, s in supervisor.stats().items():
        table.add_row(agent_id, s["state"], str(s["events"]), f"{s['fuel_used']:,}", f"{s['fuel']:,}",
                      f"{s['memory']:,}/{s['memory_cap']:,} B", str(s["traps"]), str(s["exhausted"]),
                      str(s["restarts"]))
    console.out.print(table)


def argparse_port(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("port", help="build microfang's MicroPython firmware (unix port or ESP32 boards)")
    actions = p.add_subparsers(dest="port_action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="build the firmware and print the binary's path (cached by version)")
    b.add_argument("--board", default="unix", choices=list(BOARD_DEFS),
                   help="unix: a MicroPython binary for this machine; esp32/esp32s3: needs ESP-IDF (docs/boards.md)")
    b.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs")


def do_port(args: argparse.Namespace) -> None:
    from microfang.tools import portbuild

    with console.stage(f"port build --board {args.board}") as step:
        if args.board == "unix":
            path = portbuild.build_unix(step, args.jobs)
        else:
            path = portbuild.build_esp32(args.board, step, args.jobs)
    console.out.print(str(path), markup=False, highlight=False)


def argparse_gateway(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="run the gateway: registry, router, audit, replicas, /healthz and /metrics")
    p.add_argument("--config", type=Path, help="TOML configuration (see microfang.config); options override it")
    p.add_argument("--broker", help="MQTT broker URL, mqtts:// for TLS (default mqtt://127.0.0.1:1883)")
    p.add_argument("--db", type=Path, help=f"the gateway's SQLite file (default: --config's, else {DEFAULT_DB})")
    p.add_argument("--store", help="the gateway's state in PostgreSQL (postgresql://...), shared by several gateways "
                                   "that split the fleet's traffic (or a SQLite file); default: the SQLite file --db")
    p.add_argument("--name", help="this gateway's name, unique among those on one --store (default: host name and "
                                  "a digest of the store)")
    p.add_argument("--http", type=int, metavar="PORT", help="port for /healthz and /metrics (default 8077; 0: off)")
    p.add_argument("--outputs", metavar="PREFIX", help="re-publish agents' publishes and log lines as JSON under "
                                                       "PREFIX/{fleet}/{device}/{agent}/ (default microfang; '': off)")
    p.add_argument("--discovery", metavar="PREFIX", help="Home Assistant MQTT discovery of boards and agents' "
                                                         "outputs under PREFIX/ (default homeassistant; '': off)")
    p.add_argument("--user", help="broker user name")
    add_secret(p, "password", "MICROFANG_BROKER_PASSWORD", "broker password")
    p.add_argument("--cafile", help="CA certificate (PEM) to verify an mqtts:// broker (default: system CAs)")
    p.add_argument("--offline-after", type=float, metavar="SECONDS", dest="offline_after",
                   help="a board not heard for this long is offline, though no last will came (default 60)")
    p.add_argument("--rate", type=float, help="requests per second per agent (default 50, bursts of 2x)")
    p.add_argument("--budget", type=int, help="requests per hour per agent (default: no budget)")
    p.add_argument("--llm", choices=["none", "local", "openai"],
                   help="answer `llm` requests: local (SmolLM2-135M offline) or openai (any OpenAI-compatible "
                        "endpoint); default none")
    p.add_argument("--llm-url", help="OpenAI-compatible base URL (env MICROFANG_LLM_URL; default a local Ollama)")
    p.add_argument("--llm-model", help="model name (env MICROFANG_LLM_MODEL)")
    p.add_argument("--llm-tokens", type=int, help="token budget per agent (default: none)")
    p.add_argument("--memory", choices=["auto", "minilm", "smollm2", "openai", "none"],
                   help="vector memory embedder for mem.put/mem.search and episodic memory (default auto: minilm if "
                        "installed, else smollm2)")
    p.add_argument("--memory-db", help="vector memory: a SQLite file (default: beside --db, NAME-memory.db) or a "
                                       "postgresql:// URL (PostgreSQL + pgvector)")
    p.add_argument("--embed-url", help="OpenAI-compatible base URL for --memory openai")
    p.add_argument("--embed-model", help="embedding model name for --memory openai")


def do_gateway(args: argparse.Namespace) -> None:
    import asyncio

    from microfang.config import gateway_settings
    from microfang.gateway.services import open_gateway

    s = gateway_settings(args.config, {**vars(args), "password": secret(args, "password")})

    async def serve() -> None:
        try:
            async with open_gateway(s) as (gw, summary):
                assert gw.store is not None
                console.info(f"gateway up: broker {gw.host}:{gw.port}, {len(gw.devices)} devices in {gw.store.db.name}"
                             + (f", http://127.0.0.1:{s.http}/healthz" if s.http else "")
                             + "".join(f", {line}" for line in summary))
                await gw.serve_forever()
        except ConnectionError as e:
            raise MicrofangError(str(e)) from None

    asyncio.run(serve())


def argparse_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the fleet: devices, presence, agents (from the gateway's database)")
    add_store(p)
    add_json(p)


def do_status(args: argparse.Namespace) -> None:
    from rich.table import Table

    from microfang.ops import fleet_status

    where = store_of(args)
    rows = fleet_status(where)
    if args.json:
        print_json(rows)
        return
    table = Table(title=f"fleet in {display(where)}: {len(rows)} devices, {sum(1 for r in rows if r['online'])} online")
    for column in ("device", "fleet", "presence", "last seen", "agents", "states", "fuel used", "events", "traps"):
        table.add_column(column)
    for r in rows:
        seen = "never" if r["last_seen_s_ago"] is None else f"{r['last_seen_s_ago']:.0f} s ago"
        table.add_row(r["device"], r["fleet"], "online" if r["online"] else "offline", seen, str(r["agents"]),
                      ", ".join(r["states"]) or "-", f"{r['fuel_used']:,}", str(r["events"]), str(r["traps"]))
    console.out.print(table)



def argparse_logs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="agents' log lines (mf_log) as boards forward them; -f follows new ones")
    p.add_argument("target", nargs="?", metavar="DEVICE[/AGENT]", help="one device or one agent (default: all)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they come (Ctrl-C ends)")
    p.add_argument("-n", "--lines", type=int, default=20, help="how many of the latest lines first (default 20)")
    add_store(p)
    add_json(p)


def do_logs(args: argparse.Namespace) -> None:
    from microfang.logs import agent_lines, format_line, line_json

    for line in agent_lines(store_of(args), args.target, max(0, args.lines), args.follow):
        if args.json:
            print(json.dumps(line_json(line)), flush=True)  # one JSON object per line (follow-friendly)
        else:
            print(format_line(line), flush=True)



def argparse_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="check the gateway's append-only audit log")
    actions = p.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    v = actions.add_parser("verify", help="verify the hash chain of every audit record")
    add_store(v)
    add_json(v)
    listing = actions.add_parser("list", help="the latest audit records: what agents did and what was done to them")
    add_store(listing)
    add_json(listing)
    listing.add_argument("-n", "--limit", type=int, default=20)
    listing.add_argument("--device", help="only this device's records")


def do_audit(args: argparse.Namespace) -> None:
    import time

    from microfang.ops import audit_verify, recent_audit

    if args.audit_action == "list":
        rows = recent_audit(store_of(args), args.limit, args.device)
        if args.json:
            print_json(rows)
            return
        for row in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
            console.out.print(f"{row['n']:>6} {when} {row['device']}/{row['agent']} {row['action']} {row['detail']}",
                              markup=False, highlight=False, soft_wrap=True)
        return
    count = audit_verify(store_of(args))
    if args.json:
        print_json({"intact": True, "records": count})
        return
    console.info(f"audit log intact: {count} records, hash chain verified")




def argparse_keys(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="device identities in the gateway registry; the operator's signing keys")
    actions = p.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    a = actions.add_parser("add", help="register a device and print its HMAC key (hex)")
    a.add_argument("device")
    a.add_argument("--fleet", default="default")
    add_store(a)
    remove = actions.add_parser("remove", help="remove a device: its key stops working (a running gateway drops "
                                               "its messages within seconds); the audit log keeps its records")
    remove.add_argument("device")
    add_store(remove)
    listing = actions.add_parser("list", help="the registered devices, their fleets and presence (no keys)")
    listing.add_argument("--signing", action="store_true", help="list the signing keys instead (ids, no secrets)")
    add_store(listing)
    add_signing_keys(listing)
    add_json(listing)
    for name, text in (("generate", "create the signing keyring (0600) with one Ed25519 key"),
                       ("rotate", "add a key, announced to boards by the next deploys; the old one signs until revoked")):
        add_signing_keys(actions.add_parser(name, help=text))
    revoke = actions.add_parser("revoke", help="revoke a signing key: boards drop it with the next deploy")
    revoke.add_argument("key_id")
    add_signing_keys(revoke)


def do_signing_keys(args: argparse.Namespace) -> None:
    import time

    from microfang import signing

    actions = {"generate": lambda: signing.generate(args.signing_keys),
               "rotate": lambda: signing.rotate(args.signing_keys),
               "revoke": lambda: signing.revoke(args.key_id, args.signing_keys),
               "list": lambda: signing.load(args.signing_keys)}
    keyring = actions[args.keys_action]()
    if getattr(args, "json", False):
        print_json({"serial": keyring.serial, "keys": keyring.rows()})
        return
    for row in keyring.rows():
        console.info(f"{row['id']}  {row['state']:<8} {time.strftime('%Y-%m-%d', time.localtime(row['created']))}")
    after = {"generate": "created, readable by you only; `microfang flash` gives boards its public key",
             "rotate": "the new key reaches boards with the next deploys; revoke the old one once they have it",
             "revoke": "boards drop the revoked key with the next deploy"}
    if args.keys_action in after:
        console.info(f"{keyring.where} (serial {keyring.serial}): {after[args.keys_action]}")


def do_keys(args: argparse.Namespace) -> None:
    from microfang.ops import add_key, registered_devices, remove_key

    if args.keys_action in ("generate", "rotate", "revoke") or getattr(args, "signing", False):
        do_signing_keys(args)
        return
    if args.keys_action == "list":
        rows = registered_devices(store_of(args))
        if args.json:
            print_json(rows)
            return
        for row in rows:
            console.info(f"{row['device']:<24} fleet {row['fleet']:<16} {'online' if row['online'] else 'offline'}")
        return
    if args.keys_action == "remove":
        remove_key(store_of(args), args.device)
        console.info(f"removed {args.device}: its key, presence, telemetry, replicas and requests; with the production "
                     "broker run `microfang broker --out DIR` again and kill -HUP mosquitto")
        return
    console.out.print(add_key(store_of(args), args.device, args.fleet).hex(), markup=False, highlight=False)


def argparse_broker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="write the production Mosquitto's passwd (0600) and acl from the registry",
                       description="Write DIR/passwd and DIR/acl for docs/mosquitto/mosquitto.conf: every device "
                                   "logs in as its id with a password derived from its key, each gateway as its "
                                   "own user. Run it after each `microfang flash` or `keys add`, then kill -HUP "
                                   "mosquitto.")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for passwd and acl")
    p.add_argument("--gateway-user", action="append", metavar="USER", dest="gateway_users",
                   help="a gateway's broker user, also its client id (repeat for several gateways; default: "
                        "--config's [broker] user, else microfang-gateway)")
    add_secret(p, "password", "MICROFANG_BROKER_PASSWORD", "the gateway users' broker password (default: also "
                                                           "--config's [broker] password_file)")
    add_store(p)


def do_broker(args: argparse.Namespace) -> None:
    from microfang.brokerauth import GATEWAY_USER, write
    from microfang.config import gateway_settings

    s = gateway_settings(args.config, {"password": secret(args, "password")})
    done = write(store_of(args), args.out, args.gateway_users or [s.user or GATEWAY_USER], s.password)
    console.info(f"{done.passwd} (0600) and {done.acl}: {done.devices} devices, gateway users "
                 f"{', '.join(done.gateway_users)}; `kill -HUP` mosquitto to load them")


def argparse_flash(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flash", help="provision a board (identity, broker, agents) and write it with esptool")
    p.add_argument("--board", required=True, choices=[name for name, spec in BOARD_DEFS.items() if spec.CHIP])
    p.add_argument("--device", required=True, metavar="ID", help="the board's device id (registered if new)")
    p.add_argument("--fleet", default="default")
    p.add_argument("--broker", required=True, metavar="URL", help="MQTT broker the board connects to (mqtt[s]://host:port)")
    p.add_argument("--cafile", type=Path, metavar="PEM", help="the CA certificate the board verifies an mqtts:// "
                                                              "broker with (copied onto the board)")
    p.add_argument("--wifi", metavar="SSID")
    add_secret(p, "wifi-password", "MICROFANG_WIFI_PASSWORD", "the Wi-Fi password")
    p.add_argument("--agents", type=Path, nargs="*", default=[], metavar="BUNDLE", help="initial agents (.mfa)")
    p.add_argument("--firmware", type=Path, help="MicroPython firmware.bin (default: `microfang port build` output)")
    add_store(p)
    add_signing_keys(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--port", help="serial port of the board (/dev/ttyUSB0)")
    target.add_argument("--out", type=Path, metavar="IMAGE", help="write the merged image here instead of a board")


def do_flash(args: argparse.Namespace) -> None:
    from microfang.flash import flash

    done = flash(args.board, args.device, fleet=args.fleet, db=store_of(args), broker=args.broker, port=args.port,
                 out=args.out, firmware=args.firmware, agents=args.agents, wifi=args.wifi,
                 wifi_password=secret(args, "wifi-password"), keys=args.signing_keys, cafile=args.cafile)
    spec = done.board
    if done.out is not None:
        part = spec.data_partition()
        assert part is not None
        console.info(f"{done.out}: {done.image_bytes:,} bytes for {spec.NAME}: firmware at {spec.FIRMWARE_OFFSET:#x}, "
                     f"{part.name} ({done.agents} agents, device {done.device}) at {part.offset:#x}")
        console.error(f"warning: {done.out} holds device {done.device}'s key, broker password and Wi-Fi password in clear: it is "
                      f"readable by you only (0600); keep it off shared folders and delete it once flashed")
    else:
        console.info(f"{done.port}: {spec.NAME} flashed as device {done.device} of fleet {done.fleet} with "
                     f"{done.agents} agents")



DEFAULT_SIM_AGENTS = ("echo", "hello", "threshold")
SIM_DB = Path("sim.db")


def argparse_sim(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="simulate a fleet: boards running the real firmware against a gateway",
                       description="Simulate a fleet of provisioned boards (as `microfang flash` provisions real "
                                   "ones) running the real firmware against a gateway: `deploy --fleet`, `migrate`, "
                                   "`status` and `jobs` work against it from another terminal with the same --db.")
    p.add_argument("fleet_file", type=Path, nargs="?", metavar="FLEET.toml",
                   help="which boards run which agents, runtime and heap profile (format: docs/sim.md)")
    p.add_argument("--boards", type=int, default=3, help="without a fleet file: how many boards (default 3)")
    p.add_argument("--agents", default=",".join(DEFAULT_SIM_AGENTS),
                   help="without a fleet file: comma-separated example names, manifests (.toml) or bundles (.mfa) "
                        "for every board (default %(default)s)")
    p.add_argument("--fleet", default="sim", help="without a fleet file: the fleet's name (default sim)")
    p.add_argument("-t", "--seconds", type=float, default=10.0, help="how long to run (default 10; 0: forever)")
    p.add_argument("--broker", help="MQTT broker URL (default: start a private one)")
    p.add_argument("--http", type=int, metavar="PORT", help="serve the sim's gateway's /healthz and /metrics on PORT")
    p.add_argument("--db", type=Path, default=SIM_DB, help=f"the simulated fleet's registry (default {SIM_DB})")  # where the boards are registered: never the production gateway.db by default
    p.add_argument("--runtime", choices=["cpython", "micropython"], default="cpython",
                   help="without a fleet file: cpython (boards in this process) or micropython (each board a "
                        "MicroPython process booting from its own flash image)")
    p.add_argument("--profile", default="esp32", help="heap profile of MicroPython boards: esp32 (110 KB) or "
                                                      "esp32s3-psram (default esp32)")


def do_sim(args: argparse.Namespace) -> None:
    from microfang.sim import plan_from_flags, read_fleet_file, run_sim

    if not math.isfinite(args.seconds) or args.seconds < 0:
        raise MicrofangError("--seconds must be 0 (forever) or a positive number")
    if args.fleet_file is not None:
        plan = read_fleet_file(args.fleet_file)
    else:
        plan = plan_from_flags(args.boards, [a for a in args.agents.split(",") if a], args.runtime, args.profile,
                               args.fleet)
    metrics = run_sim(plan, args.seconds or None, args.broker, args.db, args.http)
    dropped = sum(v for k, v in metrics.items() if k.startswith("dropped_"))
    console.info(f"gateway: {metrics['messages']} messages, {metrics['requests']} requests, "
                 f"{metrics['replies']} replies, {metrics['telemetry']} telemetry reports, {dropped} dropped")


def argparse_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole system offline: broker, gateway with a local LLM, three boards")
    p.add_argument("-t", "--seconds", type=float, default=60.0, help="how long to run (default 60)")
    p.add_argument("--forever", action="store_true", help="run until Ctrl-C")


def do_demo(args: argparse.Namespace) -> None:
    from microfang.demo import run_demo

    if not args.forever and (not math.isfinite(args.seconds) or args.seconds <= 0):
        raise MicrofangError("--seconds must be a positive number (or --forever)")
    s = run_demo(None if args.forever else args.seconds)
    first = "no answer yet" if s["first_answer_s"] is None else f"first LLM answer after {s['first_answer_s']:.1f} s"
    console.info(f"demo: {s['boards']} boards, {s['agents']} agents, {s['events']:,} events, "
                 f"{s['fuel_used']:,} fuel, {s['traps']} traps; {s['requests']} requests, {s['llm_calls']} LLM calls "
                 f"({s['llm_tokens']} tokens), {s['answers']} answers kept in memory logs; {first}; "
                 f"audit chain intact over {s['audit_records']} records")


def argparse_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="the fleet in a web page: boards, agents, live logs, jobs (behind a token)")
    add_store(p)
    p.add_argument("--port", type=int, default=8078, help="serve http://127.0.0.1:PORT/ (default 8078)")
    add_secret(p, "token", "MICROFANG_DASHBOARD_TOKEN", "bearer token the page sends (default: a new random one)")


def do_dashboard(args: argparse.Namespace) -> None:
    import asyncio
    import secrets

    from microfang.dashboard import serve
    from microfang.ops import open_store

    where = store_of(args)
    open_store(where).close()  # a clear error now rather than in the page
    token = secret(args, "token") or secrets.token_urlsafe(24)
    asyncio.run(serve(where, args.port, token, ready=lambda: console.info(
        f"dashboard of {display(where)}: http://127.0.0.1:{args.port}/#token={token}")))


def argparse_mcp(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mcp", help="serve the fleet to LLM applications over MCP (stdio, or HTTP with a token); "
                                   "control tools need `microfang gateway` running on the same --db")
    add_store(p)
    p.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp instead")
    add_secret(p, "token", "MICROFANG_MCP_TOKEN", "bearer token HTTP clients must send (required with --http)")
    p.add_argument("--read-only", action="store_true",
                   help="only the read tools: no messages to agents, no spawn/suspend/resume/reclaim")


def do_mcp(args: argparse.Namespace) -> None:
    from microfang.mcpserver import fleet_server
    from microfang.ops import open_store

    open_store(store_of(args)).close()  # a clear error now rather than on the first tool call
    if args.http is None:
        fleet_server(store_of(args), args.read_only).run("stdio")
        return
    token = secret(args, "token")
    if not token:
        raise MicrofangError("--http needs a token (--token-file or MICROFANG_MCP_TOKEN): the fleet is not served "
                             "unauthenticated")
    import asyncio

    from microfang.mcpserver import serve_http

    asyncio.run(serve_http(store_of(args), args.http, token, read_only=args.read_only,
                           ready=lambda: console.info(f"mcp: http://127.0.0.1:{args.http}/mcp (bearer token required)")))


def argparse_sniff(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sniff", help="print the fleet's MQTT traffic decoded: topic, kind, agent, sequence, body",
                       description="Subscribe to a broker and print every envelope decoded (CBOR made readable); "
                                   "with --store (or --db) the HMAC of each is checked and forgeries are marked.")
    p.add_argument("topics", nargs="*", default=["mf/#"], metavar="TOPIC", help="topic filters (default mf/#)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL (default %(default)s)")
    p.add_argument("--user", help="broker user name")
    add_secret(p, "password", "MICROFANG_BROKER_PASSWORD", "broker password")
    p.add_argument("--cafile", help="CA certificate (PEM) for an mqtts:// broker")
    add_store(p)
    p.add_argument("-t", "--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("-n", "--count", type=int, help="stop after this many messages")
    add_json(p)


def do_sniff(args: argparse.Namespace) -> None:
    from microfang.sniff import keys_from, line, sniff

    def show(view: dict) -> None:
        if args.json:
            print(json.dumps(view, ensure_ascii=False, default=str, allow_nan=False), flush=True)
        else:
            console.out.print(console.printable(line(view)), markup=False, highlight=False, soft_wrap=True)

    named = args.store is not None or args.config is not None  # keys are checked only against a store named
    seen = sniff(args.broker, args.topics, show, key_for=keys_from(store_of(args)) if named else None,
                 seconds=args.seconds, count=args.count, user=args.user, password=secret(args, "password"), cafile=args.cafile)
    if not args.json:
        console.error(f"{seen} messages")


_COMMANDS = {
    "build": (do_build, argparse_build),
    "inspect": (do_inspect, argparse_inspect),
    "run": (do_run, argparse_run),
    "port": (do_port, argparse_port),
    "gateway": (do_gateway, argparse_gateway),
    "status": (do_status, argparse_status),
    "logs": (do_logs, argparse_logs),
    "dashboard": (do_dashboard, argparse_dashboard),
    "audit": (do_audit, argparse_audit),
    "jobs": (do_jobs, argparse_jobs),
    "keys": (do_keys, argparse_keys),
    "broker": (do_broker, argparse_broker),
    "flash": (do_flash, argparse_flash),
    "deploy": (do_deploy, argparse_deploy),
    "migrate": (do_migrate, argparse_migrate),
    "sim": (do_sim, argparse_sim),
    "demo": (do_demo, argparse_demo),
    "mcp": (do_mcp, argparse_mcp),
    "sniff": (do_sniff, argparse_sniff),
}


class _Parser(argparse.ArgumentParser):
    """argparse that never repeats a secret typed on the command line (`--password s3cret`, an
    option that does not exist) in its error message, which may end up in logs."""

    def error(self, message: str) -> NoReturn:
        super().error(re.sub(r"(--(?:password|token|wifi-password)(?:=|\s+))\S+", r"\1***", message))


def parser() -> argparse.ArgumentParser:
    summary, _, usage = __doc__.partition("\n\n")
    p = _Parser(prog="microfang", description=summary, epilog=usage.split("\n\nEach")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"microfang {version('microfang')}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for _, build_parser in _COMMANDS.values():
        build_parser(sub)
    # No abbreviated options: `--password s3cret` must not pass for `--password-file` (and show the
    # secret in an error message); a secret is read from a file or the environment only.
    for command in sub.choices.values():
        command.allow_abbrev = False
    return p


def _interrupt_on_hangup_and_term() -> None:
    """SIGHUP (its terminal closed) and SIGTERM end a command as Ctrl-C does: context managers
    unwind, so private brokers, board processes and temp folders are cleaned up."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, interrupt)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 2
    _interrupt_on_hangup_and_term()
    try:
        _COMMANDS[args.command][0](args)
    except MicrofangError as e:
        return console.die(str(e))
    except KeyboardInterrupt:
        return console.die("interrupted", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
