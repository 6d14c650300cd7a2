/* helpers for the vectorised loops of the CPU backend.
 *
 * TC_CPU_CLONES compiles a hot function for AVX-512, AVX2 and baseline x86-64
 * and picks one at load time (the build targets baseline x86-64 so that the
 * binary runs anywhere). the loops it marks are written lane-independent (no
 * reassociated reductions) and C11 mode keeps floating-point contraction off,
 * so every clone produces the same bits.
 *
 * tc_cpu_expf is a branch-free expf (Cephes polynomial, about 1 ulp) that the
 * compiler can vectorise, unlike the libm call. */
#ifndef TC_CPU_SIMD_H
#define TC_CPU_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(TC_NO_CLONES)
#define TC_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TC_CPU_CLONES
#endif

/* helpers of cloned functions must be inlined into each clone: a separate
 * function would be compiled for baseline x86-64 only */
#if defined(__GNUC__)
#define TC_CPU_INLINE static inline __attribute__((always_inline))
#else
#define TC_CPU_INLINE static inline
#endif

TC_CPU_INLINE float tc_cpu_expf(float x) {
    /* exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2 / 2 */
    /* above 88 the result is taken as inf (true value < 2.4e38), below lo as 0 */
    const float hi = 88.0f, lo = -87.3365447505531f;
    /* NaN becomes 0 here (the result is x itself below), so the integer
     * conversion of n stays defined */
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    xc = x != x ? 0.0f : xc;
    /* round to nearest by the 1.5 * 2^23 trick: no libm call, vectorises on SSE2 */
    const float t = xc * 1.44269504088896341f;
    const float n = (t + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    float y = p * scale;
    y = x < lo ? 0.0f : y;
    y = x > hi ? INFINITY : y;
    return x != x ? x : y;
}

/* double-precision sums of fp32 rows in 8 fixed lanes (a vector type, so the
 * lanes stay in registers), the lanes then added in order: the same bits
 * for every clone and every thread count */
typedef double tc_v8d __attribute__((vector_size(64)));
typedef float tc_v8fu __attribute__((vector_size(32), aligned(4)));
#define TC_LOAD8D(p) __builtin_convertvector(*(const tc_v8fu *)(p), tc_v8d)

TC_CPU_INLINE double tc_cpu_lanes_total(const double *lane, double tail) {
    double s = 0.0;
    for (int k = 0; k < 8; k++)
        s += lane[k];
    return s + tail;
}

/* sum x[i] */
TC_CPU_INLINE double tc_cpu_sum_f64(const float *x, int n) {
    tc_v8d acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc += TC_LOAD8D(x + i);
    double tail = 0.0, lane[8];
    for (; i < n; i++)
        tail += x[i];
    memcpy(lane, &acc, sizeof lane);
    return tc_cpu_lanes_total(lane, tail);
}

/* sum (x[i] - mu)^2 */
TC_CPU_INLINE double tc_cpu_sumsq_dev_f64(const float *x, int n, double mu) {
    tc_v8d acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        tc_v8d d = TC_LOAD8D(x + i) - mu;
        acc += d * d;
    }
    double tail = 0.0, lane[8];
    for (; i < n; i++)
        tail += (x[i] - mu) * (x[i] - mu);
    memcpy(lane, &acc, sizeof lane);
    return tc_cpu_lanes_total(lane, tail);
}

/* sum a[i] b[i] */
TC_CPU_INLINE double tc_cpu_dot_f64(const float *a, const float *b, int n) {
    tc_v8d acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc += TC_LOAD8D(a + i) * TC_LOAD8D(b + i);
    double tail = 0.0, lane[8];
    for (; i < n; i++)
        tail += (double)a[i] * b[i];
    memcpy(lane, &acc, sizeof lane);
    return tc_cpu_lanes_total(lane, tail);
}

#endif
