#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];

const char *tc_error_string(tc_status s) {
    switch (s) {
    case TC_OK: return "ok";
    case TC_ERR_IO: return "i/o error";
    case TC_ERR_FORMAT: return "malformed file";
    case TC_ERR_CONFIG: return "invalid configuration";
    case TC_ERR_ARG: return "invalid argument";
    case TC_ERR_OOM: return "out of memory";
    case TC_ERR_BACKEND: return "backend error";
    case TC_ERR_DATA: return "data error";
    case TC_ERR_NONFINITE: return "non-finite value";
    case TC_ERR_UNSUPPORTED: return "unsupported";
    case TC_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown error";
}

tc_status tc_fail(tc_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

tc_status tc_fail_context(tc_status code, const char *fmt, ...) {
    char prefix[512], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    /* truncation is acceptable for a message; build it piecewise */
    size_t n = strnlen(prefix, sizeof prefix);
    memcpy(last_error, prefix, n);
    if (old[0] && n + 2 < sizeof last_error) {
        memcpy(last_error + n, ": ", 2);
        n += 2;
        size_t m = strnlen(old, sizeof old);
        if (m > sizeof last_error - 1 - n) m = sizeof last_error - 1 - n;
        memcpy(last_error + n, old, m);
        n += m;
    }
    last_error[n] = 0;
    return code;
}

const char *tc_last_error(void) {
    return last_error;
}
