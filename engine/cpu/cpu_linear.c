/* linear layers and the fp32 gemm, on cblas_sgemm (row-major).
 *   w_trans = 0: w (OC, C) nn.Linear layout, out = inp w^T + bias
 *   w_trans = 1: w (C, OC) projection layout, out = inp w
 * the bias rows are written first and sgemm accumulates onto them; the bias
 * gradient sums dout over rows with one thread per block of columns and the
 * rows in order, so it does not depend on the thread count (a whole block
 * keeps its 64 sums in four vector registers; the order per column is the
 * same as the scalar loop's, so are the bits). */
#include <cblas.h>

#include <omp.h>
#include <string.h>

#include "cpu_internal.h"
#include "cpu_simd.h"

/* columns of dbias owned by one thread; a multiple of the SIMD width */
#define TC_CPU_COL_BLOCK 64

typedef float tc_lin_v16 __attribute__((vector_size(64), aligned(4)));

/* dbias[j0..j1) += sum over the N rows of dy[., j], rows in order */
TC_CPU_CLONES
static void bias_grad_block(float *dbias, const float *dy, int N, int OC, int j0, int j1) {
    if (j1 - j0 == TC_CPU_COL_BLOCK) {
        tc_lin_v16 a0 = *(const tc_lin_v16 *)(dbias + j0);
        tc_lin_v16 a1 = *(const tc_lin_v16 *)(dbias + j0 + 16);
        tc_lin_v16 a2 = *(const tc_lin_v16 *)(dbias + j0 + 32);
        tc_lin_v16 a3 = *(const tc_lin_v16 *)(dbias + j0 + 48);
        for (int n = 0; n < N; n++) {
            const float *row = dy + (size_t)n * OC + j0;
            a0 += *(const tc_lin_v16 *)row, a1 += *(const tc_lin_v16 *)(row + 16);
            a2 += *(const tc_lin_v16 *)(row + 32), a3 += *(const tc_lin_v16 *)(row + 48);
        }
        *(tc_lin_v16 *)(dbias + j0) = a0, *(tc_lin_v16 *)(dbias + j0 + 16) = a1;
        *(tc_lin_v16 *)(dbias + j0 + 32) = a2, *(tc_lin_v16 *)(dbias + j0 + 48) = a3;
        return;
    }
    float acc[TC_CPU_COL_BLOCK];
    for (int j = j0; j < j1; j++)
        acc[j - j0] = dbias[j];
    for (int n = 0; n < N; n++) {
        const float *row = dy + (size_t)n * OC;
        for (int j = j0; j < j1; j++)
            acc[j - j0] += row[j];
    }
    for (int j = j0; j < j1; j++)
        dbias[j] = acc[j - j0];
}

/* out (n,OC) = bias + inp (n,C) . op(w): the bias rows are written first and
 * sgemm accumulates into them (beta 1), one pass over out instead of sgemm's
 * own beta-0 clearing pass plus a bias pass */
static void linear_forward_rows(float *o, const float *x, const float *w, const float *bs, int n,
                                int C, int OC, int w_trans) {
    float beta = 0.0f;
    if (bs) {
        for (int r = 0; r < n; r++)
            memcpy(o + (size_t)r * OC, bs, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, w_trans ? CblasNoTrans : CblasTrans, n, OC, C, 1.0f, x,
                C, w, w_trans ? OC : C, beta, o, OC);
}

void tc_cpu_linear_forward(tc_backend *b, tc_act *out, const tc_act *inp, const tc_act *w,
                           const tc_act *bias, int N, int C, int OC, int w_trans) {
    TC_CPU_DIMS(b, "linear_forward", N, OC);
    float *o = TC_F(out);
    if (C <= 0) {
        /* empty product: out = bias (or 0) */
        for (int n = 0; n < N; n++)
            for (int j = 0; j < OC; j++)
                o[(size_t)n * OC + j] = bias ? TC_CF(bias)[j] : 0.0f;
        return;
    }
    /* with two threads, each takes half of the rows (a multiple of 16) and
     * runs one single-threaded sgemm on them (OpenBLAS is single-threaded
     * inside a parallel region): no synchronisation inside the product, and
     * the bias rows a thread writes are the ones its product accumulates on.
     * a row's sums do not depend on which rows share the call, so the bits
     * are those of one call */
    const int nt = tc_cpu_threads(b);
    const float *x = TC_CF(inp), *wt = TC_CF(w), *bs = bias ? TC_CF(bias) : NULL;
    if (nt == 2 && N >= 64 && (double)N * C * OC > 1e6) {
        const int half = (N / 2 + 15) / 16 * 16;
#pragma omp parallel num_threads(2)
        {
            /* a team of one (a thread limit) does all rows */
            const int me = omp_get_thread_num(), team = omp_get_num_threads();
            const int r0 = team == 1 || me == 0 ? 0 : half, r1 = team == 1 || me == 1 ? N : half;
            linear_forward_rows(o + (size_t)r0 * OC, x + (size_t)r0 * C, wt, bs, r1 - r0, C, OC,
                                w_trans);
        }
        return;
    }
    float beta = 0.0f;
    if (bs) {
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)N * OC > 32768)
        for (int n = 0; n < N; n++)
            memcpy(o + (size_t)n * OC, bs, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, w_trans ? CblasNoTrans : CblasTrans, N, OC, C, 1.0f, x,
                C, wt, w_trans ? OC : C, beta, o, OC);
}

