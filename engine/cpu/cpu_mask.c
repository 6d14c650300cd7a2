/* structured-mask ops for automatic inheritance (docs/method.md §3.3):
 * column masks (hidden dims, heads as groups of HS columns, MLP units) and
 * the "compressed" LayerNorm whose statistics cover the kept columns only.
 * dz sums run over rows in order inside a column block, so they do not depend
 * on the thread count. */
#include <math.h>

#include "cpu_internal.h"

#define TC_LN_EPS 1e-5
#define TC_MASK_COL_BLOCK 64

void tc_cpu_mask_cols_forward(tc_backend *b, tc_act *out, const tc_act *x, const float *z, int N,
                              int C, int group) {
    float *o = TC_F(out);
    const float *xi = TC_CF(x);
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * C > 16384)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            o[(size_t)n * C + c] = xi[(size_t)n * C + c] * z[c / group];
}

void tc_cpu_mask_cols_backward(tc_backend *b, tc_act *dx, float *dz, const tc_act *dout,
                               const tc_act *x, const float *z, int N, int C, int group) {
    const float *dy = TC_CF(dout), *xi = TC_CF(x);
    float *dxo = TC_F(dx);
    int nt = tc_cpu_threads(b);
    /* dz first: dx may alias dout */
    if (dz) {
        int groups = C / group;
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * C > 16384)
        for (int g = 0; g < groups; g++) {
            double s = 0.0;
            for (int n = 0; n < N; n++)
                for (int c = g * group; c < (g + 1) * group; c++)
                    s += (double)dy[(size_t)n * C + c] * xi[(size_t)n * C + c];
            dz[g] += (float)s;
        }
    }
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * C > 16384)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            dxo[(size_t)n * C + c] = dy[(size_t)n * C + c] * z[c / group];
}

void tc_cpu_layernorm_masked_forward(tc_backend *b, tc_act *out, float *mean, float *rstd,
                                     const tc_act *inp, const tc_act *w, const tc_act *bias,
                                     const float *mask, int N, int C) {
    float *o = TC_F(out);
    const float *x = TC_CF(inp), *wt = TC_CF(w), *bs = TC_CF(bias);
    int kept = 0;
    for (int i = 0; i < C; i++)
        kept += mask[i] != 0.0f;
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * C > 16384)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *orow = o + (size_t)n * C;
        double s = 0.0, ss = 0.0;
        for (int i = 0; i < C; i++)
            if (mask[i] != 0.0f) s += xr[i];
        double mu = kept ? s / kept : 0.0;
        for (int i = 0; i < C; i++)
            if (mask[i] != 0.0f) ss += (xr[i] - mu) * (xr[i] - mu);
        double rs = 1.0 / sqrt((kept ? ss / kept : 0.0) + TC_LN_EPS);
        float m = (float)mu, r = (float)rs;
        for (int i = 0; i < C; i++)
            orow[i] = mask[i] != 0.0f ? (xr[i] - m) * r * wt[i] + (bs ? bs[i] : 0.0f) : 0.0f;
        mean[n] = m;
        rstd[n] = r;
    }
}

void tc_cpu_layernorm_masked_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                                      const tc_act *dout, const tc_act *inp, const tc_act *w,
                                      const float *mean, const float *rstd, const float *mask,
                                      int N, int C) {
    const float *dy = TC_CF(dout), *x = TC_CF(inp), *wt = TC_CF(w);
    int kept = 0;
    for (int i = 0; i < C; i++)
        kept += mask[i] != 0.0f;
    if (kept == 0) return;
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
                if (mask[i] == 0.0f) continue;
                float xhat = (xr[i] - m) * r, g = dyr[i] * wt[i];
                sg += g;
                sgx += (double)g * xhat;
            }
            const float mg = (float)(sg / kept), mgx = (float)(sgx / kept);
            for (int i = 0; i < C; i++) {
                if (mask[i] == 0.0f) continue;
                float xhat = (xr[i] - m) * r, g = dyr[i] * wt[i];
                dxr[i] += r * (g - mg - xhat * mgx);
            }
        }
    }
    if (!dw && !dbias) return;
    int nblocks = (C + TC_MASK_COL_BLOCK - 1) / TC_MASK_COL_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * C > 16384)
    for (int blk = 0; blk < nblocks; blk++) {
        int i0 = blk * TC_MASK_COL_BLOCK;
        int i1 = i0 + TC_MASK_COL_BLOCK < C ? i0 + TC_MASK_COL_BLOCK : C;
        for (int i = i0; i < i1; i++) {
            if (mask[i] == 0.0f) continue;
            double sw = 0.0, sb = 0.0;
            for (int n = 0; n < N; n++) {
                float d = dy[(size_t)n * C + i];
                sw += (double)d * ((x[(size_t)n * C + i] - mean[n]) * rstd[n]);
                sb += d;
            }
            if (dw) dw[i] += (float)sw;
            if (dbias) dbias[i] += (float)sb;
        }
    }
}
