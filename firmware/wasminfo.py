# Just enough of the wasm binary format for the board to check a module before loading it:
# its imports and its declared memory. The full reader/rewriter is host-side (tools/wasm/).

from .errors import WasmError

PAGE = 65536


class _Cursor:
    def __init__(self, data, pos, end):
        self.data = data
        self.pos = pos
        self.end = end

    def byte(self):
        if self.pos >= self.end:
            raise WasmError("truncated module")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self):
        result = 0
        shift = 0
        while shift < 35:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise WasmError("malformed integer")

    def name(self):
        n = self.u32()
        if self.pos + n > self.end:
            raise WasmError("truncated module")
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return str(raw, "utf-8")

    def limits(self):
        flag = self.byte()
        minimum = self.u32()
        maximum = self.u32() if flag & 1 else None
        return minimum, maximum


def inspect(wasm):
    """Return (imports, memory) where imports is a list of (module, name, kind) and memory is
    (min_pages, max_pages or None), or None when the module declares no memory."""
    if len(wasm) < 8 or bytes(wasm[:8]) != b"\x00asm\x01\x00\x00\x00":
        raise WasmError("not a wasm module (bad magic number or version)")
    imports = []
    memory = None
    c = _Cursor(wasm, 8, len(wasm))
    while c.pos < c.end:
        sid = c.byte()
        size = c.u32()
        end = c.pos + size
        if end > c.end:
            raise WasmError("section runs past the end of the module")
        s = _Cursor(wasm, c.pos, end)
        if sid == 2:
            for _ in range(s.u32()):
                module, name, kind = s.name(), s.name(), s.byte()
                if kind == 0:
                    s.u32()
                elif kind == 1:
                    s.byte()
                    s.limits()
                elif kind == 2:
                    memory = s.limits()
                elif kind == 3:
                    s.byte()
                    s.byte()
                else:
                    raise WasmError("unknown import kind %d" % kind)
                imports.append((module, name, kind))
        elif sid == 5 and s.u32():
            memory = s.limits()
        c.pos = end
    return imports, memory


