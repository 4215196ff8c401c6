"""Fuel metering by instrumentation (DESIGN.md decision 3).

`meter(wasm)` returns a module that imports `metering.usegas(i32)` and calls it at the start
of every basic block with the summed cost of that block's instructions, before any of them
runs. wasm3 (board and simulator) and wasmtime (tests) then charge exactly the same fuel.

A basic block starts at the function entry and right after every instruction that can move
control: `loop` and `if` (their bodies are branch targets or conditional), `else`, `end`
(the join point after a block), `br`, `br_if` (its fall-through), `br_table`, `return` and
`unreachable`. `block` does not start one: nothing branches to a block's start. Calls do not
end a block: the callee meters itself, and the caller's remaining instructions were paid for
before the call.

The cost table is in docs/fuel.md; `COSTS` below is its source.
"""

from __future__ import annotations

from microfang.firmware.errors import WasmError
from microfang.tools.wasm import binary as wb
from microfang.tools.wasm.binary import Reader

# ---- cost table ---------------------------------------------------------------------------

DEFAULT_COST = 1
COSTS: dict[int, int] = {}
for _op in (0x01, 0x02, 0x03, 0x05, 0x0B):  # nop, block, loop, else, end: compiled away by wasm3
    COSTS[_op] = 0
for _op in range(0x28, 0x3F):  # loads and stores
    COSTS[_op] = 2
COSTS[0x10] = 4  # call
COSTS[0x11] = 6  # call_indirect: a table lookup and a signature check
COSTS[0x3F] = 1  # memory.size
COSTS[0x40] = 200  # memory.grow: allocation
for _op in (0x6D, 0x6E, 0x6F, 0x70, 0x7F, 0x80, 0x81, 0x82, 0x95, 0xA3):  # int div/rem, float div
    COSTS[_op] = 4
COSTS[0x91] = COSTS[0x9F] = 4  # f32.sqrt, f64.sqrt

# Instructions after which a new basic block starts.
_ENDS_BLOCK = {0x00, 0x03, 0x04, 0x05, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F}

_NO_IMMEDIATE = set(range(0x45, 0xC5)) | {0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1}
_U32_IMMEDIATE = {0x0C, 0x0D, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xD2}


def _skip_blocktype(r: Reader) -> None:
    r.sleb(33)


def read_instruction(r: Reader) -> tuple[int, int]:
    """Advance over one instruction; return (opcode, cost). Calls are decoded by the caller."""
    op = r.byte()
    if op in _NO_IMMEDIATE:
        pass
    elif op in (0x02, 0x03, 0x04):
        _skip_blocktype(r)
    elif op in _U32_IMMEDIATE:
        r.u32()
    elif op == 0x0E:
        for _ in range(r.u32() + 1):
            r.u32()
    elif op == 0x11:
        r.u32()
        r.u32()
    elif op == 0x1C:
        for _ in range(r.u32()):
            r.byte()
    elif 0x28 <= op <= 0x3E:
        r.u32()
        r.u32()
    elif op in (0x3F, 0x40):
        r.u32()
    elif op == 0x41:
        r.sleb(32)
    elif op == 0x42:
        r.sleb(64)
    elif op == 0x43:
        r.bytes(4)
    elif op == 0x44:
        r.bytes(8)
    elif op == 0xD0:
        r.byte()
    elif op == 0xFC:
        sub = r.u32()
        if sub <= 7:  # saturating float-to-int
            return op, DEFAULT_COST
        raise WasmError(f"bulk-memory instruction 0xfc {sub} is not supported by the agent engine")
    elif op == 0xFD:
        raise WasmError("SIMD instructions are not supported by the agent engine")
    else:
        raise WasmError(f"unknown opcode {op:#04x}")
    return op, COSTS.get(op, DEFAULT_COST)


class _Renumber:
    """Function index renumbering after one function import is appended."""

    def __init__(self, first_moved: int) -> None:
        self.first_moved = first_moved

    def __call__(self, index: int) -> int:
        return index + 1 if index >= self.first_moved else index


def _charge(cost: int, usegas: int) -> bytes:
    return b"\x41" + wb.sleb(cost) + b"\x10" + wb.u32(usegas)


def meter_body(body: bytes, usegas: int, renumber: _Renumber) -> bytes:
    """Instrument one function body (locals + expression)."""
    r = Reader(body)
    head = r.pos
    for _ in range(r.u32()):
        r.u32()
        r.byte()
    out: list[bytes] = [body[head : r.pos]]
    # `pending` is the slot in `out` where the current block's charge goes once its cost is known.
    # A function's first block and a loop body's first block always charge (at least 1): the
    # board refuses code that could recurse or loop without paying (wasm3 patches/0009).
    pending = len(out)
    out.append(b"")
    cost = 0
    must_charge = True
    depth = 1
    while depth:
        start = r.pos
        op, op_cost = read_instruction(r)
        if op == 0x10:  # call: re-read its index to renumber it
            index = Reader(body, start + 1).u32()
            out.append(b"\x10" + wb.u32(renumber(index)))
        else:
            out.append(body[start : r.pos])
        cost += op_cost
        if op in (0x02, 0x03, 0x04):
            depth += 1
        elif op == 0x0B:
            depth -= 1
        if op in _ENDS_BLOCK:
            if cost or must_charge:
                out[pending] = _charge(max(cost, 1), usegas)
            cost = 0
            must_charge = op == 0x03
            pending = len(out)
            out.append(b"")
    if not r.at_end():
        raise WasmError("function body continues after its final end")
    return b"".join(out)


