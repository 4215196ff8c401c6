# The port layer: everything that differs between a board (MicroPython) and the simulator
# (CPython) lives here and nowhere else: clock, sleeping, the wasm engine, the ADC behind
# sensors (sensors.py).

import sys

MICROPYTHON = sys.implementation.name == "micropython"
ESP32 = MICROPYTHON and sys.platform == "esp32"  # a real board: machine.ADC reads its pins

if MICROPYTHON:
    import time

    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff

else:
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


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


async def wait_for(coro, timeout_ms):
    # CPython 3.11's asyncio.wait_for swallows a cancel that comes in the turn `coro` finishes
    # (the cancelled task goes on); asyncio.timeout does not. MicroPython has only wait_for.
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:
        return await asyncio.wait_for(coro, timeout_ms / 1000)
    async with timeout(timeout_ms / 1000):
        return await coro


def connect_wifi(ssid, password, timeout_ms=20000):
    """Join a Wi-Fi network on a board; a host (unix port, CPython) is already on its network."""
    try:
        import network
    except ImportError:
        return False
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(ssid, password)
        start = ticks_ms()
        while not wlan.isconnected():
            if ticks_diff(ticks_ms(), start) > timeout_ms:
                raise OSError("Wi-Fi %r: not connected after %d ms" % (ssid, timeout_ms))
            time.sleep_ms(100)
    return True


async def read_into(reader, buf):
    """Fill `buf` (a bytearray) from a stream. The bytes land in the buffer the caller could
    allocate: MicroPython's readexactly(n) builds its result by concatenation (twice n at the
    peak) and loses what it read if that allocation fails; CPython has no readinto."""
    size = len(buf)
    pos = 0
    if MICROPYTHON:
        view = memoryview(buf)
        while pos < size:
            n = await reader.readinto(view[pos:])
            if n == 0:
                raise EOFError
            pos += n or 0
        return
    while pos < size:
        chunk = await reader.read(size - pos)
        if not chunk:
            raise EOFError
        buf[pos : pos + len(chunk)] = chunk
        pos += len(chunk)


async def open_connection(host, port, tls=False, timeout_ms=5000, cafile=None):
    """A TCP (or TLS) stream pair with Nagle off: MQTT request/response stalls 40+ ms per
    exchange with it on (FACTS.md). TLS verifies the broker against `cafile` (a PEM file; the
    system's CAs on CPython when None)."""
    if tls:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile is not None:
            ctx.load_verify_locations(cafile=cafile)
        elif not MICROPYTHON:
            ctx.load_default_certs()
        if MICROPYTHON:
            ctx.verify_mode = ssl.CERT_REQUIRED
            reader, writer = await wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout_ms)
        else:
            reader, writer = await wait_for(asyncio.open_connection(host, port, ssl=ctx, server_hostname=host),
                                            timeout_ms)
    else:
        reader, writer = await wait_for(asyncio.open_connection(host, port), timeout_ms)
    sock = writer.s if MICROPYTHON else writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: the names are missing on MicroPython
        except (OSError, AttributeError):
            pass
    return reader, writer


def heap_free(need=0):
    """Bytes free on the heap wasm3 allocates from (MicroPython's GC heap), or None off a board
    (CPython: the simulator's memory is the host's). Collects garbage first when fewer than
    `need` bytes look free. Slow on a big heap (it walks the heap): not for every spawn."""
    if not MICROPYTHON:
        return None
    import gc

    if gc.mem_free() < need:
        gc.collect()
    return gc.mem_free()


def heap_size():
    """The size of the heap wasm3 and the firmware allocate from (MicroPython's GC heap), or
    None off a board (CPython)."""
    if not MICROPYTHON:
        return None
    import gc

    return gc.mem_free() + gc.mem_alloc()


SMALL_HEAP = 512 * 1024  # a heap under this (a plain ESP32's ~110 KB) is a small one
_SMALL = MICROPYTHON and heap_size() < SMALL_HEAP


def small_heap():
    """True on MicroPython with a heap under SMALL_HEAP: such a board asks for small chunks
    (deploy.py, protocol.CHUNK_SMALL) and collects garbage before an agent's records are made."""
    return _SMALL


def collect_before_records():
    """On MicroPython with a small heap (under SMALL_HEAP: a plain ESP32), collect
    garbage now, before the records of an agent that will live long are made: they then take
    the lowest holes the garbage leaves (MicroPython allocates first fit from the bottom)
    instead of landing above it, where they would cut the free middle into holes once it is
    collected. On a full board at 110 KB the free room was otherwise in pieces of at most 416 B
    and an update's 512 B chunk did not arrive (issue 16). Nothing on CPython or a large heap:
    a collection walks the whole heap."""
    if _SMALL:
        import gc

        gc.collect()


