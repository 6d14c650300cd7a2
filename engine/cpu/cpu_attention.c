/* multi-head scaled dot-product attention on the packed in_proj output.
 *   qkv (B,T,3A), A = NH HS: q of head h at columns h HS.., k at A + h HS..,
 *   v at 2A + h HS..; out (B,T,A) heads concatenated; lse (B,NH,T).
 * one task per (batch, head). the task copies K (and V) of its head,
 * transposed to (HS, T) and padded to 16 keys, into a per-thread buffer, so
 * that 16 scores are one vector sum over HS kept in registers:
 *   forward   s_j = scale q_i.k_j (j <= i when causal), m = max s,
 *             out_i = sum_j exp(s_j - m) v_j / sum_j exp(s_j - m),
 *             lse_i = m + log sum_j exp(s_j - m)
 *             (probabilities only ever in a T-long row buffer: the interface
 *             keeps lse, not probabilities)
 *   backward  P_ij = exp(s_ij - lse_i) recomputed, dP_ij = dout_i.v_j,
 *             D_i = dout_i.out_i, dS_ij = P_ij (dP_ij - D_i) into (T,T)
 *             per-thread tiles; then dq_i = scale sum_j dS_ij k_j,
 *             dk_j = scale sum_i dS_ij q_i, dv_j = sum_i P_ij dout_i, each
 *             output row one register-blocked sum
 * query rows (and, in the products with P and dS, output rows) go four at a
 * time through register-blocked kernels (4 rows x 64 columns, 16 vector
 * accumulators), so each loaded key or value vector feeds four rows instead
 * of one; each row's sum keeps its own order over k, so the bits are those of
 * one row at a time.
 * every inner loop is lane-independent and every sum runs in a fixed order,
 * and a task owns its head's columns of out/dqkv, so results depend neither
 * on the thread count nor on the vector width (checked: AVX-512, AVX2 and
 * SSE2 builds give the same bits). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "cpu_simd.h"

/* keys are processed in blocks of TC_KB; the transposed copies are padded to
 * a multiple of it (with zeros) so that a block never reads past a row */
#define TC_KB 16

/* 16 floats as one value (one AVX-512 register, two AVX2 or four SSE ones),
 * so that the partial sums below stay in registers; loads are unaligned */
typedef float tc_v16 __attribute__((vector_size(64)));
typedef float tc_v16u __attribute__((vector_size(64), aligned(4)));

#define TC_LOAD16(p) (*(const tc_v16u *)(p))

/* acc[0..TC_KB) = sum_{k0 <= k < k1} a[k as] B[k, 0..TC_KB), B rows of stride
 * ldb, k in order (as 1: a is a row; as ld: a is a column of a (T,ld) tile) */
TC_CPU_INLINE void block_sum(float *restrict acc, const float *restrict a, size_t as, int k0,
                             int k1, const float *restrict B, size_t ldb) {
    tc_v16 s0 = {0};
    for (int k = k0; k < k1; k++)
        s0 += a[(size_t)k * as] * TC_LOAD16(B + (size_t)k * ldb);
    *(tc_v16u *)acc = s0;
}

/* four adjacent blocks at once: acc[0..4 TC_KB) as four independent chains,
 * each lane summed in the same order as block_sum, so the bits are the same */
TC_CPU_INLINE void block_sum4(float *restrict acc, const float *restrict a, size_t as, int k0,
                              int k1, const float *restrict B, size_t ldb) {
    tc_v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (int k = k0; k < k1; k++) {
        const float ak = a[(size_t)k * as];
        const float *restrict br = B + (size_t)k * ldb;
        s0 += ak * TC_LOAD16(br);
        s1 += ak * TC_LOAD16(br + TC_KB);
        s2 += ak * TC_LOAD16(br + 2 * TC_KB);
        s3 += ak * TC_LOAD16(br + 3 * TC_KB);
    }
    *(tc_v16u *)acc = s0;
    *(tc_v16u *)(acc + TC_KB) = s1;
    *(tc_v16u *)(acc + 2 * TC_KB) = s2;
    *(tc_v16u *)(acc + 3 * TC_KB) = s3;
}

