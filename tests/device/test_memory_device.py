# A board's memory diet (issue 16): what agents share and what a full heap does to a spawn.
# Runs under MicroPython with each board heap and under CPython (tests/test_device_runtimes.py).
# Plain asserts only.
import gc

from microfang.firmware import abi, port
from microfang.firmware import bundle as bundles
from microfang.firmware.errors import SandboxError
from microfang.firmware.supervisor import Supervisor
from test_hostile_device import board
from test_supervisor_device import started, steps


def depth(sup, agent_id):
    return sup.agents[agent_id].sandbox.read(0, 1, "test")[0]  # the probe stores its depth at 0


def test_agents_of_one_module_share_its_bytes(bundle):
    # Two copies of one bundle, as read from flash: the board keeps the module's bytes once.
    first, second = bytes(bytearray(bundle("hello"))), bytes(bytearray(bundle("hello")))
    manifest, wasm = bundles.decode(second)
    manifest["agent_id"] = "a2"
    sup, _ = board(first)
    sup.spawn(manifest=manifest, wasm=wasm)
    assert sup.agents["a2"].wasm is sup.agents["a1"].wasm


def test_an_agent_keeps_its_own_stack_limit_beside_an_agent_with_a_larger_stack(bundle):
    # The board's agents run on one wasm stack (the largest): each still overflows at its own size.
    depths = {}
    for name, agent_id in (("wide_depth_probe", "wide"), ("wide_depth_probe_4k", "wide4")):
        alone, rec = board(bundle(name))
        steps(alone, 1)
        assert "stack overflow" in rec.texts(agent_id, "fault")[0], rec.seen
        depths[agent_id] = depth(alone, agent_id)
    assert 2 < depths["wide"] < depths["wide4"] < port.engine.MAX_CALL_DEPTH, depths
    beside, rec = board(bundle("wide_depth_probe_4k"), bundle("wide_depth_probe"))  # the larger stack first
    steps(beside, 1)
    assert {a: depth(beside, a) for a in depths} == depths, rec.seen


def test_a_board_filled_with_agents_refuses_the_next_one_and_runs_on(bundle):
    # On the 2 MB heap the engine crashed here: a parse that ran out of memory freed a function
    # table its failed allocation never made. Now the next agent is refused with the figures.
    manifest, wasm = bundles.decode(bundle("hello"))
    sup = Supervisor()
    count = 0
    try:
        while count < 1000:
            m = dict(manifest)
            m["agent_id"] = "a%d" % count
            sup.spawn(manifest=m, wasm=bytes(bytearray(wasm)))  # its own bytes, as read from flash
            sup.step()
            count += 1
    except SandboxError as e:
        assert "does not fit: it needs about" in str(e) and "the board has" in str(e), e
    else:
        assert port.heap_free() is None, count  # CPython: the host's memory, no end in sight
    assert count >= 1, count
    sup.step()  # the agents it holds run on
    while count:
        count -= 1
        sup.reclaim("a%d" % count)


def test_a_trapped_agent_with_half_the_free_heap_restarts_again_and_again_among_small_objects(bundle):
    # Issue 14: at the 110 KB heap a trapped agent with a whole 64 KiB page could not restart:
    # its old runtime freed, the new one's small parts took the start of the hole its memory
    # left, and no other 64 KiB block was free. Between restarts the board keeps making small
    # objects that live on (as a link does with every message), with garbage between them.
    now = [0]
    sup, rec = started(bundle("trap_40k"), clock=lambda: now[0])
    kept = []
    for round in range(12):
        for i in range(16):
            kept.append((round, i))
            bytearray(100)  # garbage between the objects that stay
        now[0] += 10_000  # past any backoff: each step restarts the agent, which traps again
        sup.step()
    faults = rec.texts("big", "fault")
    assert [f for f in faults if "restart failed" in f] == [], faults
    assert sup.stats("big")["restarts"] >= 12 and sup.stats("big")["state"] == "backoff", rec.seen
    assert sup.agents["big"].sandbox.memory_bytes == 40 * 1024


