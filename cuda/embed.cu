/* embeddings and pooling: patchify, vision (class token + positions), token
 * embedding with a deterministic scatter-add backward, EOT argmax, and the
 * gather / mean pools.
 *
 * the token embedding backward sorts the (id, position) pairs with CUB's
 * stable radix sort (so equal ids stay in token order), then sums the dx
 * rows of each run of equal ids in two kernels over pieces of the sorted
 * positions (run_pieces.h), so that a long run (the padding id: most
 * positions of a text batch) is spread over many blocks instead of one:
 *   pieces  block (piece k, 128 columns): walks the piece's runs in order;
 *           a run inside the piece goes to its dwte row, a part of a run
 *           that crosses the piece's edge to one of the piece's two slots
 *   spans   block (piece k, 128 columns): the run that starts in piece k and
 *           crosses its end adds its slots, in piece order, to its dwte row
 * every dwte element is written by one thread, and every sum is taken in an
 * order that depends only on the ids and the shape. */
#include <cub/device/device_radix_sort.cuh>

#include "cuda_internal.h"
#include "run_pieces.h"

#define EMB_THREADS 256

/* ---- patchify: patches (B*g*g, 3*P*P), row (b, gy, gx), column (c, ky, kx) ---- */
template <typename T>
__global__ void patchify_kernel(T *patches, const float *image, int B, int H, int W, int P) {
    const int gh = H / P, gw = W / P;
    const size_t cols = 3 * (size_t)P * P;
    const size_t n = (size_t)B * gh * gw * cols;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t row = e / cols;
        const int col = (int)(e % cols);
        const int c = col / (P * P), ky = (col / P) % P, kx = col % P;
        const int gx = (int)(row % gw), gy = (int)((row / gw) % gh);
        const size_t bb = row / ((size_t)gw * gh);
        const size_t src = ((bb * 3 + c) * H + (size_t)gy * P + ky) * W + (size_t)gx * P + kx;
        patches[e] = tc_tof<T>(image[src]);
    }
}

template <typename T>
static void launch_patchify(tc_cuda_backend *cu, tc_act *patches, const float *image, int B, int H,
                            int W, int P) {
    const size_t n = (size_t)B * (H / P) * (W / P) * 3 * P * P;
    patchify_kernel<T><<<tc_cuda_grid(n, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
        (T *)patches, image, B, H, W, P);
    tc_cuda_launched(cu, "patchify");
}

void tc_cuda_patchify(tc_backend *b, tc_act *patches, const float *image, int B, int H, int W,
                      int P) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && P > 0 && H >= P && W >= P && H % P == 0 && W % P == 0,
                  "cuda patchify: image %dx%d is not a whole number of %d-pixel patches", H, W, P);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_patchify, cu, patches, image, B, H, W, P);
}

/* ---- vision embed ---- */
template <typename T>
__global__ void vision_embed_fwd_kernel(T *x, const T *patch_emb, const T *cls, const T *pos, int B,
                                        int Tn, int C) {
    const size_t n = (size_t)B * Tn * C;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        const int t = (int)((e / C) % Tn);
        const size_t bb = e / ((size_t)C * Tn);
        float v = t == 0 ? tc_ldf(cls + c) : tc_ldf(patch_emb + (bb * (Tn - 1) + (t - 1)) * C + c);
        x[e] = tc_tof<T>(v + tc_ldf(pos + (size_t)t * C + c));
    }
}

/* dpatch_emb = dx[:, 1:]; one thread per (t, c) for dpos/dcls, summing b in order */
template <typename T>
__global__ void vision_embed_bwd_kernel(T *dpatch_emb, float *dcls, float *dpos, const T *dx, int B,
                                        int Tn, int C) {
    const size_t n = (size_t)Tn * C;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        const int t = (int)(e / C);
        float acc = 0.0f;
        for (int bb = 0; bb < B; bb++) {
            const T *src = dx + ((size_t)bb * Tn + t) * C + c;
            acc += tc_ldf(src);
            if (t > 0 && dpatch_emb) dpatch_emb[((size_t)bb * (Tn - 1) + (t - 1)) * C + c] = *src;
        }
        if (dpos) dpos[e] += acc;
        if (t == 0 && dcls) dcls[c] += acc;
    }
}

