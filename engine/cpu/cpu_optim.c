/* optimizer ops: gradient norm, clip coefficient, AdamW.
 *   sum_squares   double partial sums over a fixed partition (TC_SQ_CHUNKS
 *                 chunks, 8 lanes each) of the segments' elements as one
 *                 sequence, combined in order: the same bits for any thread
 *                 count and any segmentation of the same sequence
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

/* the squares of one run x[0..len) of a chunk's sequence, whose first
 * element is element v of the chunk: element w of the chunk goes to lane
 * w % 8 while w < full (the chunk's whole groups of 8), then to lane 0. each
 * lane adds its elements in sequence order, so a chunk cut into runs at any
 * points sums exactly as the chunk in one piece */
static void sum_squares_run(double lane[TC_SQ_LANES], const float *x, size_t len, size_t v,
                            size_t full) {
    size_t i = 0;
    for (; i < len && v + i < full && (v + i) % TC_SQ_LANES; i++)
        lane[(v + i) % TC_SQ_LANES] += (double)x[i] * x[i];
    for (; i + TC_SQ_LANES <= len && v + i + TC_SQ_LANES <= full; i += TC_SQ_LANES)
        for (int k = 0; k < TC_SQ_LANES; k++)
            lane[k] += (double)x[i + k] * x[i + k];
    for (; i < len; i++)
        lane[v + i < full ? (v + i) % TC_SQ_LANES : 0] += (double)x[i] * x[i];
}

/* sum of squares of the sequence's elements [lo, hi) in 8 fixed lanes, then
 * the lanes in order; the sequence is the segments of g one after another */
static double sum_squares_chunk(const float *g, const tc_param_segment *segs, int nseg, size_t lo,
                                size_t hi) {
    double lane[TC_SQ_LANES] = {0};
    const size_t n = hi - lo, full = n - n % TC_SQ_LANES;
    size_t start = 0; /* sequence index of segment s's first element */
    for (int s = 0; s < nseg && start < hi; start += segs[s].count, s++) {
        size_t a = lo > start ? lo : start, end = start + segs[s].count;
        size_t b = hi < end ? hi : end;
        if (a < b) sum_squares_run(lane, g + segs[s].offset + (a - start), b - a, a - lo, full);
    }
    double s = 0.0;
    for (int k = 0; k < TC_SQ_LANES; k++)
        s += lane[k];
    return s;
}

void tc_cpu_sum_squares(tc_backend *b, float *out, const float *g, const tc_param_segment *segs,
                        int nseg) {
    double part[TC_SQ_CHUNKS];
    size_t n = 0;
    for (int s = 0; s < nseg; s++)
        n += segs[s].count;
    /* chunk boundaries depend on n only, never on the thread count */
    const size_t per = (n + TC_SQ_CHUNKS - 1) / TC_SQ_CHUNKS;
    int nt = tc_cpu_threads(b);
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 65536)
    for (int k = 0; k < TC_SQ_CHUNKS; k++) {
        size_t lo = (size_t)k * per, hi = lo + per;
        if (lo > n) lo = n;
        if (hi > n) hi = n;
        part[k] = sum_squares_chunk(g, segs, nseg, lo, hi);
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

/* the constants of one segment's update */
typedef struct {
    float neg_step_size, bc2_sqrt, w1, b2, w2, eps, gs, decay;
    int have_scale, do_decay;
} adamw_consts;

/* elements [i, hi) one at a time; returns nothing, the reference form */
static void adamw_scalar(float *p, const float *gr, float *ms, float *vs, float *cs, size_t i,
                         size_t hi, const adamw_consts *k) {
    for (; i < hi; i++) {
        const float g = k->have_scale ? gr[i] * k->gs : gr[i];
        float pi = p[i];
        if (k->do_decay) pi *= k->decay;
        const float mi = lerp_f32(ms[i], g, k->w1);
        const float vi = vs[i] * k->b2 + k->w2 * g * g;
        const float denom = sqrtf(vi) / k->bc2_sqrt + k->eps;
        pi = pi + k->neg_step_size * mi / denom;
        ms[i] = mi;
        vs[i] = vi;
        p[i] = pi;
        if (cs) cs[i] = pi;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(TC_NO_CLONES)
#include <immintrin.h>
#define TC_ADAMW_AVX512 1
/* the same operations in the same order on 16 lanes (sqrt and the divisions
 * are correctly rounded, no contraction): the bits of adamw_scalar. the
 * compiler keeps the scalar loop scalar (sqrtf may set errno), hence the
 * intrinsics. returns the first element not done */
__attribute__((target("avx512f"))) static size_t adamw_avx512(float *p, const float *gr, float *ms,
                                                              float *vs, float *cs, size_t i,
                                                              size_t hi, const adamw_consts *k) {
    const __m512 gs = _mm512_set1_ps(k->gs), decay = _mm512_set1_ps(k->decay);
    const __m512 w1 = _mm512_set1_ps(k->w1), w1c = _mm512_set1_ps(1.0f - k->w1);
    const __m512 b2 = _mm512_set1_ps(k->b2), w2 = _mm512_set1_ps(k->w2);
    const __m512 bc2 = _mm512_set1_ps(k->bc2_sqrt), eps = _mm512_set1_ps(k->eps);
    const __m512 nss = _mm512_set1_ps(k->neg_step_size);
    const int low = fabsf(k->w1) < 0.5f;
    for (; i + 16 <= hi; i += 16) {
        __m512 g = _mm512_loadu_ps(gr + i);
        if (k->have_scale) g = _mm512_mul_ps(g, gs);
        __m512 pi = _mm512_loadu_ps(p + i);
        if (k->do_decay) pi = _mm512_mul_ps(pi, decay);
        const __m512 m0 = _mm512_loadu_ps(ms + i);
        const __m512 d = _mm512_sub_ps(g, m0);
        /* lerp_f32: self + w (end - self), or end - (end - self) (1 - w) */
        const __m512 mi =
            low ? _mm512_add_ps(m0, _mm512_mul_ps(w1, d)) : _mm512_sub_ps(g, _mm512_mul_ps(d, w1c));
        const __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(vs + i), b2),
                                        _mm512_mul_ps(_mm512_mul_ps(w2, g), g));
        const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2), eps);
        pi = _mm512_add_ps(pi, _mm512_div_ps(_mm512_mul_ps(nss, mi), denom));
        _mm512_storeu_ps(ms + i, mi);
        _mm512_storeu_ps(vs + i, vi);
        _mm512_storeu_ps(p + i, pi);
        if (cs) _mm512_storeu_ps(cs + i, pi);
    }
    return i;
}
#endif

