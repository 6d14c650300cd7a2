/* status codes and error messages shared by every layer.
 *
 * the one rule for errors, followed everywhere:
 *  - a function that can fail returns a tc_status. the failing function
 *    records a message with tc_fail() naming what failed and where (file,
 *    field with line:column, tensor, sample); a caller handles the code or
 *    returns it unchanged (adding context with tc_fail_context() when it
 *    knows more), so the message that reaches the user names the innermost
 *    failure.
 *  - before a function holds any resource, failures leave with TC_TRY(...).
 *    once it holds one (memory, a file, a handle), failures `goto fail` (or
 *    `done`): one cleanup block at the end releases everything in reverse
 *    order, on the success path too where the resources are temporary.
 *  - backend ops return void (they are queued work): an op that meets a bad
 *    shape or cannot get scratch memory records the first failure in its
 *    backend (tc_cpu_record, tc_cuda_record) and does nothing harmful;
 *    synchronize() and download() report the recorded failure, which is
 *    sticky. no op writes NaN to signal an error.
 *  - abort()/assert() guard programmer errors only, never input. */
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
tc_status tc_fail_context(tc_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define TC_TRY(expr)                                                                               \
    do {                                                                                           \
        tc_status tc_try_s_ = (expr);                                                              \
        if (tc_try_s_ != TC_OK) return tc_try_s_;                                                  \
    } while (0)

#endif
