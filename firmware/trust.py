# What the operator decided for this board: the public keys it trusts for bundles and
# migrations, and the agent versions the operator withdrew.
#
# Keys: provisioned by `microfang flash` in /config.cbor as `sign_keys` (a list of 32-byte
# Ed25519 public keys, several during a rotation) with `trust_serial`. A signed bundle may carry
# the operator's current list in its head (`trust: {serial, keys}`, bundle.py); once its
# signature verifies under a key trusted now and its serial is newer, the list replaces this
# board's: that is how a rotated key reaches boards in the field and a revoked one stops working
# on them. An older list (a replayed bundle) changes nothing. Never a private key: a board's
# flash image signs nothing.
#
# Withdrawn versions: a bundle whose signed head says `supersedes: V` may replace the installed
# version V even though it is older (rollback protection would refuse it); V is then withdrawn
# for that agent and refused if it comes again. Only the operator's signature does this, never
# a board. Both live in /trust.cbor, written to a new file and renamed over it (LittleFS's rename
# is atomic: a power cut keeps the old or the new, never half).

from . import cbor
from .bundle import key_id
from .errors import BundleError

PATH = "/trust.cbor"
MAX_KEYS = 8
MAX_WITHDRAWN = 16  # per agent: the oldest are forgotten first


class Trust:
    def __init__(self, flash, config):
        self.flash = flash
        self.serial = config.get("trust_serial", 0)
        keys = config.get("sign_keys") or []
        self.withdrawn = {}
        try:
            with flash.open(PATH, "rb") as f:
                saved = cbor.loads(f.read())
        except (OSError, cbor.CBORError):
            saved = None
        if isinstance(saved, dict):
            self.withdrawn = saved.get("withdrawn") or {}
            if saved.get("serial", -1) > self.serial:
                self.serial, keys = saved["serial"], saved["keys"]
        self._keys = list(keys)
        self.keys = {key_id(k): bytes(k) for k in keys}

    def update(self, head):
        """Take the key list in a verified head if it is newer than this board's."""
        new = head.get("trust")
        if new is None:
            return
        if not isinstance(new, dict):
            new = {}
        serial, keys = new.get("serial"), new.get("keys")
        if not isinstance(serial, int) or not isinstance(keys, list) or not 0 < len(keys) <= MAX_KEYS or \
                any(not isinstance(k, bytes) or len(k) != 32 for k in keys):
            raise BundleError("signed head: trust must be {serial, keys: 1..%d public keys}" % MAX_KEYS)
        if serial > self.serial:
            self.serial, self._keys = serial, keys
            self.keys = {key_id(k): bytes(k) for k in keys}
            self._save()

    def is_withdrawn(self, agent_id, version):
        return version in self.withdrawn.get(agent_id, ())

    def withdraw(self, agent_id, version):
        versions = [v for v in self.withdrawn.get(agent_id, []) if v != version] + [version]
        self.withdrawn[agent_id] = versions[-MAX_WITHDRAWN:]
        self._save()

    def _save(self):
        data = cbor.dumps({"serial": self.serial, "keys": self._keys, "withdrawn": self.withdrawn})
        with self.flash.open(PATH + ".new", "wb") as f:
            f.write(data)
        self.flash.rename(PATH + ".new", PATH)  # atomic, replacing the old file
