# Agent bundles (.mfa): CBOR of {format, manifest, wasm, version, sha256}.
# Signed bundles (.mfs): CBOR of {format: "mfs/2", bundle, head, key_id, sig}: `head` is the
# small signed header, canonical CBOR of {what: "bundle", agent, version, sha256: sha256(bundle),
# supersedes?, trust?}; sig = Ed25519(operator's private key, sha256(head)); key_id = the first 8
# bytes of sha256(the public key). Private keys stay on the operator's host (host/signing.py);
# boards hold public keys only (firmware/trust.py). `supersedes: V` lets this bundle replace
# the installed version V even when it is older (the operator's way out of a bad install, V is
# then withdrawn on that board); `trust: {serial, keys}` carries the operator's current public
# keys to boards in the field (rotation, revocation).
#
# The old format "mfs/1" (HMAC-SHA256 under a fleet key every board held, so one board's flash
# image signed code for the fleet) is refused on boards and by `microfang deploy`: sign the .mfa
# again.
#
# The board decodes and checks bundles with this module; the host writes them with the same
# code (tools/build.py, host/signing.py), so both sides agree byte for byte. A board installs
# only signed bundles at run time (over the air or USB); the bundles laid on flash at
# provisioning are trusted like the firmware itself.
#
# A staged bundle is checked where it lies on flash (open_signed_file, decode_file): the CBOR
# map's heads are read to find each field's span, sha256 is computed over the bundle's span in
# pieces, the small head is verified with one Ed25519 check, and only the wasm is read into RAM,
# once. On a 110 KB heap that runs other agents the whole signed bundle, its inner bundle and the
# wasm, each a separate block, do not fit.

import hashlib
import io
from binascii import hexlify

from . import abi, cbor, port
from .errors import BundleError

FORMAT = "mfa/1"
SIGNED_FORMAT = "mfs/2"
HMAC_FORMAT = "mfs/1"  # refused: see the header
KEY_ID_BYTES = 8
MAX_HEAD = 1024  # a signed head is ~100 bytes, ~250 with a trust list of 4 keys
# A bundle larger than this is refused before decoding: it would not fit a board anyway.
MAX_BUNDLE = 512 * 1024
_PIECE = 256  # bytes read from flash at a time when a span is hashed or copied
# The one buffer those reads go through, allocated with the firmware at boot: a read of its own
# per piece left a 512 B block of garbage each time, which a full board at the ESP32 heap had no
# hole for (issue 16: the update of a 16th agent failed here). Pieces are consumed before the
# next is read, never across an await, so one buffer serves every transfer of the board.
_BUF = bytearray(_PIECE)
_VIEW = memoryview(_BUF)
_SPAN_ITEMS = 2000  # CBOR items walked to find a map's fields (a manifest has ~60)


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
    return _checked(doc.get("manifest"), doc.get("wasm"), doc.get("sha256"), doc.get("version"))


def _checked(manifest, wasm, digest, version):
    if not isinstance(manifest, dict) or not isinstance(wasm, bytes) or not isinstance(digest, bytes):
        raise BundleError("bundle lacks manifest, wasm or sha256")
    if hashlib.sha256(wasm).digest() != digest:
        raise BundleError("bundle wasm does not match its sha256")
    if version != manifest.get("version"):
        raise BundleError("bundle version does not match its manifest")
    check_manifest(manifest)
    return manifest, wasm


def key_id(public):
    """The id of an operator's public key: the first 8 bytes of its sha256."""
    return hashlib.sha256(bytes(public)).digest()[:KEY_ID_BYTES]


def key_name(kid):
    return str(hexlify(bytes(kid)), "ascii")


def head_for(data, supersedes=0, trust=None):
    """The signed head of bundle bytes (the host signs sha256 of it): canonical CBOR."""
    manifest, _ = decode(data)
    head = {"what": "bundle", "agent": manifest["agent_id"], "version": manifest["version"],
            "sha256": hashlib.sha256(data).digest()}
    if supersedes:
        head["supersedes"] = supersedes
    if trust is not None:
        head["trust"] = trust
    return cbor.dumps(head, canonical=True)


