# The unix-port build used for tests and off-hardware runs (`microfang port build --board unix`).
include("$(MPY_DIR)/extmod/asyncio")
include("../manifest.py")
