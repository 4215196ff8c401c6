/* reporter: answers questions about its sensor. A message event (from an A2A agent, an MCP
 * client or any gateway user) with {text: "..."} gets a reply published on "reply": the
 * temperature now and how many questions it has answered. It keeps no state but a counter. */
#include "mf.h"

static mf_i32 answered;

static mf_i32 centi(char *out, mf_i32 v) {
    /* 2345 -> "23.45" */
    mf_i32 n = 0;
    if (v < 0) { out[n++] = '-'; v = -v; }
    n += mf_itoa(v / 100, out + n);
    out[n++] = '.';
    out[n++] = (char)('0' + (v / 10) % 10);
    out[n++] = (char)('0' + v % 10);
    return n;
}

MF_EXPORT(mf_on_event) mf_i32 mf_on_event(mf_i32 kind, const unsigned char *payload, mf_i32 len) {
    if (kind != MF_EV_MESSAGE) return 0;
    const unsigned char *question;
    mf_i32 question_len = 0;
    if (!mf_cbor_get(payload, len, "text", &question, &question_len) || !question) question_len = 0;
    char text[120];
    mf_i32 t = 0;
    mf_cat(text, &t, "temperature ", 12);
    t += centi(text + t, mf_sensor_read(0));
    mf_cat(text, &t, " C; answer ", 11);
    t += mf_itoa(++answered, text + t);
    if (question_len > 0) {
        mf_cat(text, &t, " to: ", 5);
        if (question_len > 60) question_len = 60;
        mf_cat(text, &t, (const char *)question, question_len);
    }
    unsigned char body[128];
    mf_i32 n = mf_cbor_text_head(body, t);
    mf_cat((char *)body, &n, text, t);
    mf_publish("reply", 5, body, n);
    return 0;
}
