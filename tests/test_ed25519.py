"""The board's Ed25519 verification (microfang._ed25519, the C the firmware runs) agrees with the
`cryptography` package (OpenSSL) on valid and tampered signatures; the device suite runs the same
C under MicroPython (tests/device/test_ed25519_device.py)."""

import random

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from microfang import _ed25519


def openssl_verifies(key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def signed(rng: random.Random) -> tuple[bytes, bytes, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    message = rng.randbytes(rng.randrange(0, _ed25519.MAX_MESSAGE + 1))
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), message, private.sign(message)


def tamper(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return b"\0"
    out = bytearray(data)
    out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def test_signatures_made_with_openssl_verify():
    rng = random.Random(25519)
    for _ in range(500):
        key, message, signature = signed(rng)
        assert _ed25519.verify(key, message, signature), (key.hex(), message.hex(), signature.hex())


def test_tampered_keys_messages_and_signatures_fail_as_in_openssl():
    rng = random.Random(8032)
    for n in range(1500):
        key, message, signature = signed(rng)
        part = n % 3
        if part == 0:
            key = tamper(rng, key)
        elif part == 1:
            message = tamper(rng, message)
        else:
            signature = tamper(rng, signature)
        ours = _ed25519.verify(key, message, signature)
        assert ours == openssl_verifies(key, message, signature) and not ours, (part, key.hex(), message.hex(),
                                                                                signature.hex())


def test_random_bytes_never_verify():
    rng = random.Random(1)
    for _ in range(500):
        assert not _ed25519.verify(rng.randbytes(32), rng.randbytes(32), rng.randbytes(64))
