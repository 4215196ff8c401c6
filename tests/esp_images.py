"""ESP32 firmware images for `microfang flash` tests: the test double for a MicroPython
firmware.bin built with ESP-IDF (not buildable on this machine). Made with esptool's own image
classes, laid out as ESP-IDF does: bootloader, partition table at 0x8000, app in its slot."""

from __future__ import annotations

from esptool.bin_image import ELFSection, ESP32FirmwareImage, ESP32S3FirmwareImage

from microfang.boards import BOARD_DEFS, TABLE_OFFSET, partition_table_bytes

_IMAGES = {"esp32": ESP32FirmwareImage, "esp32s3": ESP32S3FirmwareImage}


def app_image(chip: str, code_bytes: int) -> bytes:
    image = _IMAGES[chip]()
    image.entrypoint = 0x40080000
    image.segments = [ELFSection(b".iram0.text", 0x40080000, bytes(range(256)) * (code_bytes // 256), 0),
                      ELFSection(b".dram0.data", 0x3FFB0000, b"microfang test double\x00\x00\x00", 0)]
    return image.save(None)


def firmware_bin(board: str, app_bytes: int = 64 * 1024, chip: str | None = None) -> bytes:
    """A firmware.bin for `board` (its partition table); `chip` builds the images for another chip."""
    spec = BOARD_DEFS[board]
    chip = chip or spec.CHIP
    app_slot = next(p for p in spec.partitions() if p.kind == "app").offset
    out = bytearray(app_image(chip, 4096))  # the bootloader: an image too
    base = spec.FIRMWARE_OFFSET
    out += b"\xff" * (TABLE_OFFSET - base - len(out))
    out += partition_table_bytes(spec.partitions())
    out += b"\xff" * (app_slot - base - len(out))
    out += app_image(chip, app_bytes)
    return bytes(out)
