# One boot of a board: mount its flash image, spawn an agent, deliver its start event, print
# what it logged. tests/test_device_runtimes.py boots it several times, on MicroPython and on
# CPython, against the same image.
#   boot_once.py FLASH_IMAGE BUNDLE
import sys

from microfang.firmware.blockdev import FileBlockDevice
from microfang.firmware.port import Flash
from microfang.firmware.supervisor import Supervisor

device = FileBlockDevice(sys.argv[1], 4096, 64)
lines = []
sup = Supervisor(report=lambda agent_id, kind, text: lines.append(text) if kind in ("log", "fault") else None,
                 flash=Flash(device, "/board"))
with open(sys.argv[2], "rb") as f:
    sup.spawn(f.read())
sup.step()
device.close()
print(" | ".join(lines))
