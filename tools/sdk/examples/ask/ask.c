/* ask: sends an LLM request on start and keeps the answer in its memory log.
 * Requests never block: the answer (or an error) arrives later as a reply event. */
#include "mf.h"

static const char QUESTION[] = "In one sentence: why do microcontrollers need low-power sleep modes?";
static mf_i32 pending;

static void ask(void) {
    /* CBOR body: {"prompt": QUESTION, "max_tokens": 48} */
    unsigned char body[160];
    mf_i32 n = 0, qlen = sizeof(QUESTION) - 1;
    body[n++] = 0xa2;
    n += mf_cbor_text_head(body + n, 6);
    mf_cat((char *)body, &n, "prompt", 6);
    n += mf_cbor_text_head(body + n, qlen);
    mf_cat((char *)body, &n, QUESTION, qlen);
    n += mf_cbor_text_head(body + n, 10);
    mf_cat((char *)body, &n, "max_tokens", 10);
    body[n++] = 0x18;
    body[n++] = 48;
    pending = mf_request("llm", 3, body, n);
    if (pending < 0) mf_print("request refused");
}

MF_EXPORT(mf_on_event) mf_i32 mf_on_event(mf_i32 kind, const unsigned char *payload, mf_i32 len) {
    const unsigned char *text;
    mf_i32 text_len;
    if (kind == MF_EV_START) {
        mf_print("asking the gateway's LLM");
        ask();
    } else if (kind == MF_EV_REPLY) {
        if (mf_cbor_get(payload, len, "id", &text, &text_len) && text_len != pending) return 0;
        if (mf_cbor_get(payload, len, "text", &text, &text_len) && text) {
            mf_log((const char *)text, text_len);
            mf_mem_append(text, text_len);
        } else if (mf_cbor_get(payload, len, "error", &text, &text_len) && text) {
            char line[200];
            mf_i32 n = 0;
            mf_cat(line, &n, "LLM error: ", 11);
            if (text_len > 180) text_len = 180;
            mf_cat(line, &n, (const char *)text, text_len);
            mf_log(line, n);
        }
    }
    return 0;
}
