# microfang firmware for a plain ESP32 (4 MB flash, no PSRAM): ~110 KB GC heap after boot.
set(SDKCONFIG_DEFAULTS
    ${MICROPY_PORT_DIR}/boards/sdkconfig.base
    ${MICROPY_BOARD_DIR}/sdkconfig.board
)

# ESP-IDF reads the partition table path from sdkconfig, relative to the port directory; an
# out-of-tree board writes its absolute path into a generated fragment instead.
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.partitions
    "CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${MICROPY_BOARD_DIR}/partitions.csv\"\n")
list(APPEND SDKCONFIG_DEFAULTS ${CMAKE_BINARY_DIR}/sdkconfig.partitions)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
