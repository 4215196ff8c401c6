# microfang.firmware (the repo's firmware/ folder): the code that runs on a board, unmodified on
# MicroPython and CPython (the simulator). Imported as microfang.firmware on the host (pyproject
# package-dir) and frozen as microfang.firmware on a board; inside, imports are relative
# (`from . import protocol`) so the same files work in both places. It imports nothing from
# the host. abi.py is the agent ABI, protocol.py the board-gateway wire.
