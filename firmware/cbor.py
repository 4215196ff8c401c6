# A small CBOR codec (RFC 8949) for bundles, events and the wire envelope.
#
# Runs on MicroPython and CPython. It covers what microfang exchanges: unsigned and negative
# integers up to 64 bits, byte and text strings, arrays, maps, true/false/null and floats.
# Tags, indefinite lengths and undefined are refused. Decoding is bounded: a hostile payload
# cannot ask for more items, nesting or bytes than `max_items`/`_MAX_DEPTH`/its own length.

import struct

from .errors import MicrofangError

_MAX_DEPTH = 16


class CBORError(MicrofangError):
    """Malformed, oversized or unsupported CBOR."""


def _head(major, n, out):
    if n < 24:
        out.append((major << 5) | n)
    elif n < 0x100:
        out.append((major << 5) | 24)
        out.append(n)
    elif n < 0x10000:
        out.append((major << 5) | 25)
        out.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        out.append((major << 5) | 26)
        out.extend(struct.pack(">I", n))
    elif n < 0x10000000000000000:
        out.append((major << 5) | 27)
        out.extend(struct.pack(">Q", n))
    else:
        raise CBORError("integer too large for CBOR")


def _encode(value, out, depth, canonical=False):
    if depth > _MAX_DEPTH:
        raise CBORError("nesting too deep")
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        if value >= 0:
            _head(0, value, out)
        else:
            _head(1, -1 - value, out)
    elif isinstance(value, float):
        out.append(0xFB)
        out.extend(struct.pack(">d", value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _head(2, len(value), out)
        out.extend(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        _head(3, len(raw), out)
        out.extend(raw)
    elif isinstance(value, (list, tuple)):
        _head(4, len(value), out)
        for item in value:
            _encode(item, out, depth + 1, canonical)
    elif isinstance(value, dict):
        _head(5, len(value), out)
        if canonical:
            # RFC 8949 4.2.1: keys in the bytewise order of their encodings. MicroPython's
            # dicts do not keep insertion order, so anything signed must be encoded this way.
            pairs = []
            for key in value:
                encoded = bytearray()
                _encode(key, encoded, depth + 1, True)
                pairs.append((bytes(encoded), key))
            pairs.sort()
            for encoded, key in pairs:
                out.extend(encoded)
                _encode(value[key], out, depth + 1, True)
        else:
            for key in value:
                _encode(key, out, depth + 1)
                _encode(value[key], out, depth + 1)
    else:
        raise CBORError("cannot encode %s" % type(value).__name__)


def dumps(value, canonical=False):
    """Encode a value to CBOR bytes (`canonical`: deterministic map key order)."""
    out = bytearray()
    _encode(value, out, 0, canonical)
    return bytes(out)


def encode_into(value, out, canonical=False):
    """Encode a value into `out`, anything with append(byte) and extend(bytes): a bytearray, or
    a hash fed piece by piece (envelope.Mac), so that a large value is never copied whole."""
    _encode(value, out, 0, canonical)


def _half(bits):
    # IEEE 754 half precision, decoded by hand: MicroPython's struct has no 'e'.
    exp = (bits >> 10) & 0x1F
    frac = bits & 0x3FF
    if exp == 0:
        value = frac * 2.0**-24
    elif exp == 31:
        value = float("inf") if frac == 0 else float("nan")
    else:
        value = (1 + frac / 1024.0) * 2.0 ** (exp - 15)
    return -value if bits & 0x8000 else value


class _Decoder:
    def __init__(self, data, max_items, views):
        self.data = data
        self.pos = 0
        self.items = max_items
        self.views = views

    def take(self, n):
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise CBORError("truncated CBOR")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def arg(self, info):
        if info < 24:
            return info
        if info == 24:
            return self.take(1)[0]
        if info == 25:
            return struct.unpack(">H", self.take(2))[0]
        if info == 26:
            return struct.unpack(">I", self.take(4))[0]
        if info == 27:
            return struct.unpack(">Q", self.take(8))[0]
        raise CBORError("indefinite or reserved length not supported")

    def value(self, depth):
        if depth > _MAX_DEPTH:
            raise CBORError("nesting too deep")
        self.items -= 1
        if self.items < 0:
            raise CBORError("too many items")
        initial = self.take(1)[0]
        major = initial >> 5
        info = initial & 0x1F
        if major == 7:
            return self.simple(info)
        n = self.arg(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return self.take(n) if self.views else bytes(self.take(n))
        if major == 3:
            try:
                return str(self.take(n), "utf-8")
            except UnicodeError:
                raise CBORError("invalid UTF-8 in text string")
        if major == 4:
            if n > len(self.data) - self.pos:
                raise CBORError("array longer than the payload")
            return [self.value(depth + 1) for _ in range(n)]
        if major == 5:
            if n > len(self.data) - self.pos:
                raise CBORError("map longer than the payload")
            out = {}
            for _ in range(n):
                key = self.value(depth + 1)
                if isinstance(key, (list, dict)):
                    raise CBORError("map key must be a scalar")
                out[key] = self.value(depth + 1)
            return out
        raise CBORError("tags are not supported")

    def simple(self, info):
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 25:
            return _half(struct.unpack(">H", self.take(2))[0])
        if info == 26:
            return struct.unpack(">f", self.take(4))[0]
        if info == 27:
            return struct.unpack(">d", self.take(8))[0]
        raise CBORError("unsupported simple value %d" % info)


def loads(data, max_bytes=1 << 20, max_items=10000, views=False):
    """Decode one CBOR value that must fill `data` exactly. With `views`, byte strings come back
    as memoryviews into `data` (which must not change while they live), not copies: a board
    receiving a 4 KB chunk has no room for a second 4 KB block."""
    if len(data) > max_bytes:
        raise CBORError("CBOR payload of %d bytes is over the %d byte limit" % (len(data), max_bytes))
    d = _Decoder(memoryview(data), max_items, views)
    value = d.value(0)
    if d.pos != len(data):
        raise CBORError("trailing bytes after CBOR value")
    return value
