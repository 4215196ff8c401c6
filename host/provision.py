"""Board flash images: config, key and agents laid out the way firmware/main.py boots them.

Used by `microfang sim` (files for MicroPython boards, RAM for in-process ones) and by
`microfang flash`, which writes the same layout to a board's data partition.
"""

from __future__ import annotations

from pathlib import Path

from microfang.firmware import cbor
from microfang.firmware.blockdev import FileBlockDevice
from microfang.firmware.bundle import decode
from microfang.firmware.port import Flash
from microfang.signing import Keyring

BLOCK = 4096
BLOCKS = 64


def write_flash(flash: Flash, config: dict, bundles: list[bytes], keyring: Keyring | None = None,
                files: dict[str, bytes] | None = None) -> None:
    """Lay out /config.cbor and /agents/<id>.mfa on a mounted flash, as firmware/main.py boots
    them; with `keyring`, each bundle's proof signed with the operator's current key beside it
    (/agents/<id>.sig, firmware/deploy.py), so that the agent can migrate later. `files`: more
    files by absolute path (the broker's CA certificate)."""
    with flash.open("/config.cbor", "wb") as f:
        f.write(cbor.dumps(config))
    for path, data in (files or {}).items():
        with flash.open(path, "wb") as f:
            f.write(data)
    flash.makedirs("/agents")
    for data in bundles:
        manifest, _ = decode(data)
        with flash.open(f"/agents/{manifest['agent_id']}.mfa", "wb") as f:
            f.write(data)
        if keyring is not None:
            with flash.open(f"/agents/{manifest['agent_id']}.sig", "wb") as f:
                f.write(cbor.dumps(keyring.proof(data)))


def write_image(path: Path, config: dict, bundles: list[bytes], blocks: int = BLOCKS,
                keyring: Keyring | None = None, files: dict[str, bytes] | None = None) -> None:
    """Create (or overwrite) a flash image file holding /config.cbor and /agents/<id>.mfa."""
    path.unlink(missing_ok=True)
    path.touch(0o600)  # it holds the board's keys (created before the block device opens it)
    device = FileBlockDevice(str(path), BLOCK, blocks)
    flash = Flash(device)
    write_flash(flash, config, bundles, keyring, files)
    flash.unmount()
    device.close()
