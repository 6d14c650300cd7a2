/* the harness of the CUDA op tests (tests/cuda/cuda_harness.h) */
#include "cuda_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TC_HAVE_CUDA

tc_backend *g_cpu, *g_gpu;
int g_fp32;  /* mode of g_gpu */
int g_quick; /* TC_CUDA_TEST_QUICK */
uint64_t g_rng = 0x5eed1234abcdULL;

/* tolerance for a tc_act output / an fp32 output of the current mode */
double tol_act(void) {
    return g_fp32 ? TOL_FP32 : TOL_BF16;
}
double tol_f32(void) {
    return g_fp32 ? TOL_FP32 : TOL_F32_IN_MIXED;
}

/* ---- allocation tracking: everything is freed by the per-test teardown ---- */

#define MAX_TRACK 512
static struct {
    tc_backend *b; /* NULL: host malloc */
    void *p;
} g_track[MAX_TRACK];
static int g_ntrack;

static void track(tc_backend *b, void *p) {
    if (g_ntrack == MAX_TRACK) fail_msg("test bug: too many tracked allocations");
    g_track[g_ntrack].b = b;
    g_track[g_ntrack].p = p;
    g_ntrack++;
}

void free_all(void) {
    for (int i = g_ntrack - 1; i >= 0; i--) {
        if (g_track[i].b)
            g_track[i].b->free(g_track[i].b, g_track[i].p);
        else
            free(g_track[i].p);
    }
    g_ntrack = 0;
}

int teardown_test(void **state) {
    (void)state;
    free_all();
    return 0;
}

void *hmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) fail_msg("out of host memory (%zu bytes)", bytes);
    track(NULL, p);
    return p;
}

void *balloc(tc_backend *b, size_t bytes) {
    void *p = NULL;
    tc_status s = b->alloc(b, bytes, &p);
    if (s != TC_OK) fail_msg("%s alloc of %zu bytes: %s", b->name, bytes, tc_last_error());
    track(b, p);
    return p;
}

void bsync(tc_backend *b, const char *what) {
    tc_status s = b->synchronize(b);
    if (s != TC_OK) fail_msg("%s: %s backend reports: %s", what, b->name, tc_last_error());
}

/* ---- host data ---- */

float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

float *rand_f32(size_t n, float scale) {
    float *x = hmalloc(n * sizeof(float));
    tc_fill_uniform(x, n, &g_rng, scale);
    return x;
}

/* random activations: representable in the GPU's activation type */
float *rand_act(size_t n, float scale) {
    float *x = rand_f32(n, scale);
    if (!g_fp32)
        for (size_t i = 0; i < n; i++)
            x[i] = bf16_round(x[i]);
    return x;
}

/* ---- moving data through the backend interface ---- */

float *put_f32(tc_backend *b, const float *h, size_t n) {
    float *p = balloc(b, n * sizeof(float));
    if (n && b->upload(b, p, h, n * sizeof(float)) != TC_OK)
        fail_msg("%s upload: %s", b->name, tc_last_error());
    return p;
}

tc_act *put_act(tc_backend *b, const float *h, size_t n) {
    if (b->act_bytes == sizeof(float)) return (tc_act *)put_f32(b, h, n);
    tc_act *p = balloc(b, n * b->act_bytes);
    float *tmp = put_f32(b, h, n);
    b->f32_to_act(b, p, tmp, n);
    return p;
}

void get_f32(tc_backend *b, float *h, const float *p, size_t n) {
    if (b->download(b, h, p, n * sizeof(float)) != TC_OK)
        fail_msg("%s download: %s", b->name, tc_last_error());
}

void get_act(tc_backend *b, float *h, const tc_act *p, size_t n) {
    if (b->act_bytes == sizeof(float)) {
        get_f32(b, h, (const float *)p, n);
        return;
    }
    float *tmp = balloc(b, n * sizeof(float));
    b->act_to_f32(b, tmp, p, n);
    get_f32(b, h, tmp, n);
}

/* fills a device buffer with 0xFF bytes: NaN as fp32 and as bf16 */
void poison(tc_backend *b, void *p, size_t bytes) {
    unsigned char *h = hmalloc(bytes);
    memset(h, 0xFF, bytes);
    if (bytes && b->upload(b, p, h, bytes) != TC_OK)
        fail_msg("%s upload: %s", b->name, tc_last_error());
}

/* a poisoned GPU output of n tc_act / n floats */
tc_act *gpu_out_act(size_t n) {
    tc_act *p = balloc(g_gpu, n * g_gpu->act_bytes);
    poison(g_gpu, p, n * g_gpu->act_bytes);
    return p;
}

float *gpu_out_f32(size_t n) {
    float *p = balloc(g_gpu, n * sizeof(float));
    poison(g_gpu, p, n * sizeof(float));
    return p;
}

void expect_close(const char *what, const float *gpu, const float *ref, size_t n, double tol) {
    double e = tc_rel_err(gpu, ref, n);
    printf("    %-48s rel err %.3g (tol %.0e)\n", what, e, tol);
    fflush(stdout);
    if (!(e <= tol)) fail_msg("%s: relative error %.3g > %.3g", what, e, tol);
}

void expect_same_bits(const char *what, const float *a, const float *b, size_t n) {
    if (memcmp(a, b, n * sizeof(float)) != 0)
        fail_msg("%s: two runs on the same inputs differ (non-deterministic)", what);
}

int setup_backends(int fp32) {
    g_fp32 = fp32;
    if (tc_backend_cpu_create(&g_cpu, &(tc_backend_options){.threads = 0}) != TC_OK) {
        fprintf(stderr, "cpu backend: %s\n", tc_last_error());
        return -1;
    }
    if (tc_backend_cuda_create(&g_gpu, &(tc_backend_options){.fp32 = fp32}) != TC_OK) {
        fprintf(stderr, "cuda backend: %s\n", tc_last_error());
        return -1;
    }
    printf("mode %s: act_bytes %zu, separate compute weights %d\n", fp32 ? "fp32" : "mixed bf16",
           g_gpu->act_bytes, g_gpu->caps.separate_compute_weights);
    if (g_gpu->act_bytes != (fp32 ? 4u : 2u) || g_gpu->caps.separate_compute_weights != !fp32) {
        fprintf(stderr, "cuda backend: wrong act_bytes / separate_compute_weights\n");
        return -1;
    }
    const char *missing = tc_test_backend_missing_op(g_gpu);
    if (missing) {
        fprintf(stderr, "cuda backend: op %s is NULL\n", missing);
        return -1;
    }
    return 0;
}

int teardown_backends(void **state) {
    (void)state;
    free_all();
    if (g_gpu) g_gpu->destroy(g_gpu);
    if (g_cpu) g_cpu->destroy(g_cpu);
    g_gpu = g_cpu = NULL;
    return 0;
}

void harness_quick_from_env(void) {
    const char *q = getenv("TC_CUDA_TEST_QUICK");
    g_quick = q && q[0] && strcmp(q, "0") != 0;
}

#endif
