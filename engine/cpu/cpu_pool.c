/* pooling of a (B,T,C) sequence into (B,C) features.
 *   argmax_rows   idx[b] = first position of the largest id in ids[b,:]
 *                 (torch.argmax on ints: the EOT position for CLIP text)
 *   pool_gather   out[b] = x[b, idx[b]] (idx NULL: position 0, the class token)
 *   pool_mean     out[b] = mean of x[b, 1..T-1] (vision pool_type 'avg')
 * the backwards accumulate (+=) into dx. an index outside [0,T) selects
 * nothing: the forward writes zeros and the backward adds nothing. */
#include "cpu_internal.h"

void tc_cpu_argmax_rows(tc_backend *b, int32_t *idx, const int32_t *ids, int B, int T) {
    (void)b;
    for (int bb = 0; bb < B; bb++) {
        const int32_t *row = ids + (size_t)bb * T;
        int best = 0;
        for (int t = 1; t < T; t++)
            if (row[t] > row[best]) best = t; /* strict: the first maximum wins */
        idx[bb] = best;
    }
}

void tc_cpu_pool_gather_forward(tc_backend *b, tc_act *out, const tc_act *x, const int32_t *idx,
                                int B, int T, int C) {
    (void)b;
    TC_CPU_DIMS(b, "pool_gather_forward", B, T, C);
    float *o = TC_F(out);
    const float *in = TC_CF(x);
    for (int bb = 0; bb < B; bb++) {
        const int t = idx ? idx[bb] : 0;
        float *dst = o + (size_t)bb * C;
        if (t < 0 || t >= T) {
            for (int c = 0; c < C; c++)
                dst[c] = 0.0f;
            continue;
        }
        const float *src = in + ((size_t)bb * T + t) * C;
        for (int c = 0; c < C; c++)
            dst[c] = src[c];
    }
}

void tc_cpu_pool_gather_backward(tc_backend *b, tc_act *dx, const tc_act *dout, const int32_t *idx,
                                 int B, int T, int C) {
    (void)b;
    TC_CPU_DIMS(b, "pool_gather_backward", B, T, C);
    float *g = TC_F(dx);
    const float *dy = TC_CF(dout);
    for (int bb = 0; bb < B; bb++) {
        const int t = idx ? idx[bb] : 0;
        if (t < 0 || t >= T) continue;
        float *dst = g + ((size_t)bb * T + t) * C;
        const float *src = dy + (size_t)bb * C;
        for (int c = 0; c < C; c++)
            dst[c] += src[c];
    }
}

void tc_cpu_pool_mean_forward(tc_backend *b, tc_act *out, const tc_act *x, int B, int T, int C) {
    TC_CPU_DIMS(b, "pool_mean_forward", B, T, C);
    float *o = TC_F(out);
    const float *in = TC_CF(x);
    int nt = tc_cpu_threads(b);
    /* T == 1 has no patch tokens: the mean of nothing is taken as 0 */
    const double inv = T > 1 ? 1.0 / (T - 1) : 0.0;
#pragma omp parallel for schedule(static) num_threads(nt) if ((long)B * T * C > 32768)
    for (int bb = 0; bb < B; bb++) {
        /* blocks of 64 columns, rows in order, double accumulators */
        for (int c0 = 0; c0 < C; c0 += 64) {
            const int c1 = c0 + 64 < C ? c0 + 64 : C;
            double s[64] = {0};
            for (int t = 1; t < T; t++) {
                const float *src = in + ((size_t)bb * T + t) * C;
                for (int c = c0; c < c1; c++)
                    s[c - c0] += src[c];
            }
            for (int c = c0; c < c1; c++)
                o[(size_t)bb * C + c] = (float)(s[c - c0] * inv);
        }
    }
}

void tc_cpu_pool_mean_backward(tc_backend *b, tc_act *dx, const tc_act *dout, int B, int T, int C) {
    if (B <= 0 || T <= 1 || C <= 0) return;
    float *g = TC_F(dx);
    const float *dy = TC_CF(dout);
    const float inv = (float)(1.0 / (T - 1));
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if ((long)B * T * C > 32768)
    for (int bb = 0; bb < B; bb++)
        for (int t = 1; t < T; t++) {
            float *dst = g + ((size_t)bb * T + t) * C;
            const float *src = dy + (size_t)bb * C;
            for (int c = 0; c < C; c++)
                dst[c] += src[c] * inv;
        }
}
