/* sentinel: watches a temperature sensor; when it crosses the alarm threshold it asks the
 * gateway's LLM what to do, and keeps the advice in its memory log. One question per alarm:
 * it re-arms only once the temperature is back below the clear level. */
#include "mf.h"

#define HIGH 3000 /* centi-degrees: 30.00 C */
#define LOW 2800

static mf_i32 alarmed, pending;

static void ask(mf_i32 value) {
    /* CBOR {"prompt": "...", "max_tokens": 40} */
    char prompt[160];
    mf_i32 p = 0;
    const char *a = "A greenhouse sensor reads ";
    const char *b = " hundredths of a degree C, above the 30 C limit. In one short sentence, what should the controller do?";
    mf_cat(prompt, &p, a, mf_strlen(a));
    p += mf_itoa(value, prompt + p);
    mf_cat(prompt, &p, b, mf_strlen(b));
    unsigned char body[200];
    mf_i32 n = 0;
    body[n++] = 0xa2;
    n += mf_cbor_text_head(body + n, 6);
    mf_cat((char *)body, &n, "prompt", 6);
    n += mf_cbor_text_head(body + n, p);
    mf_cat((char *)body, &n, prompt, p);
    n += mf_cbor_text_head(body + n, 10);
    mf_cat((char *)body, &n, "max_tokens", 10);
    body[n++] = 0x18;
    body[n++] = 40;
    pending = mf_request("llm", 3, body, n);
    mf_print(pending > 0 ? "alarm: asking the LLM" : "alarm: LLM request refused");
}

MF_EXPORT(mf_on_event) mf_i32 mf_on_event(mf_i32 kind, const unsigned char *payload, mf_i32 len) {
    if (kind == MF_EV_TIMER) {
        mf_i32 value = mf_sensor_read(0);
        if (!alarmed && value > HIGH) {
            alarmed = 1;
            ask(value);
        } else if (alarmed && value < LOW) {
            alarmed = 0;
        }
    } else if (kind == MF_EV_REPLY) {
        const unsigned char *text;
        mf_i32 text_len;
        if (mf_cbor_get(payload, len, "text", &text, &text_len) && text) {
            mf_log((const char *)text, text_len > 200 ? 200 : text_len);
            mf_mem_append(text, text_len);
        } else if (mf_cbor_get(payload, len, "error", &text, &text_len) && text) {
            char line[120];
            mf_i32 n = 0;
            mf_cat(line, &n, "LLM error: ", 11);
            mf_cat(line, &n, (const char *)text, text_len > 100 ? 100 : text_len);
            mf_log(line, n);
        }
    }
    return 0;
}
