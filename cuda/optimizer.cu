/* optimizer ops: sum of squares (gradient norm), clip coefficient, AdamW.
 *
 * both walk a segment table: the segments' elements as one sequence of n
 * elements (the padding between parameter tensors is never read). the table
 * is uploaded to the device once and re-uploaded only when the segments
 * change; a thread finds the segment of sequence element e by binary search
 * over the prefix sums of the counts.
 * sum_squares: two passes, no atomics. pass 1 has a fixed grid of
 *   SQ_BLOCKS x 256 threads; thread k sums the squares of sequence elements
 *   k, k + SQ_BLOCKS*256, ... in double, the block folds its threads in a
 *   fixed tree into one partial; pass 2 (one block) folds the partials the
 *   same way. the partition depends on n only, so the result is the same
 *   bits every run.
 * adamw: torch.optim.AdamW (decoupled decay) in the CPU backend's operation
 *   order, scalars in double, tensors fp32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define SQ_BLOCKS 1024
#define SQ_THREADS 256

/* the segment holding sequence element e: the last one whose start <= e */
__device__ __forceinline__ int segment_of(const tc_cuda_segment *segs, int nseg, size_t e) {
    int lo = 0, hi = nseg - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (segs[mid].start <= e)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

__device__ double block_sum_double(double v, double *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = tc_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double t = 0.0;
    for (int w = 0; w < nw; w++)
        t += sh[w];
    return t;
}

__global__ void sum_squares_partial_kernel(double *partial, const float *g,
                                           const tc_cuda_segment *segs, int nseg, size_t n) {
    __shared__ double sh[32];
    double acc = 0.0;
    /* a thread's elements are a stride apart, mostly inside one large
     * tensor: search only when e leaves the segment found last */
    size_t seg_start = 0, seg_end = 0, seg_offset = 0;
    for (size_t e = blockIdx.x * (size_t)SQ_THREADS + threadIdx.x; e < n;
         e += (size_t)SQ_BLOCKS * SQ_THREADS) {
        if (e >= seg_end) {
            const tc_cuda_segment sg = segs[segment_of(segs, nseg, e)];
            seg_start = sg.start;
            seg_end = sg.start + sg.count;
            seg_offset = sg.offset;
        }
        const double v = g[seg_offset + (e - seg_start)];
        acc += v * v;
    }
    acc = block_sum_double(acc, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_squares_final_kernel(float *out, const double *partial) {
    __shared__ double sh[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < SQ_BLOCKS; i += blockDim.x)
        acc += partial[i];
    acc = block_sum_double(acc, sh);
    if (threadIdx.x == 0) out[0] = (float)acc;
}

__global__ void clip_coefficient_kernel(float *scale, const float *sum_sq, float max_norm) {
    const float total = sqrtf(sum_sq[0]);
    float coef = max_norm / (total + 1e-6f);
    if (coef > 1.0f) coef = 1.0f; /* NaN stays NaN for the NaN guard */
    scale[0] = coef;
}

void tc_cuda_clip_coefficient(tc_backend *b, float *scale, const float *sum_sq, float max_norm) {
    tc_cuda_backend *cu = tc_cu(b);
    clip_coefficient_kernel<<<1, 1, 0, cu->stream>>>(scale, sum_sq, max_norm);
    tc_cuda_launched(cu, "clip_coefficient");
}

typedef struct {
    float neg_step_size, bc2_sqrt, w1, b2, w2, eps;
    double lr;
} adamw_consts;

/* torch.lerp for fp32 (as the CPU backend) */
__device__ __forceinline__ float lerp_f32(float self, float end, float w) {
    return fabsf(w) < 0.5f ? self + w * (end - self) : end - (end - self) * (1.0f - w);
}

/* the constants of one update from the hyper-parameters and the 1-based
 * bias-correction step, in double as torch computes them on the host */
__host__ __device__ adamw_consts adamw_make_consts(double lr, double beta1, double beta2, float eps,
                                                   int step) {
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    adamw_consts k;
    k.lr = lr;
    k.neg_step_size = (float)-(lr / bc1);
    k.bc2_sqrt = (float)sqrt(bc2);
    k.w1 = (float)(1.0 - beta1);
    k.b2 = (float)beta2;
    k.w2 = (float)(1.0 - beta2);
    k.eps = eps;
    return k;
}

/* gate (NULL or step_gate's state): the block's thread 0 reads the finite
 * flag and the step, so the host never waits for them */
template <typename T>
__global__ void adamw_kernel(float *params, const float *grads, float *m, float *v, T *compute,
                             const tc_cuda_segment *segs, int nseg, size_t total, adamw_consts k,
                             const float *grad_scale, const float *gate, const float *lr_dev,
                             float beta1, float beta2) {
    if (gate) {
        __shared__ adamw_consts kg;
        __shared__ int skip;
        if (threadIdx.x == 0) {
            skip = gate[0] == 0.0f;
            /* lr_dev: a replayed graph's lr, written before each replay */
            if (!skip)
                kg = adamw_make_consts(lr_dev ? (double)lr_dev[0] : k.lr, beta1, beta2, k.eps,
                                       (int)gate[1]);
        }
        __syncthreads();
        if (skip) return;
        k = kg;
    }
    const float gs = grad_scale ? grad_scale[0] : 1.0f;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        const tc_cuda_segment sg = segs[segment_of(segs, nseg, e)];
        const size_t i = sg.offset + (e - sg.start);
        const float g = grad_scale ? grads[i] * gs : grads[i];
        float pi = params[i];
        if (sg.weight_decay != 0.0f) pi *= (float)(1.0 - k.lr * (double)sg.weight_decay);
        const float mi = lerp_f32(m[i], g, k.w1);
        const float vi = v[i] * k.b2 + k.w2 * g * g;
        const float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
        pi = pi + k.neg_step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
        params[i] = pi;
        if (compute) compute[i] = tc_tof<T>(pi);
    }
}

/* the device table of (segs, nseg): a kept one when the list is the same
 * (no upload, no sync), else the least recently used slot rewritten; NULL
 * when that failed (recorded) */
static const tc_cuda_seg_table *upload_segments(tc_cuda_backend *cu, const tc_param_segment *segs,
                                                int nseg, const char *op) {
    const tc_seg_key *keys[TC_CUDA_SEG_SLOTS];
    for (int i = 0; i < TC_CUDA_SEG_SLOTS; i++)
        keys[i] = &cu->seg[i].key;
    int hit = 0;
    tc_cuda_seg_table *t = &cu->seg[tc_seg_slot_pick(keys, TC_CUDA_SEG_SLOTS, segs, nseg, &hit)];
    t->key.used = ++cu->seg_clock;
    if (hit) return t;
    /* forget the slot's list first: if anything below fails, a later call
     * with the same segments must not launch on a table that was freed or
     * only partly written */
    free(t->key.host);
    t->key.host = NULL;
    t->key.count = 0;
    t->dev_count = 0;
    t->total = 0;
    tc_param_segment *copy = (tc_param_segment *)malloc((size_t)nseg * sizeof *segs);
    tc_cuda_segment *table = (tc_cuda_segment *)malloc((size_t)nseg * sizeof *table);
    if (!copy || !table) {
        free(copy);
        free(table);
        tc_cuda_record(cu, TC_ERR_OOM, "cuda %s: no host memory for %d segments", op, nseg);
        return NULL;
    }
    memcpy(copy, segs, (size_t)nseg * sizeof *segs);
    size_t start = 0;
    int kept = 0;
    for (int s = 0; s < nseg; s++) {
        if (segs[s].count == 0) continue; /* empty segments would break the search */
        table[kept].offset = segs[s].offset;
        table[kept].count = segs[s].count;
        table[kept].start = start;
        table[kept].weight_decay = segs[s].weight_decay;
        start += segs[s].count;
        kept++;
    }
    bool ok = true;
    if (kept > t->dev_cap) {
        /* the stream may still read the old table: wait before freeing it */
        ok = tc_cuda_ok(cu, cudaStreamSynchronize(cu->stream), "segment table: synchronize");
        if (ok) {
            cudaFree(t->dev);
            t->dev = NULL;
            t->dev_cap = 0;
            ok = tc_cuda_ok(cu, cudaMalloc(&t->dev, (size_t)kept * sizeof *table), "segment table");
            if (ok) t->dev_cap = kept;
        }
    }
    /* from pageable memory this copy is staged before the call returns, and it
     * is ordered after every kernel already queued that reads the old table */
    if (ok && kept > 0)
        ok = tc_cuda_ok(cu,
                        cudaMemcpyAsync(t->dev, table, (size_t)kept * sizeof *table,
                                        cudaMemcpyHostToDevice, cu->stream),
                        "segment table upload");
    if (ok) ok = tc_cuda_ok(cu, cudaStreamSynchronize(cu->stream), "segment table upload wait");
    free(table);
    if (!ok) {
        free(copy);
        return NULL;
    }
    t->key.host = copy;
    t->key.count = nseg;
    t->dev_count = kept;
    t->total = start;
    return t;
}

void tc_cuda_sum_squares(tc_backend *b, float *out, const float *g, const tc_param_segment *segs,
                         int nseg) {
    tc_cuda_backend *cu = tc_cu(b);
    const tc_cuda_seg_table *t = NULL;
    if (nseg > 0 && segs && !(t = upload_segments(cu, segs, nseg, "sum_squares"))) return;
    const size_t n = t ? t->total : 0;
    if (n == 0) {
        tc_cuda_fill_f32(b, out, 0.0f, 1);
        return;
    }
    double *partial = (double *)cu->scratch;
    sum_squares_partial_kernel<<<SQ_BLOCKS, SQ_THREADS, 0, cu->stream>>>(partial, g, t->dev,
                                                                         t->dev_count, n);
    if (!tc_cuda_launched(cu, "sum_squares partials")) return;
    sum_squares_final_kernel<<<1, SQ_THREADS, 0, cu->stream>>>(out, partial);
    tc_cuda_launched(cu, "sum_squares final");
}

template <typename T>
static void launch_adamw(tc_cuda_backend *cu, float *params, const float *grads, float *m, float *v,
                         tc_act *compute, const tc_cuda_seg_table *t, adamw_consts k,
                         const float *grad_scale, const tc_adamw_hparams *hp) {
    const size_t total = t->total;
    adamw_kernel<T><<<tc_cuda_grid(total, 256), 256, 0, cu->stream>>>(
        params, grads, m, v, (T *)compute, t->dev, t->dev_count, total, k, grad_scale, hp->gate,
        hp->lr_dev, hp->beta1, hp->beta2);
    tc_cuda_launched(cu, "adamw_update");
}

void tc_cuda_adamw_update(tc_backend *b, float *params, const float *grads, float *m, float *v,
                          tc_act *compute, const tc_param_segment *segs, int nseg,
                          tc_adamw_hparams hp, const float *grad_scale) {
    tc_cuda_backend *cu = tc_cu(b);
    if (nseg <= 0 || !segs) return;
    TC_CU_REQUIRE(cu, hp.gate || hp.step >= 1, "cuda adamw_update: step %d is not 1-based",
                  hp.step);
    TC_CU_REQUIRE(cu, hp.gate || !hp.lr_dev, "cuda adamw_update: a device lr needs the gate");
    const tc_cuda_seg_table *t = upload_segments(cu, segs, nseg, "adamw_update");
    if (!t || t->total == 0) return;
    /* with a gate the kernel remakes these from the device's step */
    adamw_consts k = adamw_make_consts(hp.lr, hp.beta1, hp.beta2, hp.eps, hp.gate ? 1 : hp.step);
    TC_ACT_DISPATCH(cu, launch_adamw, cu, params, grads, m, v, compute, t, k, grad_scale, &hp);
}

__global__ void step_gate_kernel(float *state) {
    if (state[0] != 0.0f) {
        state[1] += 1.0f;
        state[3] = 0.0f;
    } else {
        state[2] += 1.0f;
        state[3] += 1.0f;
    }
}

void tc_cuda_step_gate(tc_backend *b, float *state) {
    tc_cuda_backend *cu = tc_cu(b);
    step_gate_kernel<<<1, 1, 0, cu->stream>>>(state);
    tc_cuda_launched(cu, "step_gate");
}
