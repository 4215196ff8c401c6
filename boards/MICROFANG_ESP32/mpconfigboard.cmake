# microfang firmware for a plain ESP32 (4 MB flash, no PSRAM): ~110 KB GC heap after boot.
set(SDKCONFIG_DEFAULTS
    ${MICROPY_PORT_DIR}/boards/sdkconfig.base
    ${MICROPY_BOARD_DIR}/sdkconfig.board
)

include(${MICROPY_BOARD_DIR}/../microfang_board.cmake)
