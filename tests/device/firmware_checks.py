# Device-side checks that run unmodified under MicroPython and CPython; test_device_runtimes.py
# runs this file under both and requires identical output.
#
# argv: ROOT (a folder holding microfang/firmware, or "-" to use the installed package),
# BUNDLE (a built .mfa), CBOR_HEX (bytes encoded by cbor2).
import sys

if sys.argv[1] != "-":
    sys.path.insert(0, sys.argv[1])

from microfang.firmware import abi, bundle, cbor, port, wasminfo  # noqa: E402
from microfang.firmware.errors import BundleError, SandboxError  # noqa: E402
from microfang.firmware.supervisor import Supervisor  # noqa: E402

value = {"a": [1, -2, b"x", "y", None, True, 1.5, -(2**63)], 3: {"n": 2**40}, "e": ""}
print("cbor roundtrip", cbor.loads(cbor.dumps(value)) == value)
print("cbor from cbor2", cbor.loads(bytes.fromhex(sys.argv[3])))
for bad in (b"", b"\x82\x01", b"\xc1\x00", b"\x01\x02", b"\x81" * 40 + b"\x00"):
    try:
        cbor.loads(bad)
        print("accepted", bad)
    except cbor.CBORError as e:
        print("refused:", e)

with open(sys.argv[2], "rb") as f:
    data = f.read()
manifest, wasm = bundle.decode(data)
print("bundle", manifest["agent_id"], manifest["memory"]["max_bytes"], len(wasm))
print("imports", wasminfo.inspect(wasm))
try:
    bundle.decode(data[: len(data) // 2])
except BundleError as e:
    print("truncated bundle:", e)

sup = Supervisor()
# The prebuilt MicroPython has no wasm3 module until the port issue lands: report the spawn
# on stderr, where the test expects each runtime's own answer.
try:
    sup.spawn(data)
    sys.stderr.write("spawned %s\n" % sorted(sup.agents))
except SandboxError as e:
    sys.stderr.write("spawn refused: %s\n" % e)
port.asyncio.run(sup.run(30))
print("event kinds", abi.EVENT_NAMES[abi.EV_START], abi.EVENT_NAMES[abi.EV_REPLY])
print("done")
