#define MICROPY_HW_BOARD_NAME "microfang ESP32"
#define MICROPY_HW_MCU_NAME "ESP32"

// wasm3 allocates through m_tracked_calloc (firmware/cmodules/wasm3): its memory is GC heap.
#define MICROPY_TRACKED_ALLOC (1)