/* dinp (N,C) = dout (N,OC) . op(w) */
static void linear_backward_dinp(float *dx, const float *dy, const float *wt, int N, int C, int OC,
                                 int w_trans) {
    if (OC == 0) {
        for (size_t i = 0; i < (size_t)N * C; i++)
            dx[i] = 0.0f;
    } else if (w_trans) {
        /* dinp (N,C) = dout (N,OC) . w^T, w (C,OC) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C, OC, 1.0f, dy, OC, wt, OC, 0.0f,
                    dx, C);
    } else {
        /* dinp (N,C) = dout (N,OC) . w, w (OC,C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dy, OC, wt, C, 0.0f,
                    dx, C);
    }
}

/* dw += dout^T inp in w's layout */
static void linear_backward_dw(float *dw, const float *dy, const float *x, int N, int C, int OC,
                               int w_trans) {
    if (w_trans) {
        /* dw (C,OC) += inp^T (C,N) . dout (N,OC) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, OC, N, 1.0f, x, C, dy, OC, 1.0f, dw,
                    OC);
    } else {
        /* dw (OC,C) += dout^T (OC,N) . inp (N,C) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dy, OC, x, C, 1.0f, dw,
                    C);
    }
}

void tc_cpu_linear_backward(tc_backend *b, tc_act *dinp, float *dw, float *dbias,
                            const tc_act *dout, const tc_act *inp, const tc_act *w, int N, int C,
                            int OC, int w_trans) {
    if (N < 0 || C < 0 || OC < 0) return;
    const float *dy = TC_CF(dout), *x = TC_CF(inp), *wt = TC_CF(w);
    const int want_dx = dinp && N > 0 && C > 0, want_dw = dw && N > 0 && C > 0 && OC > 0;
    /* with two threads the two products (the same FLOPs) run side by side,
     * each on one thread (OpenBLAS runs single-threaded inside a parallel
     * region), instead of one after the other with OpenBLAS splitting each
     * product and synchronising its threads */
    const int side_by_side =
        tc_cpu_threads(b) == 2 && want_dx && want_dw && OC > 0 && (double)N * C * OC > 1e6;
    if (side_by_side) {
#pragma omp parallel num_threads(2)
        {
            /* a team of one (a thread limit) does both */
            const int me = omp_get_thread_num(), team = omp_get_num_threads();
            if (me == 0) linear_backward_dinp(TC_F(dinp), dy, wt, N, C, OC, w_trans);
            if (me == 1 || team == 1) linear_backward_dw(dw, dy, x, N, C, OC, w_trans);
        }
    } else {
        if (want_dx) linear_backward_dinp(TC_F(dinp), dy, wt, N, C, OC, w_trans);
        if (want_dw) linear_backward_dw(dw, dy, x, N, C, OC, w_trans);
    }
    if (dbias && OC > 0) {
        int nblocks = (OC + TC_CPU_COL_BLOCK - 1) / TC_CPU_COL_BLOCK;
        int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if ((size_t)N * OC > 32768)
        for (int blk = 0; blk < nblocks; blk++) {
            int j0 = blk * TC_CPU_COL_BLOCK;
            int j1 = j0 + TC_CPU_COL_BLOCK < OC ? j0 + TC_CPU_COL_BLOCK : OC;
            bias_grad_block(dbias, dy, N, OC, j0, j1);
        }
    }
}

void tc_cpu_gemm_f32(tc_backend *b, int trans_a, int trans_b, int M, int N, int K, float alpha,
                     const float *A, const float *B, float beta, float *C) {
    (void)b;
    TC_CPU_DIMS(b, "gemm_f32", M, N);
    if (K <= 0) {
        /* no product: C = beta C (beta 0 overwrites, as BLAS) */
        for (size_t i = 0; i < (size_t)M * N; i++)
            C[i] = beta == 0.0f ? 0.0f : beta * C[i];
        return;
    }
    /* op(A) (M,K): A stored (M,K) or, transposed, (K,M); likewise op(B) (K,N) */
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, trans_a ? M : K, B,
                trans_b ? K : N, beta, C, N);
}
