# Block devices in MicroPython's extended block protocol (readblocks/writeblocks with an
# offset, ioctl), used by LittleFS on both runtimes (port.Flash). On a board the real
# one is the flash partition (esp32.Partition); these serve the simulator and the tests.

_IOCTL_SYNC = 3
_IOCTL_BLOCK_COUNT = 4
_IOCTL_BLOCK_SIZE = 5
_IOCTL_ERASE = 6
# Erased flash, written a piece at a time: a whole 4 KB block of 0xff allocated per erase is a
# 4 KB hole torn in a 110 KB heap each time LittleFS erases (the unix port runs at the ESP32 heap).
_BLANK = b"\xff" * 256


class _BlockDevice:
    """The ioctl half of the protocol; subclasses store blocks and implement _erase()."""

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_ERASE:
            self._erase(arg)
            return 0
        if op == _IOCTL_SYNC:
            self._sync()
            return 0
        return None

    def _sync(self):
        pass


class RAMBlockDevice(_BlockDevice):
    """Flash in a bytearray. `cut_after=k` cuts the power at the k-th block write (a program or
    an erase): that write is lost, or half applied with `tear=True`, and so is every later
    one, as if the board had stopped there. `dead` says the cut happened; `image()` is what
    the flash holds. Nothing is raised: exceptions cannot cross LittleFS's C code on CPython
    (littlefs-python swallows them), so the code under test checks `dead` after each step."""

    def __init__(self, block_size=4096, block_count=32, data=None, cut_after=0, tear=False):
        self.block_size = block_size
        self.block_count = block_count
        if data is not None:
            self.data = bytearray(data)
        else:
            # Erased flash reads 0xff. Filled in place: one allocation, not a bytes and a copy.
            self.data = bytearray(block_size * block_count)
            for i in range(len(self.data)):
                self.data[i] = 0xFF
        self.cut_after = cut_after
        self.tear = tear
        self.writes = 0
        self.dead = False

    def image(self):
        return bytes(self.data)

    def reset(self, data, cut_after=0, tear=False):
        """Reuse this device (and its buffer: boards have little RAM) with new contents."""
        self.data[:] = data
        self.cut_after = cut_after
        self.tear = tear
        self.writes = 0
        self.dead = False

    def power_on(self):
        """The power is back: the flash keeps what it held when it was cut."""
        self.cut_after = 0
        self.dead = False

    def _write_allowed(self):
        if self.dead:
            return False
        self.writes += 1
        if self.cut_after and self.writes >= self.cut_after:
            self.dead = True
            return False
        return True

    def readblocks(self, block, buf, offset=0):
        start = block * self.block_size + offset
        buf[:] = self.data[start : start + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        # LittleFS erases (ioctl 6) before it programs, so a program is a plain copy here.
        start = block * self.block_size + (offset or 0)
        first_lost = not self.dead
        if self._write_allowed():
            self.data[start : start + len(buf)] = buf
        elif first_lost and self.tear:
            # NOR flash programming only clears bits: a torn write ANDs in part of the data.
            for i in range(len(buf) // 2):
                self.data[start + i] &= buf[i]

    def _erase(self, block):
        start = block * self.block_size
        first_lost = not self.dead
        if self._write_allowed():
            self.data[start : start + self.block_size] = b"\xff" * self.block_size
        elif first_lost and self.tear:
            # A torn erase leaves the first half erased.
            self.data[start : start + self.block_size // 2] = b"\xff" * (self.block_size // 2)


class FileBlockDevice(_BlockDevice):
    """Flash in a host file (the simulator's and the unix port's persistent board flash)."""

    def __init__(self, path, block_size=4096, block_count=64):
        self.block_size = block_size
        self.block_count = block_count
        size = block_size * block_count
        try:
            f = open(path, "r+b")
        except OSError:
            f = open(path, "w+b")
        f.seek(0, 2)
        have = f.tell()
        self.file = f
        while have < size:
            self._erase(have // block_size)
            have += block_size
        f.flush()

    def readblocks(self, block, buf, offset=0):
        self.file.seek(block * self.block_size + offset)
        self.file.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        self.file.seek(block * self.block_size + (offset or 0))
        self.file.write(buf)

    def _erase(self, block):
        self.file.seek(block * self.block_size)
        left = self.block_size
        while left:
            n = min(left, len(_BLANK))
            self.file.write(memoryview(_BLANK)[:n])
            left -= n

    def _sync(self):
        self.file.flush()

    def close(self):
        self.file.close()
