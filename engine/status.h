/* status codes and error messages shared by every layer.
 * a failing function records a message with tc_fail() and returns its code;
 * the caller either handles it or returns it unchanged, so the message that
 * reaches the user names the innermost failure (file, field, tensor, sample). */
#ifndef TC_STATUS_H
#define TC_STATUS_H

typedef enum {
    TC_OK = 0,
    TC_ERR_IO,          /* open/read/write/rename failed */
    TC_ERR_FORMAT,      /* a file is malformed (safetensors, json, yaml, tar, image) */
    TC_ERR_CONFIG,      /* a config is well-formed but invalid or unsupported */
    TC_ERR_ARG,         /* bad command-line or API argument */
    TC_ERR_OOM,         /* allocation failed */
    TC_ERR_BACKEND,     /* backend (cuda, blas) failure */
    TC_ERR_DATA,        /* data pipeline: too many bad samples, empty dataset */
    TC_ERR_NONFINITE,   /* NaN/Inf where a finite value is required */
    TC_ERR_UNSUPPORTED, /* valid request this build cannot serve */
    TC_ERR_INTERRUPTED, /* stopped by a signal or a lost peer */
} tc_status;

/* short constant text for a code */
const char *tc_error_string(tc_status s);

/* records a printf-style message for the calling thread and returns code */
tc_status tc_fail(tc_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* the last message recorded on this thread ("" when none) */
const char *tc_last_error(void);

/* prefixes the current message with context, e.g. the file being read:
 * "model.safetensors: tensor 'x': shape mismatch" */
tc_status tc_fail_context(tc_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TC_TRY(expr)                                                                               \
    do {                                                                                           \
        tc_status tc_try_s_ = (expr);                                                              \
        if (tc_try_s_ != TC_OK) return tc_try_s_;                                                  \
    } while (0)

#endif
