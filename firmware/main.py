# Boot a board: mount its flash, read /config.cbor, spawn every bundle in /agents, run the
# supervisor and the link. On an ESP32 the flash is the "vfs" partition; on the unix port
# (tests, `microfang sim --runtime micropython`) it is an image file:
#
#   micropython -X heapsize=110k -m microfang.firmware.main board.img [seconds]
#
# Ctrl-C on the console stops the loop and leaves the board, agents and all, in BOARD for the
# REPL. The board API for the REPL (`microfang deploy --port`, over mpremote): identity(),
# stage(), install(path), run(); each prints one line the host reads.
#
# /config.cbor: {device, fleet, key, sign_keys, trust_serial, host, port, tls?, wifi?, user?, password?,
# telemetry_ms?} (sign_keys: the operator's Ed25519 public keys, trust.py; never a private key)
# (written by `microfang flash`)

import sys

from . import port

# From the first import on, garbage is collected often (port.collect_often): the objects a board
# keeps then stay low in the heap, packed, and the free middle stays whole for agents.
port.collect_often()

from . import bundle, cbor  # noqa: E402
from .board import Board  # noqa: E402
from .errors import MicrofangError

_BLOCK = 4096


def open_flash(image=None, blocks=64):
    if image is not None:
        from .blockdev import FileBlockDevice

        return port.Flash(FileBlockDevice(image, _BLOCK, blocks), "/board")
    # A real board: _boot.py has mounted the "vfs" data partition (written by `microfang flash`)
    # at /; use that mount rather than mounting the partition again.
    return port.Flash.mounted("")


def read_config(flash):
    with flash.open("/config.cbor", "rb") as f:
        return cbor.loads(f.read())


def report(agent_id, kind, text):
    print("[%s] %s %s" % (agent_id or "board", kind, text))


BOARD = None  # the running board, for the REPL


def load(flash, report=report, sensors=None):
    """The board this flash describes: its config, its installer's unfinished work recovered,
    every agent in /agents spawned (the simulator boots its in-process boards the same way)."""
    config = read_config(flash)
    wifi = config.get("wifi")
    if wifi:
        port.connect_wifi(wifi["ssid"], wifi["password"])
    board = Board(config, flash, report=report, sensors=sensors)
    board.link.installer.recover()
    for name in flash.listdir("/agents"):
        if name.endswith(".mfa"):
            path = "/agents/" + name
            try:
                manifest, wasm = bundle.read_file(flash, path)  # the manifest and the wasm, not the whole file
                board.supervisor.spawn(manifest=manifest, wasm=wasm, source=path)
            except (MicrofangError, OSError) as e:
                report(name, "fault", "not started: %s" % e)
    return board


def boot(flash, seconds=None):
    global BOARD
    BOARD = load(flash)
    run(seconds)


def run(seconds=None):
    """Run the booted board until `seconds` pass (None: forever) or Ctrl-C."""
    try:
        port.asyncio.run(BOARD.run(None if seconds is None else int(seconds * 1000)))
    except KeyboardInterrupt:
        BOARD.link.connected = False
        if BOARD.link.client is not None:
            BOARD.link.client.close()
        report("", "stopped", "by Ctrl-C: agents kept; main.run() goes on")
    if hasattr(port.asyncio, "new_event_loop"):
        port.asyncio.new_event_loop()  # MicroPython keeps the last loop's tasks otherwise


STAGED = "/stage/usb.mfs"


def identity():
    """Print who the board is: `IDENTITY <device> <fleet>`, or `NOBOARD` before boot()."""
    if BOARD is None:
        print("NOBOARD")
        return
    print("IDENTITY %s %s" % (BOARD.device, BOARD.link.fleet))


def stage():
    """Make room for a bundle copied over USB: `STAGE <board path> <file to write>` (the file
    as the REPL's own filesystem sees it: the flash image on the unix port)."""
    BOARD.flash.makedirs("/stage")
    print("STAGE %s %s" % (STAGED, BOARD.flash.vfs_path(STAGED)))


def install(path):
    """Install a signed bundle copied to the flash at `path` (USB deploy); print its status:
    `INSTALLED <agent> <version> <state> events=.. fuel=.. memory=..` or `REFUSED <reason>`."""
    try:
        agent_id, version = BOARD.link.installer.install_file(path)
    except MicrofangError as e:
        print("REFUSED %s" % e)
        return
    s = BOARD.supervisor.stats(agent_id)
    print("INSTALLED %s %d %s events=%d fuel=%d memory=%d" % (agent_id, version, s["state"], s["events"], s["fuel"],
                                                           s["memory"]))


def main():
    args = sys.argv[1:]
    image = args[0] if args else None
    seconds = float(args[1]) if len(args) > 1 else None
    boot(open_flash(image), seconds)


if __name__ == "__main__":
    main()
