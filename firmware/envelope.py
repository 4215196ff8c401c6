# The wire envelope (docs/protocol.md "Wire protocol"): CBOR of
#   {v, id, dev, seq, ts, agent, kind, body, mac}
# where mac is HMAC-SHA256 with the board's key over the canonical CBOR (sorted map keys) of
# everything else, so MicroPython and CPython agree whatever their dict order. The
# receiver drops forgeries (bad mac) and replays (seq not newer than the last it accepted
# from that sender), which also makes QoS 1 redeliveries idempotent.

import hashlib

try:
    import hmac as _hmac  # CPython (the gateway, the simulator): the C implementation
except ImportError:  # MicroPython has no hmac module
    _hmac = None

from . import cbor
from .errors import MicrofangError

VERSION = 1
MAX_ENVELOPE = 16 * 1024  # a board's message; bigger ones are refused before decoding
_BLOCK = 64
SEQ_MAX = 0xFFFFFFFF  # sequence numbers are u32 (ReplayWindow.dumps keeps 4 bytes)


class EnvelopeError(MicrofangError):
    """A message is malformed, too big, forged or a replay; `reason` says which."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


class Mac:
    """HMAC-SHA256 (RFC 2104 over hashlib.sha256: hmac is not in MicroPython), fed piece by
    piece. It is also a sink for cbor.encode_into: append/extend buffer small pieces, so that a
    message is signed or checked without encoding it whole into RAM first."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key + b"\x00" * (_BLOCK - len(key))
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self._buf = bytearray()

    def append(self, byte):
        self._buf.append(byte)

    def extend(self, data):
        if len(self._buf) + len(data) <= _BLOCK:
            self._buf.extend(data)
            return
        self.update(data)

    def update(self, data):
        if self._buf:
            self._inner.update(self._buf)
            self._buf = bytearray()
        self._inner.update(data)

    def digest(self):
        self.update(b"")
        self._outer.update(self._inner.digest())
        return self._outer.digest()


def hmac_sha256(key, data):
    if _hmac is not None:
        return _hmac.new(key, data, hashlib.sha256).digest()
    mac = Mac(key)
    mac.update(data)
    return mac.digest()


def _doc_mac(key, doc, codec=cbor):
    # The mac covers the canonical CBOR of the document without it. CPython: the C hmac over
    # the encoding (the gateway's hot path); MicroPython: fed straight to the hash, piece by
    # piece, so that a 4 KB chunk is not encoded whole a second time on a 110 KB heap.
    if _hmac is not None:
        return hmac_sha256(key, codec.dumps(doc, canonical=True))
    mac = Mac(key)
    cbor.encode_into(doc, mac, canonical=True)
    return mac.digest()


def macs_equal(a, b):
    # Constant time, so a forger learns nothing from how fast a wrong mac is refused.
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0


def seal(key, dev, seq, agent, kind, body, ts=0, codec=cbor):
    """Encode and sign one message. `codec`: a module with cbor's loads and dumps that gives
    the same results (the gateway's, microfang.gateway.fastcbor)."""
    doc = {"v": VERSION, "id": seq, "dev": dev, "seq": seq, "ts": ts, "agent": agent, "kind": kind, "body": body}
    doc["mac"] = _doc_mac(key, doc, codec)
    return codec.dumps(doc)


def open_envelope(data, key_for, views=False, codec=cbor):
    """Decode and verify a message; `key_for(dev)` returns the sender's key or None.
    Returns the document without its mac (`views`: its byte strings are memoryviews into
    `data`, see cbor.loads). Raises EnvelopeError with reason one of "oversized", "malformed",
    "unknown-device", "forged"."""
    doc, mac = decode_envelope(data, views, codec)
    verify_envelope(doc, mac, key_for, codec)
    return doc


def decode_envelope(data, views=False, codec=cbor):
    """The first half of open_envelope: decode a message and check its shape, not its mac.
    Returns (the document without its mac, the mac); EnvelopeError "oversized" or "malformed"."""
    if len(data) > MAX_ENVELOPE:
        raise EnvelopeError("oversized", "message of %d bytes is over the %d byte limit" % (len(data), MAX_ENVELOPE))
    try:
        doc = codec.loads(data, max_bytes=MAX_ENVELOPE, max_items=512, views=views)
    except cbor.CBORError as e:
        raise EnvelopeError("malformed", "malformed CBOR: %s" % e)
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise EnvelopeError("malformed", "not a version %d envelope" % VERSION)
    mac = doc.pop("mac", None)
    dev = doc.get("dev")
    seq = doc.get("seq")
    if not isinstance(mac, (bytes, memoryview)) or not isinstance(dev, str) or not isinstance(seq, int) or seq < 1:
        raise EnvelopeError("malformed", "envelope lacks mac, dev or seq")
    if seq > SEQ_MAX:
        raise EnvelopeError("malformed", "sequence %d is over %d" % (seq, SEQ_MAX))
    if not isinstance(doc.get("kind"), str) or not isinstance(doc.get("agent"), str):
        raise EnvelopeError("malformed", "envelope lacks kind or agent")
    return doc, mac


def verify_envelope(doc, mac, key_for, codec=cbor):
    """The second half of open_envelope: the sender's key and the mac of a decoded document;
    EnvelopeError "unknown-device" or "forged"."""
    dev = doc["dev"]
    key = key_for(dev)
    if key is None:
        raise EnvelopeError("unknown-device", "unknown device %r" % dev)
    if not macs_equal(mac, _doc_mac(key, doc, codec)):
        raise EnvelopeError("forged", "bad HMAC from device %r" % dev)


class ReplayWindow:
    """Which sequence numbers from one sender were already accepted: the highest one and a
    bitmap of the `size` before it. A QoS 1 redelivery or a replay is refused; a message that
    arrives late but unseen (reordering after a reconnect or a broker restart) is accepted."""

    def __init__(self, highest=0, bits=0, size=1024):
        self.highest = highest
        self.bits = bits  # bit i set: highest - i was accepted (bit 0 is highest itself)
        self.size = size

    def fresh(self, seq):
        """Whether `seq` would be accepted (without recording it)."""
        if seq > self.highest:
            return True
        age = self.highest - seq
        return seq >= 1 and age < self.size and not (self.bits >> age) & 1

    def accept(self, seq):
        """Record `seq` and return True if it is new; False if seen or too old to tell."""
        if seq > self.highest:
            shift = seq - self.highest
            self.bits = ((self.bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.highest = seq
            return True
        age = self.highest - seq
        if seq < 1 or age >= self.size or (self.bits >> age) & 1:
            return False
        self.bits |= 1 << age
        return True

    def dumps(self):
        return self.highest.to_bytes(4, "big") + self.bits.to_bytes(self.size // 8, "big")

    @classmethod
    def loads(cls, data, size=1024):
        if len(data) != 4 + size // 8:
            return cls(size=size)
        return cls(int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big"), size)
