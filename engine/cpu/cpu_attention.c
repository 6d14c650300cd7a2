/* multi-head scaled dot-product attention on the packed in_proj output.
 *   qkv (B,T,3A), A = NH HS: q of head h at columns h HS.., k at A + h HS..,
 *   v at 2A + h HS..; out (B,T,A) heads concatenated; lse (B,NH,T).
 * one task per (batch, head), rows processed one at a time with a T-long
 * score row in a per-thread buffer (probabilities are never stored):
 *   forward   s_j = scale q_i.k_j (j <= i when causal), m = max s,
 *             out_i = sum_j exp(s_j - m) v_j / sum_j exp(s_j - m),
 *             lse_i = m + log sum_j exp(s_j - m)
 *   backward  p_j = exp(s_j - lse_i) recomputed, D_i = dout_i.out_i,
 *             ds_j = p_j (dout_i.v_j - D_i),
 *             dq_i = scale sum_j ds_j k_j, dk_j += scale ds_j q_i, dv_j += p_j dout_i
 * a task owns its head's columns of out/dqkv, and dk/dv accumulate over rows
 * in order, so results do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"

static inline float dot_f32(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < n; d++)
        s += a[d] * b[d];
    return s;
}

/* y += a x */
static inline void axpy_f32(float *y, float a, const float *x, int n) {
#pragma omp simd
    for (int d = 0; d < n; d++)
        y[d] += a * x[d];
}

void tc_cpu_attention_forward(tc_backend *b, tc_act *out, float *lse, const tc_act *qkv, int B,
                              int T, int NH, int HS, int causal) {
    if (B <= 0 || T <= 0 || NH <= 0 || HS <= 0) return;
    const float *x = TC_CF(qkv);
    float *o = TC_F(out);
    const size_t A = (size_t)NH * HS, row3 = 3 * A;
    const float scale = 1.0f / sqrtf((float)HS);
    const int ntasks = B * NH;
    int nt = tc_cpu_threads(b);
#pragma omp parallel num_threads(nt) if (ntasks > 1)
    {
        /* scores (T) then the output accumulator (HS) */
        float *buf = malloc(((size_t)T + HS) * sizeof(float));
#pragma omp for schedule(static)
        for (int task = 0; task < ntasks; task++) {
            const int bb = task / NH, h = task % NH;
            const float *base = x + (size_t)bb * T * row3;
            float *obase = o + (size_t)bb * T * A + (size_t)h * HS;
            float *lrow = lse + (size_t)task * T;
            for (int i = 0; i < T; i++) {
                float *orow = obase + (size_t)i * A;
                if (!buf) { /* no scratch: make the failure visible to the NaN guard */
                    for (int d = 0; d < HS; d++)
                        orow[d] = NAN;
                    lrow[i] = NAN;
                    continue;
                }
                float *s = buf, *acc = buf + T;
                const float *q = base + (size_t)i * row3 + (size_t)h * HS;
                const int jn = causal ? i + 1 : T;
                float mx = -INFINITY;
                for (int j = 0; j < jn; j++) {
                    const float *k = base + (size_t)j * row3 + A + (size_t)h * HS;
                    s[j] = scale * dot_f32(q, k, HS);
                    if (s[j] > mx) mx = s[j];
                }
                float sum = 0.0f;
                for (int d = 0; d < HS; d++)
                    acc[d] = 0.0f;
                for (int j = 0; j < jn; j++) {
                    const float *v = base + (size_t)j * row3 + 2 * A + (size_t)h * HS;
                    float p = expf(s[j] - mx);
                    sum += p;
                    axpy_f32(acc, p, v, HS);
                }
                const float inv = 1.0f / sum;
                for (int d = 0; d < HS; d++)
                    orow[d] = acc[d] * inv;
                lrow[i] = mx + logf(sum);
            }
        }
        free(buf);
    }
}

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
#pragma omp parallel num_threads(nt) if (ntasks > 1)
    {
        /* probabilities (T) then the dq accumulator (HS) */
        float *buf = malloc(((size_t)T + HS) * sizeof(float));
#pragma omp for schedule(static)
        for (int task = 0; task < ntasks; task++) {
            const int bb = task / NH, h = task % NH;
            const size_t hq = (size_t)h * HS, hk = A + hq, hv = 2 * A + hq;
            const float *base = x + (size_t)bb * T * row3;
            float *dbase = dx + (size_t)bb * T * row3;
            const float *dyb = dy + (size_t)bb * T * A + hq;
            const float *ob = o + (size_t)bb * T * A + hq;
            const float *lrow = lse + (size_t)task * T;
            /* dk, dv of this head are sums over query rows: start from zero */
            for (int j = 0; j < T; j++)
                for (int d = 0; d < HS; d++) {
                    dbase[(size_t)j * row3 + hk + d] = 0.0f;
                    dbase[(size_t)j * row3 + hv + d] = 0.0f;
                }
            for (int i = 0; i < T; i++) {
                float *dq = dbase + (size_t)i * row3 + hq;
                if (!buf) {
                    for (int d = 0; d < HS; d++)
                        dq[d] = NAN;
                    continue;
                }
                float *p = buf, *acc = buf + T;
                const float *q = base + (size_t)i * row3 + hq;
                const float *dyr = dyb + (size_t)i * A;
                const int jn = causal ? i + 1 : T;
                const float li = lrow[i];
                const float D = dot_f32(dyr, ob + (size_t)i * A, HS);
                for (int j = 0; j < jn; j++) {
                    const float *k = base + (size_t)j * row3 + hk;
                    p[j] = expf(scale * dot_f32(q, k, HS) - li);
                }
                for (int d = 0; d < HS; d++)
                    acc[d] = 0.0f;
                for (int j = 0; j < jn; j++) {
                    const float *k = base + (size_t)j * row3 + hk;
                    const float *v = base + (size_t)j * row3 + hv;
                    float ds = p[j] * (dot_f32(dyr, v, HS) - D);
                    axpy_f32(acc, ds, k, HS);
                    axpy_f32(dbase + (size_t)j * row3 + hk, scale * ds, q, HS);
                    axpy_f32(dbase + (size_t)j * row3 + hv, p[j], dyr, HS);
                }
                for (int d = 0; d < HS; d++)
                    dq[d] = scale * acc[d];
            }
            if (!buf) /* dk, dv are zero, not garbage, but mark the head */
                for (int j = 0; j < T; j++)
                    dbase[(size_t)j * row3 + hk] = NAN;
        }
        free(buf);
    }
}
