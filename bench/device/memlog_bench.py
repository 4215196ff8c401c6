# Memory-log throughput and recovery, on MicroPython or CPython (bench/bench_memlog.py runs it
# on both). Prints one JSON line.   memlog_bench.py RECORDS RECORD_BYTES
import gc
import json
import sys

from microfang.firmware import port
from microfang.firmware.blockdev import RAMBlockDevice
from microfang.firmware.memlog import MemoryLog

BLOCK = 4096
BLOCKS = 48


def now_us():
    if port.MICROPYTHON:
        import time

        return time.ticks_us()
    import time

    return int(time.perf_counter() * 1e6)


def fresh():
    dev = RAMBlockDevice(BLOCK, BLOCKS)
    return dev, port.Flash(dev, "/mf_b")


def bench_append(records, size):
    payload = b"\x5a" * size
    # Raw LittleFS: the same bytes, appended and synced (closed) one record at a time.
    _, flash = fresh()
    start = now_us()
    for _ in range(records):
        with flash.open("/raw.bin", "ab") as f:
            f.write(payload)
    raw_us = now_us() - start
    flash.unmount()
    gc.collect()
    dev, flash = fresh()
    log = MemoryLog(flash, "a1", 1 << 20)
    start = now_us()
    for _ in range(records):
        log.append(payload)
    ours_us = now_us() - start
    # Reading everything back: ours (CRC-checked records) vs the raw file in one read.
    start = now_us()
    count = 0
    for _ in log.records():
        count += 1
    read_us = now_us() - start
    flash.unmount()
    return raw_us, ours_us, read_us, count, dev


def bench_recovery(dev, records):
    # The board reboots: the same flash, mounted and opened afresh.
    start = now_us()
    flash = port.Flash(dev, "/mf_b")
    log = MemoryLog(flash, "a1", 1 << 20)
    took = now_us() - start
    assert log.last_seq == records
    flash.unmount()
    return took


def main():
    records, size = int(sys.argv[1]), int(sys.argv[2])
    raw_us, ours_us, read_us, count, dev = bench_append(records, size)
    del dev
    recovery = []
    for n in (records // 8, records // 2, records):
        gc.collect()
        dev = bench_append(n, size)[-1]
        recovery.append([n, n * (size + 10), bench_recovery(dev, n)])
        del dev
    print(json.dumps({"runtime": "micropython" if port.MICROPYTHON else "cpython", "records": records,
                      "record_bytes": size, "raw_append_us": raw_us, "log_append_us": ours_us,
                      "read_all_us": read_us, "records_read": count, "recovery": recovery}))


main()
