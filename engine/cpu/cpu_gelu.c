/* MLP activations, elementwise over n values:
 *   TC_GELU        exact GELU  g(x) = 0.5 x (1 + erf(x / sqrt 2))        (nn.GELU())
 *                  g'(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)
 *   TC_QUICK_GELU  q(x) = x sigmoid(1.702 x)                              (open_clip QuickGELU)
 *                  q'(x) = s + 1.702 x s (1 - s),  s = sigmoid(1.702 x)
 * the backward writes dinp and may run in place (dinp == dout). */
#include <math.h>

#include "cpu_internal.h"

#define TC_CPU_PAR_MIN 16384

static const float k_inv_sqrt2 = 0.70710678118654752440f;
static const float k_inv_sqrt_2pi = 0.39894228040143267794f;
static const float k_quick = 1.702f;

void tc_cpu_gelu_forward(tc_backend *b, tc_act *out, const tc_act *inp, size_t n,
                         tc_activation kind) {
    float *o = TC_F(out);
    const float *x = TC_CF(inp);
    int nt = tc_cpu_threads(b);
    if (kind == TC_QUICK_GELU) {
#pragma omp parallel for schedule(static) num_threads(nt) if (n > TC_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            o[i] = v / (1.0f + expf(-k_quick * v));
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(nt) if (n > TC_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            o[i] = 0.5f * v * (1.0f + erff(v * k_inv_sqrt2));
        }
    }
}

void tc_cpu_gelu_backward(tc_backend *b, tc_act *dinp, const tc_act *inp, const tc_act *dout,
                          size_t n, tc_activation kind) {
    float *dx = TC_F(dinp);
    const float *x = TC_CF(inp), *dy = TC_CF(dout);
    int nt = tc_cpu_threads(b);
    if (kind == TC_QUICK_GELU) {
#pragma omp parallel for schedule(static) num_threads(nt) if (n > TC_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            float s = 1.0f / (1.0f + expf(-k_quick * v));
            dx[i] = dy[i] * (s + k_quick * v * s * (1.0f - s));
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(nt) if (n > TC_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            float cdf = 0.5f * (1.0f + erff(v * k_inv_sqrt2));
            float pdf = k_inv_sqrt_2pi * expf(-0.5f * v * v);
            dx[i] = dy[i] * (cdf + v * pdf);
        }
    }
}
