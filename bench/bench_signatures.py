"""Checking a signed bundle on a board: sha256 over the bundle, then Ed25519 verification of its
digest (firmware/cmodules/ed25519), for 4 KB and 64 KB bundles, on microfang's 32-bit MicroPython
and on CPython; side by side in the same run with OpenSSL's Ed25519 (the `cryptography` package)
and with today's HMAC-SHA256 check on CPython.

Usage: python bench/bench_signatures.py [--rounds N]; results go to bench/results/signatures.json.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from microfang.boards import PROFILES
from microfang.tools import portbuild

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from results_file import save  # noqa: E402

SIZES = (4096, 65536)


def per_call_us(fn, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) * 1e6 / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = private.public_key()
    key = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    results: dict = {"rounds": args.rounds}
    for size in SIZES:
        digest = hashlib.sha256(bytes(size)).digest()
        signature = private.sign(digest)
        results[f"openssl_check_{size}_us"] = per_call_us(
            lambda: public.verify(signature, hashlib.sha256(bytes(size)).digest()), args.rounds)
        mac_key = bytes(32)
        results[f"hmac_check_{size}_us"] = per_call_us(lambda: hmac.new(mac_key, bytes(size), "sha256").digest(),
                                                       args.rounds)
    script = str(ROOT / "bench" / "device" / "signature_bench.py")
    signed = [f"{size}:{private.sign(hashlib.sha256(bytes(size)).digest()).hex()}" for size in SIZES]
    micropython = portbuild.build_unix(lambda line: None)
    runs = {
        "cpython": [sys.executable, script],
        "micropython": [str(micropython), "-X", PROFILES["esp32"].heapsize_arg(), script],
    }
    for name, command in runs.items():
        out = subprocess.run([*command, key.hex(), str(args.rounds), *signed], capture_output=True,
                             text=True, check=False, timeout=600)
        if out.returncode:
            raise SystemExit(f"{name}: {out.stderr.strip() or out.stdout.strip()}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    for size in SIZES:
        ours, openssl = results["cpython"][f"check_{size}_us"], results[f"openssl_check_{size}_us"]
        print(f"{size // 1024:>3} KB bundle: check {ours:8.1f} us CPython (ours) vs {openssl:8.1f} us OpenSSL "
              f"({ours / openssl:.2f}x), {results['micropython'][f'check_{size}_us']:8.1f} us MicroPython 32-bit; "
              f"HMAC today {results[f'hmac_check_{size}_us']:.1f} us")
    print(f"Ed25519 verify alone: {results['cpython']['verify_only_us']} us CPython, "
          f"{results['micropython']['verify_only_us']} us MicroPython 32-bit")
    save("signatures", **results)


if __name__ == "__main__":
    main()
