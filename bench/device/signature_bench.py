# Checking a signed bundle as a board does, from a file (firmware/bundle.py open_signed_file:
# sha256 over the bundle's span in 512 B pieces, one Ed25519 verification of the small signed
# head, the manifest read), side by side with the HMAC-SHA256 check boards ran before (mfs/1:
# the HMAC over the same span in the same pieces, then the manifest read), on MicroPython or CPython (bench/bench_signatures.py runs it on
# both). Prints one JSON line.   signature_bench.py FOLDER ROUNDS SIZE...
#   FOLDER holds operator.pub, ed25519_SIZE.mfs and hmac_SIZE.mfs (written by the bench).
import gc
import json
import sys

from microfang.firmware import bundle, port
from microfang.firmware.envelope import Mac, macs_equal

_HMAC_KEY = b"f" * 32  # the fleet key every board held


def now_us():
    import time

    return time.ticks_us() if port.MICROPYTHON else int(time.perf_counter() * 1e6)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def file_size(path):
    with open(path, "rb") as f:
        return f.seek(0, 2)


def hmac_check(f, size):
    # The mfs/1 check as firmware/bundle.py ran it (git show ae2b755:firmware/bundle.py), then
    # the manifest read that deploy.py's install did next (open_signed_file returns it now).
    spans = bundle.map_spans(f, 0, size, "signed bundle")
    mac = Mac(_HMAC_KEY)
    for data in bundle.pieces(f, spans["bundle"]):
        mac.update(data)
    assert macs_equal(mac.digest(), bundle.read_span(f, spans["sig"]))
    bundle.decode_file(f, spans["bundle"], with_wasm=False)


def ed25519_check(f, size, keys):
    bundle.open_signed_file(f, size, keys)


def per_check_us(path, rounds, check, *args):
    size = file_size(path)
    with open(path, "rb") as f:
        check(f, size, *args)  # once outside the clock: it must pass
        gc.collect()
        start = now_us()
        for _ in range(rounds):
            check(f, size, *args)
        return (now_us() - start) // rounds


def main():
    folder, rounds = sys.argv[1], int(sys.argv[2])
    public = read(folder + "/operator.pub")
    keys = {bundle.key_id(public): public}
    out = {"runtime": "micropython" if port.MICROPYTHON else "cpython"}
    for size in sys.argv[3:]:
        out["ed25519_check_%s_us" % size] = per_check_us(folder + "/ed25519_%s.mfs" % size, rounds, ed25519_check, keys)
        out["hmac_check_%s_us" % size] = per_check_us(folder + "/hmac_%s.mfs" % size, rounds, hmac_check)
    from hashlib import sha256

    from microfang.firmware import cbor

    doc = cbor.loads(read(folder + "/ed25519_%s.mfs" % sys.argv[3]))
    digest, signature = sha256(doc["head"]).digest(), doc["sig"]
    assert port.ed25519_verify(public, digest, signature)
    start = now_us()
    for _ in range(rounds):
        port.ed25519_verify(public, digest, signature)
    out["verify_only_us"] = (now_us() - start) // rounds
    print(json.dumps(out))


main()
