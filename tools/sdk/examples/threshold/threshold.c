/* threshold: reads a temperature sensor on a timer and raises an alert when it crosses a
 * threshold, with hysteresis so a noisy value near the line does not flap. */
#include "mf.h"

#define HIGH 3000 /* centi-degrees: alert above 30.00 C */
#define LOW 2800  /* clear below 28.00 C */

static mf_i32 alerting;

static void report(const char *what, mf_i32 value) {
    char line[48];
    mf_i32 n = 0;
    mf_cat(line, &n, what, mf_strlen(what));
    n += mf_itoa(value, line + n);
    mf_log(line, n);
}

MF_EXPORT(mf_on_event) mf_i32 mf_on_event(mf_i32 kind, const unsigned char *payload, mf_i32 len) {
    if (kind != MF_EV_TIMER) return 0;
    mf_i32 value = mf_sensor_read(0);
    if (!alerting && value > HIGH) {
        alerting = 1;
        report("ALERT temperature high: ", value);
        unsigned char body[6] = {0x1a}; /* CBOR uint32 */
        body[1] = (unsigned char)(value >> 24); body[2] = (unsigned char)(value >> 16);
        body[3] = (unsigned char)(value >> 8); body[4] = (unsigned char)value;
        mf_publish("alert", 5, body, 5);
    } else if (alerting && value < LOW) {
        alerting = 0;
        report("clear: temperature back to ", value);
    }
    return 0;
}
