# Which attribute names MicroPython's objects lack: reads "label name" lines from the file given
# as argv[1] and prints "label name" for each the named object here does not have. Run by
# tests/test_device_subset.py on microfang's MicroPython; the names come from CPython's objects.
import sys

import asyncio


async def _nothing():
    pass


def _objects():
    task = asyncio.create_task(_nothing())
    return {"asyncio": asyncio, "Task": task, "Event": asyncio.Event(), "Lock": asyncio.Lock(),
            "StreamReader": asyncio.StreamReader, "StreamWriter": asyncio.StreamWriter, "str": "",
            "bytes": b"", "bytearray": bytearray(), "dict": {}, "list": [], "set": set(), "int": 0,
            "memoryview": memoryview(b"")}


async def main():
    objects = _objects()
    with open(sys.argv[1]) as f:
        for line in f:
            label, name = line.split()
            if not hasattr(objects[label], name):
                print(label, name)


asyncio.run(main())