template <typename T>
static void launch_vision_embed_fwd(tc_cuda_backend *cu, tc_act *x, const tc_act *patch_emb,
                                    const tc_act *cls, const tc_act *pos, int B, int Tn, int C) {
    const size_t n = (size_t)B * Tn * C;
    vision_embed_fwd_kernel<T><<<tc_cuda_grid(n, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
        (T *)x, (const T *)patch_emb, (const T *)cls, (const T *)pos, B, Tn, C);
    tc_cuda_launched(cu, "vision_embed_forward");
}

template <typename T>
static void launch_vision_embed_bwd(tc_cuda_backend *cu, tc_act *dpatch_emb, float *dcls,
                                    float *dpos, const tc_act *dx, int B, int Tn, int C) {
    const size_t n = (size_t)Tn * C;
    vision_embed_bwd_kernel<T><<<tc_cuda_grid(n, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
        (T *)dpatch_emb, dcls, dpos, (const T *)dx, B, Tn, C);
    tc_cuda_launched(cu, "vision_embed_backward");
}

void tc_cuda_vision_embed_forward(tc_backend *b, tc_act *x, const tc_act *patch_emb,
                                  const tc_act *cls, const tc_act *pos, int B, int T, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T >= 1 && C > 0,
                  "cuda vision_embed_forward: bad shape B=%d T=%d C=%d", B, T, C);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_vision_embed_fwd, cu, x, patch_emb, cls, pos, B, T, C);
}

void tc_cuda_vision_embed_backward(tc_backend *b, tc_act *dpatch_emb, float *dcls, float *dpos,
                                   const tc_act *dx, int B, int T, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T >= 1 && C > 0,
                  "cuda vision_embed_backward: bad shape B=%d T=%d C=%d", B, T, C);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_vision_embed_bwd, cu, dpatch_emb, dcls, dpos, dx, B, T, C);
}

/* ---- token embed ---- */
template <typename T>
__global__ void token_embed_fwd_kernel(T *x, const int32_t *ids, const T *wte, const T *wpe, int B,
                                       int Tn, int C) {
    const size_t n = (size_t)B * Tn * C;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        const size_t bt = e / C;
        const int t = (int)(bt % Tn);
        const size_t id = (size_t)ids[bt];
        x[e] = tc_tof<T>(tc_ldf(wte + id * C + c) + tc_ldf(wpe + (size_t)t * C + c));
    }
}

__global__ void iota_kernel(int32_t *v, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = i;
}

#define EMB_RUN_COLS 128 /* columns of a block of the run kernels */

/* the pieces kernel: block (piece k, EMB_RUN_COLS columns) */
template <typename T>
__global__ void wte_pieces_kernel(float *dwte, float *partial, const T *dx, const int32_t *keys,
                                  const int32_t *tokens, int n, int C, int P) {
    const int k = blockIdx.x;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int p0 = k * P, p1 = min(n, p0 + P);
    for (int s = p0; s < p1;) {
        const int32_t id = keys[s];
        float acc = 0.0f;
        int e = s;
        for (; e < p1 && keys[e] == id; e++)
            acc += tc_ldf(dx + (size_t)tokens[e] * C + c);
        const int slot = tc_run_segment_slot(keys, n, p0, s, e);
        if (slot < 0)
            dwte[(size_t)id * C + c] += acc;
        else
            partial[(size_t)(2 * k + slot) * C + c] = acc;
        s = e;
    }
}

