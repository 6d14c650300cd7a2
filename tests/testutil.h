/* helpers shared by the cmocka tests: fixture paths, random inputs,
 * tolerances, and the visible skip (exit 77) that ctest reports as skipped. */
#ifndef TC_TESTUTIL_H
#define TC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka.h needs the headers above first */
#include <cmocka.h>

#include "json.h"
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
/* the tensors of buf get the values tc_fill_uniform gives a packed buffer
 * (packed_total elements, no padding), in layout order; the padding zero */
void tc_test_fill_uniform_packed(const tc_param_layout *layout, float *buf, uint64_t *seed,
                                 float scale);

/* max_i |a_i - ref_i| / max_i |ref_i|: error relative to the tensor's magnitude */
double tc_rel_err(const float *a, const float *ref, size_t n);
double tc_max_abs_diff(const float *a, const float *ref, size_t n);

/* fails the current test with a message naming `what` when rel_err > tol */
#define TC_ASSERT_CLOSE(a, ref, n, tol, what)                                                      \
    do {                                                                                           \
        double tc_e_ = tc_rel_err((a), (ref), (n));                                                \
        if (!(tc_e_ <= (tol)))                                                                     \
            fail_msg("%s: relative error %.3g > %.3g", (what), tc_e_, (double)(tol));              \
    } while (0)

/* prints the reason and exits with 77, which ctest shows as a skipped test */
void tc_skip_test(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* a fresh empty temporary directory (removed by the caller with tc_rmtree) */
char *tc_make_tempdir(const char *tag);
void tc_rmtree(const char *path);

/* reads a whole file; NULL on failure */
char *tc_read_file(const char *path, size_t *len);
/* a JSON file, parsed (the test fails naming the file when it is missing or
 * not JSON); a number member of it (the test fails when it is not there) */
tc_json *tc_test_read_json(const char *path);
double tc_test_json_num(const tc_json *j, const char *key);
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
/* the open_clip JSON of a tiny CLIP on Fashion-MNIST's 28x28 images (patch 7,
 * 2 layers of width 64 per tower, context 16), for runs of tinyclip train */
extern const char *const tc_test_tiny_model_json;
/* N random images (scale 1.5) and token rows ending in an EOT (the
 * vocabulary's last id), a function of step alone: the same on every rank */
void tc_test_clip_batch(float *images, int32_t *ids, int N, const tc_model_config *c, int step);

/* a fresh temporary folder holding tiny.json (tc_test_tiny_model_json) and
 * exp.yaml (yaml), for runs of tinyclip train; removed with tc_rmtree */
char *tc_test_run_dir(const char *tag, const char *yaml);
/* tinyclip train DIR/exp.yaml --out DIR/RUN --plain EXTRA (EXTRA may be
 * NULL), on tinyclip_faults with TINYCLIP_FAULT=fault when fault is not NULL */
int tc_test_train(const char *dir, const char *run, const char *extra, const char *fault,
                  char **output);
/* fails unless DIR/A/STAGE/final and DIR/B/STAGE/final hold byte-identical weights */
void tc_test_assert_same_final(const char *dir, const char *a, const char *b, const char *stage);
/* a pruned student of a random teacher (3 layers per tower, width 128 in 2
 * heads, MLP 256, 32px images of 8px patches, context 12, vocabulary 64),
 * saved as an open_clip-layout checkpoint folder in dir. regular: tied masks
 * sized to 30% of the prunable size (width 64, one head), a plain open_clip
 * model; irregular:
 * per-layer heads and MLP widths, vision layer 1 without attention and text
 * layer 0 without MLP. the config is returned in cfg. */
void tc_test_pruned_student(const char *dir, int regular, tc_activation act, tc_model_config *cfg);
/* the formula tensors of tests/fixtures/breadth (README there; the same
 * values as scripts/fixtures_breadth.py, bit for bit):
 * x (n) in [-1, 1) of the tensor named `name` */
void tc_test_formula_x(const char *name, double *x, size_t n);
/* (n, 3, size, size) images: coarse squares of `block` pixels + detail / 8 */
void tc_test_formula_images(const char *name, float *out, int n, int size, int block);
/* every tensor of a layout from its name and shape (formula_rule); 0 or -1 (out of memory) */
int tc_test_formula_params(const tc_param_layout *layout, float *params);

#endif
