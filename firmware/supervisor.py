# The supervisor: runs a board's agents. Spawn, suspend, resume, reclaim; per-agent event
# queues and timers; refuel on each manifest's schedule; restart with backoff after a trap.
#
# One asyncio task drives everything. Each round it fires due timers and refuels, then hands
# at most one queued event to each runnable agent, so a busy agent cannot starve the others;
# a single invocation is bounded by one time slice of fuel (sandbox.SLICE_FUEL): an event
# that runs past it is aborted and the agent goes on with its next one, memory kept.

from . import abi, bundle, cbor, port
from .errors import AgentFault, BundleError, MicrofangError, SandboxError
from .memlog import LogError, MemoryLog
from .sandbox import Sandbox

RUNNING = "running"
SUSPENDED = "suspended"
EXHAUSTED = "exhausted"  # out of fuel: events wait for the next refuel
BACKOFF = "backoff"  # trapped: restarts after a delay
FAILED = "failed"  # trapped and out of restarts
STOPPED = "stopped"

_QUEUE_LIMIT = 32  # events waiting per agent; more are dropped and counted
_IDLE_MAX_MS = 1000  # longest sleep with nothing due (timers, refuels and restarts wake us earlier)


def _text(raw):
    try:
        return str(raw, "utf-8")
    except UnicodeError:
        return ""


# An agent's counters (Agent.counts), by index, and their names in its stats (Agent.snapshot).
_EVENTS, _TRAPS, _EXHAUSTED, _DROPPED, _RESTARTS, _HOST_CALLS, _FUEL_USED, _SLICED = range(8)
_COUNTS = ("events", "traps", "exhausted", "dropped", "restarts", "host_calls", "fuel_used", "sliced")


class Agent:
    """The supervisor's record of one agent: its sandbox, queue, timers and counters.

    Compact (issue 16: every byte of a record is paid 16 times on a full ESP32 board): the
    counters are one list, not a dict; what is rarely set (a restart's count and time, the next
    request id, the bundle's path) is a class default until it is; the id is the manifest's.
    An instance's attributes live in a hash table that grows as they are first set: 9 of them
    take 80 bytes, 13 took 136 and left the smaller tables before it as garbage."""

    sandbox = None
    source = None
    restarts = 0
    restart_at = 0
    next_request = 1

    def __init__(self, manifest, wasm, now, source=None):
        self.manifest = manifest
        # The module's bytes, until the engine has compiled them when the agent's bundle lies on
        # flash at `source`: then the board lets go of them and a restart reads them again.
        self.wasm = wasm
        if source is not None:
            self.source = source
        self.state = STOPPED
        self.queue = []
        self.timers = [[t["id"], t["every_ms"], now + t["every_ms"]] for t in manifest["timers"]]
        self.next_refuel = now + manifest["fuel"]["refuel_interval_ms"]
        self.counts = [0] * len(_COUNTS)

    @property
    def agent_id(self):
        return self.manifest["agent_id"]

    def snapshot(self):
        s = {}
        for i in range(len(_COUNTS)):
            s[_COUNTS[i]] = self.counts[i]
        s["state"] = self.state
        s["queued"] = len(self.queue)
        if self.sandbox is not None:
            s["fuel_used"] = self.counts[_FUEL_USED] + self.sandbox.fuel_used
            s["fuel"] = self.sandbox.fuel
            s["memory"] = self.sandbox.memory_bytes
        else:
            s["fuel"] = 0
            s["memory"] = 0
        s["memory_cap"] = self.manifest["memory"]["max_bytes"]
        return s