/* the spans kernel: block (piece k, EMB_RUN_COLS columns) */
__global__ void wte_spans_kernel(float *dwte, const float *partial, const int32_t *keys, int n,
                                 int C, int P, int pieces) {
    const int k = blockIdx.x;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int32_t id;
    int slot, last;
    if (!tc_run_span(keys, n, P, pieces, k, &id, &slot, &last)) return;
    float acc = partial[(size_t)(2 * k + slot) * C + c];
#pragma unroll 4
    for (int j = k + 1; j <= last; j++)
        acc += partial[(size_t)(2 * j) * C + c];
    dwte[(size_t)id * C + c] += acc;
}

template <typename T>
__global__ void wpe_accumulate_kernel(float *dwpe, const T *dx, int B, int Tn, int C) {
    const size_t n = (size_t)Tn * C;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int bb = 0; bb < B; bb++)
            acc += tc_ldf(dx + (size_t)bb * n + e);
        dwpe[e] += acc;
    }
}

template <typename T>
static void launch_token_embed_fwd(tc_cuda_backend *cu, tc_act *x, const int32_t *ids,
                                   const tc_act *wte, const tc_act *wpe, int B, int Tn, int C) {
    const size_t n = (size_t)B * Tn * C;
    token_embed_fwd_kernel<T><<<tc_cuda_grid(n, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
        (T *)x, ids, (const T *)wte, (const T *)wpe, B, Tn, C);
    tc_cuda_launched(cu, "token_embed_forward");
}

static size_t align256(size_t x) {
    return (x + 255) & ~(size_t)255;
}

template <typename T>
static void launch_token_embed_bwd(tc_cuda_backend *cu, float *dwte, float *dwpe, const tc_act *dx,
                                   const int32_t *ids, int B, int Tn, int C, int V) {
    if (dwpe) {
        const size_t n = (size_t)Tn * C;
        wpe_accumulate_kernel<T><<<tc_cuda_grid(n, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
            dwpe, (const T *)dx, B, Tn, C);
        if (!tc_cuda_launched(cu, "token_embed_backward dwpe")) return;
    }
    if (!dwte) return;
    const int n = B * Tn;
    const int end_bit = tc_cuda_radix_end_bit(V);
    size_t temp_bytes = 0;
    cudaError_t e = cub::DeviceRadixSort::SortPairs((void *)NULL, temp_bytes, (const int32_t *)NULL,
                                                    (int32_t *)NULL, (const int32_t *)NULL,
                                                    (int32_t *)NULL, n, 0, end_bit, cu->stream);
    if (!tc_cuda_ok(cu, e, "token_embed_backward: radix sort size query")) return;
    const size_t arr = align256((size_t)n * sizeof(int32_t));
    const size_t used = 3 * arr + align256(temp_bytes);
    TC_CU_REQUIRE(cu, used <= cu->scratch_bytes,
                  "cuda token_embed_backward: %d tokens do not fit the sort scratch", n);
    char *s = (char *)cu->scratch;
    int32_t *keys_out = (int32_t *)s;
    int32_t *tok_in = (int32_t *)(s + arr);
    int32_t *tok_out = (int32_t *)(s + 2 * arr);
    void *temp = s + 3 * arr;
    float *partial = (float *)(s + used); /* 2 slots of C floats per piece */
    const int P = tc_run_piece_size(cu->scratch_bytes - used, n, C);
    const int pieces = tc_run_pieces(n, P);
    const dim3 grid((unsigned)pieces, (unsigned)((C + EMB_RUN_COLS - 1) / EMB_RUN_COLS));
    TC_CU_REQUIRE(cu, grid.y <= TC_CUDA_MAX_GRID_Y, "cuda token_embed_backward: C=%d too wide", C);
    iota_kernel<<<(n + 255) / 256, 256, 0, cu->stream>>>(tok_in, n);
    if (!tc_cuda_launched(cu, "token_embed_backward iota")) return;
    e = cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, keys_out, tok_in, tok_out, n, 0,
                                        end_bit, cu->stream);
    if (!tc_cuda_ok(cu, e, "token_embed_backward: radix sort")) return;
    if (!tc_cuda_launched(cu, "token_embed_backward radix sort")) return;
    wte_pieces_kernel<T><<<grid, EMB_RUN_COLS, 0, cu->stream>>>(dwte, partial, (const T *)dx,
                                                                keys_out, tok_out, n, C, P);
    if (!tc_cuda_launched(cu, "token_embed_backward dwte pieces")) return;
    if (pieces == 1) return; /* no run crosses a piece */
    wte_spans_kernel<<<grid, EMB_RUN_COLS, 0, cu->stream>>>(dwte, partial, keys_out, n, C, P,
                                                            pieces);
    tc_cuda_launched(cu, "token_embed_backward dwte spans");
}

