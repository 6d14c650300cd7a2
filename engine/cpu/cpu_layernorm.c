/* LayerNorm over the last dim C of N rows, eps 1e-5, biased variance, as
 * torch.nn.LayerNorm:
 *   mean = sum x / C,  var = sum (x - mean)^2 / C,  rstd = 1 / sqrt(var + eps)
 *   out  = (x - mean) rstd w + bias
 * statistics are accumulated in double per row and saved as fp32.
 * backward, with xhat = (x - mean) rstd and g = dout w:
 *   dinp += rstd (g - mean(g) - xhat mean(g xhat))       (rows in parallel)
 *   dw   += sum_rows dout xhat,  dbias += sum_rows dout  (column blocks in
 *   parallel, rows in order, so the sums do not depend on the thread count) */
#include <math.h>

#include "cpu_internal.h"

#define TC_LN_EPS 1e-5
#define TC_LN_COL_BLOCK 64

void tc_cpu_layernorm_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                              const tc_act *inp, const tc_act *w, const tc_act *bias, int N,
                              int C) {
    if (N <= 0 || C <= 0) return;
    float *o = TC_F(out);
    const float *x = TC_CF(inp), *wt = TC_CF(w), *bs = TC_CF(bias);
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * C > 16384)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *orow = o + (size_t)n * C;
        double s = 0.0;
        for (int i = 0; i < C; i++)
            s += xr[i];
        double mu = s / C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) {
            double d = xr[i] - mu;
            ss += d * d;
        }
        double rs = 1.0 / sqrt(ss / C + TC_LN_EPS);
        float m = (float)mu, r = (float)rs;
        for (int i = 0; i < C; i++) {
            float y = (xr[i] - m) * r * wt[i];
            orow[i] = bs ? y + bs[i] : y;
        }
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = r;
    }
}

void tc_cpu_layernorm_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                               const tc_act *dout, const tc_act *inp, const tc_act *w,
                               const float *mean, const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    const float *dy = TC_CF(dout), *x = TC_CF(inp), *wt = TC_CF(w);
    int nt = tc_cpu_threads(b);
    if (dinp) {
        float *dx = TC_F(dinp);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * C > 16384)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
            float *dxr = dx + (size_t)n * C;
            const float m = mean[n], r = rstd[n];
            double sg = 0.0, sgx = 0.0;
            for (int i = 0; i < C; i++) {
                float xhat = (xr[i] - m) * r;
                float g = dyr[i] * wt[i];
                sg += g;
                sgx += (double)g * xhat;
            }
            const float mg = (float)(sg / C), mgx = (float)(sgx / C);
            for (int i = 0; i < C; i++) {
                float xhat = (xr[i] - m) * r;
                float g = dyr[i] * wt[i];
                dxr[i] += r * (g - mg - xhat * mgx);
            }
        }
    }
    if (dw || dbias) {
        int nblocks = (C + TC_LN_COL_BLOCK - 1) / TC_LN_COL_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * C > 16384)
        for (int blk = 0; blk < nblocks; blk++) {
            int i0 = blk * TC_LN_COL_BLOCK;
            int i1 = i0 + TC_LN_COL_BLOCK < C ? i0 + TC_LN_COL_BLOCK : C;
            float aw[TC_LN_COL_BLOCK], ab[TC_LN_COL_BLOCK];
            for (int i = i0; i < i1; i++) {
                aw[i - i0] = dw ? dw[i] : 0.0f;
                ab[i - i0] = dbias ? dbias[i] : 0.0f;
            }
            for (int n = 0; n < N; n++) {
                const float *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
                const float m = mean[n], r = rstd[n];
                for (int i = i0; i < i1; i++) {
                    aw[i - i0] += dyr[i] * ((xr[i] - m) * r);
                    ab[i - i0] += dyr[i];
                }
            }
            for (int i = i0; i < i1; i++) {
                if (dw) dw[i] = aw[i - i0];
                if (dbias) dbias[i] = ab[i - i0];
            }
        }
    }
}