/* s[0..n) = scale sum_d q[d] kt[d, 0..n), kt (HS, ld), ld a multiple of TC_KB */
TC_CPU_INLINE void score_row(float *restrict s, const float *restrict q, const float *restrict kt,
                             int HS, int ld, int n, float scale) {
    float acc[4 * TC_KB];
    int j0 = 0;
    for (; j0 < n && j0 + 4 * TC_KB <= ld; j0 += 4 * TC_KB) {
        block_sum4(acc, q, 1, 0, HS, kt + j0, (size_t)ld);
        const int w = n - j0 < 4 * TC_KB ? n - j0 : 4 * TC_KB;
        for (int jj = 0; jj < w; jj++)
            s[j0 + jj] = acc[jj] * scale;
    }
    for (; j0 < n; j0 += TC_KB) {
        block_sum(acc, q, 1, 0, HS, kt + j0, (size_t)ld);
        const int w = n - j0 < TC_KB ? n - j0 : TC_KB;
        for (int jj = 0; jj < w; jj++)
            s[j0 + jj] = acc[jj] * scale;
    }
}

/* y[0..n) += a x[0..n) */
TC_CPU_INLINE void axpy(float *restrict y, float a, const float *restrict x, int n) {
#pragma omp simd
    for (int d = 0; d < n; d++)
        y[d] += a * x[d];
}

/* out[0..HS) = scale sum_{k0 <= k < k1} a[k as] B[k, 0..HS), B rows of stride ldb.
 * HS a multiple of TC_KB (64 in CLIP) keeps each 16-column block of the sum
 * in registers; other head sizes take the plain loop */
TC_CPU_INLINE void rowvec(float *restrict out, const float *restrict a, size_t as, int k0, int k1,
                          const float *restrict B, size_t ldb, int HS, float scale) {
    if (HS % (4 * TC_KB) == 0) {
        for (int c0 = 0; c0 < HS; c0 += 4 * TC_KB) {
            float acc[4 * TC_KB];
            block_sum4(acc, a, as, k0, k1, B + c0, ldb);
            for (int c = 0; c < 4 * TC_KB; c++)
                out[c0 + c] = acc[c] * scale;
        }
        return;
    }
    if (HS % TC_KB == 0) {
        for (int c0 = 0; c0 < HS; c0 += TC_KB) {
            float acc[TC_KB];
            block_sum(acc, a, as, k0, k1, B + c0, ldb);
            for (int c = 0; c < TC_KB; c++)
                out[c0 + c] = acc[c] * scale;
        }
        return;
    }
    for (int c = 0; c < HS; c++)
        out[c] = 0.0f;
    for (int k = k0; k < k1; k++)
        axpy(out, a[(size_t)k * as], B + (size_t)k * ldb, HS);
    for (int c = 0; c < HS; c++)
        out[c] *= scale;
}

/* rows handled together by the register-blocked kernels below */
#define TC_QB 4

/* four rows of scores at once: s[r][j] = scale sum_d q[r][d] kt[d, j] for
 * j < n (n the widest row), in whole vectors: the rows (ld long) may get
 * columns beyond their own length, up to ld, which the caller ignores or
 * clears. each column is the sum of score_row,
 * in the same order, so the bits are the same */