void tc_cuda_token_embed_forward(tc_backend *b, tc_act *x, const int32_t *ids, const tc_act *wte,
                                 const tc_act *wpe, int B, int T, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T > 0 && C > 0,
                  "cuda token_embed_forward: bad shape B=%d T=%d C=%d", B, T, C);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_token_embed_fwd, cu, x, ids, wte, wpe, B, T, C);
}

void tc_cuda_token_embed_backward(tc_backend *b, float *dwte, float *dwpe, const tc_act *dx,
                                  const int32_t *ids, int B, int T, int C, int V) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T > 0 && C > 0 && V > 0,
                  "cuda token_embed_backward: bad shape B=%d T=%d C=%d V=%d", B, T, C, V);
    TC_CU_REQUIRE(cu, (int64_t)B * T < (int64_t)1 << 30,
                  "cuda token_embed_backward: %d x %d tokens", B, T);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_token_embed_bwd, cu, dwte, dwpe, dx, ids, B, T, C, V);
}

/* ---- argmax: one warp per row, ties to the first position ---- */
__global__ void argmax_rows_kernel(int32_t *idx, const int32_t *ids, int B, int Tn) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= B) return;
    int32_t best = INT32_MIN;
    int pos = Tn; /* larger than any position */
    for (int t = lane; t < Tn; t += 32) {
        int32_t v = ids[(size_t)row * Tn + t];
        if (v > best) { /* t increases, so the first maximum of this lane is kept */
            best = v;
            pos = t;
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        int32_t ob = __shfl_xor_sync(0xffffffffu, best, off);
        int op = __shfl_xor_sync(0xffffffffu, pos, off);
        if (ob > best || (ob == best && op < pos)) {
            best = ob;
            pos = op;
        }
    }
    if (lane == 0) idx[row] = pos;
}

void tc_cuda_argmax_rows(tc_backend *b, int32_t *idx, const int32_t *ids, int B, int T) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T > 0, "cuda argmax_rows: bad shape B=%d T=%d", B, T);
    if (B == 0) return;
    argmax_rows_kernel<<<(B + 7) / 8, 256, 0, cu->stream>>>(idx, ids, B, T);
    tc_cuda_launched(cu, "argmax_rows");
}

/* ---- pooling ---- */
template <typename T>
__global__ void pool_gather_fwd_kernel(T *out, const T *x, const int32_t *idx, int B, int Tn,
                                       int C) {
    const size_t n = (size_t)B * C;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t bb = e / C;
        const int c = (int)(e % C);
        const int t = idx ? idx[bb] : 0;
        out[e] = x[(bb * Tn + t) * C + c];
    }
}

template <typename T>
__global__ void pool_gather_bwd_kernel(T *dx, const T *dout, const int32_t *idx, int B, int Tn,
                                       int C) {
    const size_t n = (size_t)B * C;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t bb = e / C;
        const int c = (int)(e % C);
        const int t = idx ? idx[bb] : 0;
        T *d = dx + (bb * Tn + t) * C + c;
        *d = tc_tof<T>(tc_ldf(d) + tc_ldf(dout + e));
    }
}

template <typename T>
__global__ void pool_mean_fwd_kernel(T *out, const T *x, int B, int Tn, int C) {
    const size_t n = (size_t)B * C;
    const float inv = 1.0f / (float)(Tn - 1);
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t bb = e / C;
        const int c = (int)(e % C);
        float acc = 0.0f;
        for (int t = 1; t < Tn; t++)
            acc += tc_ldf(x + (bb * Tn + t) * C + c);
        out[e] = tc_tof<T>(acc * inv);
    }
}

