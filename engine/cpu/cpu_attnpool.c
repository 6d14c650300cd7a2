/* the pooling ops of ResNet towers:
 *   avgpool            AvgPool2d(k) on NC planes (kernel = stride = k)
 *   attnpool_tokens    (B,D,HW) map -> (B,HW+1,D) tokens: the mean token
 *                      first, then the pixels, plus the positional embedding
 *   attention_query    one query per sample (the mean token's) over T keys,
 *                      softmax(q.k_j / sqrt(HS)) weighted values per head;
 *                      lse saved as in the full attention
 * one thread per plane, sample or (sample, head); every sum in a fixed order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "cpu_simd.h"

void tc_cpu_avgpool_forward(tc_backend *b, tc_act *out, const tc_act *inp, int NC, int H, int W,
                            int k) {
    if (NC <= 0 || k <= 0) return;
    const int Ho = H / k, Wo = W / k;
    const float inv = 1.0f / (float)(k * k);
    const float *x = TC_CF(inp);
    float *o = TC_F(out);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)NC * H * W > 65536)
    for (int p = 0; p < NC; p++) {
        const float *plane = x + (size_t)p * H * W;
        float *dst = o + (size_t)p * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float s = 0.0f;
                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++)
                        s += plane[(size_t)(oy * k + dy) * W + ox * k + dx];
                dst[oy * Wo + ox] = s * inv;
            }
    }
}

void tc_cpu_avgpool_backward(tc_backend *b, tc_act *dinp, const tc_act *dout, int NC, int H, int W,
                             int k) {
    if (NC <= 0 || k <= 0) return;
    const int Ho = H / k, Wo = W / k;
    const float inv = 1.0f / (float)(k * k);
    const float *dy = TC_CF(dout);
    float *dx = TC_F(dinp);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)NC * H * W > 65536)
    for (int p = 0; p < NC; p++) {
        const float *g = dy + (size_t)p * Ho * Wo;
        float *plane = dx + (size_t)p * H * W;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                plane[(size_t)y * W + x] = g[(y / k) * Wo + x / k] * inv;
    }
}

void tc_cpu_attnpool_tokens_forward(tc_backend *b, tc_act *x, const tc_act *feat, const tc_act *pos,
                                    int B, int D, int HW) {
    if (B <= 0 || D <= 0 || HW <= 0) return;
    const int T = HW + 1;
    const float *f = TC_CF(feat), *pe = TC_CF(pos);
    float *o = TC_F(x);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)B * D * HW > 65536)
    for (int bd = 0; bd < B * D; bd++) {
        const int bb = bd / D, d = bd % D;
        const float *plane = f + (size_t)bd * HW;
        float *tok = o + (size_t)bb * T * D + d;
        float s = 0.0f;
        for (int p = 0; p < HW; p++) {
            s += plane[p];
            tok[(size_t)(p + 1) * D] = plane[p] + pe[(size_t)(p + 1) * D + d];
        }
        tok[0] = s / (float)HW + pe[d];
    }
}

void tc_cpu_attnpool_tokens_backward(tc_backend *b, tc_act *dfeat, float *dpos, const tc_act *dx,
                                     int B, int D, int HW) {
    if (B <= 0 || D <= 0 || HW <= 0) return;
    const int T = HW + 1;
    const float *g = TC_CF(dx);
    float *df = TC_F(dfeat);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)B * D * HW > 65536)
    for (int bd = 0; bd < B * D; bd++) {
        const int bb = bd / D, d = bd % D;
        const float *tok = g + (size_t)bb * T * D + d;
        const float m = tok[0] / (float)HW;
        float *plane = df + (size_t)bd * HW;
        for (int p = 0; p < HW; p++)
            plane[p] = tok[(size_t)(p + 1) * D] + m;
    }
    /* dpos[t,d] += sum over the samples in order: one thread per column */
#pragma omp parallel for schedule(static) num_threads(nt) if ((size_t)B * D * HW > 65536)
    for (int d = 0; d < D; d++)
        for (int t = 0; t < T; t++) {
            float s = dpos[(size_t)t * D + d];
            for (int bb = 0; bb < B; bb++)
                s += g[((size_t)bb * T + t) * D + d];
            dpos[(size_t)t * D + d] = s;
        }
}

/* s[j] = scale q.k_j for the T keys of one head (rows of stride A) */
static void head_scores(float *s, const float *q, const float *k, int T, int HS, size_t A,
                        float scale) {
    for (int j = 0; j < T; j++) {
        const float *kj = k + (size_t)j * A;
        float acc = 0.0f;
        for (int d = 0; d < HS; d++)
            acc += q[d] * kj[d];
        s[j] = acc * scale;
    }
}

