/* 2-D convolution without bias (the ResNet towers' convs), NCHW, as im2col +
 * cblas_sgemm:
 *   forward   col (C*K*K, Ho*Wo) = im2col(inp[n]); out[n] (OC, HoWo) = w (OC, CKK) col
 *   dinp[n]   = col2im(w^T (CKK, OC) dout[n])
 *   dw       += doutc (OC, nc*HoWo) colc^T over chunks of nc samples whose
 *               columns (and dout planes) are laid side by side: one sgemm
 *               with a long inner dimension per chunk instead of one small
 *               product per sample
 * a 1x1 convolution with stride 1 and no padding needs no col: it is inp[n].
 * forward and dinp: with at least as many samples as threads, each thread
 * takes whole samples with its own col buffer and a single-threaded sgemm
 * (OpenBLAS runs single-threaded inside a parallel region); otherwise the
 * samples go one at a time through a threaded sgemm. an output element's sum
 * does not depend on which path computed it. the chunk size depends on the
 * shape only, so dw's sums do not depend on the thread count. */
#include <cblas.h>

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

typedef struct {
    int C, H, W, OC, K, S, P, Ho, Wo;
} conv_shape;

static conv_shape shape_of(int C, int H, int W, int OC, int K, int S, int P) {
    conv_shape s = {C, H, W, OC, K, S, P, (H + 2 * P - K) / S + 1, (W + 2 * P - K) / S + 1};
    return s;
}

static int is_pointwise(const conv_shape *s) {
    return s->K == 1 && s->S == 1 && s->P == 0;
}

/* row r = (c, ky, kx) of one sample's col (Ho*Wo values): the input pixel
 * each output pixel reads through that tap, 0 in the padding */
static void im2col_row(float *dst, const float *x, const conv_shape *s, int r) {
    const int KK = s->K * s->K, c = r / KK, ky = r % KK / s->K, kx = r % s->K;
    const float *plane = x + (size_t)c * s->H * s->W;
    for (int oy = 0; oy < s->Ho; oy++) {
        const int iy = oy * s->S - s->P + ky;
        float *d = dst + (size_t)oy * s->Wo;
        if (iy < 0 || iy >= s->H) {
            memset(d, 0, (size_t)s->Wo * sizeof *d);
            continue;
        }
        const float *row = plane + (size_t)iy * s->W;
        for (int ox = 0; ox < s->Wo; ox++) {
            const int ix = ox * s->S - s->P + kx;
            d[ox] = ix >= 0 && ix < s->W ? row[ix] : 0.0f;
        }
    }
}

/* col (C*K*K, Ho*Wo) of one sample */
static void im2col(float *col, const float *x, const conv_shape *s, int threads) {
    const int KK = s->K * s->K, HoWo = s->Ho * s->Wo;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int r = 0; r < s->C * KK; r++)
        im2col_row(col + (size_t)r * HoWo, x, s, r);
}

/* dx (C,H,W) = the sum, over taps, of col's rows put back where im2col took
 * them. one thread per channel plane, the taps in (ky, kx) order */
static void col2im(float *dx, const float *col, const conv_shape *s, int threads) {
    const int KK = s->K * s->K, HoWo = s->Ho * s->Wo;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int c = 0; c < s->C; c++) {
        float *plane = dx + (size_t)c * s->H * s->W;
        memset(plane, 0, (size_t)s->H * s->W * sizeof *plane);
        for (int t = 0; t < KK; t++) {
            const int ky = t / s->K, kx = t % s->K;
            const float *src = col + ((size_t)c * KK + t) * HoWo;
            for (int oy = 0; oy < s->Ho; oy++) {
                const int iy = oy * s->S - s->P + ky;
                if (iy < 0 || iy >= s->H) continue;
                float *row = plane + (size_t)iy * s->W;
                const float *g = src + (size_t)oy * s->Wo;
                for (int ox = 0; ox < s->Wo; ox++) {
                    const int ix = ox * s->S - s->P + kx;
                    if (ix >= 0 && ix < s->W) row[ix] += g[ox];
                }
            }
        }
    }
}

/* out[n] = w col(inp[n]); col is scratch of CKK*HoWo floats (unused when pointwise) */
static void forward_sample(float *o, const float *x, const float *w, float *col,
                           const conv_shape *s, int im2col_threads) {
    const int CKK = s->C * s->K * s->K, HoWo = s->Ho * s->Wo;
    const float *bmat = x;
    if (!is_pointwise(s)) {
        im2col(col, x, s, im2col_threads);
        bmat = col;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->OC, HoWo, CKK, 1.0f, w, CKK, bmat,
                HoWo, 0.0f, o, HoWo);
}

