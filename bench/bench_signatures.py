"""Checking a signed bundle on a board: the Ed25519 path boards run now (firmware/bundle.py
open_signed_file on the file: sha256 over the bundle in 512 B pieces, then one Ed25519
verification of the ~150-byte signed head, firmware/cmodules/ed25519) side by side with the
HMAC-SHA256 path boards ran before (mfs/1, the same pieces through envelope.Mac), for 4 KB and
64 KB bundles, on microfang's MicroPython (unix port, -X heapsize of an ESP32) and on CPython,
in the same run; plus OpenSSL's Ed25519 (the `cryptography` package) on the same digest.

Usage: python bench/bench_signatures.py [--rounds N]; results go to bench/results/signatures.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from microfang.boards import PROFILES
from microfang.tools import portbuild

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import HELLO_WAT, build_bundle  # noqa: E402
from results_file import save  # noqa: E402
from signing_keys import OPERATOR, hmac_signed  # noqa: E402

from microfang.firmware import bundle, cbor  # noqa: E402

SIZES = (4096, 65536)


def sized_bundle(size: int) -> bytes:
    """A real bundle (the hello manifest) of `size` bytes: its wasm bytes are filler (the
    signature check reads the manifest only, never parses the wasm)."""
    manifest, _ = bundle.decode(build_bundle(HELLO_WAT))
    data = bundle.encode(manifest, b"")
    return bundle.encode(manifest, bytes(size - len(data) - 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    results: dict = {"rounds": args.rounds}
    public = Ed25519PublicKey.from_public_bytes(OPERATOR.public_keys()[0])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "operator.pub").write_bytes(OPERATOR.public_keys()[0])
        for size in SIZES:
            data = sized_bundle(size)
            signed = OPERATOR.sign(data)
            (folder / f"ed25519_{size}.mfs").write_bytes(signed)
            (folder / f"hmac_{size}.mfs").write_bytes(hmac_signed(data, b"f" * 32))
            results[f"bundle_{size}_bytes"] = len(data)
            results[f"signed_head_{size}_bytes"] = len(cbor.loads(signed)["head"])
            doc = cbor.loads(signed)
            start = time.perf_counter()
            for _ in range(args.rounds):
                hashlib.sha256(data).digest()
                public.verify(doc["sig"], hashlib.sha256(doc["head"]).digest())
            results[f"openssl_check_{size}_us"] = (time.perf_counter() - start) * 1e6 / args.rounds
        script = str(ROOT / "bench" / "device" / "signature_bench.py")
        micropython = portbuild.build_unix(lambda line: None)
        runs = {
            "cpython": [sys.executable, script],
            "micropython": [str(micropython), "-X", PROFILES["esp32"].heapsize_arg(), script],
        }
        for name, command in runs.items():
            out = subprocess.run([*command, str(folder), str(args.rounds), *map(str, SIZES)], capture_output=True,
                                 text=True, check=False, timeout=600)
            if out.returncode:
                raise SystemExit(f"{name}: {out.stderr.strip() or out.stdout.strip()}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    for size in SIZES:
        row = [f"{size // 1024:>3} KB bundle:"]
        for name in runs:
            r = results[name]
            row.append(f"{name} Ed25519 {r[f'ed25519_check_{size}_us']:>6} us vs HMAC {r[f'hmac_check_{size}_us']:>6} us;")
        row.append(f"OpenSSL {results[f'openssl_check_{size}_us']:.0f} us")
        print(" ".join(row))
    print(f"Ed25519 verify alone: {results['cpython']['verify_only_us']} us CPython, "
          f"{results['micropython']['verify_only_us']} us MicroPython")
    save("signatures", **results)


if __name__ == "__main__":
    main()
