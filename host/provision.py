"""Board flash images: config, key and agents laid out the way firmware/main.py boots them.

Used by `microfang sim --runtime micropython` now; `microfang flash` writes the same layout to
a board's data partition.
"""

from __future__ import annotations

from pathlib import Path

from microfang.firmware import cbor
from microfang.firmware.blockdev import FileBlockDevice
from microfang.firmware.bundle import decode
from microfang.firmware.port import Flash

BLOCK = 4096
BLOCKS = 64


def write_image(path: Path, config: dict, bundles: list[bytes], blocks: int = BLOCKS) -> None:
    """Create (or overwrite) a flash image holding /config.cbor and /agents/<id>.mfa."""
    path.unlink(missing_ok=True)
    device = FileBlockDevice(str(path), BLOCK, blocks)
    flash = Flash(device)
    with flash.open("/config.cbor", "wb") as f:
        f.write(cbor.dumps(config))
    flash.makedirs("/agents")
    for data in bundles:
        manifest, _ = decode(data)
        with flash.open(f"/agents/{manifest['agent_id']}.mfa", "wb") as f:
            f.write(data)
    flash.unmount()
    device.close()
