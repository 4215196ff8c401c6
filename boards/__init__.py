"""microfang.boards (the repo's boards/ folder): board definitions. Each board is a small class
of data (esptool-style), its MicroPython custom board folder beside it, and the profile used
to emulate it off hardware.

`BOARD_DEFS` maps the names used on the command line (`--board esp32`) to the classes.
Partitions are read from the board folder's partitions.csv, the same file ESP-IDF builds with.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

BOARDS_DIR = Path(__file__).resolve().parent


class Partition:
    def __init__(self, name: str, kind: str, subtype: str, offset: int, size: int) -> None:
        self.name = name
        self.kind = kind
        self.subtype = subtype
        self.offset = offset
        self.size = size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Partition) and repr(self) == repr(other)

    def __repr__(self) -> str:
        return f"Partition({self.name!r}, {self.kind}/{self.subtype}, {self.offset:#x}, {self.size:#x})"


def read_partitions(path: Path) -> list[Partition]:
    """Parse an ESP-IDF partition table CSV (explicit offsets only)."""
    parts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, kind, subtype, offset, size = [f.strip() for f in line.split(",")[:5]]
        parts.append(Partition(name, kind, subtype, int(offset, 0), int(size, 0)))
    return parts


# ESP-IDF's binary partition table (components/partition_table/gen_esp32part.py): 32-byte
# entries, an MD5 entry over them, 0xff padding; it lives at 0x8000 in every firmware image.
TABLE_OFFSET = 0x8000
TABLE_BYTES = 0xC00
_ENTRY = struct.Struct("<2sBBLL16sL")
_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
_TYPES = {"app": 0x00, "data": 0x01}
_SUBTYPES = {"app": {"factory": 0x00, "ota_0": 0x10, "ota_1": 0x11},
             "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83}}


def partition_table_bytes(parts: list[Partition]) -> bytes:
    """The binary table ESP-IDF builds from a partitions.csv."""
    out = b"".join(_ENTRY.pack(_MAGIC, _TYPES[p.kind], _SUBTYPES[p.kind][p.subtype], p.offset, p.size,
                               p.name.encode(), 0) for p in parts)
    out += _MD5_MAGIC + b"\xff" * 14 + hashlib.md5(out).digest()
    return out + b"\xff" * (TABLE_BYTES - len(out))


def parse_partition_table(data: bytes) -> list[Partition]:
    """Read a binary partition table back; [] if `data` does not start with one."""
    parts = []
    kinds = {v: k for k, v in _TYPES.items()}
    for pos in range(0, min(len(data), TABLE_BYTES) - _ENTRY.size + 1, _ENTRY.size):
        magic, kind, subtype, offset, size, label, _ = _ENTRY.unpack_from(data, pos)
        if magic != _MAGIC:
            break
        kind_name = kinds.get(kind, str(kind))
        sub_name = {v: k for k, v in _SUBTYPES.get(kind_name, {}).items()}.get(subtype, str(subtype))
        parts.append(Partition(label.rstrip(b"\x00").decode("ascii", "replace"), kind_name, sub_name, offset, size))
    return parts


class Board:
    """A board microfang can run on. Subclasses override the class constants."""

    NAME = "base"
    PORT = "unix"  # MicroPython port that builds its firmware
    MICROPYTHON_BOARD = ""  # folder under boards/ with the custom board definition
    CHIP = ""  # esptool chip name
    IDF_VERSION = ""
    HEAP_BYTES = 0  # MicroPython GC heap after boot, used as `-X heapsize` off hardware
    FLASH_BYTES = 0
    DATA_PARTITION = "vfs"  # the LittleFS partition holding config, keys, agents and logs
    FIRMWARE_OFFSET = 0  # where MicroPython's firmware.bin (bootloader first) is written
    IMAGE_CHIP_ID = 0  # the chip id in an ESP app image's extended header
    # C stack of the task that runs MicroPython (and so wasm3); MICROPY_TASK_STACK_SIZE in the
    # board folder's mpconfigboard.h. wasm3's call-depth and nesting bounds keep its use under
    # half of it (docs/fuel.md "Engine limits").
    TASK_STACK_BYTES = 0
    # Sensors (firmware/sensors.py: channel meanings, spec format): the GPIOs of ADC1, the unit
    # MicroPython's machine.ADC reads while Wi-Fi runs (ADC2 is the radio's), and the default
    # wiring `microfang flash` writes to /config.cbor, {channel: spec}, calibrated by two points.
    ADC_PINS: tuple[int, ...] = ()
    SENSORS: dict[int, dict] = {}

    @classmethod
    def partitions(cls) -> list[Partition]:
        if not cls.MICROPYTHON_BOARD:
            return []
        return read_partitions(BOARDS_DIR / cls.MICROPYTHON_BOARD / "partitions.csv")

    @classmethod
    def data_partition(cls) -> Partition | None:
        return next((p for p in cls.partitions() if p.name == cls.DATA_PARTITION), None)

    @classmethod
    def heapsize_arg(cls) -> str:
        return f"heapsize={cls.HEAP_BYTES // 1024}k"


class ESP32(Board):
    NAME = "esp32"
    PORT = "esp32"
    MICROPYTHON_BOARD = "MICROFANG_ESP32"
    CHIP = "esp32"
    FIRMWARE_OFFSET = 0x1000
    IMAGE_CHIP_ID = 0
    IDF_VERSION = "5.2.2"
    HEAP_BYTES = 110 * 1024  # public reports for a plain ESP32 after boot (FACTS.md)
    FLASH_BYTES = 4 * 1024 * 1024
    TASK_STACK_BYTES = 16 * 1024  # MicroPython 1.25's esp32 default, stated in mpconfigboard.h
    ADC_PINS = (32, 33, 34, 35, 36, 37, 38, 39)
    SENSORS = {
        0: {"pin": 36, "atten": "11db", "uv": [500_000, 1_500_000], "value": [0, 10_000]},  # TMP36 on VP
        1: {"pin": 39, "atten": "11db", "uv": [2_800_000, 1_200_000], "value": [0, 10_000]},  # capacitive soil, VN
        2: {"pin": 34, "atten": "11db", "uv": [0, 3_100_000], "value": [0, 10_000]},  # photoresistor divider
        3: {"pin": 35, "atten": "11db", "uv": [0, 1_000_000], "value": [0, 2_000]},  # battery through a 1:2 divider
    }


class ESP32S3PSRAM(Board):
    NAME = "esp32s3"
    PORT = "esp32"
    MICROPYTHON_BOARD = "MICROFANG_ESP32S3_PSRAM"
    CHIP = "esp32s3"
    FIRMWARE_OFFSET = 0x0
    IMAGE_CHIP_ID = 9
    IDF_VERSION = "5.2.2"
    HEAP_BYTES = 2 * 1024 * 1024  # conservative: 8 MB PSRAM gives MicroPython several MB
    FLASH_BYTES = 8 * 1024 * 1024
    TASK_STACK_BYTES = 16 * 1024  # the same default; PSRAM does not enlarge the task stack
    ADC_PINS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    SENSORS = {
        0: {"pin": 1, "atten": "11db", "uv": [500_000, 1_500_000], "value": [0, 10_000]},
        1: {"pin": 2, "atten": "11db", "uv": [2_800_000, 1_200_000], "value": [0, 10_000]},
        2: {"pin": 3, "atten": "11db", "uv": [0, 3_100_000], "value": [0, 10_000]},
        3: {"pin": 4, "atten": "11db", "uv": [0, 1_000_000], "value": [0, 2_000]},
    }


class Unix(Board):
    NAME = "unix"
    HEAP_BYTES = 1024 * 1024
    TASK_STACK_BYTES = 8 * 1024 * 1024  # the process's main thread (Linux default)


BOARD_DEFS: dict[str, type[Board]] = {"unix": Unix, "esp32": ESP32, "esp32s3": ESP32S3PSRAM}
# Heap profiles for running the unix port like a board (`-X heapsize`).
PROFILES: dict[str, type[Board]] = {"esp32": ESP32, "esp32s3-psram": ESP32S3PSRAM}
