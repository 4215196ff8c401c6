# Checking a signed bundle as a board would (firmware/port: hashlib sha256 over the bundle, then
# Ed25519 verification of its digest), on MicroPython or CPython (bench/bench_signatures.py runs
# it on both). Prints one JSON line.   signature_bench.py KEY_HEX ROUNDS SIZE:SIG_HEX...
import gc
import hashlib
import json
import sys
from binascii import unhexlify

from microfang.firmware import port


def now_us():
    import time

    return time.ticks_us() if port.MICROPYTHON else int(time.perf_counter() * 1e6)


def main():
    key, rounds = unhexlify(sys.argv[1]), int(sys.argv[2])
    out = {"runtime": "micropython" if port.MICROPYTHON else "cpython"}
    for spec in sys.argv[3:]:
        size, signature = int(spec.split(":")[0]), unhexlify(spec.split(":")[1])
        data = bytes(size)  # the bench signs bundles of zeros: sha256 cost depends on size only
        gc.collect()
        start = now_us()
        for _ in range(rounds):
            digest = hashlib.sha256(data).digest()
            assert port.ed25519_verify(key, digest, signature)
        out["check_%d_us" % size] = (now_us() - start) // rounds
    digest = hashlib.sha256(data).digest()
    start = now_us()
    for _ in range(rounds):
        port.ed25519_verify(key, digest, signature)
    out["verify_only_us"] = (now_us() - start) // rounds
    print(json.dumps(out))


main()