TC_CPU_INLINE void score_rows4(float *const s[TC_QB], const float *const q[TC_QB],
                               const float *restrict kt, int HS, int ld, int n, float scale) {
    const float *restrict q0 = q[0], *restrict q1 = q[1], *restrict q2 = q[2], *restrict q3 = q[3];
    int j0 = 0;
    for (; j0 < n && j0 + 4 * TC_KB <= ld; j0 += 4 * TC_KB) {
        tc_v16 a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0},
               a13 = {0}, a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0}, a30 = {0}, a31 = {0},
               a32 = {0}, a33 = {0};
        for (int k = 0; k < HS; k++) {
            const float *restrict br = kt + (size_t)k * ld + j0;
            const tc_v16 b0 = TC_LOAD16(br), b1 = TC_LOAD16(br + TC_KB),
                         b2 = TC_LOAD16(br + 2 * TC_KB), b3 = TC_LOAD16(br + 3 * TC_KB);
            const float x0 = q0[k], x1 = q1[k], x2 = q2[k], x3 = q3[k];
            a00 += x0 * b0, a01 += x0 * b1, a02 += x0 * b2, a03 += x0 * b3;
            a10 += x1 * b0, a11 += x1 * b1, a12 += x1 * b2, a13 += x1 * b3;
            a20 += x2 * b0, a21 += x2 * b1, a22 += x2 * b2, a23 += x2 * b3;
            a30 += x3 * b0, a31 += x3 * b1, a32 += x3 * b2, a33 += x3 * b3;
        }
        /* whole vectors: j0 + 64 <= ld, and the rows are ld long */
        float *s0 = s[0] + j0, *s1 = s[1] + j0, *s2 = s[2] + j0, *s3 = s[3] + j0;
        *(tc_v16u *)s0 = a00 * scale, *(tc_v16u *)(s0 + TC_KB) = a01 * scale;
        *(tc_v16u *)(s0 + 2 * TC_KB) = a02 * scale, *(tc_v16u *)(s0 + 3 * TC_KB) = a03 * scale;
        *(tc_v16u *)s1 = a10 * scale, *(tc_v16u *)(s1 + TC_KB) = a11 * scale;
        *(tc_v16u *)(s1 + 2 * TC_KB) = a12 * scale, *(tc_v16u *)(s1 + 3 * TC_KB) = a13 * scale;
        *(tc_v16u *)s2 = a20 * scale, *(tc_v16u *)(s2 + TC_KB) = a21 * scale;
        *(tc_v16u *)(s2 + 2 * TC_KB) = a22 * scale, *(tc_v16u *)(s2 + 3 * TC_KB) = a23 * scale;
        *(tc_v16u *)s3 = a30 * scale, *(tc_v16u *)(s3 + TC_KB) = a31 * scale;
        *(tc_v16u *)(s3 + 2 * TC_KB) = a32 * scale, *(tc_v16u *)(s3 + 3 * TC_KB) = a33 * scale;
    }
    for (; j0 < n; j0 += TC_KB) {
        tc_v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int k = 0; k < HS; k++) {
            const tc_v16 b0 = TC_LOAD16(kt + (size_t)k * ld + j0);
            a0 += q0[k] * b0, a1 += q1[k] * b0, a2 += q2[k] * b0, a3 += q3[k] * b0;
        }
        *(tc_v16u *)(s[0] + j0) = a0 * scale, *(tc_v16u *)(s[1] + j0) = a1 * scale;
        *(tc_v16u *)(s[2] + j0) = a2 * scale, *(tc_v16u *)(s[3] + j0) = a3 * scale;
    }
}

/* one row's step of rowvec4_64: c<r>0..3 += a<r>[k] B[k, c0..c0+64) */
#define TC_ROW_STEP(r, k)                                                                          \
    do {                                                                                           \
        const float *restrict br_ = B + (size_t)(k)*ldb;                                           \
        const float x_ = a##r[(size_t)(k)*as];                                                     \
        c##r##0 += x_ * TC_LOAD16(br_), c##r##1 += x_ * TC_LOAD16(br_ + TC_KB);                    \
        c##r##2 += x_ * TC_LOAD16(br_ + 2 * TC_KB), c##r##3 += x_ * TC_LOAD16(br_ + 3 * TC_KB);    \
    } while (0)
#define TC_ROW_STORE(r)                                                                            \
    do {                                                                                           \
        float *restrict o_ = out[r] + c0;                                                          \
        *(tc_v16u *)o_ = c##r##0 * scale[r], *(tc_v16u *)(o_ + TC_KB) = c##r##1 * scale[r];        \
        *(tc_v16u *)(o_ + 2 * TC_KB) = c##r##2 * scale[r];                                         \
        *(tc_v16u *)(o_ + 3 * TC_KB) = c##r##3 * scale[r];                                         \
    } while (0)

/* four output rows at once, 64 columns from c0:
 * out[r][c0..c0+64) = scale[r] sum_{k0[r] <= k < k1[r]} a[r][k as] B[k, c0..c0+64).
 * the rows' ranges must overlap (max k0 <= min k1): the part only some rows
 * have runs row by row before and after the shared part, so every row adds
 * its terms in increasing k, as rowvec does */
