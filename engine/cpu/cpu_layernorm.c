/* LayerNorm over the last dim C of N rows, eps 1e-5, biased variance, as
 * torch.nn.LayerNorm:
 *   mean = sum x / C,  var = sum (x - mean)^2 / C,  rstd = 1 / sqrt(var + eps)
 *   out  = (x - mean) rstd w + bias
 * statistics are accumulated in double (8 fixed lanes) per row and saved as
 * fp32. backward, with xhat = (x - mean) rstd and g = dout w:
 *   dinp += rstd (g - mean(g) - xhat mean(g xhat))       (rows in parallel)
 *   dw   += sum_rows dout xhat,  dbias += sum_rows dout  (column blocks in
 *   parallel, rows in order, so the sums do not depend on the thread count) */
#include <math.h>

#include "cpu_internal.h"
#include "cpu_simd.h"

#define TC_LN_EPS 1e-5
#define TC_LN_COL_BLOCK 64

TC_CPU_CLONES
void tc_cpu_layernorm_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                              const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                              int C) {
    TC_CPU_DIMS(b, "layernorm_forward", N, C);
    float *o = TC_F(out);
    const float *x = TC_CF(inp), *wt = TC_CF(w), *bs = TC_CF(bias);
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt) if ((size_t)N * C > 65536)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *orow = o + (size_t)n * C;
        const double mu = tc_cpu_sum_f64(xr, C) / C;
        const double rs = 1.0 / sqrt(tc_cpu_sumsq_dev_f64(xr, C, mu) / C + TC_LN_EPS);
        const float m = (float)mu, r = (float)rs;
        if (bs) {
#pragma omp simd
            for (int i = 0; i < C; i++)
                orow[i] = (xr[i] - m) * r * wt[i] + bs[i];
        } else {
#pragma omp simd
            for (int i = 0; i < C; i++)
                orow[i] = (xr[i] - m) * r * wt[i];
        }
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = r;
    }
}

TC_CPU_CLONES
void tc_cpu_layernorm_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                               const tc_act *dout, const tc_act *inp, const tc_act *w,
                               const float *mean, const float *rstd, int N, int C) {
    TC_CPU_DIMS(b, "layernorm_backward", N, C);
    const float *dy = TC_CF(dout), *x = TC_CF(inp), *wt = TC_CF(w);
    int nt = tc_cpu_threads(b);
    if (dinp) {
        float *dx = TC_F(dinp);
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt) if ((size_t)N * C > 65536)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
            float *dxr = dx + (size_t)n * C;
            const float m = mean[n], r = rstd[n];
            /* sums of g and g xhat, a block of the row at a time */
            double sg = 0.0, sgx = 0.0;
            for (int c0 = 0; c0 < C; c0 += TC_LN_COL_BLOCK) {
                const int nb = C - c0 < TC_LN_COL_BLOCK ? C - c0 : TC_LN_COL_BLOCK;
                float g[TC_LN_COL_BLOCK], xh[TC_LN_COL_BLOCK];
#pragma omp simd
                for (int i = 0; i < nb; i++) {
                    g[i] = dyr[c0 + i] * wt[c0 + i];
                    xh[i] = (xr[c0 + i] - m) * r;
                }
                sg += tc_cpu_sum_f64(g, nb);
                sgx += tc_cpu_dot_f64(g, xh, nb);
            }
            const float mg = (float)(sg / C), mgx = (float)(sgx / C);
#pragma omp simd
            for (int i = 0; i < C; i++) {
                const float xhat = (xr[i] - m) * r;
                const float g = dyr[i] * wt[i];
                dxr[i] += r * (g - mg - xhat * mgx);
            }
        }
    }
    if (dw || dbias) {
        const int nblocks = (C + TC_LN_COL_BLOCK - 1) / TC_LN_COL_BLOCK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if ((size_t)N * C > 65536)
        for (int blk = 0; blk < nblocks; blk++) {
            const int i0 = blk * TC_LN_COL_BLOCK;
            const int nb = C - i0 < TC_LN_COL_BLOCK ? C - i0 : TC_LN_COL_BLOCK;
            float aw[TC_LN_COL_BLOCK], ab[TC_LN_COL_BLOCK];
            for (int i = 0; i < nb; i++) {
                aw[i] = dw ? dw[i0 + i] : 0.0f;
                ab[i] = dbias ? dbias[i0 + i] : 0.0f;
            }
            for (int n = 0; n < N; n++) {
                const float *xr = x + (size_t)n * C + i0, *dyr = dy + (size_t)n * C + i0;
                const float m = mean[n], r = rstd[n];
#pragma omp simd
                for (int i = 0; i < nb; i++) {
                    aw[i] += dyr[i] * ((xr[i] - m) * r);
                    ab[i] += dyr[i];
                }
            }
            for (int i = 0; i < nb; i++) {
                if (dw) dw[i0 + i] = aw[i];
                if (dbias) dbias[i0 + i] = ab[i];
            }
        }
    }
}
