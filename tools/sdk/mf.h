/* mf.h: the microfang agent SDK for C (one header, no libc).
 *
 * Build with `microfang build agent.toml` (zig cc --target=wasm32-freestanding, see tools/build.py).
 * An agent defines mf_on_event() and optionally mf_init(); this header provides mf_alloc(),
 * the host-function imports and a few helpers. Only the host functions listed in the
 * manifest's allowed_host_functions may be called: the build refuses the others.
 */
#ifndef MF_H
#define MF_H

typedef unsigned int mf_u32;
typedef int mf_i32;
typedef long long mf_i64;

#define MF_IMPORT(name) __attribute__((import_module("mf"), import_name(#name)))
#define MF_EXPORT(name) __attribute__((export_name(#name)))

/* Event kinds passed to mf_on_event. */
enum { MF_EV_START = 1, MF_EV_TIMER = 2, MF_EV_MESSAGE = 3, MF_EV_REPLY = 4, MF_EV_REFUEL = 5, MF_EV_STOP = 6 };
/* Host-function error codes (always negative). */
enum { MF_E_FAULT = -1, MF_E_TOO_BIG = -2, MF_E_DENIED = -3, MF_E_FULL = -4, MF_E_NOT_FOUND = -5, MF_E_RATE = -6 };

MF_IMPORT(log) void mf_log(const char *text, mf_i32 len);
MF_IMPORT(now_ms) mf_i64 mf_now_ms(void);
MF_IMPORT(publish) mf_i32 mf_publish(const char *topic, mf_i32 topic_len, const void *body, mf_i32 len);
MF_IMPORT(request) mf_i32 mf_request(const char *kind, mf_i32 kind_len, const void *body, mf_i32 len);
MF_IMPORT(sensor_read) mf_i32 mf_sensor_read(mf_i32 channel);
MF_IMPORT(mem_append) mf_i32 mf_mem_append(const void *data, mf_i32 len);
MF_IMPORT(mem_read) mf_i32 mf_mem_read(mf_i32 seq, void *buf, mf_i32 cap);

/* Event payloads land in one static buffer: agents handle one event at a time. */
#ifndef MF_EVENT_BUFFER
#define MF_EVENT_BUFFER 512
#endif
static unsigned char mf_event_buffer[MF_EVENT_BUFFER];

MF_EXPORT(mf_alloc) void *mf_alloc(mf_i32 len) {
    return (len >= 0 && len <= MF_EVENT_BUFFER) ? mf_event_buffer : 0;
}

static inline mf_i32 mf_strlen(const char *s) {
    mf_i32 n = 0;
    while (s[n]) n++;
    return n;
}

static inline void mf_print(const char *s) { mf_log(s, mf_strlen(s)); }

/* Write the decimal form of v into out (at least 12 bytes); returns its length. */
static inline mf_i32 mf_itoa(mf_i32 v, char *out) {
    char tmp[12];
    mf_i32 n = 0, len = 0;
    mf_u32 u = v < 0 ? 0u - (mf_u32)v : (mf_u32)v;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
}

/* Append src (len bytes) to dst at *pos; a tiny string builder without libc. */
static inline void mf_cat(char *dst, mf_i32 *pos, const char *src, mf_i32 len) {
    for (mf_i32 i = 0; i < len; i++) dst[(*pos)++] = src[i];
}

/* CBOR helpers for request bodies: a text string header. */
static inline mf_i32 mf_cbor_text_head(unsigned char *out, mf_i32 len) {
    if (len < 24) { out[0] = (unsigned char)(0x60 | len); return 1; }
    if (len < 256) { out[0] = 0x78; out[1] = (unsigned char)len; return 2; }
    out[0] = 0x79; out[1] = (unsigned char)(len >> 8); out[2] = (unsigned char)len; return 3;
}

/* Read one CBOR head at p; returns the bytes it took (0 if malformed) and sets *major, *arg. */
static inline mf_i32 mf_cbor_head(const unsigned char *p, mf_i32 len, mf_i32 *major, mf_u32 *arg) {
    if (len < 1) return 0;
    mf_i32 info = p[0] & 0x1f, need = info < 24 ? 1 : info == 24 ? 2 : info == 25 ? 3 : info == 26 ? 5 : 0;
    if (need == 0 || need > len) return 0;
    *major = p[0] >> 5;
    *arg = info < 24 ? (mf_u32)info : 0;
    for (mf_i32 i = 1; i < need; i++) *arg = (*arg << 8) | p[i];
    return need;
}

/* Find `key` in a flat CBOR map whose values are ints, simple values, text or byte strings
 * (what reply events carry). On success sets *out and *out_len to a text/byte value, or *out to 0
 * and *out_len to an integer/simple value, and returns 1; returns 0 if absent or malformed. */
static inline mf_i32 mf_cbor_get(const unsigned char *p, mf_i32 len, const char *key,
                                 const unsigned char **out, mf_i32 *out_len) {
    mf_i32 major, pos, n, keylen = mf_strlen(key);
    mf_u32 count, arg;
    pos = mf_cbor_head(p, len, &major, &count);
    if (!pos || major != 5) return 0;
    for (mf_u32 item = 0; item < count * 2; item++) {
        n = mf_cbor_head(p + pos, len - pos, &major, &arg);
        if (!n) return 0;
        pos += n;
        const unsigned char *value = p + pos;
        if (major == 2 || major == 3) {
            if ((mf_u32)(len - pos) < arg) return 0;
            pos += (mf_i32)arg;
        } else if (major == 4 || major == 5 || major == 6) {
            return 0; /* nested values are not for this helper */
        }
        if (item % 2 == 0) {
            if (major == 3 && (mf_i32)arg == keylen) {
                mf_i32 same = 1;
                for (mf_i32 i = 0; i < keylen; i++) same &= value[i] == (unsigned char)key[i];
                if (same) {
                    n = mf_cbor_head(p + pos, len - pos, &major, &arg);
                    if (!n) return 0;
                    if (major == 2 || major == 3) {
                        if ((mf_u32)(len - pos - n) < arg) return 0;
                        *out = p + pos + n;
                    } else {
                        *out = 0;
                    }
                    *out_len = (mf_i32)arg;
                    return 1;
                }
            }
        }
    }
    return 0;
}

#endif /* MF_H */
