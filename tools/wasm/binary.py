"""The WebAssembly binary format, as much of it as the agent toolchain rewrites.

A module is kept as its list of sections (id, raw payload). Only the sections the metering
pass must change (type, import, export, start, element, code, memory, the "name" custom
section) are decoded, so everything else round-trips byte for byte.
"""

from __future__ import annotations

from microfang.firmware.errors import WasmError

MAGIC = b"\x00asm\x01\x00\x00\x00"

CUSTOM, TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, START, ELEMENT, CODE, DATA, DATACOUNT = range(13)
# Order of the known sections in a valid module (datacount sits between element and code).
SECTION_ORDER = [TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, START, ELEMENT, DATACOUNT, CODE, DATA]

VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref", 0x6F: "externref"}
EXTERNAL_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global"}
PAGE = 65536


class Reader:
    """A cursor over bytes with the LEB128 and vector readers of the spec."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def at_end(self) -> bool:
        return self.pos >= self.end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WasmError("unexpected end of module")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise WasmError("unexpected end of module")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        result = shift = 0
        for _ in range(5):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                if result >= 1 << 32:
                    raise WasmError("integer too large")
                return result
            shift += 7
        raise WasmError("integer representation too long")

    def sleb(self, bits: int) -> int:
        result = shift = 0
        for _ in range((bits + 6) // 7):
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b & 0x40:
                    result -= 1 << shift
                return result
        raise WasmError("integer representation too long")

    def name(self) -> str:
        raw = self.bytes(self.u32())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WasmError("malformed UTF-8 name") from None


def u32(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def name(s: str) -> bytes:
    raw = s.encode("utf-8")
    return u32(len(raw)) + raw


def vector(items: list[bytes]) -> bytes:
    return u32(len(items)) + b"".join(items)


class Limits:
    """Memory or table limits: a minimum and an optional maximum."""

    def __init__(self, minimum: int, maximum: int | None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    @classmethod
    def read(cls, r: Reader) -> Limits:
        flag = r.byte()
        if flag not in (0, 1):
            raise WasmError(f"unsupported limits flag {flag:#x} (shared or 64-bit memory)")
        minimum = r.u32()
        return cls(minimum, r.u32() if flag else None)

    def encode(self) -> bytes:
        if self.maximum is None:
            return b"\x00" + u32(self.minimum)
        return b"\x01" + u32(self.minimum) + u32(self.maximum)


class Import:
    def __init__(self, module: str, field: str, kind: int, desc: bytes, limits: Limits | None = None) -> None:
        self.module = module
        self.field = field
        self.kind = kind
        self.desc = desc  # raw bytes after the kind byte
        self.limits = limits

    @property
    def type_index(self) -> int:
        return Reader(self.desc).u32()

    def encode(self) -> bytes:
        return name(self.module) + name(self.field) + bytes([self.kind]) + self.desc


class Module:
    """A wasm module as sections, with decoded views of the ones the toolchain inspects."""

    def __init__(self, sections: list[tuple[int, bytes]]) -> None:
        self.sections = sections

    @classmethod
    def parse(cls, data: bytes) -> Module:
        if len(data) < 8 or data[:4] != MAGIC[:4]:
            raise WasmError("not a wasm module (bad magic number)")
        if data[4:8] != MAGIC[4:]:
            raise WasmError("unsupported wasm version")
        r = Reader(data, 8)
        sections: list[tuple[int, bytes]] = []
        while not r.at_end():
            sid = r.byte()
            size = r.u32()
            if sid > DATACOUNT:
                raise WasmError(f"unknown section id {sid}")
            sections.append((sid, r.bytes(size)))
        return cls(sections)

    def encode(self) -> bytes:
        return MAGIC + b"".join(bytes([sid]) + u32(len(p)) + p for sid, p in self.sections)

    # ---- section access ------------------------------------------------------------------

    def section(self, sid: int) -> bytes | None:
        for s, payload in self.sections:
            if s == sid:
                return payload
        return None

    def custom(self, wanted: str) -> bytes | None:
        for sid, payload in self.sections:
            if sid == CUSTOM:
                r = Reader(payload)
                if r.name() == wanted:
                    return payload[r.pos :]
        return None

    def replace(self, sid: int, payload: bytes) -> None:
        """Set a known section's payload, inserting it in spec order if absent."""
        for i, (s, _) in enumerate(self.sections):
            if s == sid:
                self.sections[i] = (sid, payload)
                return
        rank = SECTION_ORDER.index(sid)
        at = len(self.sections)
        for i, (s, _) in enumerate(self.sections):
            if s != CUSTOM and SECTION_ORDER.index(s) > rank:
                at = i
                break
        self.sections.insert(at, (sid, payload))

    def replace_custom(self, wanted: str, body: bytes) -> None:
        for i, (sid, payload) in enumerate(self.sections):
            if sid == CUSTOM and Reader(payload).name() == wanted:
                self.sections[i] = (CUSTOM, name(wanted) + body)
                return

    # ---- decoded views -------------------------------------------------------------------

    def types(self) -> list[tuple[list[int], list[int]]]:
        payload = self.section(TYPE)
        out: list[tuple[list[int], list[int]]] = []
        if payload is None:
            return out
        r = Reader(payload)
        for _ in range(r.u32()):
            if r.byte() != 0x60:
                raise WasmError("type section entry is not a function type")
            params = [r.byte() for _ in range(r.u32())]
            results = [r.byte() for _ in range(r.u32())]
            out.append((params, results))
        return out

    def imports(self) -> list[Import]:
        payload = self.section(IMPORT)
        out: list[Import] = []
        if payload is None:
            return out
        r = Reader(payload)
        for _ in range(r.u32()):
            module, field, kind = r.name(), r.name(), r.byte()
            start = r.pos
            limits = None
            if kind == 0:
                r.u32()
            elif kind == 1:
                r.byte()
                limits = Limits.read(r)
            elif kind == 2:
                limits = Limits.read(r)
            elif kind == 3:
                r.byte()
                r.byte()
            else:
                raise WasmError(f"unknown import kind {kind}")
            out.append(Import(module, field, kind, r.data[start : r.pos], limits))
        return out

    def exports(self) -> list[tuple[str, int, int]]:
        payload = self.section(EXPORT)
        out: list[tuple[str, int, int]] = []
        if payload is None:
            return out
        r = Reader(payload)
        for _ in range(r.u32()):
            out.append((r.name(), r.byte(), r.u32()))
        return out

    def function_types(self) -> list[int]:
        """Type index of each function defined in the module (not imported)."""
        payload = self.section(FUNCTION)
        if payload is None:
            return []
        r = Reader(payload)
        return [r.u32() for _ in range(r.u32())]

    def memory(self) -> Limits | None:
        payload = self.section(MEMORY)
        if payload is None:
            return None
        r = Reader(payload)
        count = r.u32()
        if count > 1:
            raise WasmError("more than one memory")
        return Limits.read(r) if count else None

    def set_memory(self, limits: Limits) -> None:
        self.replace(MEMORY, u32(1) + limits.encode())

    def signature(self, type_index: int) -> str:
        """The wasm3 signature string of a type, e.g. 'i(ii)'."""
        params, results = self.types()[type_index]
        letters = {0x7F: "i", 0x7E: "I", 0x7D: "f", 0x7C: "F"}
        ret = "".join(letters.get(t, "?") for t in results) or "v"
        return ret + "(" + "".join(letters.get(t, "?") for t in params) + ")"