def fragment_heap(hole):
    # MicroPython: fill the heap with blocks of `hole` bytes (and what is left with small ones),
    # then free every other large one: what is free now lies in pieces of about `hole` bytes.
    # Returns the blocks that stay (hold them). CPython: nothing to fragment.
    if port.heap_free() is None:
        return []
    blocks, small = [], []
    for size, into in ((hole, blocks), (16, small)):
        try:
            while True:
                into.append(bytearray(size))
        except MemoryError:
            pass
    for i in range(0, len(blocks), 2):
        blocks[i] = None  # (the heap is full: nothing here may allocate)
    gc.collect()
    return blocks, small


def test_an_agent_compiles_on_a_heap_whose_free_blocks_are_all_smaller_than_a_code_page(bundle):
    # Issue 16: a board full of agents had 7 KB free, no free block over ~1 KB, and wasm3 asked
    # for whole 1 KiB code pages: "memory allocation failed when acquiring a new M3 code page".
    # wasm3 now takes a smaller page when a whole one does not fit (patches/0023).
    manifest, wasm = bundles.decode(bundle("example_hello"))
    env = port.engine.Environment()
    runtime = env.new_runtime(manifest["memory"]["stack_bytes"], manifest["memory"]["max_bytes"])
    module = env.parse_module(bytes(wasm))
    memory = bytearray(manifest["memory"]["max_bytes"] + 400)  # kept whole for the linear memory
    kept = fragment_heap(400)  # the rest free in blocks of ~400 B: a quarter code page fits, a whole one not
    memory = None
    gc.collect()
    runtime.load(module)  # the linear memory, and a code page to run the globals' initialisers
    for name in manifest["permissions"]["allowed"]:
        module.link_function(abi.HOST_MODULE, name, abi.HOST_FUNCTIONS[name], lambda *args: 0)
    module.compile()
    runtime.find_function("mf_on_event")
    assert port.heap_free() is None or len(kept[0]) > 100, len(kept[0])


def test_a_spawned_agent_keeps_no_names_and_runs_on(bundle):
    # Issue 16: each import and export name was a heap block of its own for the agent's life,
    # though nothing looks a name up once the agent is linked and its functions are found.
    sup, rec = board(bundle("hello"))
    steps(sup, 1)
    try:
        sup.agents["a1"].sandbox._runtime.find_function("mf_on_event")
    except port.engine.Wasm3Error:
        pass
    else:
        raise AssertionError("the module still knows its export names")
    sup.post("a1", abi.EV_MESSAGE, b"hi")
    steps(sup, 1)
    assert sup.stats("a1")["events"] == 2 and sup.stats("a1")["traps"] == 0, sup.stats("a1")


def test_an_agent_spawns_when_the_one_hole_for_its_memory_is_the_highest_among_small_ones(bundle):
    # Issue 16: on a full board the update of an agent spawns its new version where the old one
    # was: one hole for the linear memory at the top of the heap, small holes below. The
    # engine's blocks are taken from the highest free run that fits (boards/patches/0001), so
    # the parse's small blocks went into that hole first and the memory found no room ("load:
    # memory allocation failed" with 11 KB free). The memory's block is now taken first
    # (patches/0025).
    manifest, wasm = bundles.decode(bundle("example_hello"))
    env = port.engine.Environment()
    env.new_runtime(manifest["memory"]["stack_bytes"]).close()  # the environment's shared stack, made once
    blocks = []
    if port.heap_free() is not None:
        try:
            while True:
                blocks.append(bytearray(400))
        except MemoryError:
            pass
        for i in range(0, len(blocks) - 8, 2):
            blocks[i] = None  # holes of ~400 B, a small block between each two
        for i in range(len(blocks) - 7, len(blocks)):
            blocks[i] = None  # the last 7, together: one hole of ~3 KB at the top
        gc.collect()
    runtime = env.new_runtime(manifest["memory"]["stack_bytes"], manifest["memory"]["max_bytes"])
    module = env.parse_module(bytes(wasm))
    runtime.load(module)
    for name in manifest["permissions"]["allowed"]:
        module.link_function(abi.HOST_MODULE, name, abi.HOST_FUNCTIONS[name], lambda *args: 0)
    module.compile()
    runtime.find_function("mf_on_event")
    assert runtime.memory_size == manifest["memory"]["max_bytes"], runtime.memory_size
