# One agent's sandbox: a wasm3 runtime with a fuel tank, a memory cap in bytes, a stack cap
# and only the host functions its manifest allows.
#
# Every pointer and length an agent hands the host is checked against that agent's own
# memory and capped at abi.MAX_HOST_PAYLOAD before the host reads or writes a byte.
# A trap, exhausted fuel or a broken host-call rule raises AgentFault for this agent only.
#
# Nothing here trusts the build: every function is compiled at spawn, where the engine refuses
# code that could loop or recurse without charging fuel (and what it cannot run); an invocation
# gets at most SLICE_FUEL of its tank, so one event cannot hold the board for longer than a
# few milliseconds whatever max_fuel says; host calls pay for the bytes they move
# (docs/fuel.md).

from . import abi, port, wasminfo
from .errors import AgentFault, SandboxError, WasmError

_U32 = 0xFFFFFFFF

SLICE_FUEL = 50_000  # fuel one invocation may use: ~5 ms of an ESP32 at 240 MHz (docs/fuel.md)
HOST_CALL_FUEL = 100  # every host call
HOST_BYTE_FUEL = 2  # per byte a host call copies in or out of the agent's memory


class Sandbox:
    """A spawned agent. `services` implements the host functions (see Supervisor); `env` is a
    wasm3 Environment to share with the board's other agents (a new one if None)."""

    fuel_used = 0
    _running = False  # inside an invocation: host work is charged to it

    def __init__(self, manifest, wasm, services, env=None):
        # Few attributes (issue 16: a record is paid once per agent on a full board): the
        # environment is the module's and the runtime's to keep, the id is the manifest's.
        self.manifest = manifest
        self.services = services
        self._tank = manifest["fuel"]["max"]
        self._spawn(wasm, env)

    @property
    def agent_id(self):
        return self.manifest["agent_id"]

    # ---- spawn ---------------------------------------------------------------------------

    def _spawn(self, wasm, env):
        engine = port.engine
        if engine is None:
            raise SandboxError("this build has no wasm engine (wasm3 module missing)")
        memory = self.manifest["memory"]
        perms = self.manifest["permissions"]
        allowed = [n for n in perms["allowed"] if n not in perms["denied"]]
        try:
            imports, declared = wasminfo.inspect(wasm)
        except (WasmError, UnicodeError) as e:
            raise SandboxError("agent %s: malformed wasm: %s" % (self.agent_id, e))
        for module, name, kind in imports:
            if module == "metering" and name == "usegas":
                continue
            if kind != 0 or module != abi.HOST_MODULE or name not in allowed:
                raise SandboxError("agent %s: imports %s.%s, which its manifest does not allow" % (self.agent_id, module, name))
        if not any(m == "metering" for m, _, _ in imports):
            raise SandboxError("agent %s: module is not fuel-metered (build it with microfang build)" % self.agent_id)
        cap = memory["max_bytes"]
        if declared is None:
            raise SandboxError("agent %s: module declares no memory" % self.agent_id)
        cap_pages = (cap + wasminfo.PAGE - 1) // wasminfo.PAGE
        if declared[0] > cap_pages or declared[1] is None or declared[1] > cap_pages:
            raise SandboxError(
                "agent %s: module declares %d..%s pages, above the memory cap of %d bytes"
                % (self.agent_id, declared[0], declared[1], cap)
            )
        self._admit(footprint(self.manifest, wasm, declared))
        step = "runtime"  # what was being allocated, for a refusal
        try:
            if env is None:
                env = engine.Environment()
            self._runtime = env.new_runtime(memory["stack_bytes"], cap)
            step = "parse"
            self._module = env.parse_module(bytes(wasm))
            step = "load"
            self._runtime.load(self._module)
            for name in allowed:
                self._module.link_function(abi.HOST_MODULE, name, abi.HOST_FUNCTIONS[name], self._host_fn(name))
            step = "compile"
            self._module.compile()
        except engine.Wasm3Error as e:
            if "memory allocation failed" not in str(e):
                raise SandboxError("agent %s: cannot load: %s" % (self.agent_id, e))
            raise self._does_not_fit(wasm, declared, "%s: %s" % (step, e))
        except MemoryError as e:
            raise self._does_not_fit(wasm, declared, "%s: %s" % (step, e or "memory allocation failed"))
        try:
            # The first lookup runs the module's start function: a metered call like any other.
            self._alloc = self._call(self._runtime.find_function, "mf_alloc")
            self._on_event = self._call(self._runtime.find_function, "mf_on_event")
        except AgentFault as e:
            raise SandboxError("agent %s: cannot start: %s" % (self.agent_id, str(e).split(": ", 1)[-1]))
        try:
            init = self._runtime.find_function("mf_init")
        except engine.Wasm3Error:
            init = None
        # Linked and found: the names are ~150 B of heap blocks per agent (patches/0024).
        self._module.forget_names()
        if init is not None:
            self._call(init)

    def _admit(self, need):
        # Refused at once, with the figures, when the heap cannot hold the estimate. Counting
        # free memory walks the whole heap (~0.5-2 ms at 2 MB, more than a spawn), so it is
        # counted only when what was free at the last count, less what agents admitted since
        # took, falls short; an allocation that fails anyway is refused in _spawn.
        if _room[0] is not None and _room[0] >= need:
            _room[0] -= need
            return
        free = port.heap_free(need)
        if free is None:
            return  # CPython: the simulator's memory is the host's
        if free < need:
            raise self._no_room(need, free, "before allocating")
        _room[0] = free - need

    def _does_not_fit(self, wasm, declared, error):
        runtime = getattr(self, "_runtime", None)
        if runtime is not None:
            runtime.close()  # give back what was allocated before the heap ran out
        self._runtime = self._module = None
        free = port.heap_free(1 << 30)  # after a collection: the slow path, on a refusal only
        return self._no_room(footprint(self.manifest, wasm, declared), free, error)

    def _no_room(self, need, free, why):
        return SandboxError("agent %s does not fit: it needs about %d bytes (linear memory, module, code), the "
                            "board has %s free (%s)" % (self.agent_id, need, "?" if free is None else free, why))

    def close(self):
        """Free the engine's runtime now; the sandbox cannot run again."""
        self._runtime.close()

    # ---- fuel and memory -----------------------------------------------------------------

    @property
    def fuel(self):
        return self._tank

    def refuel(self, amount):
        """Add fuel up to the manifest's max_fuel; return the new level."""
        self._tank = min(self.manifest["fuel"]["max"], self._tank + amount)
        return self._tank

    def charge(self, amount, what):
        """Take `amount` of the running invocation's fuel for host work (a host function)."""
        if not self._running:
            return  # the board's own reads (snapshots, tests) cost the agent nothing
        left = self._module.fuel - amount
        self._module.fuel = left  # clamped at 0 by the engine
        if left < 0:
            raise _Spent(what)

    @property
    def memory_bytes(self):
        return self._runtime.memory_size

    def memory_snapshot(self):
        return bytes(self._runtime.get_memory(0))

    def restore_memory(self, data):
        """Put back linear memory saved by memory_snapshot() (a migrated or resumed agent).

        Only linear memory moves: agents built with the SDK keep their state there, and their
        one mutable global, the C stack pointer, is back at its start value between events."""
        mem = self._runtime.get_memory(0)
        if len(data) > len(mem):
            raise SandboxError("agent %s: snapshot of %d bytes is larger than its %d byte memory (agents that "
                               "grow their memory cannot move yet)" % (self.agent_id, len(data), len(mem)))
        mem[0 : len(data)] = data

    # ---- calls ---------------------------------------------------------------------------

    def _call(self, fn, *args):
        """Run fn(*args) on at most one slice of the tank; what it used leaves the tank."""
        engine = port.engine
        tank = self._tank
        grant = min(tank, SLICE_FUEL)
        self._module.fuel = grant
        self._running = True
        try:
            return fn(*args)
        except (engine.OutOfFuel, _Spent):
            if grant < tank:
                raise AgentFault(self.agent_id, "slice", "ran past its time slice of %d fuel" % SLICE_FUEL)
            raise AgentFault(self.agent_id, "fuel", "out of fuel")
        except engine.Wasm3Error as e:  # traps, and the engine's call-depth limit
            raise AgentFault(self.agent_id, "trap", str(e))
        except AgentFault:
            raise
        except Exception as e:  # a host function's own failure must not reach the supervisor loop
            raise AgentFault(self.agent_id, "host", "host function failed: %r" % e)
        finally:
            self._running = False
            used = grant - self._module.fuel
            self._tank = tank - used
            self.fuel_used += used

    def deliver(self, kind, payload=b""):
        """Run mf_on_event(kind, ptr, len) with `payload` written into the agent's memory."""
        size = len(payload)
        ptr = 0
        if size:
            ptr = self._call(self._alloc, size) & _U32
            if ptr == 0:
                raise AgentFault(self.agent_id, "host", "mf_alloc refused a %d byte event" % size)
            mem = self._runtime.get_memory(0)
            if ptr + size > len(mem):
                raise AgentFault(self.agent_id, "host", "mf_alloc returned %#x, outside its memory" % ptr)
            mem[ptr : ptr + size] = payload
        return self._call(self._on_event, kind, ptr, size)

    # ---- host functions ------------------------------------------------------------------

    def read(self, ptr, length, what):
        """Copy `length` bytes at `ptr` out of the agent's memory, checked and paid for."""
        ptr &= _U32
        if length < 0 or length > abi.MAX_HOST_PAYLOAD:
            raise AgentFault(self.agent_id, "host", "%s: length %d is outside 0..%d bytes" % (what, length, abi.MAX_HOST_PAYLOAD))
        self.charge(length * HOST_BYTE_FUEL, what)
        mem = self._runtime.get_memory(0)
        if ptr + length > len(mem):
            raise AgentFault(self.agent_id, "host", "%s: %d bytes at %#x are outside its %d byte memory" % (what, length, ptr, len(mem)))
        return bytes(mem[ptr : ptr + length])

    def write(self, ptr, data, capacity, what):
        """Copy `data` (truncated to `capacity`) into the agent's memory, checked."""
        ptr &= _U32
        if capacity < 0:
            raise AgentFault(self.agent_id, "host", "%s: negative capacity %d" % (what, capacity))
        data = data[:capacity]
        self.charge(len(data) * HOST_BYTE_FUEL, what)
        mem = self._runtime.get_memory(0)
        if ptr + len(data) > len(mem):
            raise AgentFault(self.agent_id, "host", "%s: %d bytes at %#x are outside its %d byte memory" % (what, len(data), ptr, len(mem)))
        mem[ptr : ptr + len(data)] = data
        return len(data)

    def _host_fn(self, name):
        impl = getattr(self.services, "host_" + name)
        sandbox = self

        def call(*args):
            sandbox.charge(HOST_CALL_FUEL, name)
            return impl(sandbox, *args)

        return call


def footprint(manifest, wasm, declared):
    """Heap an agent takes on a board at least: its linear memory as wasm3 allocates it
    (declared pages, capped), the module's bytes (the engine keeps them) and as much again for
    its compiled code and the engine's tables, and its records. The wasm stack is not counted:
    a board's agents share one (the largest). The 750 B hello agent: 5,596 B estimated, 5,744 B
    measured (bench/bench_micropython.py); a low estimate, so admission never refuses what fits."""
    linear = min(declared[0] * wasminfo.PAGE, manifest["memory"]["max_bytes"])
    return linear + 2 * len(wasm) + _RECORDS


_RECORDS = 1024  # runtime, module, sandbox and supervisor records
_room = [None]  # heap free at the last count, less what was admitted since (Sandbox._admit)


class _Spent(Exception):
    """A host function's charge found the invocation's fuel used up."""
