"""Memory-log benchmarks, on CPython (littlefs-python) and microfang's MicroPython (VfsLfs2),
both over a RAM block device so the figures are LittleFS and log code, not the disk.

- append throughput: MemoryLog.append vs a raw LittleFS append+sync of the same bytes, record
  by record, in the same run (ratio; goal <= 2x);
- read-back throughput of all records (CRC-checked);
- recovery time (mounting and opening a log) against log size.

Usage: python bench/bench_memlog.py [--quick]; results go to bench/results/memlog.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from microfang.boards import PROFILES
from microfang.tools import portbuild

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer records")
    args = parser.parse_args()
    records = 200 if args.quick else 1000
    size = 64
    script = str(ROOT / "bench" / "device" / "memlog_bench.py")
    binary = portbuild.build_unix(lambda line: None)
    runs = {
        "cpython": [sys.executable, script],
        "micropython": [str(binary), "-X", PROFILES["esp32s3-psram"].heapsize_arg(), script],
    }
    results: dict = {"bench": "memlog", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "machine": {"python": platform.python_version(), "cpu": platform.machine()}, "runtimes": {}}
    for name, command in runs.items():
        proc = subprocess.run([*command, str(records), str(size)], capture_output=True, text=True, timeout=900,
                              check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        ratio = r["log_append_us"] / r["raw_append_us"]
        r["append_ratio_vs_raw"] = ratio
        r["goal"] = 2.0
        results["runtimes"][name] = r
        per = r["log_append_us"] / records
        print(f"{name}: {records} appends of {size} B: log {r['log_append_us'] / 1e3:.1f} ms ({per:.0f} us each, "
              f"{records / r['log_append_us'] * 1e6:,.0f} records/s) vs raw LittleFS append+sync "
              f"{r['raw_append_us'] / 1e3:.1f} ms -> {ratio:.2f}x (goal <= 2x)")
        print(f"  read back {r['records_read']} records in {r['read_all_us'] / 1e3:.1f} ms "
              f"({r['records_read'] / max(1, r['read_all_us']) * 1e6:,.0f} records/s)")
        recovery = ", ".join(f"{n} records ({b / 1024:.0f} KiB): {us / 1e3:.1f} ms" for n, b, us in r["recovery"])
        print(f"  recovery (mount + open the log): {recovery}")
    out = ROOT / "bench" / "results" / "memlog.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
