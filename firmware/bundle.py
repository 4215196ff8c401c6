# Agent bundles (.mfa): CBOR of {format, manifest, wasm, version, sha256}.
# Signed bundles (.mfs): CBOR of {format, bundle, sig}, sig = HMAC-SHA256(fleet signing key, bundle).
#
# The board decodes and checks bundles with this module; the host writes them with the same
# code (tools/build.py, `microfang deploy`), so both sides agree byte for byte. A board installs
# only signed bundles at run time (over the air or USB); the bundles laid on flash at
# provisioning are trusted like the firmware itself.

import hashlib

from . import abi, cbor
from .envelope import hmac_sha256, macs_equal
from .errors import BundleError

FORMAT = "mfa/1"
SIGNED_FORMAT = "mfs/1"
# A bundle larger than this is refused before decoding: it would not fit a board anyway.
MAX_BUNDLE = 512 * 1024


def encode(manifest, wasm):
    """Return the bundle bytes for a normalized manifest and a metered module."""
    return cbor.dumps(
        {
            "format": FORMAT,
            "manifest": manifest,
            "wasm": wasm,
            "version": manifest["version"],
            "sha256": hashlib.sha256(wasm).digest(),
        }
    )


def load_doc(data, fmt, what, limit, hint=None, error=BundleError):
    """The CBOR map in `data` whose `format` is `fmt` (a bundle, a signed bundle, a snapshot),
    or raise `error`: "not a WHAT: <why>"."""
    try:
        doc = cbor.loads(data, max_bytes=limit)
    except cbor.CBORError as e:
        raise error("not a %s: %s" % (what, e))
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise error("not a %s: %s" % (what, hint or "missing format %r" % fmt))
    return doc


def decode(data):
    """Return (manifest, wasm) from bundle bytes, or raise BundleError naming the problem."""
    if len(data) > MAX_BUNDLE:
        raise BundleError("bundle of %d bytes is over the %d byte limit" % (len(data), MAX_BUNDLE))
    if not data or data[0] >> 5 != 5:  # not even a CBOR map: a manifest, a source file, a module
        raise BundleError("not a bundle: build one with `microfang build`")
    doc = load_doc(data, FORMAT, "bundle", MAX_BUNDLE)
    manifest = doc.get("manifest")
    wasm = doc.get("wasm")
    digest = doc.get("sha256")
    if not isinstance(manifest, dict) or not isinstance(wasm, bytes) or not isinstance(digest, bytes):
        raise BundleError("bundle lacks manifest, wasm or sha256")
    if hashlib.sha256(wasm).digest() != digest:
        raise BundleError("bundle wasm does not match its sha256")
    if doc.get("version") != manifest.get("version"):
        raise BundleError("bundle version does not match its manifest")
    check_manifest(manifest)
    return manifest, wasm


def sign(data, key):
    """Wrap bundle bytes with their signature under a fleet signing key."""
    return cbor.dumps({"format": SIGNED_FORMAT, "bundle": bytes(data), "sig": hmac_sha256(key, data)})


def open_signed(data, key):
    """Return the bundle bytes inside a signed bundle, or raise BundleError (forged, malformed)."""
    if len(data) > MAX_BUNDLE + 128:
        raise BundleError("signed bundle of %d bytes is over the %d byte limit" % (len(data), MAX_BUNDLE))
    doc = load_doc(data, SIGNED_FORMAT, "signed bundle", MAX_BUNDLE + 128, "sign it with `microfang deploy`")
    inner, sig = doc.get("bundle"), doc.get("sig")
    if not isinstance(inner, bytes) or not isinstance(sig, bytes):
        raise BundleError("signed bundle lacks its bundle or signature")
    if not key:
        raise BundleError("this board has no signing key: provision it with `microfang flash`")
    if not macs_equal(hmac_sha256(key, inner), sig):
        raise BundleError("bundle signature does not match this fleet's signing key (forged or another fleet's)")
    return inner


# The normalized manifest's shape (docs/protocol.md): field -> (type, low, high) or a sub-table.
_SHAPE = {
    "agent_id": str,
    "version": (int, 1, (1 << 31) - 1),
    "fuel": {"max": (int, 1, abi.MAX_FUEL), "refuel_interval_ms": (int, 10, 1 << 31),
             "refuel_amount": (int, 1, abi.MAX_FUEL)},
    "memory": {"max_bytes": (int, 1, abi.MAX_AGENT_MEMORY), "stack_bytes": (int, 1024, abi.MAX_AGENT_STACK),
               "grow_limit_pages": (int, 0, 65536)},
    "restart": {"policy": str, "max_restarts": (int, 0, 1000), "backoff_ms": (int, 1, 3600000)},
    "permissions": {"allowed": list, "denied": list},
    "timers": list,
    "memory_log": {"max_kb": (int, 1, 1 << 20)},
}


def _check(table, shape, where):
    for key in shape:
        want = shape[key]
        field = where + key
        value = table.get(key) if isinstance(table, dict) else None
        if isinstance(want, dict):
            if not isinstance(value, dict):
                raise BundleError("bundle manifest: %s must be a table" % field)
            _check(value, want, field + ".")
        elif isinstance(want, tuple):
            if not isinstance(value, int) or isinstance(value, bool) or not want[1] <= value <= want[2]:
                raise BundleError("bundle manifest: %s must be an integer in %d..%d" % (field, want[1], want[2]))
        elif not isinstance(value, want):
            raise BundleError("bundle manifest: %s is missing or not a %s" % (field, want.__name__))


def check_manifest(manifest):
    """Raise BundleError unless a normalized manifest has every field the board reads, in range.

    The build validates manifests with friendlier messages; the board must not trust that."""
    _check(manifest, _SHAPE, "")
    for name in manifest["permissions"]["allowed"] + manifest["permissions"]["denied"]:
        if name not in abi.HOST_FUNCTIONS:
            raise BundleError("bundle manifest: unknown host function %r" % (name,))
    for timer in manifest["timers"]:
        if not isinstance(timer, dict):
            raise BundleError("bundle manifest: timers must be tables")
        _check(timer, {"id": (int, 1, 65535), "every_ms": (int, 10, 1 << 31)}, "timers.")
