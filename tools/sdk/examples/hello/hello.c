/* hello: says hello on start and counts timer ticks. */
#include "mf.h"

static mf_i32 ticks;

MF_EXPORT(mf_init) void mf_init(void) { ticks = 0; }

MF_EXPORT(mf_on_event) mf_i32 mf_on_event(mf_i32 kind, const unsigned char *payload, mf_i32 len) {
    if (kind == MF_EV_START) {
        mf_print("hello from a wasm agent");
    } else if (kind == MF_EV_TIMER) {
        char line[32];
        mf_i32 n = 0;
        ticks++;
        mf_cat(line, &n, "tick ", 5);
        n += mf_itoa(ticks, line + n);
        mf_log(line, n);
    }
    return 0;
}
