"""`microfang flash`: provision a board and write it with esptool (used as a library).

The board's data partition ("vfs" in boards/<BOARD>/partitions.csv) gets a LittleFS image
holding /config.cbor (device id, HMAC key, fleet, the operator's Ed25519 PUBLIC keys from the
keyring (signing.py; no private key ever reaches a board), broker and the board's broker login
(user: its device id, password: derived from its key, brokerauth.py), Wi-Fi, the board profile's
sensor channels) and the initial agents in /agents, each with its signed proof; it is laid after MicroPython's firmware.bin (bootloader, partition
table, app) and written in one go, or saved as one merged image with --out.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microfang import signing
from microfang.boards import BOARD_DEFS, TABLE_BYTES, TABLE_OFFSET, Board, parse_partition_table
from microfang.brokerauth import device_password
from microfang.config import DEFAULT_DB, parse_broker, write_private
from microfang.firmware.bundle import MAX_BUNDLE, decode
from microfang.firmware.errors import BundleError, MicrofangError
from microfang.firmware.sensors import check_all
from microfang.ops import Where, create_store
from microfang.provision import BLOCK, write_image
from microfang.signing import Keyring
from microfang.tools.portbuild import esp32_firmware_path

_IMAGE_MAGIC = 0xE9  # first byte of every ESP app and bootloader image
BOARD_CAFILE = "/ca.pem"  # the broker's CA on the board: the data partition is mounted at / (firmware/main.py)
CAFILE_MAX = 16 * 1024


def board_def(name: str) -> type[Board]:
    spec = BOARD_DEFS.get(name)
    if spec is None or not spec.CHIP:
        raise MicrofangError(f"unknown board {name!r} (flashable: {', '.join(n for n, b in BOARD_DEFS.items() if b.CHIP)})")
    return spec


def board_config(db: Where, device: str, fleet: str, broker: str, wifi: str | None, wifi_password: str | None,
                 keyring: Keyring) -> dict:
    """The board's /config.cbor: a fresh identity in the gateway registry (created if new; a
    device flashed again gets a new key and starts its sequence numbers over, and a new broker
    password: run `microfang broker` again), its broker login and the public keys of the
    operator's `keyring` it will trust."""
    store = create_store(db)
    try:
        known = store.devices().get(device)
        if known is not None and known["fleet"] != fleet:
            raise MicrofangError(f"device {device!r} is registered in fleet {known['fleet']!r}, not {fleet!r}")
        key = store.provision_device(device, fleet)
    finally:
        store.close()
    host, port, tls = parse_broker(broker)
    trust = keyring.trust()
    config: dict[str, Any] = {"device": device, "fleet": fleet, "key": key, "sign_keys": trust["keys"],
                              "trust_serial": trust["serial"], "host": host, "port": port, "tls": tls,
                              "user": device, "password": device_password(key)}
    if wifi:
        config["wifi"] = {"ssid": wifi, "password": wifi_password or ""}
    return config


def register_agents(db: Where, device: str, bundles: list[bytes]) -> None:
    """Once the board holds them: the agents' manifests, from which the gateway takes their
    permissions."""
    store = create_store(db)
    try:
        for data in bundles:
            store.register_manifest(device, decode(data)[0])
    finally:
        store.close()


