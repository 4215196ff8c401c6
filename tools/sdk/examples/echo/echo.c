/* echo: asks the gateway to echo a numbered text on every timer tick and logs each answer.
 * The smallest round trip through the fleet: agent -> board -> MQTT -> gateway -> back. */
#include "mf.h"

static mf_i32 sent;

MF_EXPORT(mf_on_event) mf_i32 mf_on_event(mf_i32 kind, const unsigned char *payload, mf_i32 len) {
    if (kind == MF_EV_START || kind == MF_EV_TIMER) {
        unsigned char body[32];
        char text[20];
        mf_i32 n = 0, t = 0;
        mf_cat(text, &t, "ping ", 5);
        t += mf_itoa(++sent, text + t);
        n += mf_cbor_text_head(body, t);
        mf_cat((char *)body, &n, text, t);
        if (mf_request("echo", 4, body, n) < 0) mf_print("echo request refused");
    } else if (kind == MF_EV_REPLY) {
        const unsigned char *text;
        mf_i32 text_len;
        if (mf_cbor_get(payload, len, "body", &text, &text_len) && text) {
            char line[64];
            mf_i32 n = 0;
            mf_cat(line, &n, "echoed: ", 8);
            if (text_len > 48) text_len = 48;
            mf_cat(line, &n, (const char *)text, text_len);
            mf_log(line, n);
        } else if (mf_cbor_get(payload, len, "error", &text, &text_len) && text) {
            mf_log((const char *)text, text_len > 60 ? 60 : text_len);
        }
    }
    return 0;
}