def wrap(data, proof):
    """The signed bundle: bundle bytes and their proof {head, key_id, sig}."""
    return cbor.dumps({"format": SIGNED_FORMAT, "bundle": bytes(data), "head": proof["head"],
                       "key_id": proof["key_id"], "sig": proof["sig"]})


def open_signed(data, keys):
    """(bundle bytes, head) of a signed bundle, or raise BundleError (forged, malformed, old)."""
    span, _, head, _ = open_signed_file(io.BytesIO(data), len(data), keys)
    return bytes(data[span[0] : span[0] + span[1]]), head


# ---- bundles on flash -----------------------------------------------------------------------

class _Heads:
    """Reads CBOR heads from f[start:end] (a file open for reading), never past `end`."""

    def __init__(self, f, start, end):
        self.f = f
        self.pos = start
        self.end = end
        self.items = _SPAN_ITEMS

    def take(self, n):
        if n < 0 or self.pos + n > self.end:
            raise BundleError("truncated CBOR at byte %d" % self.pos)
        self.f.seek(self.pos)
        data = self.f.read(n)
        if len(data) != n:
            raise BundleError("truncated file at byte %d" % self.pos)
        self.pos += n
        return data

    def head(self):
        """(major type, argument) of the next item; 7's argument is its simple value or bits."""
        self.items -= 1
        if self.items < 0:
            raise BundleError("too many CBOR items")
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info
        if info > 27:
            raise BundleError("indefinite or reserved CBOR length")
        n = 0
        for b in self.take(1 << (info - 24)):
            n = (n << 8) | b
        return major, n

    def skip(self, depth=0):
        """Step over one item, nested ones included."""
        if depth > 16:
            raise BundleError("CBOR nesting too deep")
        major, n = self.head()
        if major in (2, 3):
            self.take_span(n)
        elif major in (4, 5):
            for _ in range(n if major == 4 else 2 * n):
                self.skip(depth + 1)
        elif major == 6:
            raise BundleError("CBOR tags are not supported")

    def take_span(self, n):
        if n > self.end - self.pos:
            raise BundleError("truncated CBOR at byte %d" % self.pos)
        self.pos += n


def map_spans(f, start, end, what):
    """{key: (offset, length, major)} of the CBOR map filling f[start:end]: for a byte or text
    string the span of its contents, for anything else the span of its whole encoding."""
    heads = _Heads(f, start, end)
    major, n = heads.head()
    if major != 5:
        raise BundleError("not a %s: not a CBOR map" % what)
    out = {}
    for _ in range(n):
        kmajor, klen = heads.head()
        if kmajor != 3 or klen > 32:
            raise BundleError("not a %s: a map key is not a short text" % what)
        try:
            key = str(heads.take(klen), "utf-8")
        except UnicodeError:
            raise BundleError("not a %s: a map key is not UTF-8" % what)
        at = heads.pos
        vmajor, vlen = heads.head()
        if vmajor in (2, 3):
            out[key] = (heads.pos, vlen, vmajor)
            heads.take_span(vlen)
        else:
            heads.pos = at
            heads.skip()
            out[key] = (at, heads.pos - at, vmajor)
    if heads.pos != end:
        raise BundleError("not a %s: trailing bytes after its map" % what)
    return out


def read_span(f, span):
    f.seek(span[0])
    return f.read(span[1])


def value(f, spans, key):
    span = spans.get(key)
    if span is None:
        return None
    data = read_span(f, span)
    if span[2] == 2:
        return data
    if span[2] == 3:
        try:
            return str(data, "utf-8")
        except UnicodeError:
            raise BundleError("field %s is not UTF-8 text" % key)
    return cbor.loads(data)


