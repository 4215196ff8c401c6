#define MICROPY_HW_BOARD_NAME "microfang ESP32-S3 with PSRAM"
#define MICROPY_HW_MCU_NAME "ESP32S3"

#define MICROPY_HW_ENABLE_USBDEV (1)
#define MICROPY_HW_USB_CDC (1)

// wasm3 allocates through m_tracked_calloc (firmware/cmodules/wasm3): its memory is GC heap,
// which on this board lives mostly in PSRAM.
#define MICROPY_TRACKED_ALLOC (1)

// The task that runs MicroPython and wasm3: wasm3's call-depth and nesting bounds keep its C
// stack use under half of this (docs/fuel.md "Engine limits"; TASK_STACK_BYTES in boards/).
#define MICROPY_TASK_STACK_SIZE (16 * 1024)
