#include "testutil.h"

#include "checkpoint.h"
#include "l0.h"
#include "params.h"
#include "prune.h"

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

void tc_test_fill_uniform_packed(const tc_param_layout *layout, float *buf, uint64_t *seed,
                                 float scale) {
    float *packed = malloc((layout->packed_total ? layout->packed_total : 1) * sizeof *packed);
    assert_non_null(packed);
    tc_fill_uniform(packed, layout->packed_total, seed, scale);
    memset(buf, 0, layout->total * sizeof *buf);
    for (int i = 0; i < layout->count; i++) {
        const tc_param_info *p = &layout->params[i];
        memcpy(buf + p->offset, packed + p->packed, p->count * sizeof *buf);
    }
    free(packed);
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

tc_json *tc_test_read_json(const char *path) {
    size_t len;
    char *text = tc_read_file(path, &len);
    if (!text) fail_msg("missing %s", path);
    tc_json *j = NULL;
    const tc_status s = tc_json_parse(text, len, path, &j);
    free(text);
    if (s != TC_OK) fail_msg("%s: %s", path, tc_last_error());
    return j;
}

double tc_test_json_num(const tc_json *j, const char *key) {
    const tc_json *v = tc_json_get(j, key);
    if (!v || v->type != TC_JSON_NUMBER) fail_msg("no number '%s'", key);
    return v->number;
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
    if (output)
        *output = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- a tiny CLIP for trainer tests ---- */

const char *const tc_test_tiny_model_json =
    "{\"embed_dim\": 32, \"quick_gelu\": false,\n"
    " \"vision_cfg\": {\"image_size\": 28, \"patch_size\": 7, \"layers\": 2, \"width\": 64, "
    "\"head_width\": 64},\n"
    " \"text_cfg\": {\"context_length\": 16, \"vocab_size\": 49408, \"width\": 64, \"heads\": 1, "
    "\"layers\": 2}}\n";

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
    v->head_width = t->head_width = 64;
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
            if (j < eot)
                ids[b * T + j] = 1 + (int)(tc_test_rand(&rng) % (uint64_t)(V - 2));
            else if (j == eot)
                ids[b * T + j] = V - 1;
            else
                ids[b * T + j] = 0;
        }
    }
}

