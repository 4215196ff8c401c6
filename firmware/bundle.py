# Agent bundles (.mfa): CBOR of {format, manifest, wasm, version, sha256}.
#
# The board decodes and checks bundles with this module; the host writes them with the same
# code (tools/build.py), so both sides agree byte for byte. Signatures come with deployment.

import hashlib

from . import cbor
from .errors import BundleError

FORMAT = "mfa/1"
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


def decode(data):
    """Return (manifest, wasm) from bundle bytes, or raise BundleError naming the problem."""
    if len(data) > MAX_BUNDLE:
        raise BundleError("bundle of %d bytes is over the %d byte limit" % (len(data), MAX_BUNDLE))
    try:
        doc = cbor.loads(data, max_bytes=MAX_BUNDLE)
    except cbor.CBORError as e:
        raise BundleError("not a bundle: %s" % e)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError("not a bundle: missing format %r" % FORMAT)
    manifest = doc.get("manifest")
    wasm = doc.get("wasm")
    digest = doc.get("sha256")
    if not isinstance(manifest, dict) or not isinstance(wasm, bytes) or not isinstance(digest, bytes):
        raise BundleError("bundle lacks manifest, wasm or sha256")
    if hashlib.sha256(wasm).digest() != digest:
        raise BundleError("bundle wasm does not match its sha256")
    if doc.get("version") != manifest.get("version"):
        raise BundleError("bundle version does not match its manifest")
    return manifest, wasm
