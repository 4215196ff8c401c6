# Boot a board: mount its flash, read /config.cbor, spawn every bundle in /agents, run the
# supervisor and the link. On an ESP32 the flash is the "vfs" partition; on the unix port
# (tests, `microfang sim --runtime micropython`) it is an image file:
#
#   micropython -X heapsize=110k -m microfang.firmware.main board.img [seconds]
#
# /config.cbor: {device, fleet, key, sign_key, host, port, tls?, wifi?, user?, password?, telemetry_ms?}
# (written by `microfang flash`)

import sys

from . import cbor, port
from .board import Board
from .errors import MicrofangError

_BLOCK = 4096


def open_flash(image=None, blocks=64):
    if image is not None:
        from .blockdev import FileBlockDevice

        return port.Flash(FileBlockDevice(image, _BLOCK, blocks), "/board")
    import esp32  # a real board: the LittleFS data partition

    return port.Flash(esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0], "/board")


def read_config(flash):
    with flash.open("/config.cbor", "rb") as f:
        return cbor.loads(f.read())


def report(agent_id, kind, text):
    print("[%s] %s %s" % (agent_id or "board", kind, text))


def boot(flash, seconds=None):
    config = read_config(flash)
    wifi = config.get("wifi")
    if wifi:
        port.connect_wifi(wifi["ssid"], wifi["password"])
    board = Board(config, flash, report=report)
    board.link.installer.recover()
    for name in flash.listdir("/agents"):
        if name.endswith(".mfa"):
            with flash.open("/agents/" + name, "rb") as f:
                data = f.read()
            try:
                board.spawn(data)
            except MicrofangError as e:
                report(name, "fault", "not started: %s" % e)
    port.asyncio.run(board.run(None if seconds is None else int(seconds * 1000)))


def main():
    args = sys.argv[1:]
    image = args[0] if args else None
    seconds = float(args[1]) if len(args) > 1 else None
    boot(open_flash(image), seconds)


if __name__ == "__main__":
    main()