#define TC_ADAMW_CHUNK 8192

void tc_cpu_adamw_update(tc_backend *b, float *params, const float *grads, float *m, float *v,
                         tc_act *compute, const tc_param_segment *segs, int nseg,
                         tc_adamw_hparams hp, const float *grad_scale) {
    if (nseg <= 0 || !segs) return;
    if (hp.gate && hp.gate[0] == 0.0f) return;
    const int step = hp.gate ? (int)hp.gate[1] : hp.step;
    /* lr_dev: the lr a recorded step reads from memory (the same value) */
    const double lr = hp.lr_dev ? (double)hp.lr_dev[0] : (double)hp.lr;
    const double beta1 = hp.beta1, beta2 = hp.beta2;
    const double bc1 = 1.0 - pow(beta1, step);
    const double bc2 = 1.0 - pow(beta2, step);
    adamw_consts k = {.neg_step_size = (float)-(lr / bc1),
                      .bc2_sqrt = (float)sqrt(bc2),
                      .w1 = (float)(1.0 - beta1),
                      .b2 = (float)beta2,
                      .w2 = (float)(1.0 - beta2),
                      .eps = hp.eps,
                      .have_scale = grad_scale != NULL,
                      .gs = grad_scale ? grad_scale[0] : 1.0f};
    float *cw = compute ? TC_F(compute) : NULL;
    int nt = tc_cpu_threads(b);
#ifdef TC_ADAMW_AVX512
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx512f");
#endif
    for (int s = 0; s < nseg; s++) {
        const size_t off = segs[s].offset, cnt = segs[s].count;
        k.decay = (float)(1.0 - lr * (double)segs[s].weight_decay);
        k.do_decay = segs[s].weight_decay != 0.0f;
        float *p = params + off, *ms = m + off, *vs = v + off;
        const float *gr = grads + off;
        float *cs = cw ? cw + off : NULL;
        const long nchunks = (long)((cnt + TC_ADAMW_CHUNK - 1) / TC_ADAMW_CHUNK);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (cnt > 16384)
        for (long c = 0; c < nchunks; c++) {
            size_t i = (size_t)c * TC_ADAMW_CHUNK;
            const size_t hi = i + TC_ADAMW_CHUNK < cnt ? i + TC_ADAMW_CHUNK : cnt;
#ifdef TC_ADAMW_AVX512
            if (avx512) i = adamw_avx512(p, gr, ms, vs, cs, i, hi, &k);
#endif
            adamw_scalar(p, gr, ms, vs, cs, i, hi, &k);
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
