# A board: its flash, its supervisor and agents, and its link to the gateway. main.py on a real
# board builds one from the config on flash; the simulator builds thousands in one process.

from . import port
from .link import Link
from .sensors import Sensors
from .supervisor import Supervisor


class Board:
    """`config` as for Link (device, fleet, key, host, port, ...) and its "sensors" (sensors.py;
    `sensors`, a callable (agent_id, channel) -> reading, replaces them); `flash` a port.Flash."""

    def __init__(self, config, flash, report=None, sensors=None, clock=port.ticks_ms):
        self.device = config["device"]
        self.flash = flash
        if sensors is None:
            sensors = Sensors(config.get("sensors"), clock, report)
        self.supervisor = Supervisor(report=report, sensors=sensors, clock=clock, flash=flash)
        self.link = Link(config, flash, self.supervisor, clock)
        self.supervisor.connect(self.link.agent_outbox, self.link.announce, self.link.logged, self.link.lines.forward)

    def spawn(self, data):
        return self.supervisor.spawn(data)

    def stop(self):
        """End run(): the link says offline and disconnects, the agents stop being driven."""
        self.link.stop()
        self.supervisor.stop()

    async def run(self, duration_ms=None):
        """Run the agents and the link together until `duration_ms` passes (None: forever)."""
        link = port.asyncio.create_task(self.link.run(duration_ms))
        try:
            await self.supervisor.run(duration_ms)
        finally:
            self.link.stop()
            await link
