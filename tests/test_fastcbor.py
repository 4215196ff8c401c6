"""The gateway's CBOR (microfang.gateway.fastcbor, cbor2's C code where it gives the same
answer) accepts and refuses exactly what firmware/cbor.py does, with the same values and the
same error: hostile inputs by hand (lengths, nesting, floats, tags, trailing bytes,
non-canonical forms, simple values, keys, UTF-8), then mutations of valid envelopes and random
values. And it encodes every value to the same bytes (or the same error)."""

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microfang.firmware import cbor, envelope
from microfang.gateway import fastcbor


def outcome(decode, data, **limits):
    try:
        return "ok", repr(decode(data, **limits))
    except cbor.CBORError as e:
        return "refused", str(e)


def nested(depth, inner=b"\x80"):
    return b"\x81" * depth + inner


HOSTILE = {
    # lengths
    "empty": b"",
    "truncated head": b"\x19\x01",
    "bytes longer than the payload": b"\x5b" + b"\xff" * 8,
    "text longer than the payload": b"\x7a\x00\x01\x00\x00ab",
    "array of 2**64-1 items": b"\x9b" + b"\xff" * 8,
    "map of 2**32-1 pairs": b"\xba\xff\xff\xff\xff\x01\x02",
    "reserved length 28": b"\x1c",
    "reserved length 30": b"\x5e",
    # nesting
    "16 levels": nested(16),
    "17 levels": nested(17),
    "40 levels": nested(40),
    "cyclic shared reference": b"\xd8\x1c\x81\xd8\x1d\x00",
    # floats
    "half 1.0": b"\xf9\x3c\x00",
    "single 1.5": b"\xfa\x3f\xc0\x00\x00",
    "double 1.5": b"\xfb" + struct.pack(">d", 1.5),
    "half NaN": b"\xf9\x7e\x00",
    "half inf": b"\xf9\x7c\x00",
    "double NaN": b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    "double -inf": b"\xfb\xff\xf0\x00\x00\x00\x00\x00\x00",
    "double -0.0": b"\xfb\x80\x00\x00\x00\x00\x00\x00\x00",
    "truncated double": b"\xfb\x3f\xf0",
    # tags
    "epoch datetime": b"\xc1\x1a\x65\x00\x00\x00",
    "small bignum": b"\xc2\x41\x05",
    "bignum 2**64": b"\xc2\x49\x01" + b"\x00" * 8,
    "negative bignum": b"\xc3\x49\x01" + b"\x00" * 8,
    "self-describe": b"\xd9\xd9\xf7\x05",
    "shared value twice": b"\x82\xd8\x1c\x81\x01\xd8\x1d\x00",
    "string reference": b"\xd9\x01\x00\x82\x63abc\xd8\x19\x00",
    "set": b"\xd9\x01\x02\x82\x01\x02",
    "embedded CBOR": b"\xd8\x18\x41\x05",
    "unknown tag": b"\xda\x00\x01\x00\x00\x05",
    # trailing bytes and non-canonical forms
    "trailing byte": b"\x05\x00",
    "two values": b"\x05\x05",
    "uint8 head for 5": b"\x18\x05",
    "uint64 head for 5": b"\x1b" + b"\x00" * 7 + b"\x05",
    "long text head": b"\x78\x01a",
    "long array head": b"\x99\x00\x01\x05",
    "indefinite bytes": b"\x5f\x41a\xff",
    "indefinite text": b"\x7f\x61a\xff",
    "indefinite array": b"\x9f\x01\xff",
    "indefinite map": b"\xbf\x01\x02\xff",
    "lone break": b"\xff",
    # simple values
    "undefined": b"\xf7",
    "simple 16": b"\xf0",
    "simple 255": b"\xf8\xff",
    "true false null": b"\x83\xf5\xf4\xf6",
    # ints at the edges
    "2**64-1": b"\x1b" + b"\xff" * 8,
    "-2**64": b"\x3b" + b"\xff" * 8,
    # keys
    "duplicate keys": b"\xa2\x01\x02\x01\x03",
    "1 and true as keys": b"\xa2\x01\x02\xf5\x03",
    "array as key": b"\xa1\x81\x01\x02",
    "map as key": b"\xa1\xa0\x02",
    "float key": b"\xa1\xfb" + struct.pack(">d", 2.5) + b"\x01",
    "bytes key": b"\xa1\x41k\x01",
    # UTF-8
    "invalid UTF-8": b"\x62\xc3\x28",
    "UTF-16 surrogate in UTF-8": b"\x63\xed\xa0\x80",
    "overlong UTF-8": b"\x62\xc0\xaf",
    # an envelope's own shape
    "envelope": envelope.seal(b"k" * 32, "dev1", 7, "a1", "request", {"id": 1, "kind": "echo", "body": b"\xf6"}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_gets_the_same_answer_as_the_firmware_decoder(name):
    data = HOSTILE[name]
    assert outcome(fastcbor.loads, data) == outcome(cbor.loads, data)


@pytest.mark.parametrize(("data", "limits"), [
    (b"\x85" + b"\x01" * 5, {"max_items": 6}),  # exactly at the item limit
    (b"\x85" + b"\x01" * 5, {"max_items": 5}),  # one over
    (b"\xa2\x01\x02\x03\x04", {"max_items": 4}),  # keys count as items
    (b"\x44abcd", {"max_bytes": 5}),
    (b"\x44abcd", {"max_bytes": 4}),
])
def test_limits_are_the_firmware_decoders(data, limits):
    assert outcome(fastcbor.loads, data, **limits) == outcome(cbor.loads, data, **limits)


def test_mutated_envelopes_get_the_same_answer_as_the_firmware_decoder():
    rng = random.Random(18)
    seeds = [envelope.seal(b"k" * 32, "dev1", n, "a1", kind, body) for n, (kind, body) in enumerate([
        ("request", {"id": 1, "kind": "echo", "body": b"\xf6"}),
        ("tele", {"uptime_ms": 5, "agents": {"a1": {"fuel": 1.5, "events": [1, 2, -3]}}}),
        ("log", [[1, b"record"], [2, b""]]),
    ], 1)]
    for _ in range(6000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            if not data:
                break
            where = rng.randrange(len(data))
            action = rng.randrange(4)
            if action == 0:
                data[where] = rng.randrange(256)
            elif action == 1:
                del data[where:]
            elif action == 2:
                data.insert(where, rng.choice([0x18, 0x5f, 0x9f, 0xbf, 0xc2, 0xd8, 0xf7, 0xf9, 0xff, rng.randrange(256)]))
            else:
                data[where] ^= 1 << rng.randrange(8)
        data = bytes(data)
        assert outcome(fastcbor.loads, data) == outcome(cbor.loads, data), data.hex()


plain = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1) | st.floats()
    | st.binary(max_size=40) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.integers(-300, 300) | st.text(max_size=30) | st.binary(max_size=4) | st.booleans() | st.none(), inner,
        max_size=5),
    max_leaves=30)


@settings(max_examples=600, deadline=None)
@given(plain)
def test_any_value_the_firmware_encodes_decodes_the_same(value):
    data = cbor.dumps(value)
    assert outcome(fastcbor.loads, data) == outcome(cbor.loads, data)


@settings(max_examples=600, deadline=None)
@given(plain | st.tuples(st.integers()) | st.binary().map(bytearray) | st.integers(min_value=1 << 64)
       | st.binary().map(memoryview), st.booleans())
def test_every_value_encodes_to_the_firmwares_bytes_or_error(value, canonical):
    def encoded(dumps):
        try:
            return "ok", dumps(value, canonical=canonical)
        except cbor.CBORError as e:
            return "refused", str(e)

    assert encoded(fastcbor.dumps) == encoded(cbor.dumps)


def test_too_deep_a_value_is_refused_when_encoding_as_by_the_firmware():
    value = []
    for _ in range(20):
        value = [value]
    with pytest.raises(cbor.CBORError, match="nesting too deep"):
        fastcbor.dumps(value)