void tc_test_pruned_student(const char *dir, int regular, tc_activation act, tc_model_config *cfg) {
    tc_model_config t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s-student", regular ? "regular" : "irregular");
    t.embed_dim = 48;
    t.activation = act;
    tc_tower_set_uniform(&t.vision, 3, 128, 2, 256);
    t.vision.image_size = 32;
    t.vision.patch_size = 8;
    t.vision.pool = TC_POOL_TOKEN;
    tc_tower_set_uniform(&t.text, 3, 128, 2, 256);
    t.text.context_length = 12;
    t.text.vocab_size = 64;
    t.text.pool = TC_POOL_ARGMAX;
    tc_param_layout l;
    assert_int_equal(tc_param_layout_build(&l, &t), TC_OK);
    float *p = malloc(l.total * sizeof *p);
    assert_non_null(p);
    uint64_t rng = regular ? 11 : 12;
    tc_test_fill_uniform_packed(&l, p, &rng, 0.3f); /* the fixtures' values */
    /* LayerNorm weights near 1, as in trained models */
    for (int i = 0; i < l.count; i++)
        if (strstr(l.params[i].name, "ln") && strstr(l.params[i].name, "weight"))
            for (size_t e = 0; e < l.params[i].count; e++)
                p[l.params[i].offset + e] += 1.0f;
    p[l.logit_scale] = 3.0f;
    tc_l0_masks m[2];
    float *z[2];
    const tc_tower_config *towers[2] = {&t.vision, &t.text};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tc_l0_masks_for_tower_shaped(&m[k], towers[k],
                                                      regular ? TC_L0_REGULAR : TC_L0_IRREGULAR,
                                                      k ? "text" : "vision"),
                         TC_OK);
        for (size_t i = 0; i < m[k].n_loga; i++)
            m[k].data[i] = (float)(tc_test_rand(&rng) % 1000) / 1000.0f * 6.0f - 2.0f;
        z[k] = malloc(m[k].n_z * sizeof *z[k]);
        assert_non_null(z[k]);
        /* regular: a third of the prunable size leaves one head (width 64) */
        double size = 0.3 * tc_l0_prunable_size(m[k].layers, m[k].hidden, m[k].heads, m[k].inter);
        assert_int_equal(tc_l0_deterministic_sized(&m[k], 0, size, z[k]), TC_OK);
    }
    if (!regular) {
        /* vision layer 1 without heads, text layer 0 without MLP units */
        int C = 128, NH = 2, L = 3, M = 256;
        for (int h = 0; h < NH; h++)
            z[0][C + 1 * NH + h] = 0.0f;
        for (int i = 0; i < M; i++)
            z[1][C + L * NH + 0 * M + i] = 0.0f;
    }
    tc_param_layout pl;
    float *pp = NULL;
    assert_int_equal(tc_prune_z(&t, &l, p, z[0], z[1], TC_PRUNE_EXACT, cfg, &pl, &pp), TC_OK);
    snprintf(cfg->name, sizeof cfg->name, "%s", t.name);
    assert_int_equal(cfg->irregular, !regular);
    if (!regular) {
        assert_int_equal(cfg->vision.heads[1], 0);
        assert_int_equal(cfg->text.mlp_width[0], 0);
    }
    assert_int_equal(tc_checkpoint_save(dir, TC_FORMAT_OPENCLIP, cfg, &pl, pp), TC_OK);
    for (int k = 0; k < 2; k++) {
        free(z[k]);
        tc_l0_masks_free(&m[k]);
    }
    free(p);
    free(pp);
    tc_param_layout_free(&l);
    tc_param_layout_free(&pl);
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

/* ---- formula tensors (scripts/fixtures_breadth.py, tests/fixtures/breadth/README.md) ---- */

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001B3ull;
    return h;
}

void tc_test_formula_x(const char *name, double *x, size_t n) {
    const uint64_t h = fnv1a64(name);
    for (size_t i = 0; i < n; i++) {
        uint64_t z = h + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x[i] = 2.0 * (double)(z >> 41) / 8388608.0 - 1.0;
    }
}

void tc_test_formula_images(const char *name, float *out, int n, int size, int block) {
    const int g = size / block;
    const size_t nc = (size_t)n * 3 * g * g, nf = (size_t)n * 3 * size * size;
    double *coarse = malloc(nc * sizeof *coarse), *fine = malloc(nf * sizeof *fine);
    char cname[256];
    snprintf(cname, sizeof cname, "%s.coarse", name);
    tc_test_formula_x(cname, coarse, nc);
    tc_test_formula_x(name, fine, nf);
    for (size_t p = 0; p < (size_t)n * 3; p++)
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                const size_t o = (p * size + y) * size + x;
                out[o] = (float)(coarse[(p * g + y / block) * g + x / block] + fine[o] / 8);
            }
    free(coarse);
    free(fine);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* (a, b) of value = a + b x for a tensor; 0 for an all-zero tensor */
