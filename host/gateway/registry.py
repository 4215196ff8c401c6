"""Who the gateway serves: the devices of its database (key, fleet, replay window, presence)
and the manifests the host installed on them, from which the gateway takes each agent's
permissions — never from what a board says about itself."""

from __future__ import annotations

import time
from typing import Any

from microfang.firmware.errors import MicrofangError
from microfang.gateway.jobstore import JOB_PENDING
from microfang.gateway.store import Store

PRUNE_S = 5.0  # how often a running gateway looks for devices removed from the store (`keys remove`)
# What the store keeps of a device besides its row, all dropped with it (the audit log stays).
_DEVICE_TABLES = ("telemetry", "log_replica", "replica_usage", "agents", "agent_manifests", "requests", "job_answers")


def remove_device(store: Store, device: str) -> None:
    """Remove a device from the registry: its key (its envelopes are dropped from now on, by a
    running gateway within PRUNE_S), presence, telemetry, replicas, agents and requests; its
    active jobs fail. The audit log keeps its records and gets one saying so.

    Raises:
        MicrofangError: no such device.
    """
    with store.transaction():
        if store.device(device, for_update=True) is None:
            raise MicrofangError(f"no device {device!r} in {store.db.name}")
        for table in _DEVICE_TABLES:
            store.db.execute(f"DELETE FROM {table} WHERE device = ?", (device,))
        states = ",".join("?" * len(JOB_PENDING))
        store.db.execute(f"UPDATE jobs SET state = 'failed', detail = 'device removed', updated = ? "
                         f"WHERE (device = ? OR target = ?) AND state IN ({states})",
                         (time.time(), device, device, *JOB_PENDING))
        store.db.execute("DELETE FROM devices WHERE id = ?", (device,))
        store.audit(device, "-", "device removed", {"by": "keys remove"})


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.devices: dict[str, dict[str, Any]] = store.devices()
        self._missing: dict[str, float] = {}  # unknown device -> when it was last looked up
        self._next_prune = time.monotonic() + PRUNE_S

    def add(self, device: str, fleet: str = "default", key: bytes | None = None) -> bytes:
        """Register a device and return its key (existing devices keep theirs)."""
        key = self.store.add_device(device, fleet, key)
        self.devices.update(self.store.devices())
        return key

    def find(self, device: str) -> dict[str, Any] | None:
        """The device's record. One added while we run (`microfang keys add`, `flash`) costs one
        indexed lookup; a name found missing is not looked up again for a second, so a flood
        of messages from unknown devices costs one lookup per name per second."""
        record = self.devices.get(device)
        if record is not None:
            return record
        now = time.monotonic()
        if now - self._missing.get(device, -2.0) < 1.0:
            return None
        record = self.store.device(device)
        if record is None:
            if len(self._missing) >= 10_000:
                self._missing.clear()  # bounded: forgetting only costs another lookup
            self._missing[device] = now
            return None
        self._missing.pop(device, None)
        self.devices[device] = record
        return record

    def due(self) -> bool:
        """Whether it is time to prune()."""
        return time.monotonic() >= self._next_prune

    def prune(self) -> None:
        """Forget the devices removed from the store since they were read (`microfang keys
        remove`, maybe while this gateway runs, maybe on another gateway's store); one query."""
        self._next_prune = time.monotonic() + PRUNE_S
        kept = {row[0] for row in self.store.db.execute("SELECT id FROM devices")}
        gone = [device for device in self.devices if device not in kept]
        for device in gone:
            del self.devices[device]

    def fleet_of(self, device: str) -> str | None:
        record = self.devices.get(device)
        return None if record is None else record["fleet"]

    def secrets_of(self, device: str) -> list[bytes]:
        """Keys that must never leave through a bridge: the device's and its fleet's signing key."""
        record = self.devices.get(device)
        if record is None:
            return []
        fleet_key = self.store.sign_key(record["fleet"], create=False)
        return [record["key"]] + ([fleet_key] if fleet_key else [])

    def manifest_of(self, device: str, agent: str) -> dict[str, Any] | None:
        """The agent's manifest as the host installed it (flash, deploy, migrate), or None."""
        return self.store.manifest(device, agent)

    def permitted(self, device: str, agent: str, host_function: str) -> bool:
        """Whether the registered manifest lets the agent call `host_function` (no record: the
        board's own check stands, as for agents started outside flash/deploy)."""
        permissions = self.store.permissions(device, agent)
        if permissions is None:
            return True
        allowed, denied = permissions
        return host_function in allowed and host_function not in denied