def _usegas_type(module: wb.Module) -> int:
    types = module.types()
    for i, (params, results) in enumerate(types):
        if params == [0x7F] and not results:
            return i
    payload = module.section(wb.TYPE) or b"\x00"
    r = Reader(payload)
    r.u32()
    module.replace(wb.TYPE, wb.u32(len(types) + 1) + payload[r.pos :] + b"\x60\x01\x7f\x00")
    return len(types)


def _rewrite_code(module: wb.Module, usegas: int, renumber: _Renumber) -> None:
    payload = module.section(wb.CODE)
    if payload is None:
        return
    r = Reader(payload)
    bodies = []
    for _ in range(r.u32()):
        size = r.u32()
        body = meter_body(r.bytes(size), usegas, renumber)
        bodies.append(wb.u32(len(body)) + body)
    module.replace(wb.CODE, wb.vector(bodies))


def _rewrite_exports(module: wb.Module, renumber: _Renumber) -> None:
    if module.section(wb.EXPORT) is None:
        return
    items = []
    for field, kind, index in module.exports():
        items.append(wb.name(field) + bytes([kind]) + wb.u32(renumber(index) if kind == 0 else index))
    module.replace(wb.EXPORT, wb.vector(items))


def _copy_const_expr(r: Reader) -> bytes:
    start = r.pos
    while True:
        op, _ = read_instruction(r)
        if op == 0x0B:
            return r.data[start : r.pos]


def _rewrite_elements(module: wb.Module, renumber: _Renumber) -> None:
    payload = module.section(wb.ELEMENT)
    if payload is None:
        return
    r = Reader(payload)
    segments = []
    for _ in range(r.u32()):
        flags = r.u32()
        if flags not in (0, 2):
            raise WasmError(f"element segment form {flags} needs reference types, not supported")
        if flags == 2 and r.u32() != 0:
            raise WasmError("element segment for a table other than table 0 needs reference types, not supported")
        # Flags 2 with table 0 is the MVP form 0 spelt out (wasm-tools writes it); wasm3 loads
        # only form 0, so it is written as form 0.
        head = wb.u32(0) + _copy_const_expr(r)
        if flags == 2 and r.byte() != 0:
            raise WasmError("element segment kind must be funcref")
        indices = [wb.u32(renumber(r.u32())) for _ in range(r.u32())]
        segments.append(head + wb.vector(indices))
    module.replace(wb.ELEMENT, wb.vector(segments))


def _rewrite_names(module: wb.Module, renumber: _Renumber) -> None:
    body = module.custom("name")
    if body is None:
        return
    r = Reader(body)
    out = []
    try:
        while not r.at_end():
            sid = r.byte()
            sub = Reader(r.bytes(r.u32()))
            if sid == 1:  # function names: map of funcidx -> name
                entries = [wb.u32(renumber(sub.u32())) + wb.name(sub.name()) for _ in range(sub.u32())]
                data = wb.vector(entries)
            elif sid == 2:  # local names: map of funcidx -> (map of localidx -> name)
                funcs = []
                for _ in range(sub.u32()):
                    index = sub.u32()
                    locals_ = [wb.u32(sub.u32()) + wb.name(sub.name()) for _ in range(sub.u32())]
                    funcs.append(wb.u32(renumber(index)) + wb.vector(locals_))
                data = wb.vector(funcs)
            else:
                data = sub.data
            out.append(bytes([sid]) + wb.u32(len(data)) + data)
    except WasmError:
        # A malformed name section is only debug info: drop it rather than keep stale indices.
        module.sections = [s for s in module.sections if not (s[0] == wb.CUSTOM and Reader(s[1]).name() == "name")]
        return
    module.replace_custom("name", b"".join(out))


def meter(wasm: bytes) -> bytes:
    """Return `wasm` with fuel metering injected; raises WasmError on what it cannot meter."""
    module = wb.Module.parse(wasm)
    imports = module.imports()
    for imp in imports:
        if imp.module == "metering":
            raise WasmError("module already imports metering.usegas (it is injected at build)")
    n_func_imports = sum(1 for imp in imports if imp.kind == 0)
    renumber = _Renumber(n_func_imports)
    usegas_type = _usegas_type(module)
    # The new import goes after the existing function imports, so it takes index
    # n_func_imports and every defined function moves up by one.
    new_import = wb.Import("metering", "usegas", 0, wb.u32(usegas_type))
    func_imports = [i for i in imports if i.kind == 0]
    other_imports = [i for i in imports if i.kind != 0]
    module.replace(wb.IMPORT, wb.vector([i.encode() for i in func_imports + [new_import] + other_imports]))
    _rewrite_code(module, n_func_imports, renumber)
    _rewrite_exports(module, renumber)
    start = module.section(wb.START)
    if start is not None:
        module.replace(wb.START, wb.u32(renumber(Reader(start).u32())))
    _rewrite_elements(module, renumber)
    _rewrite_names(module, renumber)
    return module.encode()
