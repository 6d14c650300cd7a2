/* the backend interface: every operation of a training step, as a table of
 * function pointers. the model (engine/model.c) is written once against this
 * table; engine/cpu/ implements it in plain fp32 C (the reference), cuda/
 * implements it on the GPU.
 *
 * memory: a backend owns its memory. pointers passed to ops are device
 * pointers obtained from alloc(); the host never dereferences them and moves
 * data with upload()/download().
 *
 * precision: two element types cross the interface.
 *   float   master weights, gradients, optimizer state, statistics (layernorm
 *           mean/rstd, attention log-sum-exp), features, losses. always fp32.
 *   tc_act  activations and the copy of the weights used in compute. fp32 on
 *           the CPU backend and in the CUDA fp32 mode, bf16 in the CUDA mixed
 *           mode. its size is backend->act_bytes; the host never reads one.
 *
 * accumulation rule (as llm.c): parameter gradients are accumulated (+=),
 * activation gradients are written (=), except where an op says "+=" for the
 * residual stream. every op is deterministic: same inputs, same bits.
 *
 * shape letters: B batch, T tokens, C width, NH heads, HS head size (64),
 * A = NH*HS attention width, M mlp width, E embedding, N rows, V vocabulary.
 * all tensors are row-major and contiguous unless a stride is given. */
#ifndef TC_BACKEND_H
#define TC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct tc_act tc_act; /* opaque activation element (fp32 or bf16) */
typedef struct tc_backend tc_backend;

typedef enum { TC_GELU = 0, TC_QUICK_GELU = 1 } tc_activation;

/* how batchnorm_forward treats its statistics (engine/backend_ops.h) */
typedef enum { TC_BN_EVAL = 0, TC_BN_TRAIN = 1, TC_BN_REPLAY = 2 } tc_bn_mode;

/* a BatchNorm's running statistics, fp32 masters in the parameter buffer
 * (each its own tensor of the layout): running_mean, running_var (C),
 * num_batches_tracked (1) */
typedef struct {
    float *mean, *var, *batches;
} tc_bn_running;

/* one contiguous run of parameters that share a weight decay */
#define TC_FENCES 4

typedef struct {
    size_t offset; /* in elements from the start of the parameter buffer */
    size_t count;
    float weight_decay;
} tc_param_segment;

typedef struct {
    float lr, beta1, beta2, eps;
    int step; /* 1-based, for bias correction */
    /* NULL, or the step's state on the device as step_gate leaves it: the
     * update is skipped when gate[0] == 0 (a non-finite step) and the
     * bias-correction step is gate[1] (step is then ignored), so a training
     * step needs no host synchronisation */
    const float *gate;
    /* NULL, or a device scalar holding the learning rate (lr is then
     * ignored; needs gate): a step captured once as a graph replays with
     * the lr each step writes there before the replay */
    const float *lr_dev;
} tc_adamw_hparams;

/* what a backend can do, filled in by its create function; the engine and
 * the host decide from these, never from the backend's name */
typedef struct {
    /* 1: tc_act weights are a separate copy of the fp32 masters (bf16) */
    int separate_compute_weights;
    /* 1: the model runs patch_embed_forward / _backward_weight instead of
     * patchify + GEMM (the ops are present and the options chose them) */
    int patch_embed_conv;
    /* 1: input batches should live in page-locked host memory, so that
     * upload_async is a DMA without a staging copy (the host then fills
     * batches through the CUDA pinned allocator) */
    int pinned_host_batches;
    /* 1: conv2d_forward / _backward work (CUDA: cuDNN could be loaded), so
     * the backend can run ResNet image towers */
    int conv2d;
    /* 1: linear_backward sums the bias gradient in the weight-gradient GEMM
     * (CUDA with the GEMM epilogues switched on) instead of a reduction of
     * its own; the fused linear ops below say the rest */
    int gemm_bias_grad_epilogue;
} tc_backend_caps;

/* a recorded sequence of queued ops (graph_begin .. graph_end), replayed
 * by graph_launch; opaque, owned by the backend that made it */
typedef struct tc_graph tc_graph;

/* FMA kernels; tensor cores with mma.sync (Ampere and later); warpgroup MMA
 * (wgmma, compute capability 9 only: elsewhere it runs as MMA); warpgroup MMA
 * fed by TMA copies from a producer warp (the FlashAttention-3 pipeline,
 * compute capability 9 only: where it does not cover a call it runs as
 * WGMMA, elsewhere as MMA) */
typedef enum {
    TC_ATTENTION_FMA = 0,
    TC_ATTENTION_MMA = 1,
    TC_ATTENTION_WGMMA = 2,
    TC_ATTENTION_TMA = 3
} tc_attention_kernel;
typedef enum { TC_PATCH_EMBED_GEMM = 0, TC_PATCH_EMBED_CONV = 1 } tc_patch_embed_path;

/* how a backend is made: parsed once at start-up (command line, experiment
 * file, environment) by the host and passed in; no backend reads the
 * environment. tc_backend_options_default() gives the defaults. */
typedef struct {
    int threads;                     /* cpu: OpenMP threads, 0 = every core */
    int device;                      /* cuda: the device ordinal */
    int fp32;                        /* cuda: 1 = full fp32 (parity), 0 = bf16 mixed */
    tc_attention_kernel attention;   /* cuda mixed mode: FMA kernels or tensor cores */
    tc_patch_embed_path patch_embed; /* cuda: patchify + GEMM, or one cuDNN convolution */
    /* cuda fast paths, each off until a GPU run has passed its test
     * (docs/cuda.md, "Fast paths"):
     *   gemm_plans     matmul descriptors, layouts and algorithm made once per
     *                  shape and kept in a small cache
     *   gemm_epilogue  bias, GELU, GELU gradient and bias gradient fused into
     *                  the GEMMs, residual adds through beta = 1
     *   cuda_graph     the training step captured once and replayed */
    int gemm_plans, gemm_epilogue, cuda_graph;
} tc_backend_options;

static inline tc_backend_options tc_backend_options_default(void) {
    tc_backend_options o = {0, 0, 0, TC_ATTENTION_FMA, TC_PATCH_EMBED_GEMM, 0, 0, 0};
    return o;
}

/* the table: name, element size, capabilities, then one function pointer
 * per op of engine/backend_ops.h (documented there) */
struct tc_backend {
    const char *name; /* "cpu", "cuda" */
    size_t act_bytes; /* sizeof one tc_act element */
    tc_backend_caps caps;
    /* GEMMs that ran on a slow fallback kernel because the GEMM library had
     * no algorithm for their shape and alignments (CUDA; 0 elsewhere). a
     * healthy run keeps it at 0; tinyclip bench prints it */
    long long gemm_fallbacks;
#define TC_OP(ret, name, params) ret(*name) params;
#include "backend_ops.h"
#undef TC_OP
};

/* backends compiled into this build; opt NULL means the defaults */
tc_status tc_backend_cpu_create(tc_backend **out, const tc_backend_options *opt);
/* the OpenBLAS kernel family the CPU backend's matrix products run on
 * ("SkylakeX", "Haswell", ...): results are bit-identical only on the same one */
const char *tc_backend_cpu_blas_core(void);
#ifdef TC_HAVE_CUDA
tc_status tc_backend_cuda_create(tc_backend **out, const tc_backend_options *opt);
#endif

/* helpers for pointer arithmetic on tc_act buffers */
static inline tc_act *tc_act_offset(const tc_backend *b, const tc_act *base, size_t elements) {
    return (tc_act *)((char *)base + elements * b->act_bytes);
}

#endif