def collect_often():
    """On MicroPython, collect garbage after every 1/16 of the heap allocated, not only when it is
    full: garbage piled up between collections pushes the objects that live on (a manifest
    decoded, a packet's reply) up into the heap's free middle, and that middle is where an agent
    installed next needs its large blocks (the firmware's MicroPython takes the engine's native
    blocks from the top of the heap: boards/patches/0001). A collection walks the whole heap,
    so the work per byte allocated stays the same on a 110 KB and a 2 MB heap. Nothing on CPython."""
    if MICROPYTHON:
        import gc

        gc.threshold((gc.mem_free() + gc.mem_alloc()) // 16)



def adc(pin, atten):
    """An ADC on GPIO `pin` with attenuation `atten` (0-3: machine.ADC.ATTN_0DB, _2_5DB, _6DB,
    _11DB) whose read_uv() gives calibrated microvolts (MicroPython's esp32 machine.ADC).
    OSError where this port has no ADC (the unix port, CPython: their sensors are simulated)."""
    try:
        from machine import ADC, Pin
    except ImportError:
        raise OSError(19, "no ADC on this port (machine.ADC): GPIO%d cannot be read" % pin)
    levels = (ADC.ATTN_0DB, ADC.ATTN_2_5DB, ADC.ATTN_6DB, ADC.ATTN_11DB)
    return ADC(Pin(pin), atten=levels[atten])


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


def _load_ed25519():
    # Ed25519 verification (bundle and migration signatures): our C module on a board
    # (firmware/cmodules/ed25519), the binding of the same C in the microfang wheel on CPython.
    try:
        if MICROPYTHON:
            import ed25519
        else:
            from microfang import _ed25519 as ed25519
        return ed25519.verify
    except ImportError:
        return None


# ed25519_verify(public_key, message, signature) -> bool; messages up to 256 bytes (digests).
ed25519_verify = _load_ed25519()


# ---- flash: LittleFS on a block device --------------------------------------------------
#
# Both runtimes run the same LittleFS v2 code over the same block protocol with the same
# geometry (MicroPython's VfsLfs2 defaults: 32-byte reads/programs, 128-byte cache, 32-byte
# lookahead, 100 block cycles), so an image written by the simulator mounts on a board.

# OSErrors littlefs-python raises without an errno, as MicroPython's VfsLfs2 raises them.
_BARE_OS_ERRORS = ((IsADirectoryError, 21, "EISDIR"), (NotADirectoryError, 20, "ENOTDIR"),
                   (FileNotFoundError, 2, "ENOENT"), (FileExistsError, 17, "EEXIST")) if not MICROPYTHON else ()
_LFS_READ = 32
_LFS_PROG = 32
_LFS_LOOKAHEAD = 32


class _LfsFile:
    """A littlefs-python file whose errors are OSErrors, like a MicroPython VfsLfs2 file."""

    def __init__(self, f):
        self._f = f

    def _call(self, method, *args):
        from littlefs import LittleFSError

        try:
            return getattr(self._f, method)(*args)
        except LittleFSError as e:
            raise OSError(-e.code, str(e))

    def write(self, data):
        return self._call("write", data)

    def read(self, *size):
        return self._call("read", *size)

    def readinto(self, buf):
        return self._call("readinto", buf)

    def seek(self, offset):
        return self._call("seek", offset)

    def flush(self):
        return self._call("flush")

    def close(self):
        try:
            return self._call("close")
        finally:
            # littlefs-python marks its handle closed only when lfs_file_close succeeds, yet
            # LittleFS has released the file either way; a second close (at garbage
            # collection) then trips an assertion in lfs.c and aborts the process.
            raw = getattr(self._f, "raw", self._f)
            setattr(raw, "__IOBase_closed", True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Flash:
    """A mounted LittleFS. Paths are absolute within the filesystem ("/logs/a1/...")."""

    def __init__(self, bdev, mount_point="/flash"):
        self.bdev = bdev
        self._adopted = bdev is None  # Flash.mounted(): a filesystem already mounted at mount_point
        if MICROPYTHON:
            import os

            self._os = os
        if self._adopted:
            if not MICROPYTHON:
                raise OSError(19, "no mounted filesystem to adopt outside MicroPython")
            self._root = mount_point
        elif MICROPYTHON:
            try:
                vfs = os.VfsLfs2(bdev, readsize=_LFS_READ, progsize=_LFS_PROG, lookahead=_LFS_LOOKAHEAD)
            except OSError:
                os.VfsLfs2.mkfs(bdev, readsize=_LFS_READ, progsize=_LFS_PROG, lookahead=_LFS_LOOKAHEAD)
                vfs = os.VfsLfs2(bdev, readsize=_LFS_READ, progsize=_LFS_PROG, lookahead=_LFS_LOOKAHEAD)
            try:
                os.umount(mount_point)
            except OSError:
                pass
            os.mount(vfs, mount_point)
            self._root = mount_point
        else:
            from littlefs import LittleFS, UserContext

            class _Context(UserContext):
                # littlefs-python calls these with the same block/offset arguments as the C
                # driver in MicroPython's VfsLfs2.
                def __init__(self, dev):
                    self.dev = dev

                def read(self, cfg, block, off, size):
                    buf = bytearray(size)
                    self.dev.readblocks(block, buf, off)
                    return buf

                def prog(self, cfg, block, off, data):
                    self.dev.writeblocks(block, data, off)
                    return 0

                def erase(self, cfg, block):
                    self.dev.ioctl(6, block)
                    return 0

                def sync(self, cfg):
                    self.dev.ioctl(3, 0)
                    return 0

            block_size = bdev.ioctl(5, 0)
            self._fs = LittleFS(context=_Context(bdev), block_size=block_size, block_count=bdev.ioctl(4, 0),
                                read_size=_LFS_READ, prog_size=_LFS_PROG, lookahead_size=_LFS_LOOKAHEAD,
                                cache_size=min(block_size, 4 * max(_LFS_READ, _LFS_PROG)), block_cycles=100,
                                mount=False)
            try:
                self._fs.mount()
            except Exception:
                self._fs.format()
                self._fs.mount()
            self._root = ""

    def _path(self, path):
        return self._root + path

    def vfs_path(self, path):
        """Where `path` of this filesystem is in the interpreter's VFS (what mpremote sees)."""
        return self._path(path)

    def _lfs(self, method, *args):
        # littlefs-python raises LittleFSError (negative LFS codes, which are -errno) from
        # some calls: turn them into OSError as MicroPython's VfsLfs2 does.
        from littlefs import LittleFSError

        try:
            return getattr(self._fs, method)(*args)
        except LittleFSError as e:
            raise OSError(-e.code, str(e))
        except OSError as e:
            if e.errno is not None:
                raise
            # Some it raises bare (IsADirectoryError()): give them MicroPython's errno and text.
            for kind, code, name in _BARE_OS_ERRORS:
                if isinstance(e, kind):
                    raise OSError(code, name)
            raise

    def open(self, path, mode):
        if MICROPYTHON:
            return open(self._path(path), mode)
        if mode == "ab" and not self.exists(path):
            mode = "wb"  # littlefs-python's append mode does not create the file
        return _LfsFile(self._lfs("open", path, mode))

    def exists(self, path):
        try:
            self.size(path)
            return True
        except OSError:
            return False

    def size(self, path):
        if MICROPYTHON:
            return self._os.stat(self._path(path))[6]
        return self._lfs("stat", path).size

    def listdir(self, path):
        try:
            return sorted(self._os.listdir(self._path(path)) if MICROPYTHON else self._lfs("listdir", path))
        except OSError:
            return []

    def makedirs(self, path):
        built = ""
        for part in path.strip("/").split("/"):
            built += "/" + part
            try:
                if MICROPYTHON:
                    self._os.mkdir(self._path(built))
                else:
                    self._lfs("mkdir", built)
            except OSError:
                pass  # exists

    def remove(self, path):
        if MICROPYTHON:
            self._os.remove(self._path(path))
        else:
            self._lfs("remove", path)

    def rename(self, old, new):
        # Atomic in LittleFS, replacing `new`: the way to commit a rewritten file.
        if MICROPYTHON:
            self._os.rename(self._path(old), self._path(new))
        else:
            self._lfs("rename", old, new)

    @classmethod
    def mounted(cls, root=""):
        """The LittleFS MicroPython has already mounted at `root` ("": the root). A board's
        _boot.py mounts the vfs partition at /: mounting the same partition a second time would
        run two LittleFS instances on one flash and corrupt it."""
        return cls(None, root)

    def usage(self):
        """(bytes used, bytes total)."""
        if MICROPYTHON:
            st = self._os.statvfs(self._root or "/")
            return (st[2] - st[3]) * st[0], st[2] * st[0]
        block_size = self.bdev.ioctl(5, 0)
        return self._fs.used_block_count * block_size, self.bdev.ioctl(4, 0) * block_size

    def unmount(self):
        if self._adopted:
            return  # not ours to unmount
        if MICROPYTHON:
            try:
                self._os.umount(self._root)
            except OSError:
                pass
        else:
            try:
                self._fs.unmount()
            except Exception:
                pass