TC_CPU_INLINE void rowvec4_64(float *const out[TC_QB], const float *const a[TC_QB], size_t as,
                              const int k0[TC_QB], const int k1[TC_QB], const float *restrict B,
                              size_t ldb, int c0, const float scale[TC_QB]) {
    const float *restrict a0 = a[0], *restrict a1 = a[1], *restrict a2 = a[2], *restrict a3 = a[3];
    int K0 = k0[0], K1 = k1[0];
    for (int r = 1; r < TC_QB; r++) {
        K0 = k0[r] > K0 ? k0[r] : K0;
        K1 = k1[r] < K1 ? k1[r] : K1;
    }
    B += c0;
    tc_v16 c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0},
           c20 = {0}, c21 = {0}, c22 = {0}, c23 = {0}, c30 = {0}, c31 = {0}, c32 = {0}, c33 = {0};
    for (int k = k0[0]; k < K0; k++)
        TC_ROW_STEP(0, k);
    for (int k = k0[1]; k < K0; k++)
        TC_ROW_STEP(1, k);
    for (int k = k0[2]; k < K0; k++)
        TC_ROW_STEP(2, k);
    for (int k = k0[3]; k < K0; k++)
        TC_ROW_STEP(3, k);
    for (int k = K0; k < K1; k++) {
        const float *restrict br = B + (size_t)k * ldb;
        const tc_v16 b0 = TC_LOAD16(br), b1 = TC_LOAD16(br + TC_KB), b2 = TC_LOAD16(br + 2 * TC_KB),
                     b3 = TC_LOAD16(br + 3 * TC_KB);
        const size_t ka = (size_t)k * as;
        const float x0 = a0[ka], x1 = a1[ka], x2 = a2[ka], x3 = a3[ka];
        c00 += x0 * b0, c01 += x0 * b1, c02 += x0 * b2, c03 += x0 * b3;
        c10 += x1 * b0, c11 += x1 * b1, c12 += x1 * b2, c13 += x1 * b3;
        c20 += x2 * b0, c21 += x2 * b1, c22 += x2 * b2, c23 += x2 * b3;
        c30 += x3 * b0, c31 += x3 * b1, c32 += x3 * b2, c33 += x3 * b3;
    }
    for (int k = K1; k < k1[0]; k++)
        TC_ROW_STEP(0, k);
    for (int k = K1; k < k1[1]; k++)
        TC_ROW_STEP(1, k);
    for (int k = K1; k < k1[2]; k++)
        TC_ROW_STEP(2, k);
    for (int k = K1; k < k1[3]; k++)
        TC_ROW_STEP(3, k);
    TC_ROW_STORE(0);
    TC_ROW_STORE(1);
    TC_ROW_STORE(2);
    TC_ROW_STORE(3);
}

/* rowvec for four rows: the blocked kernel where HS is a multiple of 64 and
 * the ranges overlap, else one row at a time (the same bits either way) */
TC_CPU_INLINE void rowvec4(float *const out[TC_QB], const float *const a[TC_QB], size_t as,
                           const int k0[TC_QB], const int k1[TC_QB], const float *restrict B,
                           size_t ldb, int HS, const float scale[TC_QB]) {
    int K0 = k0[0], K1 = k1[0];
    for (int r = 1; r < TC_QB; r++) {
        K0 = k0[r] > K0 ? k0[r] : K0;
        K1 = k1[r] < K1 ? k1[r] : K1;
    }
    if (HS % (4 * TC_KB) == 0 && K0 <= K1) {
        for (int c0 = 0; c0 < HS; c0 += 4 * TC_KB)
            rowvec4_64(out, a, as, k0, k1, B, ldb, c0, scale);
        return;
    }
    for (int r = 0; r < TC_QB; r++)
        rowvec(out[r], a[r], as, k0[r], k1[r], B, ldb, HS, scale[r]);
}

/* dst (HS, ld) = columns [0, HS) of the T rows of src (row stride lds),
 * transposed; columns T..ld of dst are zero */
TC_CPU_INLINE void gather_transposed(float *restrict dst, const float *restrict src, size_t lds,
                                     int T, int HS, int ld) {
    /* a column of src at a time: the T rows' lines stay in L1 for the next
     * 15 columns, their first reads are independent misses in flight
     * together, and the writes are sequential */
    for (int d = 0; d < HS; d++) {
        float *restrict out = dst + (size_t)d * ld;
        for (int j = 0; j < T; j++)
            out[j] = src[(size_t)j * lds + d];
    }
    for (int d = 0; d < HS; d++)
        for (int j = T; j < ld; j++)
            dst[(size_t)d * ld + j] = 0.0f;
}

