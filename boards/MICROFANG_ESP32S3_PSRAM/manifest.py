# Frozen into the microfang ESP32-S3 firmware: MicroPython's port modules, asyncio, and the
# microfang device code (../manifest.py).
freeze("$(PORT_DIR)/modules")
include("$(MPY_DIR)/extmod/asyncio")
include("$(BOARD_DIR)/../manifest.py")