template <typename T>
__global__ void pool_mean_bwd_kernel(T *dx, const T *dout, int B, int Tn, int C) {
    const size_t n = (size_t)B * Tn * C;
    const float inv = 1.0f / (float)(Tn - 1);
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
         e += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        const int t = (int)((e / C) % Tn);
        const size_t bb = e / ((size_t)C * Tn);
        if (t == 0) continue;
        dx[e] = tc_tof<T>(tc_ldf(dx + e) + tc_ldf(dout + bb * C + c) * inv);
    }
}

template <typename T>
static void launch_pool_gather_fwd(tc_cuda_backend *cu, tc_act *out, const tc_act *x,
                                   const int32_t *idx, int B, int Tn, int C) {
    pool_gather_fwd_kernel<T>
        <<<tc_cuda_grid((size_t)B * C, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
            (T *)out, (const T *)x, idx, B, Tn, C);
    tc_cuda_launched(cu, "pool_gather_forward");
}

template <typename T>
static void launch_pool_gather_bwd(tc_cuda_backend *cu, tc_act *dx, const tc_act *dout,
                                   const int32_t *idx, int B, int Tn, int C) {
    pool_gather_bwd_kernel<T>
        <<<tc_cuda_grid((size_t)B * C, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
            (T *)dx, (const T *)dout, idx, B, Tn, C);
    tc_cuda_launched(cu, "pool_gather_backward");
}

template <typename T>
static void launch_pool_mean_fwd(tc_cuda_backend *cu, tc_act *out, const tc_act *x, int B, int Tn,
                                 int C) {
    pool_mean_fwd_kernel<T>
        <<<tc_cuda_grid((size_t)B * C, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
            (T *)out, (const T *)x, B, Tn, C);
    tc_cuda_launched(cu, "pool_mean_forward");
}

template <typename T>
static void launch_pool_mean_bwd(tc_cuda_backend *cu, tc_act *dx, const tc_act *dout, int B, int Tn,
                                 int C) {
    pool_mean_bwd_kernel<T>
        <<<tc_cuda_grid((size_t)B * Tn * C, EMB_THREADS), EMB_THREADS, 0, cu->stream>>>(
            (T *)dx, (const T *)dout, B, Tn, C);
    tc_cuda_launched(cu, "pool_mean_backward");
}

void tc_cuda_pool_gather_forward(tc_backend *b, tc_act *out, const tc_act *x, const int32_t *idx,
                                 int B, int T, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T > 0 && C > 0,
                  "cuda pool_gather_forward: bad shape B=%d T=%d C=%d", B, T, C);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_pool_gather_fwd, cu, out, x, idx, B, T, C);
}

void tc_cuda_pool_gather_backward(tc_backend *b, tc_act *dx, const tc_act *dout, const int32_t *idx,
                                  int B, int T, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T > 0 && C > 0,
                  "cuda pool_gather_backward: bad shape B=%d T=%d C=%d", B, T, C);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_pool_gather_bwd, cu, dx, dout, idx, B, T, C);
}

void tc_cuda_pool_mean_forward(tc_backend *b, tc_act *out, const tc_act *x, int B, int T, int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T > 1 && C > 0, "cuda pool_mean_forward: bad shape B=%d T=%d C=%d",
                  B, T, C);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_pool_mean_fwd, cu, out, x, B, T, C);
}

void tc_cuda_pool_mean_backward(tc_backend *b, tc_act *dx, const tc_act *dout, int B, int T,
                                int C) {
    tc_cuda_backend *cu = tc_cu(b);
    TC_CU_REQUIRE(cu, B >= 0 && T > 1 && C > 0, "cuda pool_mean_backward: bad shape B=%d T=%d C=%d",
                  B, T, C);
    if (B == 0) return;
    TC_ACT_DISPATCH(cu, launch_pool_mean_bwd, cu, dx, dout, B, T, C);
}