TC_CPU_CLONES
void tc_cpu_attention_forward(tc_backend *b, tc_act *out, float *lse, const tc_act *qkv, int B,
                              int T, int NH, int HS, int causal) {
    TC_CPU_DIMS(b, "attention_forward", B, T, NH, HS);
    const float *x = TC_CF(qkv);
    float *o = TC_F(out);
    const size_t A = (size_t)NH * HS, row3 = 3 * A;
    const float scale = 1.0f / sqrtf((float)HS);
    const int ntasks = B * NH;
    int nt = tc_cpu_threads(b);
#pragma omp parallel num_threads(nt) if (ntasks > 1 && (size_t)B * T * T * A > 65536)
    {
        /* kt (HS,ld) | scores (TC_QB,ld) */
        const int ld = (T + TC_KB - 1) / TC_KB * TC_KB;
        float *buf = malloc(((size_t)HS * ld + (size_t)TC_QB * ld) * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntasks; task++) {
            const int bb = task / NH, h = task % NH;
            const float *base = x + (size_t)bb * T * row3;
            float *obase = o + (size_t)bb * T * A + (size_t)h * HS;
            float *lrow = lse + (size_t)task * T;
            if (!buf) { /* no scratch: the run stops at the next synchronize */
                tc_cpu_record(b, TC_ERR_OOM, "attention_forward: no memory for a %d-token scratch",
                              T);
                for (int i = 0; i < T; i++) {
                    memset(obase + (size_t)i * A, 0, (size_t)HS * sizeof(float));
                    lrow[i] = 0.0f;
                }
                continue;
            }
            float *kt = buf;
            gather_transposed(kt, base + A + (size_t)h * HS, row3, T, HS, ld);
            for (int i0 = 0; i0 < T; i0 += TC_QB) {
                const int R = T - i0 < TC_QB ? T - i0 : TC_QB;
                float *s[TC_QB], *orow[TC_QB];
                const float *q[TC_QB], *pr[TC_QB];
                int jn[TC_QB], zero[TC_QB] = {0};
                float inv[TC_QB];
                for (int r = 0; r < TC_QB; r++) {
                    const int i = i0 + (r < R ? r : R - 1); /* a short block repeats its last row */
                    s[r] = kt + (size_t)HS * ld + (size_t)r * ld;
                    q[r] = base + (size_t)i * row3 + (size_t)h * HS;
                    orow[r] = obase + (size_t)i * A;
                    jn[r] = causal ? i + 1 : T;
                    pr[r] = s[r];
                }
                if (R == TC_QB)
                    score_rows4(s, q, kt, HS, ld, jn[TC_QB - 1], scale);
                else
                    for (int r = 0; r < R; r++)
                        score_row(s[r], q[r], kt, HS, ld, jn[r], scale);
                /* the max and the sum of each row in its own order; the
                 * part all rows of the block share runs as R independent
                 * chains in one loop (a chain of dependent adds per row
                 * would wait on the add latency) */
                const int nmin = R == TC_QB ? (jn[0] < jn[R - 1] ? jn[0] : jn[R - 1]) : 0;
                float mx[TC_QB], sum[TC_QB];
                for (int r = 0; r < R; r++)
                    mx[r] = s[r][0], sum[r] = 0.0f;
                if (R == TC_QB) {
                    float m0 = mx[0], m1 = mx[1], m2 = mx[2], m3 = mx[3];
                    const float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
                    for (int j = 1; j < nmin; j++) {
                        m0 = s0[j] > m0 ? s0[j] : m0, m1 = s1[j] > m1 ? s1[j] : m1;
                        m2 = s2[j] > m2 ? s2[j] : m2, m3 = s3[j] > m3 ? s3[j] : m3;
                    }
                    mx[0] = m0, mx[1] = m1, mx[2] = m2, mx[3] = m3;
                }
                for (int r = 0; r < R; r++) {
                    float *sr = s[r];
                    const int n = jn[r];
                    for (int j = nmin > 1 ? nmin : 1; j < n; j++)
                        mx[r] = sr[j] > mx[r] ? sr[j] : mx[r];
                    const float m = mx[r];
#pragma omp simd
                    for (int j = 0; j < n; j++)
                        sr[j] = tc_cpu_expf(sr[j] - m);
                }
                if (R == TC_QB) {
                    float u0 = 0.0f, u1 = 0.0f, u2 = 0.0f, u3 = 0.0f;
                    const float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
                    for (int j = 0; j < nmin; j++)
                        u0 += s0[j], u1 += s1[j], u2 += s2[j], u3 += s3[j];
                    sum[0] = u0, sum[1] = u1, sum[2] = u2, sum[3] = u3;
                }
                for (int r = 0; r < R; r++) {
                    const float *sr = s[r];
                    for (int j = nmin; j < jn[r]; j++)
                        sum[r] += sr[j];
                    inv[r] = 1.0f / sum[r];
                    lrow[i0 + r] = mx[r] + logf(sum[r]);
                }
                if (R == TC_QB)
                    rowvec4(orow, pr, 1, zero, jn, base + 2 * A + (size_t)h * HS, row3, HS, inv);
                else
                    for (int r = 0; r < R; r++)
                        rowvec(orow[r], pr[r], 1, 0, jn[r], base + 2 * A + (size_t)h * HS, row3, HS,
                               inv[r]);
            }
        }
        free(buf);
    }
}