def pieces(f, span):
    """The bytes of `span` of file `f`, _PIECE at a time (to hash or copy a span), each a view of
    the board's one piece buffer: valid until the next piece is read, nothing allocated per read."""
    offset, left = span[0], span[1]
    while left > 0:
        f.seek(offset)
        n = f.readinto(_VIEW[:left] if left < _PIECE else _BUF)
        if not n:
            raise BundleError("truncated file at byte %d" % offset)
        offset += n
        left -= n
        yield _VIEW[:n] if n < _PIECE else _BUF


def open_signed_file(f, size, keys):
    """Check the signed bundle filling the first `size` bytes of file `f` against `keys`
    ({key_id: public key}); return (span (offset, length, 2) of the bundle inside, its identity
    {agent_id, version}, its checked head, its proof {head, key_id, sig}) or raise BundleError
    naming the problem."""
    if size > MAX_BUNDLE + MAX_HEAD + 128:
        raise BundleError("signed bundle of %d bytes is over the %d byte limit" % (size, MAX_BUNDLE))
    spans = map_spans(f, 0, size, "signed bundle")
    fmt = value(f, spans, "format")
    if fmt == HMAC_FORMAT:
        raise BundleError("bundle signed with the old fleet HMAC key (mfs/1), which boards no longer accept: "
                          "sign its .mfa again with `microfang deploy` (Ed25519, mfs/2)")
    if fmt != SIGNED_FORMAT:
        raise BundleError("not a signed bundle: sign it with `microfang deploy`")
    manifest, head, proof = check_signature(f, spans, keys, "bundle")
    return spans["bundle"], manifest, head, proof


def check_signature(f, spans, keys, what):
    """The operator's head of the bundle at spans["bundle"] of file `f` (a signed bundle's or a
    snapshot's map), its Ed25519 signature verified under `keys` and its sha256 checked over the
    bundle a piece at a time; returns (the bundle's identity {agent_id, version}, head, proof).
    Else BundleError naming the problem."""
    inner = spans.get("bundle")
    fields = [spans.get(name) for name in ("head", "key_id", "sig")]
    if inner is None or inner[2] != 2 or None in fields or [s[2] for s in fields] != [2, 2, 2]:
        raise BundleError("%s lacks its bundle, head, key_id or signature" % what)
    if fields[0][1] > MAX_HEAD or fields[1][1] != KEY_ID_BYTES or fields[2][1] != 64:
        raise BundleError("%s: head, key_id or signature of the wrong size" % what)
    raw, kid, sig = [read_span(f, s) for s in fields]
    if not keys:
        raise BundleError("this board trusts no signing key: provision it with `microfang flash`")
    public = keys.get(kid)
    if public is None:
        raise BundleError("%s signed by unknown key %s (not trusted here: revoked, or not this operator's)"
                          % (what, key_name(kid)))
    if port.ed25519_verify is None:
        raise BundleError("this firmware has no Ed25519 module: it cannot check signatures")
    if not port.ed25519_verify(public, hashlib.sha256(raw).digest(), sig):
        raise BundleError("%s signature does not verify under key %s (forged or tampered)" % (what, key_name(kid)))
    try:
        head = cbor.loads(raw, max_bytes=MAX_HEAD)
    except cbor.CBORError as e:
        raise BundleError("%s: signed head is not CBOR: %s" % (what, e))
    if not isinstance(head, dict) or head.get("what") != "bundle" or not isinstance(head.get("sha256"), bytes):
        raise BundleError("%s: the signed head is not a bundle's" % what)
    sha = hashlib.sha256()
    for data in pieces(f, inner):
        sha.update(data)
    if sha.digest() != head["sha256"]:
        raise BundleError("%s does not match its signed sha256 (tampered)" % what)
    ident = identity(f, inner)
    if ident["agent_id"] != head.get("agent") or ident["version"] != head.get("version"):
        raise BundleError("%s: agent or version differs from the signed head" % what)
    return ident, head, {"head": raw, "key_id": kid, "sig": sig}


