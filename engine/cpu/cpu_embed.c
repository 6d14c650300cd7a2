/* embeddings of both towers.
 *   patchify         image (B,3,H,W) planar -> patches (B gh gw, 3 P P), row
 *                    (b, gy, gx), column (c, ky, kx): patches . conv1.weight^T
 *                    equals Conv2d(3, C, P, stride P, bias=False); gh = H / P,
 *                    gw = W / P (a remainder is dropped, as the conv does)
 *   vision embed     x[b,0] = cls + pos[0], x[b,t] = patch_emb[b,t-1] + pos[t]
 *   token embed      x[b,t] = wte[ids[b,t]] + wpe[t]
 * gradients of shared tables (cls, pos, wte, wpe) are sums over the batch
 * taken in (b, t) order by the one thread that owns the output column block
 * or position, so they need no atomics and do not depend on the thread count. */
#include "cpu_internal.h"

#define TC_EMB_COL_BLOCK 64

void tc_cpu_patchify(tc_backend *b, tc_act *patches, const float *image, int B, int H, int W,
                     int P) {
    TC_CPU_DIMS(b, "patchify", B, H, W, P);
    const int gh = H / P, gw = W / P;
    TC_CPU_DIMS(b, "patchify", gh, gw);
    const size_t K = (size_t)3 * P * P, npatch = (size_t)gh * gw;
    float *out = TC_F(patches);
    int nt = tc_cpu_threads(b);
    const long rows = (long)B * gh; /* one (b, gy) strip of gw patches per iteration */
#pragma omp parallel for schedule(static) num_threads(nt) if (rows > 4)
    for (long r = 0; r < rows; r++) {
        const int bb = (int)(r / gh), gy = (int)(r % gh);
        for (int gx = 0; gx < gw; gx++) {
            float *prow = out + ((size_t)bb * npatch + (size_t)gy * gw + gx) * K;
            for (int c = 0; c < 3; c++)
                for (int ky = 0; ky < P; ky++) {
                    const float *src = image +
                                       (((size_t)bb * 3 + c) * H + (size_t)gy * P + ky) * W +
                                       (size_t)gx * P;
                    float *dst = prow + ((size_t)c * P + ky) * P;
                    for (int kx = 0; kx < P; kx++)
                        dst[kx] = src[kx];
                }
        }
    }
}

void tc_cpu_vision_embed_forward(tc_backend *b, tc_act *x, const tc_act *patch_emb,
                                 const tc_act *cls, const tc_act *pos, int B, int T, int C) {
    TC_CPU_DIMS(b, "vision_embed_forward", B, T, C);
    float *o = TC_F(x);
    const float *pe = TC_CF(patch_emb), *cl = TC_CF(cls), *ps = TC_CF(pos);
    int nt = tc_cpu_threads(b);
    const long rows = (long)B * T;
#pragma omp parallel for schedule(static) num_threads(nt) if (rows * C > 32768)
    for (long r = 0; r < rows; r++) {
        const int bb = (int)(r / T), t = (int)(r % T);
        const float *src = t == 0 ? cl : pe + ((size_t)bb * (T - 1) + (t - 1)) * C;
        const float *pr = ps + (size_t)t * C;
        float *dst = o + (size_t)r * C;
        for (int c = 0; c < C; c++)
            dst[c] = src[c] + pr[c];
    }
}

void tc_cpu_vision_embed_backward(tc_backend *b, tc_act *dpatch_emb, float *dcls, float *dpos,
                                  const tc_act *dx, int B, int T, int C) {
    TC_CPU_DIMS(b, "vision_embed_backward", B, T, C);
    const float *g = TC_CF(dx);
    int nt = tc_cpu_threads(b);
    if (dpatch_emb && T > 1) {
        float *dp = TC_F(dpatch_emb);
        const long rows = (long)B * (T - 1);
#pragma omp parallel for schedule(static) num_threads(nt) if (rows * C > 32768)
        for (long r = 0; r < rows; r++) {
            const int bb = (int)(r / (T - 1)), t = (int)(r % (T - 1)) + 1;
            const float *src = g + ((size_t)bb * T + t) * C;
            float *dst = dp + (size_t)r * C;
            for (int c = 0; c < C; c++)
                dst[c] = src[c];
        }
    }
    /* dpos[t] += sum_b dx[b,t]; dcls += sum_b dx[b,0]; one thread per position */
#pragma omp parallel for schedule(static) num_threads(nt) if ((long)B * T * C > 32768)
    for (int t = 0; t < T; t++) {
        for (int bb = 0; bb < B; bb++) {
            const float *src = g + ((size_t)bb * T + t) * C;
            if (dpos) {
                float *dst = dpos + (size_t)t * C;
                for (int c = 0; c < C; c++)
                    dst[c] += src[c];
            }
            if (t == 0 && dcls)
                for (int c = 0; c < C; c++)
                    dcls[c] += src[c];
        }
    }
}

void tc_cpu_token_embed_forward(tc_backend *b, tc_act *x, const int32_t *ids, const tc_act *wte,
                                const tc_act *wpe, int B, int T, int C) {
    TC_CPU_DIMS(b, "token_embed_forward", B, T, C);
    float *o = TC_F(x);
    const float *we = TC_CF(wte), *pe = TC_CF(wpe);
    int nt = tc_cpu_threads(b);
    const long rows = (long)B * T;
#pragma omp parallel for schedule(static) num_threads(nt) if (rows * C > 32768)
    for (long r = 0; r < rows; r++) {
        const int t = (int)(r % T);
        /* ids are range-checked by the host against V, which this op is not given */
        const float *src = we + (size_t)ids[r] * C;
        const float *pr = pe + (size_t)t * C;
        float *dst = o + (size_t)r * C;
        for (int c = 0; c < C; c++)
            dst[c] = src[c] + pr[c];
    }
}

void tc_cpu_token_embed_backward(tc_backend *b, float *dwte, float *dwpe, const tc_act *dx,
                                 const int32_t *ids, int B, int T, int C, int V) {
    TC_CPU_DIMS(b, "token_embed_backward", B, T, C);
    const float *g = TC_CF(dx);
    int nt = tc_cpu_threads(b);
    const long rows = (long)B * T;
    if (dwte) {
        /* column blocks in parallel; within a block the (b,t) rows in order,
         * so repeated ids accumulate in a fixed order without atomics */
        const int nblocks = (C + TC_EMB_COL_BLOCK - 1) / TC_EMB_COL_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nt) if (rows * C > 32768)
        for (int blk = 0; blk < nblocks; blk++) {
            const int c0 = blk * TC_EMB_COL_BLOCK;
            const int c1 = c0 + TC_EMB_COL_BLOCK < C ? c0 + TC_EMB_COL_BLOCK : C;
            for (long r = 0; r < rows; r++) {
                const int32_t id = ids[r];
                if (id < 0 || id >= V)
                    continue; /* the host rejects these; never write out of bounds */
                const float *src = g + (size_t)r * C;
                float *dst = dwte + (size_t)id * C;
                for (int c = c0; c < c1; c++)
                    dst[c] += src[c];
            }
        }
    }
    if (dwpe) {
#pragma omp parallel for schedule(static) num_threads(nt) if (rows * C > 32768)
        for (int t = 0; t < T; t++) {
            float *dst = dwpe + (size_t)t * C;
            for (int bb = 0; bb < B; bb++) {
                const float *src = g + ((size_t)bb * T + t) * C;
                for (int c = 0; c < C; c++)
                    dst[c] += src[c];
            }
        }
    }
}