void tc_cpu_attention_query_forward(tc_backend *b, tc_act *out, float *lse, const tc_act *q,
                                    const tc_act *k, const tc_act *v, int B, int T, int NH,
                                    int HS) {
    if (B <= 0 || T <= 0 || NH <= 0 || HS <= 0) return;
    const size_t A = (size_t)NH * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    const float *qq = TC_CF(q), *kk = TC_CF(k), *vv = TC_CF(v);
    float *o = TC_F(out);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel num_threads(nt) if ((size_t)B * NH * T * HS > 65536)
    {
        float *s = malloc((size_t)T * sizeof *s);
#pragma omp for schedule(static)
        for (int task = 0; task < B * NH; task++) {
            const int bb = task / NH, h = task % NH;
            float *orow = o + (size_t)bb * A + (size_t)h * HS;
            if (!s) { /* no scratch: make the failure visible to the NaN guard */
                for (int d = 0; d < HS; d++)
                    orow[d] = NAN;
                lse[task] = NAN;
                continue;
            }
            const float *kb = kk + (size_t)bb * T * A + (size_t)h * HS;
            const float *vb = vv + (size_t)bb * T * A + (size_t)h * HS;
            head_scores(s, qq + (size_t)bb * A + (size_t)h * HS, kb, T, HS, A, scale);
            float m = s[0];
            for (int j = 1; j < T; j++)
                m = s[j] > m ? s[j] : m;
            float sum = 0.0f;
            for (int j = 0; j < T; j++)
                sum += (s[j] = tc_cpu_expf(s[j] - m));
            const float inv = 1.0f / sum;
            for (int d = 0; d < HS; d++)
                orow[d] = 0.0f;
            for (int j = 0; j < T; j++) {
                const float p = s[j] * inv, *vj = vb + (size_t)j * A;
                for (int d = 0; d < HS; d++)
                    orow[d] += p * vj[d];
            }
            lse[task] = m + logf(sum);
        }
        free(s);
    }
}

void tc_cpu_attention_query_backward(tc_backend *b, tc_act *dq, tc_act *dk, tc_act *dv,
                                     const tc_act *dout, const tc_act *q, const tc_act *k,
                                     const tc_act *v, const tc_act *out, const float *lse, int B,
                                     int T, int NH, int HS) {
    if (B <= 0 || T <= 0 || NH <= 0 || HS <= 0) return;
    const size_t A = (size_t)NH * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    const float *qq = TC_CF(q), *kk = TC_CF(k), *vv = TC_CF(v), *dy = TC_CF(dout), *o = TC_CF(out);
    float *dqq = TC_F(dq), *dkk = TC_F(dk), *dvv = TC_F(dv);
    const int nt = tc_cpu_threads(b);
#pragma omp parallel num_threads(nt) if ((size_t)B * NH * T * HS > 65536)
    {
        float *s = malloc((size_t)T * sizeof *s);
#pragma omp for schedule(static)
        for (int task = 0; task < B * NH; task++) {
            const int bb = task / NH, h = task % NH;
            const size_t qo = (size_t)bb * A + (size_t)h * HS,
                         ko = (size_t)bb * T * A + (size_t)h * HS;
            if (!s) {
                for (int d = 0; d < HS; d++)
                    dqq[qo + d] = NAN;
                continue;
            }
            const float *qr = qq + qo, *g = dy + qo, *orow = o + qo;
            /* P_j = exp(s_j - lse), dP_j = dout.v_j, D = dout.out, dS_j = P_j (dP_j - D) */
            head_scores(s, qr, kk + ko, T, HS, A, scale);
            float D = 0.0f;
            for (int d = 0; d < HS; d++)
                D += g[d] * orow[d];
            for (int d = 0; d < HS; d++)
                dqq[qo + d] = 0.0f;
            for (int j = 0; j < T; j++) {
                const float *vj = vv + ko + (size_t)j * A, *kj = kk + ko + (size_t)j * A;
                float *dvj = dvv + ko + (size_t)j * A, *dkj = dkk + ko + (size_t)j * A;
                const float p = tc_cpu_expf(s[j] - lse[task]);
                float dp = 0.0f;
                for (int d = 0; d < HS; d++)
                    dp += g[d] * vj[d];
                const float ds = p * (dp - D) * scale;
                for (int d = 0; d < HS; d++) {
                    dvj[d] = p * g[d];
                    dkj[d] = ds * qr[d];
                    dqq[qo + d] += ds * kj[d];
                }
            }
        }
        free(s);
    }
}
