"""firmware/cbor.py for the gateway's hot path, in C where that gives the same answer.

`loads` and `dumps` have firmware/cbor.py's signatures and results; envelope.py takes this
module as its codec (`open_envelope(..., codec=fastcbor)`, `seal(..., codec=fastcbor)`).

loads: cbor2's C decoder reads the bytes; the value is taken only if it is plain (None, bool,
an int in [-2**64, 2**64), a finite float, bytes, str, list, dict with scalar keys), within
firmware/cbor.py's nesting and item limits, and cbor2's C encoder writes it back as exactly the
bytes given. Those bytes are then what firmware/cbor.py's encoder writes for that value (the
two encoders agree on plain values: shortest heads, 8-byte floats, definite lengths, dicts in
their order), and its decoder reads them back as the same value. Anything else (tags,
indefinite lengths, longer heads, half or single floats, duplicate keys, undefined, trailing
bytes, whatever cbor2 refuses) goes to firmware/cbor.py itself, which accepts or refuses it and
names the problem: the gateway accepts and refuses exactly what a board does
(tests/test_fastcbor.py checks it on hostile inputs).

dumps: the same on the way out: a plain value goes through cbor2 (canonical: dicts rebuilt
with their keys in the bytewise order of their encodings, RFC 8949 4.2.1, as
firmware/cbor.py sorts them), anything else through firmware/cbor.py.
"""

from __future__ import annotations

from typing import Any

import cbor2

from microfang.firmware import cbor

CBORError = cbor.CBORError
_SCALARS = (int, float, bytes, str, bool, type(None))
_INT_MIN, _INT_END = -(1 << 64), 1 << 64
_MAX_DEPTH = cbor._MAX_DEPTH  # the one nesting limit both decoders keep


def _left(value: Any, depth: int, left: int) -> int:
    """The items left of `left` once `value` is counted (keys count too, as firmware/cbor.py's
    decoder counts them); negative if `value` is not plain or over its nesting limit. Strings,
    bytes and small ints inside a container are counted in its loop (a call each was most of
    the time a request took here)."""
    left -= 1
    kind = type(value)
    if depth > _MAX_DEPTH or left < 0:
        return -1
    if kind is list:
        for item in value:
            if type(item) in _FLAT:
                left -= 1
            else:
                left = _left(item, depth + 1, left)
            if left < 0:
                return -1
        return left if depth < _MAX_DEPTH or not value else -1
    if kind is dict:
        for key, item in value.items():
            if type(key) in _FLAT:
                left -= 1
            elif type(key) in _SCALARS:
                left = _left(key, depth + 1, left)
            else:
                return -1
            if type(item) in _FLAT:
                left -= 1
            else:
                left = _left(item, depth + 1, left)
            if left < 0:
                return -1
        return left if depth < _MAX_DEPTH or not value else -1
    if kind is str or kind is bytes or kind is bool or value is None:
        return left
    if kind is int:
        return left if _INT_MIN <= value < _INT_END else -1
    if kind is float:
        return left if value - value == 0.0 else -1  # finite (inf - inf and nan are nan)
    return -1


_FLAT = {str, bytes, bool, type(None)}  # plain at any depth, one item each


def loads(data: bytes, max_bytes: int = 1 << 20, max_items: int = 10000, views: bool = False) -> Any:
    """firmware/cbor.py's loads (views: its own decoder, which slices the caller's buffer)."""
    if not views and len(data) <= max_bytes:
        try:
            value = cbor2.loads(data)
        except Exception:  # cbor2 refused it: firmware/cbor.py says why (or takes it)
            value = None
        else:
            if _left(value, 0, max_items) >= 0 and cbor2.dumps(value) == data:
                return value
    return cbor.loads(data, max_bytes=max_bytes, max_items=max_items, views=views)


def _sorted(value: Any) -> Any:
    """`value` with every dict's keys in the bytewise order of their encodings."""
    kind = type(value)
    if kind is list:
        return [_sorted(item) if type(item) in _NESTED else item for item in value]
    if kind is dict:
        keys = tuple(value)
        order = _ORDERS.get(keys)  # only all-str key tuples are kept: a str equals no other type
        if order is None:
            order = tuple(sorted(keys, key=cbor2.dumps))
            if all(type(key) is str for key in keys):
                if len(_ORDERS) >= _ORDERS_MAX:
                    _ORDERS.clear()
                _ORDERS[keys] = order
        return {key: _sorted(value[key]) if type(value[key]) in _NESTED else value[key] for key in order}
    return value


_NESTED = {list, dict}
_ORDERS: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # a dict's str keys in order -> in canonical order
_ORDERS_MAX = 4096  # the shapes of the messages the gateway seals are few


def dumps(value: Any, canonical: bool = False) -> bytes:
    """firmware/cbor.py's dumps."""
    if _left(value, 0, 1 << 62) >= 0:
        return cbor2.dumps(_sorted(value) if canonical else value)
    return cbor.dumps(value, canonical)
