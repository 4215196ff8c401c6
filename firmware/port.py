# The port layer: everything that differs between a board (MicroPython) and the simulator
# (CPython) lives here and nowhere else: clock, sleeping, the wasm engine.

import sys

MICROPYTHON = sys.implementation.name == "micropython"

if MICROPYTHON:
    import time

    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff

    def monotonic_ms():
        return time.ticks_ms()

else:
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def monotonic_ms():
        return int(time.monotonic() * 1000)


try:
    import asyncio
except ImportError:  # very old MicroPython builds
    import uasyncio as asyncio


async def sleep_ms(ms):
    # MicroPython's asyncio has sleep_ms; CPython's takes seconds.
    if MICROPYTHON:
        await asyncio.sleep_ms(ms)
    else:
        await asyncio.sleep(ms / 1000)


def _load_engine():
    # On a board the engine is our wasm3 C module (firmware/cmodules/wasm3); on CPython it is
    # the binding of the same wasm3 sources built into the microfang wheel.
    try:
        if MICROPYTHON:
            import wasm3 as engine
        else:
            from microfang import _wasm3 as engine
        return engine
    except ImportError:
        return None


engine = _load_engine()