TC_CPU_CLONES
void tc_cpu_attention_backward(tc_backend *b, tc_act *dqkv, const tc_act *dout, const tc_act *qkv,
                               const tc_act *out, const float *lse, int B, int T, int NH, int HS,
                               int causal) {
    TC_CPU_DIMS(b, "attention_backward", B, T, NH, HS);
    const float *x = TC_CF(qkv), *dy = TC_CF(dout), *o = TC_CF(out);
    float *dx = TC_F(dqkv);
    const size_t A = (size_t)NH * HS, row3 = 3 * A;
    const float scale = 1.0f / sqrtf((float)HS);
    const int ntasks = B * NH;
    int nt = tc_cpu_threads(b);
#pragma omp parallel num_threads(nt) if (ntasks > 1 && (size_t)B * T * T * A > 65536)
    {
        /* kt, vt (HS,ld) | p, ds (T,ld) */
        const int ld = (T + TC_KB - 1) / TC_KB * TC_KB;
        const size_t tl = (size_t)ld * HS, tt = (size_t)T * ld;
        float *buf = malloc((2 * tl + 2 * tt) * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntasks; task++) {
            const int bb = task / NH, h = task % NH;
            const size_t hq = (size_t)h * HS, hk = A + hq, hv = 2 * A + hq;
            const float *base = x + (size_t)bb * T * row3;
            float *dbase = dx + (size_t)bb * T * row3;
            const float *dyb = dy + (size_t)bb * T * A + hq;
            const float *ob = o + (size_t)bb * T * A + hq;
            const float *lrow = lse + (size_t)task * T;
            if (!buf) { /* no scratch: the run stops at the next synchronize */
                tc_cpu_record(b, TC_ERR_OOM, "attention_backward: no memory for a %d-token scratch",
                              T);
                for (int j = 0; j < T; j++)
                    for (int d = 0; d < HS; d++)
                        dbase[(size_t)j * row3 + hq + d] = dbase[(size_t)j * row3 + hk + d] =
                            dbase[(size_t)j * row3 + hv + d] = 0.0f;
                continue;
            }
            float *kt = buf, *vt = kt + tl, *p = vt + tl, *ds = p + tt;
            gather_transposed(kt, base + hk, row3, T, HS, ld);
            gather_transposed(vt, base + hv, row3, T, HS, ld);
            /* P and dS, four rows at a time; masked entries are 0 so that the
             * transposed products below can run over whole columns */
            for (int i0 = 0; i0 < T; i0 += TC_QB) {
                const int R = T - i0 < TC_QB ? T - i0 : TC_QB;
                float *pr[TC_QB], *dr[TC_QB];
                const float *qr[TC_QB], *dyr[TC_QB];
                int jn[TC_QB];
                for (int r = 0; r < TC_QB; r++) {
                    const int i = i0 + (r < R ? r : R - 1);
                    pr[r] = p + (size_t)i * ld, dr[r] = ds + (size_t)i * ld;
                    qr[r] = base + (size_t)i * row3 + hq, dyr[r] = dyb + (size_t)i * A;
                    jn[r] = causal ? i + 1 : T;
                }
                if (R == TC_QB) {
                    score_rows4(pr, qr, kt, HS, ld, jn[TC_QB - 1], scale);
                    score_rows4(dr, dyr, vt, HS, ld, jn[TC_QB - 1], 1.0f);
                } else {
                    for (int r = 0; r < R; r++) {
                        score_row(pr[r], qr[r], kt, HS, ld, jn[r], scale);
                        score_row(dr[r], dyr[r], vt, HS, ld, jn[r], 1.0f);
                    }
                }
                /* D_i = dout_i . out_i, four rows as independent chains */
                float D[TC_QB] = {0.0f, 0.0f, 0.0f, 0.0f};
                if (R == TC_QB) {
                    const float *o0 = ob + (size_t)i0 * A, *o1 = o0 + A, *o2 = o1 + A, *o3 = o2 + A;
                    const float *y0 = dyr[0], *y1 = dyr[1], *y2 = dyr[2], *y3 = dyr[3];
                    float e0 = 0.0f, e1 = 0.0f, e2 = 0.0f, e3 = 0.0f;
                    for (int d = 0; d < HS; d++) {
                        e0 += y0[d] * o0[d], e1 += y1[d] * o1[d];
                        e2 += y2[d] * o2[d], e3 += y3[d] * o3[d];
                    }
                    D[0] = e0, D[1] = e1, D[2] = e2, D[3] = e3;
                } else {
                    for (int r = 0; r < R; r++) {
                        const float *orow = ob + (size_t)(i0 + r) * A;
                        for (int d = 0; d < HS; d++)
                            D[r] += dyr[r][d] * orow[d];
                    }
                }
                for (int r = 0; r < R; r++) {
                    float *prr = pr[r], *drr = dr[r];
                    const int n = jn[r];
                    const float li = lrow[i0 + r];
#pragma omp simd
                    for (int j = 0; j < n; j++) {
                        prr[j] = tc_cpu_expf(prr[j] - li);
                        drr[j] = prr[j] * (drr[j] - D[r]);
                    }
                    for (int j = n; j < T; j++)
                        prr[j] = drr[j] = 0.0f;
                }
            }
            /* dq_i = scale sum_j ds_ij k_j over j <= i (causal): rows of ds;
             * dk_j = scale sum_i ds_ij q_i, dv_j = sum_i p_ij dout_i over
             * i >= j (causal): columns of ds and p (stride ld) */
            int r0 = 0;
            for (; r0 + TC_QB <= T; r0 += TC_QB) {
                float *dq[TC_QB], *dk[TC_QB], *dv[TC_QB];
                const float *dsr[TC_QB], *dsc[TC_QB], *pc[TC_QB];
                int zero[TC_QB], jn[TC_QB], i0[TC_QB], tn[TC_QB];
                float sc[TC_QB], one[TC_QB];
                for (int r = 0; r < TC_QB; r++) {
                    const int i = r0 + r;
                    dq[r] = dbase + (size_t)i * row3 + hq;
                    dk[r] = dbase + (size_t)i * row3 + hk;
                    dv[r] = dbase + (size_t)i * row3 + hv;
                    dsr[r] = ds + (size_t)i * ld, dsc[r] = ds + i, pc[r] = p + i;
                    zero[r] = 0, jn[r] = causal ? i + 1 : T;
                    i0[r] = causal ? i : 0, tn[r] = T;
                    sc[r] = scale, one[r] = 1.0f;
                }
                rowvec4(dq, dsr, 1, zero, jn, base + hk, row3, HS, sc);
                rowvec4(dk, dsc, (size_t)ld, i0, tn, base + hq, row3, HS, sc);
                rowvec4(dv, pc, (size_t)ld, i0, tn, dyb, A, HS, one);
            }
            for (; r0 < T; r0++) {
                const int i = r0, ia = causal ? i : 0;
                rowvec(dbase + (size_t)i * row3 + hq, ds + (size_t)i * ld, 1, 0, causal ? i + 1 : T,
                       base + hk, row3, HS, scale);
                rowvec(dbase + (size_t)i * row3 + hk, ds + i, (size_t)ld, ia, T, base + hq, row3,
                       HS, scale);
                rowvec(dbase + (size_t)i * row3 + hv, p + i, (size_t)ld, ia, T, dyb, A, HS, 1.0f);
            }
        }
        free(buf);
    }
}
