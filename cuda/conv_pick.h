/* the choice of a cuDNN convolution algorithm among the candidates that
 * cudnnGet*Algorithm_v7 returns (cuDNN's heuristics, best first), in plain
 * C with no cuDNN types, so that tests/cuda/test_cuda_launch.c checks it on a
 * machine without a GPU or cuDNN, on made-up candidate lists. conv_cudnn.cu
 * turns each cuDNN perf record into a tc_conv_candidate. */
#ifndef TC_CUDA_CONV_PICK_H
#define TC_CUDA_CONV_PICK_H

#include <stddef.h>

typedef struct {
    int ran;           /* status == CUDNN_STATUS_SUCCESS */
    int deterministic; /* determinism == CUDNN_DETERMINISTIC */
    int fma_math;      /* mathType == CUDNN_FMA_MATH: plain fp32 FMAs, no tensor cores */
    size_t workspace;  /* bytes */
} tc_conv_candidate;

/* the first candidate that ran, gives the same bits every time (the
 * filter-gradient algorithms with atomics do not), needs at most
 * workspace_cap bytes, and in fp32 mode uses CUDNN_FMA_MATH: the chosen
 * candidate's math type is set on the descriptor before the call, and any
 * other (CUDNN_DEFAULT_MATH included) lets cuDNN use TF32 tensor cores on
 * sm_80 and later, which would undo the fp32 mode. -1 when none fits. */
static inline int tc_conv_pick(const tc_conv_candidate *c, int n, int fp32, size_t workspace_cap) {
    for (int i = 0; i < n; i++) {
        if (!c[i].ran || !c[i].deterministic || c[i].workspace > workspace_cap) continue;
        if (fp32 && !c[i].fma_math) continue;
        return i;
    }
    return -1;
}

#endif
