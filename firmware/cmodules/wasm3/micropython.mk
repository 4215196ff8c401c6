# wasm3 as a MicroPython user C module (make-based ports: unix). See README.md.
WASM3_MOD_DIR := $(USERMOD_DIR)

SRC_USERMOD_C += $(WASM3_MOD_DIR)/mp/modwasm3.c
SRC_USERMOD_LIB_C += $(wildcard $(WASM3_MOD_DIR)/wasm3/*.c)

# d_m3ExternalAllocator: modwasm3.c puts wasm3's allocations on the GC heap (tracked blocks).
# The sizes are wasm3's own ESP32 defaults (m3_config_platforms.h), so the unix build spends
# memory per agent the way a board does: 1 KiB code pages, small constant tables. The limits
# every build must share (stack height, nesting, call depth) are in wasm3/m3_config.h only.
CFLAGS_USERMOD += -I$(WASM3_MOD_DIR)/wasm3 -Dd_m3ExternalAllocator=1 -Dd_m3RecordBacktraces=0 \
                  -Dd_m3CodePageAlignSize=1024 \
                  -Dd_m3VerboseErrorMessages=1 \
                  -DMICROPY_TRACKED_ALLOC=1

# wasm3 is not written for the port's -Werror warning set: relax it for wasm3's objects only
# (target-specific, because the port adds -Werror after CFLAGS_USERMOD).
$(BUILD)/wasm3/wasm3/%.o: CFLAGS += -Wno-error -fno-strict-aliasing -Wno-float-conversion \
    -Wno-double-promotion -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -O2
