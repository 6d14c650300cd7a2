#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *tc_fixture(const char *relative, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", TC_FIXTURES, relative);
    return buf;
}

int tc_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

uint64_t tc_test_rand(uint64_t *s) {
    /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void tc_fill_uniform(float *x, size_t n, uint64_t *state, float scale) {
    for (size_t i = 0; i < n; i++) {
        double u = (double)(tc_test_rand(state) >> 11) * (1.0 / 9007199254740992.0);
        x[i] = (float)((2.0 * u - 1.0) * scale);
    }
}

void tc_test_set_padding(const tc_param_layout *layout, float *buf, float value) {
    size_t at = 0;
    for (int i = 0; i <= layout->count; i++) {
        size_t next = i < layout->count ? layout->params[i].offset : layout->total;
        for (; at < next; at++)
            buf[at] = value;
        if (i < layout->count) at = next + layout->params[i].count;
    }
}

double tc_max_abs_diff(const float *a, const float *ref, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        if (d != d) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}

double tc_rel_err(const float *a, const float *ref, size_t n) {
    double mag = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)ref[i]) > mag) mag = fabs((double)ref[i]);
    double d = tc_max_abs_diff(a, ref, n);
    if (mag == 0) return d;
    return d / mag;
}

void tc_skip_test(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "SKIP: ");
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
    fflush(stdout);
    exit(77);
}

char *tc_make_tempdir(const char *tag) {
    char tmpl[256];
    const char *base = getenv("TMPDIR");
    snprintf(tmpl, sizeof tmpl, "%s/tc-%s-XXXXXX", base ? base : "/tmp", tag);
    char *p = mkdtemp(tmpl);
    return p ? strdup(p) : NULL;
}

void tc_rmtree(const char *path) {
    if (!path || !path[0] || strcmp(path, "/") == 0) return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

char *tc_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

int tc_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    int rc = fclose(f);
    return (w == len && rc == 0) ? 0 : -1;
}

int tc_run_cli(const char *args, char **output) {
    const char *bin = getenv("TINYCLIP_BIN");
    if (!bin) bin = TC_BINARY_DIR "/tinyclip";
    size_t cap = strlen(bin) + strlen(args) + 32;
    char *cmd = malloc(cap);
    snprintf(cmd, cap, "%s %s 2>&1", bin, args);
    int rc = tc_run_capture(cmd, output);
    free(cmd);
    return rc;
}

const char *tc_faults_bin(void) {
    const char *bin = getenv("TINYCLIP_FAULTS_BIN");
    if (!bin || !bin[0])
        tc_skip_test("no tinyclip_faults: this build has TC_FAULT_INJECTION=OFF (or the test "
                     "runs outside ctest without TINYCLIP_FAULTS_BIN)");
    return bin;
}

int tc_run_cli_fault(const char *fault, const char *args, char **output) {
    const char *bin = tc_faults_bin();
    size_t cap = strlen(fault) + strlen(bin) + strlen(args) + 64;
    char *cmd = malloc(cap);
    snprintf(cmd, cap, "TINYCLIP_FAULT='%s' %s %s 2>&1", fault, bin, args);
    int rc = tc_run_capture(cmd, output);
    free(cmd);
    return rc;
}

int tc_run_capture(const char *cmd, char **output) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0, c = 4096;
    char *buf = malloc(c);
    size_t r;
    while ((r = fread(buf + n, 1, c - n - 1, p)) > 0) {
        n += r;
        if (c - n < 1024) {
            c *= 2;
            buf = realloc(buf, c);
        }
    }
    buf[n] = 0;
    int st = pclose(p);
    if (output) *output = buf;
    else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- a tiny CLIP for trainer tests ---- */

void tc_test_tiny_clip(tc_model_config *c, const char *name, int width, int embed) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->embed_dim = embed;
    c->activation = TC_GELU;
    tc_tower_config *v = &c->vision, *t = &c->text;
    v->layers = 2;
    v->width = width;
    v->image_size = 12;
    v->patch_size = 4;
    v->heads[0] = v->heads[1] = width / 64;
    v->mlp_width[0] = v->mlp_width[1] = 2 * width;
    v->pool = TC_POOL_TOKEN;
    t->layers = 2;
    t->width = width;
    t->context_length = 7;
    t->vocab_size = 40;
    t->heads[0] = t->heads[1] = width / 64;
    t->mlp_width[0] = t->mlp_width[1] = 2 * width;
    t->pool = TC_POOL_ARGMAX;
    c->irregular = 1;
}

void tc_test_clip_batch(float *images, int32_t *ids, int N, const tc_model_config *c, int step) {
    uint64_t rng = 1000003u * (uint64_t)(step + 1);
    int S = c->vision.image_size, T = c->text.context_length, V = c->text.vocab_size;
    tc_fill_uniform(images, (size_t)N * 3 * S * S, &rng, 1.5f);
    for (int b = 0; b < N; b++) {
        int eot = 2 + b % (T - 2);
        for (int j = 0; j < T; j++) {
            if (j < eot) ids[b * T + j] = 1 + (int)(tc_test_rand(&rng) % (uint64_t)(V - 2));
            else if (j == eot) ids[b * T + j] = V - 1;
            else ids[b * T + j] = 0;
        }
    }
}

const char *tc_test_backend_missing_op(const tc_backend *be) {
#define TC_OP(ret, name, params)                                                                   \
    if (!be->name) return #name;
#define TC_OPTIONAL_OP(ret, name, params)
#include "backend_ops.h"
#undef TC_OPTIONAL_OP
#undef TC_OP
    if (be->caps.patch_embed_conv && !be->patch_embed_forward) return "patch_embed_forward";
    if (be->caps.patch_embed_conv && !be->patch_embed_backward_weight)
        return "patch_embed_backward_weight";
    return NULL;
}

/* TC_TEST_FILTER=PATTERN runs only the cmocka tests whose names match (the
 * ThreadSanitizer stage of scripts/test runs one case of the slow ones) */
__attribute__((constructor)) static void tc_test_filter_from_env(void) {
    const char *f = getenv("TC_TEST_FILTER");
    if (f && f[0]) cmocka_set_test_filter(f);
}
