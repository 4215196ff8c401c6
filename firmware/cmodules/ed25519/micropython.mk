# Ed25519 verification as a MicroPython user C module (make-based ports: unix). See README.md.
ED25519_MOD_DIR := $(USERMOD_DIR)

SRC_USERMOD_C += $(ED25519_MOD_DIR)/mp/moded25519.c
SRC_USERMOD_LIB_C += $(ED25519_MOD_DIR)/mf_ed25519.c $(ED25519_MOD_DIR)/monocypher/monocypher.c \
                     $(ED25519_MOD_DIR)/sha512/sha512-blocks.c $(ED25519_MOD_DIR)/sha512/sha512-hash.c

# The vendored C is not written for the port's -Werror warning set.
$(BUILD)/ed25519/%.o: CFLAGS += -Wno-error -Wno-sign-compare -Wno-unused-parameter -Wno-unused-function \
    -Wno-double-promotion -Wno-float-conversion -O2
