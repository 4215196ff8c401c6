# Just enough of the wasm binary format for the board to check a module before loading it:
# its imports and its declared memory. The full reader/rewriter is host-side (tools/wasm/).
#
# Written as flat loops over an index rather than a cursor object: this runs on every spawn,
# and method calls per byte cost more than the rest of the spawn on MicroPython and CPython.

from .errors import WasmError

PAGE = 65536
_HEADER = b"\x00asm\x01\x00\x00\x00"


def _u32(data, pos, end):
    result = 0
    shift = 0
    while pos < end and shift < 35:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise WasmError("truncated or malformed integer")


def _limits(data, pos, end):
    if pos >= end:
        raise WasmError("truncated limits")
    flag = data[pos]
    minimum, pos = _u32(data, pos + 1, end)
    maximum = None
    if flag & 1:
        maximum, pos = _u32(data, pos, end)
    return (minimum, maximum), pos


def _imports(data, pos, end, imports):
    memory = None
    count, pos = _u32(data, pos, end)
    for _ in range(count):
        names = []
        for _ in range(2):
            n, pos = _u32(data, pos, end)
            if pos + n > end:
                raise WasmError("truncated import name")
            names.append(str(bytes(data[pos : pos + n]), "utf-8"))
            pos += n
        if pos >= end:
            raise WasmError("truncated import")
        kind = data[pos]
        pos += 1
        if kind == 0:
            _, pos = _u32(data, pos, end)
        elif kind == 1:
            _, pos = _limits(data, pos + 1, end)
        elif kind == 2:
            memory, pos = _limits(data, pos, end)
        elif kind == 3:
            pos += 2
        else:
            raise WasmError("unknown import kind %d" % kind)
        imports.append((names[0], names[1], kind))
    return memory


def inspect(wasm):
    """Return (imports, memory) where imports is a list of (module, name, kind) and memory is
    (min_pages, max_pages or None), or None when the module declares no memory."""
    if bytes(wasm[:8]) != _HEADER:
        raise WasmError("not a wasm module (bad magic number or version)")
    imports = []
    memory = None
    pos = 8
    end = len(wasm)
    while pos < end:
        sid = wasm[pos]
        size, pos = _u32(wasm, pos + 1, end)
        if pos + size > end:
            raise WasmError("section runs past the end of the module")
        if sid == 2:
            memory = _imports(wasm, pos, pos + size, imports) or memory
        elif sid == 5:
            count, at = _u32(wasm, pos, pos + size)
            if count:
                memory, _ = _limits(wasm, at, pos + size)
        pos += size
    return imports, memory
