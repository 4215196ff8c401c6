"""microfang: an agent operating system for microcontroller fleets.

Usage:
  microfang build AGENT.toml [-o OUT.mfa]   validate, meter and bundle an agent
  microfang inspect FILE                     describe a bundle (.mfa) or a wasm module
  microfang run AGENT.toml|AGENT.mfa ... [-e] run agents locally and print their logs (-e: and events)
  microfang port build [--board unix|esp32|esp32s3]
                                             build the MicroPython firmware, print its path

Each command is a `do_X(args)` handler plus an `argparse_X(sub)` builder in `_COMMANDS`.
Expected failures (bad input) print one line `microfang: ...` and exit 1; bugs keep their
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import version
from pathlib import Path

from microfang import console
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
    from microfang.inspector import inspect

    inspect(args.file)


def argparse_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run agents locally and print their events, logs and stats")
    p.add_argument("agents", type=Path, nargs="+", help="manifests (.toml, built first) or bundles (.mfa)")
    p.add_argument("-t", "--seconds", type=float, default=3.0, help="how long to run (default 3)")
    p.add_argument("-e", "--events", action="store_true", help="also print every event delivered to an agent")
    p.add_argument("--flash", type=Path, metavar="IMAGE",
                   help="board flash image file for the agents' memory logs, kept across runs (default: RAM)")


def do_run(args: argparse.Namespace) -> None:
    from microfang.runner import run

    if args.seconds <= 0:
        raise MicrofangError("--seconds must be positive")
    run(args.agents, args.seconds, events=args.events, flash_path=args.flash)


def argparse_port(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("port", help="build microfang's MicroPython firmware (unix port or ESP32 boards)")
    actions = p.add_subparsers(dest="port_action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="build the firmware and print the binary's path (cached by version)")
    b.add_argument("--board", default="unix", choices=["unix", "esp32", "esp32s3"],
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


_COMMANDS = {
    "build": (do_build, argparse_build),
    "inspect": (do_inspect, argparse_inspect),
    "run": (do_run, argparse_run),
    "port": (do_port, argparse_port),
}


def parser() -> argparse.ArgumentParser:
    summary, _, usage = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(prog="microfang", description=summary, epilog=usage.split("\n\nEach")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"microfang {version('microfang')}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for _, build_parser in _COMMANDS.values():
        build_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 2
    try:
        _COMMANDS[args.command][0](args)
    except MicrofangError as e:
        return console.die(str(e))
    except KeyboardInterrupt:
        return console.die("interrupted", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