class Supervisor:
    """Runs agents. `report(agent_id, kind, text)` receives logs, faults and state changes;
    `outbox(agent_id, kind, topic_or_kind, body, request_id)` receives publishes and requests;
    `flash` (a port.Flash) holds the agents' memory logs."""

    def __init__(self, report=None, outbox=None, sensors=None, clock=port.ticks_ms, trace_events=False, flash=None):
        self.agents = {}
        self.outbox = outbox
        self.on_spawn = None  # on_spawn(agent_id, manifest): the link tells the gateway
        self.on_log = None  # on_log(agent_id): a record was appended to the agent's memory log
        self.on_line = None  # on_line(agent_id, line): the agent wrote an mf_log line
        self.flash = flash
        self._logs = {}
        self._env = None
        self._room = None  # set when queued events are taken: a link waiting for room goes on
        self._stopping = False
        self.trace_events = trace_events
        self._report = report
        self._sensors = sensors
        self._clock = clock
        self._start = clock()
        self._wake = None

    # ---- reporting -----------------------------------------------------------------------

    def report(self, agent_id, kind, text):
        if self._report is not None:
            self._report(agent_id, kind, text)

    # ---- lifecycle -----------------------------------------------------------------------

    def spawn(self, data=None, manifest=None, wasm=None, memory=None, source=None):
        """Spawn an agent from bundle bytes (or a manifest and metered wasm); return its id.
        With `memory` (a snapshot of its linear memory) the agent continues where it was
        snapshotted instead of starting: it gets no start event. `source` is the path of the
        same bundle on this board's flash, if it lies there: the board then holds the module's
        bytes only while the engine compiles them (on a 110 KB heap each agent's wasm would
        otherwise stay in RAM beside its code) and reads them again for a restart."""
        if data is not None:
            manifest, wasm = bundle.decode(data)
        else:
            bundle.check_manifest(manifest)
        agent_id = manifest["agent_id"]
        old = self.agents.get(agent_id)
        if old is not None and old.state != STOPPED:
            raise SandboxError("agent %s is already running (reclaim it first)" % agent_id)
        port.collect_before_records()
        manifest = self._same_tables(bundle.board_manifest(manifest))
        agent = Agent(manifest, self._same_wasm(wasm), self._clock(), source if self.flash is not None else None)
        self._start_agent(agent)  # raises before the agent is registered if it cannot spawn
        if memory is not None:
            try:
                agent.sandbox.restore_memory(memory)
            except SandboxError:
                agent.sandbox.close()
                raise
            agent.queue.pop(0)  # the start event: a restored agent has started long ago
        self.agents[agent_id] = agent
        if self.on_spawn is not None:
            self.on_spawn(agent_id, manifest)
        return agent_id

    def _same_tables(self, manifest):
        # A manifest's tables are read, never written, once it runs: one equal to a running
        # agent's (the default fuel, restart and log settings, say) is that agent's, ~50 B each.
        for agent in self.agents.values():
            for key in manifest:
                theirs = agent.manifest.get(key)
                if isinstance(theirs, (dict, list)) and theirs is not manifest[key] and theirs == manifest[key]:
                    manifest[key] = theirs
        return manifest

    def _same_wasm(self, wasm):
        # Agents of one module whose bytes stay in RAM (spawned without a source on flash: the
        # engine keeps pointers into them until it has compiled them) share one copy of them.
        for agent in self.agents.values():
            if agent.wasm is not None and agent.wasm == wasm:
                return agent.wasm
        return wasm

    def _start_agent(self, agent):
        if agent.sandbox is not None:
            agent.counts[_FUEL_USED] += agent.sandbox.fuel_used
            # A restart: the old runtime goes first. Its blocks were the engine's, at the top of
            # the heap (boards/patches/0001), and the new runtime's take their place there.
            agent.sandbox.close()
        agent.sandbox = None
        if self._env is None and port.engine is not None:
            # One wasm3 environment for all agents: ~1.2 KB less per agent on a board, and on
            # the board one value stack for all of them (the largest; one agent runs at a time).
            self._env = port.engine.Environment()
        wasm = agent.wasm if agent.wasm is not None else self._wasm_from_flash(agent)
        agent.sandbox = Sandbox(agent.manifest, wasm, self, self._env)
        if agent.source is not None:
            agent.wasm = None  # compiled: the engine holds code, not bytes (see Agent)
        agent.state = RUNNING
        agent.queue.insert(0, (abi.EV_START, b""))
        self.report(agent.agent_id, "state", RUNNING)
        self._kick()

    def _wasm_from_flash(self, agent):
        try:
            manifest, wasm = bundle.read_file(self.flash, agent.source)
        except (OSError, BundleError) as e:
            raise SandboxError("agent %s: its bundle %s cannot be read again: %s" % (agent.agent_id, agent.source, e))
        if manifest["agent_id"] != agent.agent_id or manifest["version"] != agent.manifest["version"]:
            raise SandboxError("agent %s: %s holds another bundle now" % (agent.agent_id, agent.source))
        return wasm

    def start_now(self, agent_id):
        """Deliver an agent's queued start event now; return its state afterwards (a new
        version that traps on start is rolled back by the installer)."""
        agent = self._get(agent_id)
        if agent.state == RUNNING and agent.queue and agent.queue[0][0] == abi.EV_START:
            self._deliver(agent, *agent.queue.pop(0))
        return agent.state

    def connect(self, outbox, on_spawn, on_log=None, on_line=None):
        """Hook a link in (board.py): agents' publishes and requests go to `outbox`,
        `on_spawn(agent_id, manifest)` hears of every agent started, `on_log(agent_id)` of
        every memory-log record appended (the link replicates it soon, not at the next tick)
        and `on_line(agent_id, line)` of every mf_log line (agentlines.py)."""
        self.outbox = outbox
        self.on_spawn = on_spawn
        self.on_log = on_log
        self.on_line = on_line

    def suspend(self, agent_id):
        agent = self._get(agent_id)
        if agent.state in (RUNNING, EXHAUSTED):
            agent.state = SUSPENDED
            self.report(agent_id, "state", SUSPENDED)

    def resume(self, agent_id):
        agent = self._get(agent_id)
        if agent.state == SUSPENDED:
            agent.state = EXHAUSTED if agent.sandbox.fuel <= 0 else RUNNING
            self.report(agent_id, "state", agent.state)
            self._kick()

    def reclaim(self, agent_id):
        """Stop an agent and give back its runtime, memory and queue."""
        agent = self._get(agent_id)
        if agent.sandbox is not None and agent.state in (RUNNING, SUSPENDED):
            try:
                agent.sandbox.deliver(abi.EV_STOP)
            except AgentFault as e:
                self.report(agent_id, "fault", str(e))
        del self.agents[agent_id]
        if agent.sandbox is not None:
            agent.sandbox.close()
        agent.sandbox = None
        agent.queue = []
        self.report(agent_id, "state", "reclaimed")

    def relieve_memory(self, why):
        """The board's link keeps running out of memory: it is the board's lifeline (without it
        no operator can reach the board to fix anything), so the agent holding the most linear
        memory is reclaimed, saying why. Its id, or None when no agent holds any."""
        biggest, most = None, 0
        for agent_id, agent in self.agents.items():
            held = agent.sandbox.memory_bytes if agent.sandbox is not None else 0
            if held > most:
                biggest, most = agent_id, held
        if biggest is not None:
            self.report(biggest, "fault", "reclaimed: the board's link ran out of memory (%s) while it held %d B"
                        % (why, most))
            self.reclaim(biggest)
            port.collect_before_records()
        return biggest

    def _get(self, agent_id):
        agent = self.agents.get(agent_id)
        if agent is None:
            raise SandboxError("no agent %r on this board" % agent_id)
        return agent

    def refuel(self, agent_id, amount):
        """Add fuel now (a gateway command); wakes an exhausted agent."""
        agent = self._get(agent_id)
        if agent.sandbox is None:
            return
        agent.sandbox.refuel(amount)
        if agent.state == EXHAUSTED and agent.sandbox.fuel > 0:
            agent.state = RUNNING
            agent.queue.insert(0, (abi.EV_REFUEL, b""))
            self.report(agent_id, "state", RUNNING)
            self._kick()

    def post(self, agent_id, kind, payload=b"", count_drop=True):
        """Queue an event for an agent; return False if its queue is full (counted as a drop
        unless the caller will offer it again)."""
        agent = self._get(agent_id)
        if len(agent.queue) >= _QUEUE_LIMIT:
            if count_drop:
                agent.counts[_DROPPED] += 1
            return False
        agent.queue.append((kind, payload))
        self._kick()
        return True

    def stats(self, agent_id=None):
        if agent_id is not None:
            return self._get(agent_id).snapshot()
        return {aid: a.snapshot() for aid, a in self.agents.items()}

    # ---- the loop ------------------------------------------------------------------------

    def _kick(self):
        if self._wake is not None:
            self._wake.set()

    def step(self):
        """One round: timers, refuel, restarts, then one event per runnable agent.
        Returns the number of events delivered."""
        now = self._clock()
        delivered = 0
        for agent in list(self.agents.values()):
            self._tick(agent, now)
            if agent.state == RUNNING and agent.queue:
                kind, payload = agent.queue.pop(0)
                self._deliver(agent, kind, payload)
                delivered += 1
        if delivered and self._room is not None:
            self._room.set()
        return delivered

    async def wait_room(self, timeout_ms=50):
        """Wait until some queued event has been handed to its agent (or the timeout)."""
        if self._room is None:
            self._room = port.asyncio.Event()
        self._room.clear()
        try:
            await port.wait_for(self._room.wait(), timeout_ms)
        except port.asyncio.TimeoutError:
            pass

    def _tick(self, agent, now):
        fuel = agent.manifest["fuel"]
        if agent.sandbox is not None and port.ticks_diff(now, agent.next_refuel) >= 0:
            agent.next_refuel = now + fuel["refuel_interval_ms"]
            agent.sandbox.refuel(fuel["refuel_amount"])
            if agent.state == EXHAUSTED:
                agent.state = RUNNING
                agent.queue.insert(0, (abi.EV_REFUEL, b""))
                self.report(agent.agent_id, "state", RUNNING)
        if agent.state == BACKOFF and port.ticks_diff(now, agent.restart_at) >= 0:
            try:
                self._start_agent(agent)
            except MicrofangError as e:
                agent.state = FAILED
                self.report(agent.agent_id, "fault", "restart failed: %s" % e)
        if agent.state not in (RUNNING, EXHAUSTED):
            return
        for timer in agent.timers:
            if port.ticks_diff(now, timer[2]) >= 0:
                timer[2] = now + timer[1]
                if len(agent.queue) < _QUEUE_LIMIT:
                    agent.queue.append((abi.EV_TIMER, cbor.dumps(timer[0])))
                else:
                    agent.counts[_DROPPED] += 1

    def _deliver(self, agent, kind, payload):
        agent.counts[_EVENTS] += 1
        if self.trace_events:
            self.report(agent.agent_id, "event", "%s (%d bytes)" % (abi.EVENT_NAMES.get(kind, kind), len(payload)))
        try:
            agent.sandbox.deliver(kind, payload)
        except AgentFault as e:
            self._fault(agent, e)

    def _fault(self, agent, fault):
        if fault.reason == "slice":
            agent.counts[_SLICED] += 1
            self.report(agent.agent_id, "fault", "%s: event aborted, memory kept" % fault)
            return
        if fault.reason == "fuel":
            agent.counts[_EXHAUSTED] += 1
            agent.state = EXHAUSTED
            self.report(agent.agent_id, "fault", "out of fuel: suspended until refuel (memory kept)")
            self.report(agent.agent_id, "state", EXHAUSTED)
            return
        agent.counts[_TRAPS] += 1
        self.report(agent.agent_id, "fault", str(fault))
        restart = agent.manifest["restart"]
        # on-failure gives up after max_restarts; always keeps restarting (with capped backoff).
        gives_up = restart["policy"] == "on-failure" and agent.restarts >= restart["max_restarts"]
        if restart["policy"] == "never" or gives_up:
            agent.state = FAILED
            self.report(agent.agent_id, "state", FAILED)
            return
        # Exponential backoff, capped at 64x the base delay.
        delay = restart["backoff_ms"] << min(agent.restarts, 6)
        agent.restarts += 1
        agent.counts[_RESTARTS] += 1
        agent.state = BACKOFF
        agent.restart_at = self._clock() + delay
        agent.queue = []
        self.report(agent.agent_id, "state", "%s (restart in %d ms)" % (BACKOFF, delay))

    def next_due_ms(self):
        """Milliseconds until the next timer, refuel or restart is due (capped)."""
        now = self._clock()
        due = _IDLE_MAX_MS
        for agent in self.agents.values():
            if agent.sandbox is not None:
                due = min(due, port.ticks_diff(agent.next_refuel, now))
            if agent.state == BACKOFF:
                due = min(due, port.ticks_diff(agent.restart_at, now))
            elif agent.state in (RUNNING, EXHAUSTED):
                for timer in agent.timers:
                    due = min(due, port.ticks_diff(timer[2], now))
        return max(0, due)

    async def run(self, duration_ms=None):
        """Drive the agents until `duration_ms` passes (forever if None). Between events it
        sleeps until the next timer is due or something is posted: an idle board idles."""
        self._wake = port.asyncio.Event()
        self._stopping = False
        start = self._clock()
        while not self._stopping and (duration_ms is None or port.ticks_diff(self._clock(), start) < duration_ms):
            if self.step() == 0:
                self._wake.clear()
                wait = self.next_due_ms()
                if duration_ms is not None:
                    wait = min(wait, max(0, duration_ms - port.ticks_diff(self._clock(), start)))
                try:
                    await port.wait_for(self._wake.wait(), max(1, wait))
                except port.asyncio.TimeoutError:
                    pass
            else:
                await port.sleep_ms(0)

    def stop(self):
        """Make run() return after the current round."""
        self._stopping = True
        self._kick()

    # ---- host functions (called by Sandbox with the calling sandbox first) --------------

    def _agent_of(self, sandbox):
        agent = self.agents.get(sandbox.agent_id)
        if agent is not None:
            agent.counts[_HOST_CALLS] += 1
        return agent

    def host_log(self, sandbox, ptr, length):
        self._agent_of(sandbox)
        text = sandbox.read(ptr, length, "log")
        try:
            line = str(text, "utf-8")
        except UnicodeError:
            line = repr(text)
        self.report(sandbox.agent_id, "log", line)
        if self.on_line is not None:
            self.on_line(sandbox.agent_id, line)

    def host_now_ms(self, sandbox):
        self._agent_of(sandbox)
        return port.ticks_diff(self._clock(), self._start)

    def host_sensor_read(self, sandbox, channel):
        self._agent_of(sandbox)
        if self._sensors is None:
            return abi.E_NOT_FOUND
        return self._sensors(sandbox.agent_id, channel)

    def host_publish(self, sandbox, topic_ptr, topic_len, body_ptr, body_len):
        self._agent_of(sandbox)
        topic = sandbox.read(topic_ptr, topic_len, "publish topic")
        body = sandbox.read(body_ptr, body_len, "publish body")
        if self.outbox is None:
            return abi.E_NOT_FOUND
        return self.outbox(sandbox.agent_id, "publish", _text(topic), body, 0)

    def host_request(self, sandbox, kind_ptr, kind_len, body_ptr, body_len):
        agent = self._agent_of(sandbox)
        kind = sandbox.read(kind_ptr, kind_len, "request kind")
        body = sandbox.read(body_ptr, body_len, "request body")
        if self.outbox is None or agent is None:
            return abi.E_NOT_FOUND
        request_id = agent.next_request
        agent.next_request += 1
        status = self.outbox(sandbox.agent_id, "request", _text(kind), body, request_id)
        return request_id if status == 0 else status

    def log(self, agent_id):
        """The memory log of an agent (its own namespace on flash), or None without flash."""
        log = self._logs.get(agent_id)
        if log is None and self.flash is not None:
            agent = self.agents.get(agent_id)
            if agent is None:
                return None
            log = MemoryLog(self.flash, agent_id, agent.manifest["memory_log"]["max_kb"] * 1024)
            self._logs[agent_id] = log
        return log

    def forget_log(self, agent_id):
        """Drop the cached log of an agent whose log on flash was replaced or deleted."""
        self._logs.pop(agent_id, None)

    def host_mem_append(self, sandbox, ptr, length):
        self._agent_of(sandbox)
        data = sandbox.read(ptr, length, "mem_append")
        log = self.log(sandbox.agent_id)
        if log is None:
            return abi.E_NOT_FOUND
        try:
            seq = log.append(data)
        except LogError as e:
            self.report(sandbox.agent_id, "fault", "mem_append: %s" % e)
            return e.code
        except OSError as e:
            self.report(sandbox.agent_id, "fault", "mem_append: flash error %s" % e)
            return abi.E_FULL
        if self.on_log is not None:
            self.on_log(sandbox.agent_id)
        return seq

    def host_mem_read(self, sandbox, seq, ptr, capacity):
        self._agent_of(sandbox)
        log = self.log(sandbox.agent_id)
        payload = log.read(seq) if log is not None and seq >= 0 else None
        if payload is None:
            return abi.E_NOT_FOUND
        return sandbox.write(ptr, payload, capacity, "mem_read")
