/* optimizer ops: gradient norm, clip coefficient, AdamW.
 *   sum_squares   double partial sums over a fixed partition (TC_SQ_CHUNKS
 *                 chunks, 8 lanes each), combined in order: the same bits for
 *                 any thread count
 *   clip          torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6),
 *                 clamped to 1 (NaN stays NaN so the NaN guard sees it)
 *   adamw         torch.optim.AdamW, _single_tensor_adam, in its operation order:
 *                 p *= 1 - lr wd;  m = lerp(m, g, 1 - beta1);
 *                 v = v beta2 + (1 - beta2) g g;
 *                 denom = sqrt(v) / sqrt(1 - beta2^step) + eps;
 *                 p += -(lr / (1 - beta1^step)) m / denom
 *                 scalars in double (Python floats), tensors in fp32. */
#include <math.h>

#include "cpu_internal.h"

#define TC_SQ_CHUNKS 64
#define TC_SQ_LANES 8

/* sum of squares of x[0..n) in 8 fixed lanes, then the lanes in order */
static double sum_squares_chunk(const float *x, size_t n) {
    double lane[TC_SQ_LANES] = {0};
    size_t i = 0;
    for (; i + TC_SQ_LANES <= n; i += TC_SQ_LANES)
        for (int k = 0; k < TC_SQ_LANES; k++)
            lane[k] += (double)x[i + k] * x[i + k];
    for (; i < n; i++)
        lane[0] += (double)x[i] * x[i];
    double s = 0.0;
    for (int k = 0; k < TC_SQ_LANES; k++)
        s += lane[k];
    return s;
}

void tc_cpu_sum_squares(tc_backend *b, float *out, const float *g, size_t n) {
    double part[TC_SQ_CHUNKS];
    /* chunk boundaries depend on n only, never on the thread count */
    const size_t per = (n + TC_SQ_CHUNKS - 1) / TC_SQ_CHUNKS;
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 65536)
    for (int k = 0; k < TC_SQ_CHUNKS; k++) {
        size_t lo = (size_t)k * per, hi = lo + per;
        if (lo > n) lo = n;
        if (hi > n) hi = n;
        part[k] = sum_squares_chunk(g + lo, hi - lo);
    }
    double s = 0.0;
    for (int k = 0; k < TC_SQ_CHUNKS; k++)
        s += part[k];
    out[0] = (float)s;
}

void tc_cpu_clip_coefficient(tc_backend *b, float *scale, const float *sum_sq, float max_norm) {
    (void)b;
    const float total = sqrtf(sum_sq[0]);
    float coef = max_norm / (total + 1e-6f);
    if (coef > 1.0f) coef = 1.0f;
    scale[0] = coef;
}

/* torch.lerp for fp32: the form depends on whether the weight is below 0.5 */
static inline float lerp_f32(float self, float end, float w) {
    return fabsf(w) < 0.5f ? self + w * (end - self) : end - (end - self) * (1.0f - w);
}

void tc_cpu_adamw_update(tc_backend *b, float *params, const float *grads, float *m, float *v,
                         tc_act *compute, const tc_param_segment *segs, int nseg,
                         tc_adamw_hparams hp, const float *grad_scale) {
    if (nseg <= 0 || !segs) return;
    if (hp.gate && hp.gate[0] == 0.0f) return;
    const int step = hp.gate ? (int)hp.gate[1] : hp.step;
    const double lr = hp.lr, beta1 = hp.beta1, beta2 = hp.beta2;
    const double bc1 = 1.0 - pow(beta1, step);
    const double bc2 = 1.0 - pow(beta2, step);
    const float neg_step_size = (float)-(lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float w1 = (float)(1.0 - beta1);
    const float b2 = (float)beta2, w2 = (float)(1.0 - beta2);
    const float eps = hp.eps;
    const int have_scale = grad_scale != NULL;
    const float gs = have_scale ? grad_scale[0] : 1.0f;
    float *cw = compute ? TC_F(compute) : NULL;
    int nt = tc_cpu_threads(b);
    for (int s = 0; s < nseg; s++) {
        const size_t off = segs[s].offset, cnt = segs[s].count;
        const float decay = (float)(1.0 - lr * (double)segs[s].weight_decay);
        const int do_decay = segs[s].weight_decay != 0.0f;
        float *p = params + off, *ms = m + off, *vs = v + off;
        const float *gr = grads + off;
        float *cs = cw ? cw + off : NULL;
#pragma omp parallel for schedule(dynamic, 8192) num_threads(nt) if (cnt > 16384)
        for (size_t i = 0; i < cnt; i++) {
            const float g = have_scale ? gr[i] * gs : gr[i];
            float pi = p[i];
            if (do_decay) pi *= decay;
            const float mi = lerp_f32(ms[i], g, w1);
            const float vi = vs[i] * b2 + w2 * g * g;
            const float denom = sqrtf(vi) / bc2_sqrt + eps;
            pi = pi + neg_step_size * mi / denom;
            ms[i] = mi;
            vs[i] = vi;
            p[i] = pi;
            if (cs) cs[i] = pi;
        }
    }
}

void tc_cpu_step_gate(tc_backend *b, float *state) {
    (void)b;
    if (state[0] != 0.0f) {
        state[1] += 1.0f;
        state[3] = 0.0f;
    } else {
        state[2] += 1.0f;
        state[3] += 1.0f;
    }
}
