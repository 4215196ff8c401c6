"""The operator's Ed25519 signing keys and the signing of bundles (firmware/bundle.py "mfs/2").

Private keys live on the operator's host only, in a keyring file or the environment; boards get
the public keys (`microfang flash`, firmware/trust.py), the gateway none at all: `microfang
deploy` signs before it queues a job.

The keyring file (`--signing-keys FILE`, else MICROFANG_SIGNING_KEYS, else ./signing.keys) is
created 0600 and refused if others can read it. JSON:

    {"format": "microfang-signing-keys/1", "serial": 3,
     "keys": [{"id": "91c0...", "public": HEX, "state": "revoked", "created": TS},
              {"id": "3f2a...", "public": HEX, "private": HEX, "state": "trusted", "created": TS}]}

Rotation is make-before-break. Every signed bundle carries the trusted (not revoked) public keys
and `serial`, which counts rotations and revocations; a board takes the list when the serial is
newer than its own (firmware/trust.py). `microfang keys rotate` adds a new key; the oldest
trusted key goes on signing, so boards that know only it accept the next deploys and learn the
new key from them. `microfang keys revoke ID` erases the old key's private half; the next key
signs from then on, and its bundles tell the boards to drop the revoked one. A board that got no
deploy between rotate and revoke knows only the revoked key and must be flashed again. Instead
of a file, MICROFANG_SIGNING_KEY may hold one private key (64 hex digits): it signs, and cannot be
rotated.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from microfang.firmware import bundle, cbor
from microfang.firmware.errors import BundleError, MicrofangError

FORMAT = "microfang-signing-keys/1"
DEFAULT_KEYRING = Path("signing.keys")
ENV_KEYRING = "MICROFANG_SIGNING_KEYS"
ENV_KEY = "MICROFANG_SIGNING_KEY"
STATES = ("trusted", "revoked")
MAX_KEYS = 8  # non-revoked keys a board holds (firmware/trust.py MAX_KEYS)


def _new_key() -> dict[str, Any]:
    return _entry(Ed25519PrivateKey.generate(), "trusted")


def _entry(private: Ed25519PrivateKey, state: str) -> dict[str, Any]:
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return {"id": bundle.key_name(bundle.key_id(public)), "public": public.hex(), "private": raw.hex(),
            "state": state, "created": int(time.time())}


@dataclass
class Keyring:
    path: Path | None  # None: the key from MICROFANG_SIGNING_KEY
    serial: int
    keys: list[dict[str, Any]]

    @classmethod
    def of(cls, privates: list[bytes], serial: int = 1, path: Path | None = None) -> Keyring:
        """A keyring of raw 32-byte private keys, oldest (signing) first."""
        return cls(path, serial, [_entry(Ed25519PrivateKey.from_private_bytes(k), "trusted") for k in privates])

    def signer(self) -> dict[str, Any]:
        """The key that signs: the oldest trusted one."""
        for key in self.keys:
            if key["state"] == "trusted" and key.get("private"):
                return key
        raise MicrofangError(f"{self.where}: no trusted signing key (`microfang keys rotate` makes one)")

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else ENV_KEY

    def public_keys(self) -> list[bytes]:
        """The keys boards trust: every key not revoked, the one that signs first."""
        return [bytes.fromhex(k["public"]) for k in self.keys if k["state"] == "trusted"]

    def trust(self) -> dict[str, Any]:
        """What a board provisioned or updated from this keyring holds (firmware/trust.py)."""
        return {"serial": self.serial, "keys": self.public_keys()}

    def verifier(self) -> dict[bytes, bytes]:
        return {bundle.key_id(k): k for k in self.public_keys()}

    def proof(self, data: bytes, supersedes: int = 0) -> dict[str, bytes]:
        """The signed head of bundle bytes under the signing key: {head, key_id, sig}."""
        key = self.signer()
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["private"]))
        head = bundle.head_for(data, supersedes, self.trust())
        return {"head": head, "key_id": bytes.fromhex(key["id"]), "sig": private.sign(hashlib.sha256(head).digest())}

    def sign(self, data: bytes, supersedes: int = 0) -> bytes:
        """The signed bundle (mfs/2) of bundle bytes, under the signing key."""
        return bundle.wrap(data, self.proof(data, supersedes))

    def rows(self) -> list[dict[str, Any]]:
        """The keys without their secrets; the one that signs is "signing"."""
        signer = self.signer()["id"] if any(k["state"] == "trusted" for k in self.keys) else None
        return [{"id": k["id"], "state": "signing" if k["id"] == signer else k["state"], "created": k["created"],
                 "public": k["public"]} for k in self.keys]

    def save(self) -> None:
        assert self.path is not None
        text = json.dumps({"format": FORMAT, "serial": self.serial, "keys": self.keys}, indent=1)
        new = self.path.with_name(self.path.name + ".new")
        new.unlink(missing_ok=True)
        fd = os.open(new, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(new, self.path)  # a crash keeps the old keyring or the new one


def keyring_path(path: Path | None = None) -> Path:
    return path if path is not None else Path(os.environ.get(ENV_KEYRING) or DEFAULT_KEYRING)


def load(path: Path | None = None) -> Keyring:
    """The operator's keyring: the file `path` if given, else MICROFANG_SIGNING_KEY, else the
    file named by MICROFANG_SIGNING_KEYS or ./signing.keys. A one-line error if there is none."""
    if path is None and os.environ.get(ENV_KEY):
        return _from_env(os.environ[ENV_KEY])
    path = keyring_path(path)
    try:
        info = path.stat()
        if info.st_mode & 0o077:
            raise MicrofangError(f"{path}: signing keys readable by others (mode {info.st_mode & 0o777:o}): chmod 600 {path}")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MicrofangError(f"{path}: no signing keys (create them with `microfang keys generate`, or set "
                             f"{ENV_KEY})") from None
    except OSError as e:
        raise MicrofangError(f"{path}: cannot read signing keys: {e.strerror}") from None
    except (UnicodeDecodeError, ValueError):
        raise MicrofangError(f"{path}: not a signing keyring (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("keys"), list) or \
            not isinstance(doc.get("serial"), int):
        raise MicrofangError(f"{path}: not a signing keyring (format {FORMAT!r} expected)")
    for key in doc["keys"]:
        if not isinstance(key, dict) or key.get("state") not in STATES or not isinstance(key.get("public"), str):
            raise MicrofangError(f"{path}: a key entry is malformed")
    return Keyring(path, doc["serial"], doc["keys"])


def _from_env(value: str) -> Keyring:
    try:
        return Keyring.of([bytes.fromhex(value.strip())], serial=0)
    except ValueError:
        raise MicrofangError(f"{ENV_KEY}: not an Ed25519 private key (64 hex digits)") from None


def generate(path: Path | None = None) -> Keyring:
    """A new keyring file with one signing key; refused if the file exists."""
    path = keyring_path(path)
    if path.exists():
        raise MicrofangError(f"{path}: signing keys exist already (`microfang keys rotate` adds a new one)")
    keyring = Keyring(path, 1, [_new_key()])
    keyring.save()
    return keyring


def rotate(path: Path | None = None) -> Keyring:
    """A new trusted key; the one signing goes on signing until it is revoked."""
    keyring = load(keyring_path(path))
    if len(keyring.public_keys()) >= MAX_KEYS:
        raise MicrofangError(f"{keyring.where}: {MAX_KEYS} keys are trusted already: revoke one first")
    keyring.keys.append(_new_key())
    keyring.serial += 1
    keyring.save()
    return keyring


def revoke(key_id: str, path: Path | None = None) -> Keyring:
    """Revoke a trusted key: its private key is erased, boards drop it with the next deploy
    (signed by the next trusted key)."""
    keyring = load(keyring_path(path))
    matches = [k for k in keyring.keys if k["id"] == key_id.lower()]
    if not matches:
        raise MicrofangError(f"{keyring.where}: no signing key {key_id!r} (`microfang keys list --signing`)")
    key = matches[0]
    if key["state"] == "trusted" and len(keyring.public_keys()) == 1:
        raise MicrofangError(f"{key_id}: the only trusted key; `microfang keys rotate` first, then revoke it")
    if key["state"] == "trusted":
        key["state"] = "revoked"
        key.pop("private", None)
        keyring.serial += 1
        keyring.save()
    return keyring


def signed_bundle(keyring: Keyring, data: bytes, where: str, supersedes: int = 0) -> tuple[bytes, dict]:
    """Sign a bundle with the signing key (a bundle signed already is checked against the keys
    boards trust and passes through); return it with the manifest inside."""
    try:
        doc = cbor.loads(data, max_bytes=len(data))
    except cbor.CBORError:
        doc = None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    try:
        if fmt in (bundle.SIGNED_FORMAT, bundle.HMAC_FORMAT):
            if supersedes:
                raise BundleError("--supersede signs the bundle: give the .mfa, not a signed .mfs")
            inner, _ = bundle.open_signed(data, keyring.verifier())
            return data, bundle.decode(inner)[0]
        manifest, _ = bundle.decode(data)
    except BundleError as e:
        raise MicrofangError(f"{where}: {e}") from None
    return keyring.sign(data, supersedes), manifest