def _bundle_spans(f, span):
    # The top-level map of the bundle at `span` of file `f`, its size and format checked.
    start, length = span[0], span[1]
    if length > MAX_BUNDLE:
        raise BundleError("bundle of %d bytes is over the %d byte limit" % (length, MAX_BUNDLE))
    spans = map_spans(f, start, start + length, "bundle")
    if value(f, spans, "format") != FORMAT:
        raise BundleError("not a bundle: build one with `microfang build`")
    return spans


def identity(f, span):
    """{agent_id, version} of the bundle at `span` of file `f`, read from its manifest's map
    field by field. The whole manifest decoded is ~1.1 KB of small objects and a 0.5 KB read:
    a board at the ESP32 heap full of agents has no room for them while it checks an update,
    before the agent the update replaces has stopped (deploy.py). decode_file checks the rest."""
    spans = _bundle_spans(f, span)
    table = spans.get("manifest")
    if table is None or table[2] != 5:
        raise BundleError("bundle lacks manifest, wasm or sha256")
    fields = map_spans(f, table[0], table[0] + table[1], "bundle manifest")
    return {"agent_id": value(f, fields, "agent_id"), "version": value(f, fields, "version")}


def read_file(flash, path, with_wasm=True):
    """(manifest, wasm) of the bundle file at `path` on a board's flash (a port.Flash), read as
    decode_file reads it: only the manifest and the wasm come into RAM. Its signature is not
    checked: a bundle in /agents was checked when it was installed (or laid there as provisioned)."""
    with flash.open(path, "rb") as f:
        return decode_file(f, (0, flash.size(path), 2), with_wasm)


def decode_file(f, span, with_wasm=True):
    """(manifest, wasm) of the bundle at `span` of file `f`, checked as decode() checks; the
    wasm is the only large read. Without `with_wasm`: (manifest, None), only the manifest read
    (the version of a bundle already installed)."""
    spans = _bundle_spans(f, span)
    try:
        manifest, version = value(f, spans, "manifest"), value(f, spans, "version")
    except cbor.CBORError as e:
        raise BundleError("not a bundle: %s" % e)
    if not with_wasm:
        if not isinstance(manifest, dict):
            raise BundleError("bundle lacks manifest, wasm or sha256")
        return manifest, None
    wasm = spans.get("wasm")
    return _checked(manifest, read_span(f, wasm) if wasm is not None and wasm[2] == 2 else None,
                    value(f, spans, "sha256"), version)


RESTART_POLICIES = ("never", "on-failure", "always")
BUDGETS = ("requests_per_s", "llm_tokens_per_hour")  # the budgets a board announces (link.py)

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


def board_manifest(manifest):
    """What a running agent keeps of its checked manifest: the fields the board reads (_SHAPE)
    and the budgets it announces, in tables keyed by this module's own strings, with host
    function names and the restart policy taken from the firmware's own copies. Interned
    strings cost a board nothing per agent; a decoded manifest holds each of its keys and names
    as a string of its own, and the fields only the host reads (description, tool access, ...):
    1,104 B for the hello agent on MicroPython, ~0.3 KB kept."""
    kept = _kept(manifest, _SHAPE)
    permissions = kept["permissions"]
    for field in ("allowed", "denied"):
        permissions[field] = [_own(name, abi.HOST_FUNCTIONS) for name in permissions[field]]
    kept["timers"] = [_kept(timer, _TIMER) for timer in kept["timers"]]
    kept["restart"]["policy"] = _own(kept["restart"]["policy"], RESTART_POLICIES)
    budgets = manifest.get("budgets")
    if isinstance(budgets, dict):
        kept["budgets"] = {name: budgets[name] for name in BUDGETS if name in budgets}
    return kept


def _kept(table, shape):
    return {key: _kept(table[key], shape[key]) if isinstance(shape[key], dict) else table[key] for key in shape}


def _own(text, known):
    # The firmware's own copy of a string it knows (interned in the firmware image), else `text`.
    for name in known:
        if name == text:
            return name
    return text


_TIMER = {"id": (int, 1, 65535), "every_ms": (int, 10, 1 << 31)}


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
        _check(timer, _TIMER, "timers.")
