/* the helpers of tests/gradcheck.h */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static tc_backend *be;
static uint64_t rng = 0x5eed;

float *gc_alloc(size_t n) {
    void *p = NULL;
    assert_int_equal(be->alloc(be, n * sizeof(float), &p), TC_OK);
    return p;
}

float *gc_rand(size_t n, float scale) {
    float *p = gc_alloc(n);
    tc_fill_uniform(p, n, &rng, scale);
    return p;
}

float *gc_const(size_t n, float v) {
    float *p = gc_alloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

float *gc_copy(const float *x, size_t n) {
    float *p = gc_alloc(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

double *gc_to_double(const float *x, size_t n) {
    double *d = malloc(n * sizeof(double));
    assert_non_null(d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

void gc_free(void *p) {
    be->free(be, p);
}

double gc_fd_loss(const fd_case *c) {
    double *out = calloc(c->nout, sizeof(double));
    assert_non_null(out);
    c->forward(c, out);
    double L = 0.0;
    for (size_t i = 0; i < c->nout; i++)
        L += c->r[i] * out[i];
    free(out);
    return L;
}

/* g (n) = dL/dx by central differences, x a double input of the case */
float *gc_fd_grad(const fd_case *c, double *x, size_t n) {
    float *g = malloc(n * sizeof(float));
    assert_non_null(g);
    for (size_t i = 0; i < n; i++) {
        const double save = x[i];
        const double h = GC_FD_H * fmax(1.0, fabs(save));
        x[i] = save + h;
        const double lp = gc_fd_loss(c);
        x[i] = save - h;
        const double lm = gc_fd_loss(c);
        x[i] = save;
        g[i] = (float)((lp - lm) / (2.0 * h));
    }
    return g;
}

/* fp32 forward output vs the double reference forward of the case */
void gc_check_forward(const fd_case *c, const float *got, const char *what) {
    double *ref = calloc(c->nout, sizeof(double));
    float *reff = malloc(c->nout * sizeof(float));
    assert_non_null(ref);
    assert_non_null(reff);
    c->forward(c, ref);
    for (size_t i = 0; i < c->nout; i++)
        reff[i] = (float)ref[i];
    double e = tc_rel_err(got, reff, c->nout);
    printf("  %-34s rel err %.2e\n", what, e);
    TC_ASSERT_CLOSE(got, reff, c->nout, GC_FWD_TOL, what);
    free(ref), free(reff);
}

/* analytic gradient of a "+=" output: subtract the known pre-fill */
void gc_sub_prefill(float *g, const float *pre, size_t n) {
    for (size_t i = 0; i < n; i++)
        g[i] -= pre[i];
}

void gc_check_grad(const float *analytic, const float *fd, size_t n, const char *what) {
    double e = tc_rel_err(analytic, fd, n);
    printf("  %-34s rel err %.2e\n", what, e);
    TC_ASSERT_CLOSE(analytic, fd, n, GC_GRAD_TOL, what);
}

tc_backend *tc_gradcheck_backend(void) {
    if (tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 2}) != TC_OK) {
        fprintf(stderr, "cpu backend: %s\n", tc_last_error());
        return NULL;
    }
    return be;
}
