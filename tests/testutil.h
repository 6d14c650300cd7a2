/* helpers shared by the cmocka tests: fixture paths, random inputs,
 * tolerances, and the visible skip (exit 77) that ctest reports as skipped. */
#ifndef TC_TESTUTIL_H
#define TC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "model_config.h"
#include "params.h"

/* absolute path of a file under tests/fixtures (static buffer per call site use) */
const char *tc_fixture(const char *relative, char *buf, size_t cap);
int tc_file_exists(const char *path);

/* deterministic uniform [-scale, scale) */
void tc_fill_uniform(float *x, size_t n, uint64_t *state, float scale);
uint64_t tc_test_rand(uint64_t *state);
/* every element of buf (layout->total) outside the tensors = value: the
 * padding between tensors (zero in every buffer the engine fills) */
void tc_test_set_padding(const tc_param_layout *layout, float *buf, float value);

/* max_i |a_i - ref_i| / max_i |ref_i|: error relative to the tensor's magnitude */
double tc_rel_err(const float *a, const float *ref, size_t n);
double tc_max_abs_diff(const float *a, const float *ref, size_t n);

/* fails the current test with a message naming `what` when rel_err > tol */
#define TC_ASSERT_CLOSE(a, ref, n, tol, what)                                                      \
    do {                                                                                           \
        double tc_e_ = tc_rel_err((a), (ref), (n));                                                \
        if (!(tc_e_ <= (tol))) fail_msg("%s: relative error %.3g > %.3g", (what), tc_e_, (double)(tol)); \
    } while (0)

/* prints the reason and exits with 77, which ctest shows as a skipped test */
void tc_skip_test(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* a fresh empty temporary directory (removed by the caller with tc_rmtree) */
char *tc_make_tempdir(const char *tag);
void tc_rmtree(const char *path);

/* reads a whole file; NULL on failure */
char *tc_read_file(const char *path, size_t *len);
int tc_write_file(const char *path, const void *data, size_t len);

/* runs the tinyclip binary (TINYCLIP_BIN) with a shell command tail, captures
 * stdout+stderr into *output (malloc'd) and returns the exit status */
int tc_run_cli(const char *args, char **output);
/* the tinyclip built with fault injection (TINYCLIP_FAULTS_BIN, the
 * tinyclip_faults target); skips the test when the build has none */
const char *tc_faults_bin(void);
/* tc_run_cli on that program, with TINYCLIP_FAULT=fault (host/run/fault.h) */
int tc_run_cli_fault(const char *fault, const char *args, char **output);
/* runs a shell command line, its standard output (append 2>&1 for both) in
 * *output (malloc'd, NUL-terminated; NULL output: discarded); returns its
 * exit status, -1 when it did not exit normally */
int tc_run_capture(const char *cmd, char **output);

/* a tiny irregular CLIP (2 layers per tower, 12px images of 4px patches,
 * context 7, vocabulary 40) of the given width and embedding size */
/* the first required op of engine/backend_ops.h that `be` leaves NULL (and
 * the first optional op its capabilities rely on), or NULL when the table
 * is complete */
const char *tc_test_backend_missing_op(const tc_backend *be);

void tc_test_tiny_clip(tc_model_config *c, const char *name, int width, int embed);
/* N random images (scale 1.5) and token rows ending in an EOT (the
 * vocabulary's last id), a function of step alone: the same on every rank */
void tc_test_clip_batch(float *images, int32_t *ids, int N, const tc_model_config *c, int step);

#endif
