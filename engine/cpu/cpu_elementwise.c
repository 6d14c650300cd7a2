/* elementwise ops and copies on fp32 buffers: fill, zero, copy, casts (fp32 is
 * the activation type here, so they are copies), add, scale, clamp and the
 * finiteness check. each element is touched by one thread, so results do not
 * depend on the thread count; every op is safe when its output aliases an
 * input element for element. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "cpu_internal.h"

/* below this many elements a parallel region costs more than it saves */
#define TC_CPU_PAR_MIN 32768

void tc_cpu_fill_f32(tc_backend *b, float *x, float value, size_t n) {
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if (n > TC_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] = value;
}

/* above this many bytes memset/memcpy run in one contiguous piece per thread
 * (the gradient buffer, with the token embedding's, is tens of MB) */
#define TC_CPU_PAR_BYTES (4u << 20)

void tc_cpu_zero(tc_backend *b, void *x, size_t bytes) {
    if (!bytes) return;
    const int nt = tc_cpu_threads(b);
    if (nt < 2 || bytes < TC_CPU_PAR_BYTES) {
        memset(x, 0, bytes);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        const size_t team = (size_t)omp_get_num_threads(), me = (size_t)omp_get_thread_num();
        const size_t per = (bytes / team + 63) / 64 * 64;
        const size_t lo = me * per < bytes ? me * per : bytes;
        const size_t hi = lo + per < bytes ? lo + per : bytes;
        memset((char *)x + lo, 0, hi - lo);
    }
}

void tc_cpu_copy(tc_backend *b, void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return;
    const int nt = tc_cpu_threads(b);
    const char *s = src;
    char *d = dst;
    const uintptr_t ds = (uintptr_t)dst, ss = (uintptr_t)src;
    /* overlapping ranges keep memmove's single pass */
    if (nt < 2 || bytes < TC_CPU_PAR_BYTES || (ds < ss + bytes && ss < ds + bytes)) {
        memmove(dst, src, bytes);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        const size_t team = (size_t)omp_get_num_threads(), me = (size_t)omp_get_thread_num();
        const size_t per = (bytes / team + 63) / 64 * 64;
        const size_t lo = me * per < bytes ? me * per : bytes;
        const size_t hi = lo + per < bytes ? lo + per : bytes;
        memcpy(d + lo, s + lo, hi - lo);
    }
}

void tc_cpu_f32_to_act(tc_backend *b, tc_act *dst, const float *src, size_t n) {
    tc_cpu_copy(b, dst, src, n * sizeof(float));
}

void tc_cpu_act_to_f32(tc_backend *b, float *dst, const tc_act *src, size_t n) {
    tc_cpu_copy(b, dst, src, n * sizeof(float));
}

void tc_cpu_add(tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y, size_t n) {
    float *o = TC_F(out);
    const float *a = TC_CF(x), *c = TC_CF(y);
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(dynamic, 8192) num_threads(nt) if (n > TC_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        o[i] = a[i] + c[i];
}

void tc_cpu_scale_f32(tc_backend *b, float *x, const float *scale, size_t n) {
    const float s = scale[0]; /* read once: scale may be an element of x */
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if (n > TC_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

void tc_cpu_clamp_f32(tc_backend *b, float *x, float lo, float hi, size_t n) {
    int nt = tc_cpu_threads(b);
    /* comparisons rather than fminf/fmaxf so that NaN stays NaN, as torch.clamp */
#pragma omp parallel for schedule(static) num_threads(nt) if (n > TC_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        x[i] = v;
    }
}

void tc_cpu_all_finite(tc_backend *b, float *out, const float *x, size_t n) {
    int nt = tc_cpu_threads(b);
    int bad = 0;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(| : bad) if (n > TC_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        bad |= !isfinite(x[i]);
    out[0] = bad ? 0.0f : 1.0f;
}
