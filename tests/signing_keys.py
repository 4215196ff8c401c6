"""The operator's keys in tests, and the signed bundles (good and hostile) the device suite
reads: the device cannot sign (boards hold public keys only), so the host writes them.

OPERATOR signs (key K1, the board is provisioned with it); ROTATED is the operator's keyring after
`keys rotate` (K1 signs, K2 announced), REVOKED after `keys revoke K1` (K2 signs, K1 gone);
STRANGER is anyone else's key: what an attacker holding a board's flash image can make.
"""

from __future__ import annotations

from pathlib import Path

from microfang.firmware import bundle, cbor
from microfang.firmware.envelope import hmac_sha256
from microfang.signing import Keyring

K1, K2, K3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
OPERATOR = Keyring.of([K1], serial=1)
ROTATED = Keyring.of([K1, K2], serial=2)
REVOKED = Keyring.of([K2], serial=3)
STRANGER = Keyring.of([K3], serial=99)


def operator_keyring(path: Path, keyring: Keyring = OPERATOR) -> Keyring:
    """The keyring written to `path` (0600), as `microfang keys generate` writes it."""
    saved = Keyring(path, keyring.serial, [dict(k) for k in keyring.keys])
    saved.save()
    return saved


def board_trust(keyring: Keyring = OPERATOR) -> dict:
    """What `microfang flash` puts in /config.cbor for the operator's keys."""
    trust = keyring.trust()
    return {"sign_keys": trust["keys"], "trust_serial": trust["serial"]}


def forged(data: bytes) -> bytes:
    """A bundle under OPERATOR's key id with a signature made by STRANGER."""
    real, fake = OPERATOR.proof(data), STRANGER.proof(data)
    return bundle.wrap(data, {"head": real["head"], "key_id": real["key_id"], "sig": fake["sig"]})


def tampered(signed: bytes, other: bytes) -> bytes:
    """A signed bundle whose inner bundle was swapped for `other`, head and signature kept."""
    doc = cbor.loads(signed)
    return bundle.wrap(other, {"head": doc["head"], "key_id": doc["key_id"], "sig": doc["sig"]})


def hmac_signed(data: bytes, key: bytes) -> bytes:
    """The old format (mfs/1): HMAC-SHA256 under a symmetric key every board held."""
    return cbor.dumps({"format": bundle.HMAC_FORMAT, "bundle": data, "sig": hmac_sha256(key, data)})


def escalated(data: bytes) -> bytes:
    """The same agent and version with more host functions and tools: a tampered manifest."""
    manifest, wasm = bundle.decode(data)
    allowed = sorted(set(manifest["permissions"]["allowed"]) | {"request", "publish", "mem_append"})
    manifest = dict(manifest, permissions=dict(manifest["permissions"], allowed=allowed,
                                               tool_access=["parts.*", "files.*"], a2a_access=["planner"]))
    return bundle.encode(manifest, wasm)


def write_signed_bundles(folder: Path, plain: dict[str, bytes]) -> None:
    """The signed bundles the device suite installs, beside the plain ones (NAME.mfs...)."""
    for name in ("hello", "hello_v2", "trap_v3", "trap_later", "big_wasm", "example_hello", "example_bootcount"):
        (folder / f"{name}.mfs").write_bytes(OPERATOR.sign(plain[name]))
    hello, v2, v3 = plain["hello"], plain["hello_v2"], plain["trap_v3"]
    variants = {
        "hello_v2.stranger.mfs": STRANGER.sign(v2),
        "hello_v2.forged.mfs": forged(v2),
        "hello_v2.tampered.mfs": tampered(OPERATOR.sign(v2), escalated(v2)),
        "hello_v2.hmac.mfs": hmac_signed(v2, b"device-key-from-a-flash-image-00"),
        "hello.supersedes2.mfs": OPERATOR.sign(hello, supersedes=2),
        "hello.rotated.mfs": ROTATED.sign(hello),  # K1 signs, K2 announced (serial 2)
        "hello_v2.revoked.mfs": REVOKED.sign(v2),  # K2 signs, K1 dropped (serial 3)
        "trap_v3.k1.mfs": OPERATOR.sign(v3),  # the revoked key K1 signs again
        "trap_v3.replayed_list.mfs": Keyring.of([K2, K1], serial=2).sign(v3),  # K2 signs the old list [K1, K2]
        "example_hello.escalated.mfa": escalated(plain["example_hello"]),
        "operator.pub": OPERATOR.public_keys()[0],
    }
    for name, data in variants.items():
        (folder / name).write_bytes(data)
