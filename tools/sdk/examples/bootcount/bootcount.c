/* bootcount: counts how often it has started, in its memory log on flash. The count survives
 * reboots, power cuts and redeploys: the log is the agent's memory. */
#include "mf.h"

MF_EXPORT(mf_on_event) mf_i32 mf_on_event(mf_i32 kind, const unsigned char *payload, mf_i32 len) {
    if (kind != MF_EV_START) return 0;
    unsigned char last[4];
    mf_u32 boots = 0;
    if (mf_mem_read(0, last, 4) == 4) { /* 0: the latest record */
        boots = (mf_u32)last[0] | (mf_u32)last[1] << 8 | (mf_u32)last[2] << 16 | (mf_u32)last[3] << 24;
    }
    boots++;
    unsigned char record[4] = {(unsigned char)boots, (unsigned char)(boots >> 8), (unsigned char)(boots >> 16),
                               (unsigned char)(boots >> 24)};
    mf_i32 seq = mf_mem_append(record, 4);
    char line[48];
    mf_i32 n = 0;
    mf_cat(line, &n, "boot ", 5);
    n += mf_itoa((mf_i32)boots, line + n);
    if (seq < 0) {
        mf_cat(line, &n, " (not stored: error ", 20);
        n += mf_itoa(seq, line + n);
        line[n++] = ')';
    }
    mf_log(line, n);
    return 0;
}
