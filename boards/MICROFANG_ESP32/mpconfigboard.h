#define MICROPY_HW_BOARD_NAME "microfang ESP32"
#define MICROPY_HW_MCU_NAME "ESP32"

// wasm3 allocates through m_tracked_calloc (firmware/cmodules/wasm3): its memory is GC heap.
#define MICROPY_TRACKED_ALLOC (1)

// The task that runs MicroPython and wasm3: wasm3's call-depth and nesting bounds keep its C
// stack use under half of this (docs/fuel.md "Engine limits"; TASK_STACK_BYTES in boards/).
#define MICROPY_TASK_STACK_SIZE (16 * 1024)
