/* MLP activations, elementwise over n values:
 *   TC_GELU        exact GELU  g(x) = 0.5 x (1 + erf(x / sqrt 2))        (nn.GELU())
 *                  g'(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)
 *   TC_QUICK_GELU  q(x) = x sigmoid(1.702 x)                              (open_clip QuickGELU)
 *                  q'(x) = s + 1.702 x s (1 - s),  s = sigmoid(1.702 x)
 * 1 + erf(x / sqrt 2) is evaluated as erfc(|x| / sqrt 2) for x < 0 and
 * 2 - erfc(x / sqrt 2) otherwise, with the Chebyshev erfc of Numerical Recipes
 * (relative error < 1.2e-7) on a vectorisable expf, so the small negative
 * tail keeps its relative accuracy. the backward writes dinp and may run in
 * place (dinp == dout). */
#include <math.h>

#include "cpu_internal.h"
#include "cpu_simd.h"

#define TC_CPU_PAR_MIN 16384

static const float k_inv_sqrt2 = 0.70710678118654752440f;
static const float k_inv_sqrt_2pi = 0.39894228040143267794f;
static const float k_quick = 1.702f;

/* 1 + erf(x / sqrt 2) */
TC_CPU_INLINE float gelu_cdf2(float x) {
    const float z = fabsf(x) * k_inv_sqrt2;
    const float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    const float erfc_z = t * tc_cpu_expf(p - z * z);
    return x < 0.0f ? erfc_z : 2.0f - erfc_z;
}

TC_CPU_CLONES
void tc_cpu_gelu_forward(tc_backend *b, tc_act *out, const tc_act *inp, size_t n,
                         tc_activation kind) {
    float *o = TC_F(out);
    const float *x = TC_CF(inp);
    int nt = tc_cpu_threads(b);
    if (kind == TC_QUICK_GELU) {
#pragma omp parallel for simd schedule(dynamic, 8192) num_threads(nt) if (n > TC_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            o[i] = v / (1.0f + tc_cpu_expf(-k_quick * v));
        }
    } else {
#pragma omp parallel for simd schedule(dynamic, 8192) num_threads(nt) if (n > TC_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            o[i] = 0.5f * v * gelu_cdf2(v);
        }
    }
}

TC_CPU_CLONES
void tc_cpu_gelu_backward(tc_backend *b, tc_act *dinp, const tc_act *inp, const tc_act *dout,
                          size_t n, tc_activation kind) {
    float *dx = TC_F(dinp);
    const float *x = TC_CF(inp), *dy = TC_CF(dout);
    int nt = tc_cpu_threads(b);
    if (kind == TC_QUICK_GELU) {
#pragma omp parallel for simd schedule(dynamic, 8192) num_threads(nt) if (n > TC_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            float s = 1.0f / (1.0f + tc_cpu_expf(-k_quick * v));
            dx[i] = dy[i] * (s + k_quick * v * s * (1.0f - s));
        }
    } else {
#pragma omp parallel for simd schedule(dynamic, 8192) num_threads(nt) if (n > TC_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            float cdf = 0.5f * gelu_cdf2(v);
            float pdf = k_inv_sqrt_2pi * tc_cpu_expf(-0.5f * v * v);
            dx[i] = dy[i] * (cdf + v * pdf);
        }
    }
}