void tc_cpu_conv2d_forward(tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w, int N,
                           int C, int H, int W, int OC, int K, int stride, int pad) {
    if (N <= 0 || OC <= 0) return;
    const conv_shape s = shape_of(C, H, W, OC, K, stride, pad);
    const size_t in_n = (size_t)C * H * W, out_n = (size_t)OC * s.Ho * s.Wo;
    const size_t col_n = is_pointwise(&s) ? 1 : (size_t)C * K * K * s.Ho * s.Wo;
    const float *x = TC_CF(inp), *wt = TC_CF(w);
    float *o = TC_F(out);
    const int nt = tc_cpu_threads(b);
    if (nt > 1 && N >= nt) {
#pragma omp parallel num_threads(nt)
        {
            float *col = malloc(col_n * sizeof *col);
#pragma omp for schedule(static)
            for (int n = 0; n < N; n++) {
                if (!col) { /* no scratch: make the failure visible to the NaN guard */
                    for (size_t i = 0; i < out_n; i++)
                        o[(size_t)n * out_n + i] = NAN;
                    continue;
                }
                forward_sample(o + (size_t)n * out_n, x + (size_t)n * in_n, wt, col, &s, 1);
            }
            free(col);
        }
        return;
    }
    float *col = malloc(col_n * sizeof *col);
    for (int n = 0; n < N; n++) {
        if (!col) {
            for (size_t i = 0; i < out_n; i++)
                o[(size_t)n * out_n + i] = NAN;
            continue;
        }
        forward_sample(o + (size_t)n * out_n, x + (size_t)n * in_n, wt, col, &s, nt);
    }
    free(col);
}

/* elements of one chunk's columns and dout planes */
#define TC_CONV_CHUNK_FLOATS ((size_t)8 << 20)

/* dw (OC, CKK) += sum over the samples of dout[n] col[n]^T: chunks of nc
 * samples, colc (CKK, nc*HoWo) and dc (OC, nc*HoWo), one sgemm each, the
 * chunks in order. false when the scratch cannot be allocated */
static int filter_grad(float *dw, const float *x, const float *dy, const conv_shape *s, int N,
                       int threads) {
    const int CKK = s->C * s->K * s->K, HoWo = s->Ho * s->Wo;
    const size_t per = (size_t)(CKK + s->OC) * HoWo, in_n = (size_t)s->C * s->H * s->W;
    int chunk = (int)(TC_CONV_CHUNK_FLOATS / per);
    chunk = chunk < 1 ? 1 : chunk > N ? N : chunk;
    float *colc = malloc((size_t)chunk * per * sizeof *colc);
    if (!colc) return 0;
    float *dc = colc + (size_t)chunk * CKK * HoWo;
    for (int n0 = 0; n0 < N; n0 += chunk) {
        const int nc = N - n0 < chunk ? N - n0 : chunk;
        const size_t ld = (size_t)nc * HoWo;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
        for (int task = 0; task < (CKK + s->OC) * nc; task++) {
            const int r = task / nc, n = n0 + task % nc;
            if (r < CKK)
                im2col_row(colc + (size_t)r * ld + (size_t)(n - n0) * HoWo, x + (size_t)n * in_n, s,
                           r);
            else
                memcpy(dc + (size_t)(r - CKK) * ld + (size_t)(n - n0) * HoWo,
                       dy + ((size_t)n * s->OC + (r - CKK)) * HoWo, (size_t)HoWo * sizeof *dc);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->OC, CKK, (int)ld, 1.0f, dc, (int)ld,
                    colc, (int)ld, 1.0f, dw, CKK);
    }
    free(colc);
    return 1;
}

/* dinp[n] = col2im(w^T dout[n]); gcol is scratch of CKK*HoWo floats */
static void dinp_sample(float *dx, const float *dy, const float *w, float *gcol,
                        const conv_shape *s, int col_threads) {
    const int CKK = s->C * s->K * s->K, HoWo = s->Ho * s->Wo;
    float *dst = is_pointwise(s) ? dx : gcol;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CKK, HoWo, s->OC, 1.0f, w, CKK, dy, HoWo,
                0.0f, dst, HoWo);
    if (!is_pointwise(s)) col2im(dx, gcol, s, col_threads);
}

void tc_cpu_conv2d_backward(tc_backend *b, tc_act *dinp, float *dw, const tc_act *dout,
                            const tc_act *inp, const tc_act *w, int N, int C, int H, int W, int OC,
                            int K, int stride, int pad) {
    if (N <= 0 || OC <= 0) return;
    const conv_shape s = shape_of(C, H, W, OC, K, stride, pad);
    const int CKK = C * K * K, HoWo = s.Ho * s.Wo;
    const size_t in_n = (size_t)C * H * W, out_n = (size_t)OC * HoWo;
    const size_t col_n = is_pointwise(&s) ? 1 : (size_t)CKK * HoWo;
    const float *x = TC_CF(inp), *dy = TC_CF(dout), *wt = TC_CF(w);
    const int nt = tc_cpu_threads(b);
    if (dw && !filter_grad(dw, x, dy, &s, N, nt)) {
        /* no scratch: make the failure visible to the NaN guard */
        dw[0] = NAN;
    }
    if (!dinp) return;
    float *col = malloc(col_n * sizeof *col);
    if (!col) {
        for (size_t i = 0; i < (size_t)N * in_n; i++)
            TC_F(dinp)[i] = NAN;
        return;
    }
    float *dx = TC_F(dinp);
    if (nt > 1 && N >= nt) {
        free(col);
#pragma omp parallel num_threads(nt)
        {
            float *gcol = malloc(col_n * sizeof *gcol);
#pragma omp for schedule(static)
            for (int n = 0; n < N; n++) {
                if (!gcol) {
                    for (size_t i = 0; i < in_n; i++)
                        dx[(size_t)n * in_n + i] = NAN;
                    continue;
                }
                dinp_sample(dx + (size_t)n * in_n, dy + (size_t)n * out_n, wt, gcol, &s, 1);
            }
            free(gcol);
        }
        return;
    }
    for (int n = 0; n < N; n++)
        dinp_sample(dx + (size_t)n * in_n, dy + (size_t)n * out_n, wt, col, &s, nt);
    free(col);
}