def read_cafile(path: Path) -> bytes:
    """The PEM CA certificate(s) a board verifies its broker with, or a one-line error."""
    try:
        data = path.read_bytes() if path.stat().st_size <= CAFILE_MAX else b""
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read the CA file ({e.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise MicrofangError(f"{path}: not a PEM CA certificate of at most {CAFILE_MAX:,} bytes")
    return data


def read_agents(paths: list[Path]) -> list[bytes]:
    bundles = []
    for path in paths:
        try:
            if not path.is_file():
                raise MicrofangError(f"{path}: not a bundle file")
            if path.stat().st_size > MAX_BUNDLE:
                raise MicrofangError(f"{path}: {path.stat().st_size:,} bytes is over the {MAX_BUNDLE:,} byte bundle limit")
            data = path.read_bytes()
            decode(data)
        except OSError as e:
            raise MicrofangError(f"{path}: cannot read bundle ({e.strerror})") from None
        except BundleError as e:
            raise MicrofangError(f"{path}: {e}") from None
        bundles.append(data)
    return bundles


def sensor_config(spec: type[Board]) -> dict[int, dict]:
    """The board profile's ADC channels as /config.cbor "sensors" (firmware/sensors.py), each
    checked against the profile's ADC1 pins."""
    return check_all(spec.SENSORS, spec.ADC_PINS)


def data_image(spec: type[Board], config: dict, bundles: list[bytes], keyring: Keyring,
               files: dict[str, bytes] | None = None) -> bytes:
    """The LittleFS image of the board's data partition."""
    part = spec.data_partition()
    assert part is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vfs.img"
        try:
            write_image(path, config, bundles, blocks=part.size // BLOCK, keyring=keyring, files=files)
        except OSError as e:
            raise MicrofangError(f"the agents do not fit the {part.size // 1024} KiB data partition ({e})") from None
        return path.read_bytes()


def check_firmware(spec: type[Board], firmware: bytes, path: Path) -> None:
    """Refuse a firmware image for another chip, another partition table, or one too big."""
    base = spec.FIRMWARE_OFFSET
    if len(firmware) < TABLE_OFFSET - base + TABLE_BYTES or firmware[0] != _IMAGE_MAGIC:
        raise MicrofangError(f"{path}: not an ESP firmware image (a MicroPython firmware.bin starts with the "
                             f"bootloader at {base:#x})")
    table = parse_partition_table(firmware[TABLE_OFFSET - base:TABLE_OFFSET - base + TABLE_BYTES])
    if not table:
        raise MicrofangError(f"{path}: no partition table at {TABLE_OFFSET:#x}")
    if table != spec.partitions():
        raise MicrofangError(f"{path}: its partition table is not boards/{spec.MICROPYTHON_BOARD}/partitions.csv "
                             f"(built for another board?)")
    app = next(p for p in table if p.kind == "app")
    header = firmware[app.offset - base:app.offset - base + 24]
    if len(header) < 24 or header[0] != _IMAGE_MAGIC:
        raise MicrofangError(f"{path}: no app image at {app.offset:#x}")
    chip_id = header[12] | header[13] << 8
    if chip_id != spec.IMAGE_CHIP_ID:
        raise MicrofangError(f"{path}: built for chip id {chip_id}, but --board {spec.NAME} is an {spec.CHIP} "
                             f"(chip id {spec.IMAGE_CHIP_ID})")
    data = spec.data_partition()
    assert data is not None
    end = base + len(firmware)
    if end > data.offset:
        raise MicrofangError(f"{path}: partition overflow: the firmware ends at {end:#x}, past the start of the "
                             f"{data.name} partition at {data.offset:#x}")
    if end > app.offset + app.size:
        raise MicrofangError(f"{path}: partition overflow: the app ends at {end:#x}, past its {app.name} "
                             f"partition ({app.offset:#x}..{app.offset + app.size:#x})")


def read_firmware(spec: type[Board], path: Path | None) -> tuple[bytes, Path]:
    if path is None:
        path = esp32_firmware_path(spec.NAME)
        if not path.is_file():
            raise MicrofangError(f"no firmware image for --board {spec.NAME}: build one with `microfang port build "
                                 f"--board {spec.NAME}` (needs ESP-IDF) or pass --firmware firmware.bin")
    try:
        return path.read_bytes(), path
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read firmware ({e.strerror})") from None


def merged_image(spec: type[Board], firmware: bytes, vfs: bytes) -> bytes:
    """One image from flash address 0: the firmware at its offset, the data partition at its."""
    from esptool.cmds import merge_bin
    from esptool.logger import log

    part = spec.data_partition()
    assert part is not None
    log.set_verbosity("silent")  # its hints are about its own CLI; we report the result ourselves
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "merged.bin"
            merge_bin([(spec.FIRMWARE_OFFSET, firmware), (part.offset, vfs)], spec.CHIP, output=str(out))
            return out.read_bytes()
    finally:
        log.set_verbosity("auto")


def write_board(spec: type[Board], port: str, firmware: bytes, vfs: bytes) -> None:
    """Write firmware and data partition to a board on `port`, checking its chip first."""
    from esptool.cmds import attach_flash, detect_chip, reset_chip, run_stub, write_flash

    part = spec.data_partition()
    assert part is not None
    try:
        esp = detect_chip(port)
    except Exception as e:  # esptool raises FatalError or serial errors: one line for the user
        reason = " ".join(str(e).split())  # esptool's messages span lines: one line for ours
        raise MicrofangError(f"{port}: no ESP chip answered ({reason})") from None
    try:
        chip = esp.CHIP_NAME.lower().replace("-", "")
        if chip != spec.CHIP:
            raise MicrofangError(f"{port}: the chip is an {esp.CHIP_NAME}, but --board {spec.NAME} needs an {spec.CHIP}")
        esp = run_stub(esp)
        attach_flash(esp)
        write_flash(esp, [(spec.FIRMWARE_OFFSET, firmware), (part.offset, vfs)])
        reset_chip(esp, "hard-reset")
    finally:
        esp._port.close()


@dataclass
class Flashed:
    """What `flash` wrote: to a board on `port`, or a merged image of `image_bytes` to `out`."""

    board: type[Board]
    device: str
    fleet: str
    agents: int
    port: str | None = None
    out: Path | None = None
    image_bytes: int = 0


def flash(board: str, device: str, *, fleet: str = "default", db: Where = DEFAULT_DB,
          broker: str, port: str | None = None, out: Path | None = None, firmware: Path | None = None,
          agents: list[Path] | None = None, wifi: str | None = None, wifi_password: str | None = None,
          keys: Path | None = None, cafile: Path | None = None) -> Flashed:
    """Provision `device` and write it to the board on `port`, or the merged image to `out`;
    `keys`: the operator's keyring (signing.load); `cafile`: the CA the board verifies an
    mqtts:// broker with (copied to BOARD_CAFILE)."""
    spec = board_def(board)
    keyring = signing.load(keys)
    keyring.signer()  # the initial agents are signed with it: refused before anything is written
    bundles = read_agents(agents or [])
    files = {BOARD_CAFILE: read_cafile(cafile)} if cafile is not None else {}
    fw, fw_path = read_firmware(spec, firmware)
    check_firmware(spec, fw, fw_path)
    config = board_config(db, device, fleet, broker, wifi, wifi_password, keyring)
    config["sensors"] = sensor_config(spec)
    if files:
        config["cafile"] = BOARD_CAFILE
    vfs = data_image(spec, config, bundles, keyring, files)
    if out is not None:
        image = merged_image(spec, fw, vfs)
        write_private(out, image)
        register_agents(db, device, bundles)
        return Flashed(spec, device, fleet, len(bundles), out=out, image_bytes=len(image))
    assert port is not None
    write_board(spec, port, fw, vfs)
    register_agents(db, device, bundles)
    return Flashed(spec, device, fleet, len(bundles), port=port)
