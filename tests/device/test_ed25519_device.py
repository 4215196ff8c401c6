# Ed25519 verification as a board runs it (firmware/port.ed25519_verify: the `ed25519` C module on
# MicroPython, microfang._ed25519 on CPython): RFC 8032's vectors pass, every tampered part fails,
# bad lengths are refused with a ValueError naming them. Run under MicroPython with an ESP32 heap
# and under CPython (tests/test_device_runtimes.py). Plain asserts only.
from microfang.firmware import port

from binascii import unhexlify

# RFC 8032 section 7.1, TESTs 1-3: (public key, message, signature).
VECTORS = [
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]
L = 2**252 + 27742317777372353535851937790883648493


def vectors():
    return [(unhexlify(k), unhexlify(m), unhexlify(s)) for k, m, s in VECTORS]


def flipped(data, index):
    out = bytearray(data)
    out[index] ^= 1
    return bytes(out)


def raises_value_error(*args):
    try:
        port.ed25519_verify(*args)
    except ValueError as e:
        return str(e)
    return None


def test_rfc8032_vectors_verify(bundle):
    for key, message, signature in vectors():
        assert port.ed25519_verify(key, message, signature) is True


def test_a_flipped_bit_anywhere_fails(bundle):
    key, message, signature = vectors()[2]
    for i in (0, 31, 32, 63):
        assert port.ed25519_verify(key, message, flipped(signature, i)) is False, i
    for i in (0, 31):
        assert port.ed25519_verify(flipped(key, i), message, signature) is False, i
    assert port.ed25519_verify(key, flipped(message, 1), signature) is False
    assert port.ed25519_verify(key, message + b"\0", signature) is False


def test_a_signature_made_non_canonical_with_s_plus_l_fails(bundle):
    key, message, signature = vectors()[0]
    s = int.from_bytes(signature[32:], "little") + L
    assert s < 2**256
    assert port.ed25519_verify(key, message, signature[:32] + s.to_bytes(32, "little")) is False


def test_keys_and_signatures_of_garbage_fail_without_crashing(bundle):
    key, message, signature = vectors()[1]
    for bad_key in (b"\xff" * 32, b"\0" * 32, b"\x01" + b"\0" * 31):
        assert port.ed25519_verify(bad_key, message, signature) is False
    for bad_signature in (b"\0" * 64, b"\xff" * 64):
        assert port.ed25519_verify(key, message, bad_signature) is False


def test_wrong_lengths_are_refused_by_name(bundle):
    key, message, signature = vectors()[0]
    assert "public key of 31 bytes" in raises_value_error(key[:31], message, signature)
    assert "signature of 65 bytes" in raises_value_error(key, message, signature + b"\0")
    assert "message of 257 bytes" in raises_value_error(key, b"m" * 257, signature)