static int formula_rule(const tc_param_info *p, double *a, double *b) {
    const char *n = p->name;
    const int norm = strstr(n, "bn") || strstr(n, "ln_") || strstr(n, ".downsample.1.");
    *a = 0.0;
    if (ends_with(n, "num_batches_tracked")) return 0;
    if (ends_with(n, "running_var")) return *a = 1.25, *b = 0.25, 1;
    if (ends_with(n, "running_mean")) return *b = 1.0 / 8, 1;
    if (strcmp(n, "logit_scale") == 0) return *a = 2.5, *b = 0.0, 1;
    if (p->ndim <= 1) {
        if (norm && ends_with(n, ".weight")) {
            int last = (ends_with(n, "bn3.weight") || ends_with(n, "downsample.1.weight")) &&
                       strstr(n, ".layer");
            *a = last ? 0.25 : 1.0, *b = last ? 1.0 / 16 : 1.0 / 8;
            return 1;
        }
        return *b = norm ? 1.0 / 16 : 1.0 / 32, 1;
    }
    if (ends_with(n, "positional_embedding")) return *b = 1.0 / 64, 1;
    if (ends_with(n, "token_embedding.weight")) return *b = 1.0 / 32, 1;
    int64_t fan_in =
        strcmp(n, "text_projection") == 0 ? p->shape[0] : (int64_t)(p->count / p->shape[0]);
    int e = 0;
    while (((int64_t)1 << (2 * e)) < fan_in)
        e++;
    *b = 4.0 * ldexp(1.0, -e);
    return 1;
}

int tc_test_formula_params(const tc_param_layout *layout, float *params) {
    size_t widest = 1;
    for (int i = 0; i < layout->count; i++)
        if (layout->params[i].count > widest) widest = layout->params[i].count;
    double *x = malloc(widest * sizeof *x);
    if (!x) return -1;
    for (int i = 0; i < layout->count; i++) {
        const tc_param_info *p = &layout->params[i];
        float *dst = params + p->offset;
        double a, b;
        if (!formula_rule(p, &a, &b)) {
            memset(dst, 0, p->count * sizeof *dst);
            continue;
        }
        tc_test_formula_x(p->name, x, p->count);
        for (size_t k = 0; k < p->count; k++)
            dst[k] = (float)(a + b * x[k]);
    }
    free(x);
    return 0;
}

/* TC_TEST_FILTER=PATTERN runs only the cmocka tests whose names match (the
 * ThreadSanitizer stage of scripts/test runs one case of the slow ones) */
__attribute__((constructor)) static void tc_test_filter_from_env(void) {
    const char *f = getenv("TC_TEST_FILTER");
    if (f && f[0]) cmocka_set_test_filter(f);
}

/* ---- runs of tinyclip train ---- */

char *tc_test_run_dir(const char *tag, const char *yaml) {
    char *dir = tc_make_tempdir(tag);
    if (!dir) return NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny.json", dir);
    int bad = tc_write_file(path, tc_test_tiny_model_json, strlen(tc_test_tiny_model_json));
    snprintf(path, sizeof path, "%s/exp.yaml", dir);
    bad |= tc_write_file(path, yaml, strlen(yaml));
    if (bad) {
        tc_rmtree(dir);
        free(dir);
        return NULL;
    }
    return dir;
}

int tc_test_train(const char *dir, const char *run, const char *extra, const char *fault,
                  char **output) {
    size_t cap = 2 * strlen(dir) + strlen(run) + (extra ? strlen(extra) : 0) + 64;
    char *args = malloc(cap);
    snprintf(args, cap, "train %s/exp.yaml --out %s/%s --plain %s", dir, dir, run,
             extra ? extra : "");
    int rc = fault ? tc_run_cli_fault(fault, args, output) : tc_run_cli(args, output);
    free(args);
    return rc;
}

void tc_test_assert_same_final(const char *dir, const char *a, const char *b, const char *stage) {
    char pa[2048], pb[2048];
    snprintf(pa, sizeof pa, "%s/%s/%s/final/open_clip_model.safetensors", dir, a, stage);
    snprintf(pb, sizeof pb, "%s/%s/%s/final/open_clip_model.safetensors", dir, b, stage);
    size_t na = 0, nb = 0;
    char *da = tc_read_file(pa, &na), *db = tc_read_file(pb, &nb);
    if (!da || !db) fail_msg("missing final weights %s or %s", pa, pb);
    if (na != nb || memcmp(da, db, na) != 0)
        fail_msg("stage %s: final weights differ between %s and %s", stage, a, b);
    free(da);
    free(db);
}
