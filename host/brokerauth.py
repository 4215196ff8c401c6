"""`microfang broker --out DIR`: the production Mosquitto's password file and ACL, from the
gateway's registry (docs/mosquitto/mosquitto.conf reads both; docs/boards.md "The broker").

Every device logs in as its device id with a password derived from the HMAC key the registry
already holds for it (`device_password`): nothing new is stored, and `microfang flash` writes
the same password into the board's /config.cbor. With `use_username_as_clientid true` the
broker takes the user name as the client id, so a credential only ever holds its own session:
a device cannot take the gateway's client id or another device's. Each gateway logs in as its
own broker user (its client id; several gateways, several users), with the password the
operator gives it (`[broker] password_file` or MICROFANG_BROKER_PASSWORD).

DIR/passwd is Mosquitto's PBKDF2-SHA512 format (`$7$`, what mosquitto_passwd writes), made
here with hashlib; it is created 0600. DIR/acl is ACL_PATTERNS plus one `user` block per
gateway user (docs/mosquitto/acl is what it writes for the default user).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from microfang.config import write_private
from microfang.firmware import protocol
from microfang.firmware.errors import MicrofangError
from microfang.gateway.discovery import DEFAULT_PREFIX as DISCOVERY_PREFIX
from microfang.gateway.outputs import DEFAULT_PREFIX
from microfang.gateway.store import SERVICE_PREFIX
from microfang.ops import Where, open_store

GATEWAY_USER = SERVICE_PREFIX + "gateway"
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's (Mosquitto 2.0)
SALT_BYTES = 12

ACL_HEADER = """\
# microfang ACL: a device (user name = device id) reaches only its own topics.
# %u is the authenticated user name. Topics: mf/{fleet}/{device}/...
# Written by `microfang broker --out DIR` (this file: the default gateway user).
"""

# Devices publish status, telemetry, agent requests and memory-log replication, and read what
# the gateway sends them. The fleet level is a wildcard: a device id is unique across fleets
# (the gateway drops a message whose fleet is not the device's).
ACL_PATTERNS = (
    "pattern write mf/+/%u/status",
    "pattern write mf/+/%u/tele",
    "pattern write mf/+/%u/up/#",
    "pattern write mf/+/%u/log/#",
    "pattern read mf/+/%u/down/#",
    "pattern read mf/+/%u/ctl",
)

# A gateway reads everything devices send and writes their down and ctl topics.
GATEWAY_TOPICS = (
    "topic read mf/+/+/status",
    "topic read mf/+/+/tele",
    "topic read mf/+/+/up/#",
    "topic read mf/+/+/log/#",
    "topic write mf/+/+/down/#",
    "topic write mf/+/+/ctl",
    f"topic write {DEFAULT_PREFIX}/#",  # agents' outputs as JSON (gateway/outputs.py)
    f"topic write {DISCOVERY_PREFIX}/#",  # Home Assistant discovery (gateway/discovery.py)
)


def device_password(key: bytes) -> str:
    """A device's broker password: derived from its HMAC key, so the registry and the flashed
    board both know it and nothing new is stored (a board flashed again gets a new one)."""
    return hmac.new(key, b"microfang mqtt-password", hashlib.sha256).hexdigest()


def passwd_line(user: str, password: str, salt: bytes | None = None) -> str:
    """One line of a Mosquitto password file: `user:$7$iterations$salt$hash` (PBKDF2-SHA512)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PBKDF2_ITERATIONS)
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    return f"{user}:$7${PBKDF2_ITERATIONS}${b64(salt)}${b64(digest)}"


def acl_text(gateway_users: Iterable[str]) -> str:
    """The ACL: every device confined to its own topics, each gateway user to the gateway's."""
    blocks = ["\n".join(ACL_PATTERNS)]
    blocks += ["\n".join((f"user {user}", *GATEWAY_TOPICS)) for user in gateway_users]
    return ACL_HEADER + "\n" + "\n\n".join(blocks) + "\n"


def check_gateway_users(users: list[str], devices: Iterable[str]) -> None:
    """Refuse gateway user names that are not names, repeat, or are also a device's: that
    device's credential would hold the gateway's client id and its ACL."""
    if not users:
        raise MicrofangError("no gateway user: give at least one --gateway-user")
    for user in users:
        if not protocol.name_ok(user):
            raise MicrofangError(f"gateway user {user!r}: must be {protocol.NAME_RULE}")
    if len(set(users)) != len(users):
        raise MicrofangError(f"gateway users repeat: {', '.join(users)}")
    clash = sorted(set(users) & set(devices))
    if clash:
        raise MicrofangError(f"device {clash[0]!r} has the name of a gateway user: its credential would be the "
                             f"gateway's (rename the device or the gateway user)")


@dataclass
class Written:
    """What `write` wrote: the two files, how many devices and which gateway users."""

    passwd: Path
    acl: Path
    devices: int
    gateway_users: list[str]


def write(db: Where, out: Path, gateway_users: list[str], gateway_password: str | None) -> Written:
    """Write out/passwd (0600) and out/acl for every device of the registry at `db` and each
    gateway user (all with `gateway_password`)."""
    if not gateway_password:
        raise MicrofangError("no broker password for the gateway: give --password-file FILE, set "
                             "MICROFANG_BROKER_PASSWORD, or [broker] password_file in --config")
    store = open_store(db)
    try:
        devices = store.devices()
    finally:
        store.close()
    check_gateway_users(gateway_users, devices)
    lines = [passwd_line(user, gateway_password) for user in gateway_users]
    lines += [passwd_line(device, device_password(record["key"])) for device, record in sorted(devices.items())]
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_private(out / "passwd", ("\n".join(lines) + "\n").encode("utf-8"))
        (out / "acl").write_text(acl_text(gateway_users), encoding="utf-8")
    except OSError as e:
        raise MicrofangError(f"{out}: cannot write the broker files: {e.strerror}") from None
    return Written(out / "passwd", out / "acl", len(devices), gateway_users)
