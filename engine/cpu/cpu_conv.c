/* 2-D convolution without bias (the ResNet towers' convs), NCHW, as im2col +
 * cblas_sgemm per sample:
 *   forward   col (C*K*K, Ho*Wo) = im2col(inp[n]); out[n] (OC, HoWo) = w (OC, CKK) col
 *   dw       += dout[n] (OC, HoWo) col^T, the samples in order
 *   dinp[n]   = col2im(w^T (CKK, OC) dout[n])
 * a 1x1 convolution with stride 1 and no padding needs no col: it is inp[n].
 * with at least as many samples as threads, each thread takes whole samples
 * with its own col buffer and a single-threaded sgemm (OpenBLAS runs
 * single-threaded inside a parallel region); otherwise samples go one at a
 * time through a threaded sgemm. an output element's sum does not depend on
 * which path computed it. dw accumulates sample after sample in one order,
 * whatever the thread count. */
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

static int is_pointwise(const conv_shape *s) { return s->K == 1 && s->S == 1 && s->P == 0; }

/* col (C*K*K, Ho*Wo), row (c, ky, kx): the input pixel each output pixel
 * reads through that tap, 0 in the padding */
static void im2col(float *col, const float *x, const conv_shape *s, int threads) {
    const int KK = s->K * s->K, HoWo = s->Ho * s->Wo;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int r = 0; r < s->C * KK; r++) {
        const int c = r / KK, ky = r % KK / s->K, kx = r % s->K;
        const float *plane = x + (size_t)c * s->H * s->W;
        float *dst = col + (size_t)r * HoWo;
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
                    for (size_t i = 0; i < out_n; i++) o[(size_t)n * out_n + i] = NAN;
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
            for (size_t i = 0; i < out_n; i++) o[(size_t)n * out_n + i] = NAN;
            continue;
        }
        forward_sample(o + (size_t)n * out_n, x + (size_t)n * in_n, wt, col, &s, nt);
    }
    free(col);
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
    float *col = malloc(col_n * sizeof *col);
    if (!col) {
        /* no scratch: make the failure visible to the NaN guard */
        if (dw) dw[0] = NAN;
        if (dinp)
            for (size_t i = 0; i < (size_t)N * in_n; i++) TC_F(dinp)[i] = NAN;
        return;
    }
    /* dw (OC, CKK) += dout[n] (OC, HoWo) col[n]^T, sample after sample */
    for (int n = 0; dw && n < N; n++) {
        const float *bmat = x + (size_t)n * in_n;
        if (!is_pointwise(&s)) {
            im2col(col, bmat, &s, nt);
            bmat = col;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, CKK, HoWo, 1.0f,
                    dy + (size_t)n * out_n, HoWo, bmat, HoWo, 1.0f, dw, CKK);
    }
    if (!dinp) {
        free(col);
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
                    for (size_t i = 0; i < in_n; i++) dx[(size_t)n * in_n + i] = NAN;
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
