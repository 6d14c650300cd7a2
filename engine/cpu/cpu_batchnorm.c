/* BatchNorm2d (+ ReLU) and the ReLU of a residual sum, NCHW.
 * a channel's N*HW values are N planes of HW; one thread per channel, its
 * sums in double over the planes in order (two passes: the mean, then the
 * squared deviations), so the statistics depend neither on the thread
 * count nor on the vector width. torch's rules:
 *   y = (x - mean) rstd w + bias, rstd = 1 / sqrt(var + 1e-5), var biased
 *   running = (1 - 0.1) running + 0.1 batch, the variance unbiased (n/(n-1))
 *   backward (batch statistics), g = dout (0 where the ReLU's output is 0):
 *     dbias += sum g, dw += sum g xhat,
 *     dx = w rstd (g - sum g / n - xhat sum (g xhat) / n) */
#include <math.h>

#include "cpu_internal.h"

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1

/* the statistics of channel c: batch (mode TRAIN/REPLAY) or running (EVAL) */
static void channel_stats(const float *x, float *running, int N, int C, int HW, int c,
                          tc_bn_mode mode, float *mean, float *rstd) {
    if (mode == TC_BN_EVAL) {
        *mean = running[c];
        *rstd = (float)(1.0 / sqrt((double)running[C + c] + BN_EPS));
        return;
    }
    const double n = (double)N * HW;
    double s = 0.0;
    for (int i = 0; i < N; i++) {
        const float *p = x + ((size_t)i * C + c) * HW;
        for (int j = 0; j < HW; j++)
            s += p[j];
    }
    const double m = s / n;
    double q = 0.0;
    for (int i = 0; i < N; i++) {
        const float *p = x + ((size_t)i * C + c) * HW;
        for (int j = 0; j < HW; j++) {
            const double d = p[j] - m;
            q += d * d;
        }
    }
    const double var = q / n;
    *mean = (float)m;
    *rstd = (float)(1.0 / sqrt(var + BN_EPS));
    if (mode == TC_BN_TRAIN) {
        const double unbiased = n > 1 ? q / (n - 1) : var;
        running[c] = (float)((1.0 - BN_MOMENTUM) * running[c] + BN_MOMENTUM * m);
        running[C + c] = (float)((1.0 - BN_MOMENTUM) * running[C + c] + BN_MOMENTUM * unbiased);
    }
}

void tc_cpu_batchnorm_forward(tc_backend *b, tc_act *out, float *mean, float *rstd, float *running,
                              const tc_act *inp, const tc_act *w, const tc_act *bias, int N, int C,
                              int HW, tc_bn_mode mode, int relu) {
    if (N <= 0 || C <= 0 || HW <= 0) return;
    const float *x = TC_CF(inp), *g = TC_CF(w), *bt = TC_CF(bias);
    float *y = TC_F(out);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if ((size_t)N * C * HW > 65536)
    for (int c = 0; c < C; c++) {
        float m, r;
        channel_stats(x, running, N, C, HW, c, mode, &m, &r);
        mean[c] = m;
        rstd[c] = r;
        const float scale = r * g[c], shift = bt[c];
        for (int i = 0; i < N; i++) {
            const size_t o = ((size_t)i * C + c) * HW;
            const float *p = x + o;
            float *q = y + o;
            if (relu) {
#pragma omp simd
                for (int j = 0; j < HW; j++) {
                    const float v = (p[j] - m) * scale + shift;
                    q[j] = v > 0.0f ? v : 0.0f;
                }
            } else {
#pragma omp simd
                for (int j = 0; j < HW; j++)
                    q[j] = (p[j] - m) * scale + shift;
            }
        }
    }
    if (mode == TC_BN_TRAIN) running[2 * C] += 1.0f;
}

void tc_cpu_batchnorm_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                               const tc_act *dout, const tc_act *inp, const tc_act *out,
                               const tc_act *w, const float *mean, const float *rstd, int N, int C,
                               int HW, int relu) {
    if (N <= 0 || C <= 0 || HW <= 0) return;
    const float *x = TC_CF(inp), *dy = TC_CF(dout), *y = TC_CF(out), *g = TC_CF(w);
    float *dx = TC_F(dinp);
    const int nt = tc_cpu_threads(b);
    const double n = (double)N * HW;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if ((size_t)N * C * HW > 65536)
    for (int c = 0; c < C; c++) {
        const float m = mean[c], r = rstd[c];
        double sg = 0.0, sgx = 0.0;
        for (int i = 0; i < N; i++) {
            const size_t o = ((size_t)i * C + c) * HW;
            for (int j = 0; j < HW; j++) {
                const float gv = relu && !(y[o + j] > 0.0f) ? 0.0f : dy[o + j];
                sg += gv;
                sgx += (double)gv * ((x[o + j] - m) * r);
            }
        }
        dbias[c] += (float)sg;
        dw[c] += (float)sgx;
        const float k = r * g[c], mg = (float)(sg / n), mgx = (float)(sgx / n);
        for (int i = 0; i < N; i++) {
            const size_t o = ((size_t)i * C + c) * HW;
            for (int j = 0; j < HW; j++) {
                const float gv = relu && !(y[o + j] > 0.0f) ? 0.0f : dy[o + j];
                const float xh = (x[o + j] - m) * r;
                dx[o + j] = k * (gv - mg - xh * mgx);
            }
        }
    }
}

void tc_cpu_add_relu_forward(tc_backend *b, tc_act *out, const tc_act *x, const tc_act *y,
                             size_t n) {
    const float *a = TC_CF(x), *c = TC_CF(y);
    float *o = TC_F(out);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const float v = a[i] + c[i];
        o[i] = v > 0.0f ? v : 0.0f;
    }
}

void tc_cpu_relu_backward(tc_backend *b, tc_act *dx, const tc_act *out, const tc_act *dout,
                          size_t n) {
    const float *y = TC_CF(out), *dy = TC_CF(dout);
    float *d = TC_F(dx);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        d[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
