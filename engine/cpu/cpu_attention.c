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
 * every inner loop is lane-independent and every sum runs in a fixed order,
 * and a task owns its head's columns of out/dqkv, so results depend neither
 * on the thread count nor on the vector width (checked: AVX-512, AVX2 and
 * SSE2 builds give the same bits). */
#include <math.h>
#include <stdlib.h>

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

/* acc[0..TC_KB) = sum_{k0 <= k < k1} a[k] B[k, 0..TC_KB), B rows of stride ldb,
 * k in order */
TC_CPU_INLINE void block_sum(float *restrict acc, const float *restrict a, int k0, int k1,
                             const float *restrict B, size_t ldb) {
    tc_v16 s0 = {0};
    for (int k = k0; k < k1; k++)
        s0 += a[k] * TC_LOAD16(B + (size_t)k * ldb);
    *(tc_v16u *)acc = s0;
}

/* four adjacent blocks at once: acc[0..4 TC_KB) as four independent chains,
 * each lane summed in the same order as block_sum, so the bits are the same */
TC_CPU_INLINE void block_sum4(float *restrict acc, const float *restrict a, int k0, int k1,
                              const float *restrict B, size_t ldb) {
    tc_v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (int k = k0; k < k1; k++) {
        const float ak = a[k];
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
        block_sum4(acc, q, 0, HS, kt + j0, (size_t)ld);
        const int w = n - j0 < 4 * TC_KB ? n - j0 : 4 * TC_KB;
        for (int jj = 0; jj < w; jj++)
            s[j0 + jj] = acc[jj] * scale;
    }
    for (; j0 < n; j0 += TC_KB) {
        block_sum(acc, q, 0, HS, kt + j0, (size_t)ld);
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

/* out[0..HS) = scale sum_{k0 <= k < k1} a[k] B[k, 0..HS), B rows of stride ldb.
 * HS a multiple of TC_KB (64 in CLIP) keeps each 16-column block of the sum
 * in registers; other head sizes take the plain loop */
TC_CPU_INLINE void rowvec(float *restrict out, const float *restrict a, int k0, int k1,
                          const float *restrict B, size_t ldb, int HS, float scale) {
    if (HS % (4 * TC_KB) == 0) {
        for (int c0 = 0; c0 < HS; c0 += 4 * TC_KB) {
            float acc[4 * TC_KB];
            block_sum4(acc, a, k0, k1, B + c0, ldb);
            for (int c = 0; c < 4 * TC_KB; c++)
                out[c0 + c] = acc[c] * scale;
        }
        return;
    }
    if (HS % TC_KB == 0) {
        for (int c0 = 0; c0 < HS; c0 += TC_KB) {
            float acc[TC_KB];
            block_sum(acc, a, k0, k1, B + c0, ldb);
            for (int c = 0; c < TC_KB; c++)
                out[c0 + c] = acc[c] * scale;
        }
        return;
    }
    for (int c = 0; c < HS; c++)
        out[c] = 0.0f;
    for (int k = k0; k < k1; k++)
        axpy(out, a[k], B + (size_t)k * ldb, HS);
    for (int c = 0; c < HS; c++)
        out[c] *= scale;
}

/* dst (n, ld) = src (m, lds) transposed, m <= ld */
TC_CPU_INLINE void transpose(float *restrict dst, size_t ld, const float *restrict src, size_t lds,
                             int m, int n) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            dst[(size_t)j * ld + i] = src[(size_t)i * lds + j];
}

/* dst (HS, ld) = columns [0, HS) of the T rows of src (row stride lds),
 * transposed; columns T..ld of dst are zero */
TC_CPU_INLINE void gather_transposed(float *restrict dst, const float *restrict src, size_t lds,
                                     int T, int HS, int ld) {
    for (int j = 0; j < T; j++) {
        const float *row = src + (size_t)j * lds;
        for (int d = 0; d < HS; d++)
            dst[(size_t)d * ld + j] = row[d];
    }
    for (int d = 0; d < HS; d++)
        for (int j = T; j < ld; j++)
            dst[(size_t)d * ld + j] = 0.0f;
}

TC_CPU_CLONES
void tc_cpu_attention_forward(tc_backend *b, tc_act *out, float *lse, const tc_act *qkv, int B,
                              int T, int NH, int HS, int causal) {
    if (B <= 0 || T <= 0 || NH <= 0 || HS <= 0) return;
    const float *x = TC_CF(qkv);
    float *o = TC_F(out);
    const size_t A = (size_t)NH * HS, row3 = 3 * A;
    const float scale = 1.0f / sqrtf((float)HS);
    const int ntasks = B * NH;
    int nt = tc_cpu_threads(b);
#pragma omp parallel num_threads(nt) if (ntasks > 1 && (size_t)B * T * T * A > 65536)
    {
        /* kt (HS,ld) | scores (ld) */
        const int ld = (T + TC_KB - 1) / TC_KB * TC_KB;
        float *buf = malloc(((size_t)HS * ld + ld) * sizeof(float));
#pragma omp for schedule(static)
        for (int task = 0; task < ntasks; task++) {
            const int bb = task / NH, h = task % NH;
            const float *base = x + (size_t)bb * T * row3;
            float *obase = o + (size_t)bb * T * A + (size_t)h * HS;
            float *lrow = lse + (size_t)task * T;
            if (!buf) { /* no scratch: make the failure visible to the NaN guard */
                for (int i = 0; i < T; i++) {
                    for (int d = 0; d < HS; d++)
                        obase[(size_t)i * A + d] = NAN;
                    lrow[i] = NAN;
                }
                continue;
            }
            float *kt = buf, *s = buf + (size_t)HS * ld;
            gather_transposed(kt, base + A + (size_t)h * HS, row3, T, HS, ld);
            for (int i = 0; i < T; i++) {
                const float *q = base + (size_t)i * row3 + (size_t)h * HS;
                const int jn = causal ? i + 1 : T;
                score_row(s, q, kt, HS, ld, jn, scale);
                float mx = s[0];
                for (int j = 1; j < jn; j++)
                    mx = s[j] > mx ? s[j] : mx;
#pragma omp simd
                for (int j = 0; j < jn; j++)
                    s[j] = tc_cpu_expf(s[j] - mx);
                float sum = 0.0f;
                for (int j = 0; j < jn; j++)
                    sum += s[j];
                rowvec(obase + (size_t)i * A, s, 0, jn, base + 2 * A + (size_t)h * HS, row3, HS,
                       1.0f / sum);
                lrow[i] = mx + logf(sum);
            }
        }
        free(buf);
    }
}

TC_CPU_CLONES
void tc_cpu_attention_backward(tc_backend *b, tc_act *dqkv, const tc_act *dout, const tc_act *qkv,
                               const tc_act *out, const float *lse, int B, int T, int NH, int HS,
                               int causal) {
    if (B <= 0 || T <= 0 || NH <= 0 || HS <= 0) return;
    const float *x = TC_CF(qkv), *dy = TC_CF(dout), *o = TC_CF(out);
    float *dx = TC_F(dqkv);
    const size_t A = (size_t)NH * HS, row3 = 3 * A;
    const float scale = 1.0f / sqrtf((float)HS);
    const int ntasks = B * NH;
    int nt = tc_cpu_threads(b);
#pragma omp parallel num_threads(nt) if (ntasks > 1 && (size_t)B * T * T * A > 65536)
    {
        /* kt, vt (HS,ld) | p, ds (T,ld) | pt, dst (T,ld): the transposes */
        const int ld = (T + TC_KB - 1) / TC_KB * TC_KB;
        const size_t tl = (size_t)ld * HS, tt = (size_t)T * ld;
        float *buf = malloc((2 * tl + 4 * tt) * sizeof(float));
#pragma omp for schedule(static)
        for (int task = 0; task < ntasks; task++) {
            const int bb = task / NH, h = task % NH;
            const size_t hq = (size_t)h * HS, hk = A + hq, hv = 2 * A + hq;
            const float *base = x + (size_t)bb * T * row3;
            float *dbase = dx + (size_t)bb * T * row3;
            const float *dyb = dy + (size_t)bb * T * A + hq;
            const float *ob = o + (size_t)bb * T * A + hq;
            const float *lrow = lse + (size_t)task * T;
            if (!buf) { /* no scratch: make the failure visible to the NaN guard */
                for (int j = 0; j < T; j++)
                    for (int d = 0; d < HS; d++)
                        dbase[(size_t)j * row3 + hq + d] = dbase[(size_t)j * row3 + hk + d] =
                            dbase[(size_t)j * row3 + hv + d] = NAN;
                continue;
            }
            float *kt = buf, *vt = kt + tl, *p = vt + tl, *ds = p + tt, *pt = ds + tt;
            float *dst = pt + tt;
            gather_transposed(kt, base + hk, row3, T, HS, ld);
            gather_transposed(vt, base + hv, row3, T, HS, ld);
            /* P and dS row by row; masked entries are 0 so that the
             * transposed products below can run over whole columns */
            for (int i = 0; i < T; i++) {
                const float *dyr = dyb + (size_t)i * A, *orow = ob + (size_t)i * A;
                float *pr = p + (size_t)i * ld, *dr = ds + (size_t)i * ld;
                const int jn = causal ? i + 1 : T;
                const float li = lrow[i];
                float D = 0.0f;
                for (int d = 0; d < HS; d++)
                    D += dyr[d] * orow[d];
                score_row(pr, base + (size_t)i * row3 + hq, kt, HS, ld, jn, scale);
                score_row(dr, dyr, vt, HS, ld, jn, 1.0f);
#pragma omp simd
                for (int j = 0; j < jn; j++) {
                    pr[j] = tc_cpu_expf(pr[j] - li);
                    dr[j] = pr[j] * (dr[j] - D);
                }
                for (int j = jn; j < T; j++)
                    pr[j] = dr[j] = 0.0f;
            }
            transpose(pt, ld, p, ld, T, T);
            transpose(dst, ld, ds, ld, T, T);
            for (int i = 0; i < T; i++) {
                /* dq_i = scale sum_j ds_ij k_j over j <= i (causal) */
                rowvec(dbase + (size_t)i * row3 + hq, ds + (size_t)i * ld, 0, causal ? i + 1 : T,
                       base + hk, row3, HS, scale);
            }
            for (int j = 0; j < T; j++) {
                /* dk_j = scale sum_i ds_ij q_i, dv_j = sum_i p_ij dout_i over i >= j (causal) */
                const int i0 = causal ? j : 0;
                rowvec(dbase + (size_t)j * row3 + hk, dst + (size_t)j * ld, i0, T, base + hq, row3,
                       HS, scale);
                rowvec(dbase + (size_t)j * row3 + hv, pt + (size_t)j * ld, i0, T, dyb, A, HS, 1.0f);
            }
        }
        free(buf);
    }
}
