/* internals of the CPU reference backend: the backend handle and the op
 * functions that cpu_backend.c puts into the tc_backend table.
 *
 * every op works on fp32 (tc_act is float here) and is deterministic
 * independently of the thread count wherever it does not call BLAS: each
 * output element is produced by one thread, and every reduction runs in a
 * fixed order over a fixed partition. OpenMP parallelises over rows, heads or
 * column blocks; cblas_sgemm does the matrix products. */
#ifndef TC_CPU_INTERNAL_H
#define TC_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

typedef struct {
    tc_backend base; /* first member: a tc_backend * is a tc_cpu_backend * */
    int threads;     /* OpenMP threads used by every parallel region */
} tc_cpu_backend;

static inline int tc_cpu_threads(const tc_backend *b) {
    return ((const tc_cpu_backend *)b)->threads;
}

/* tc_act is fp32 on this backend */
#define TC_F(p) ((float *)(p))
#define TC_CF(p) ((const float *)(p))

/* cpu_blas.c: kernel selection (once per process) and the BLAS thread count */
void tc_cpu_blas_init(int threads);

/* the ops of engine/backend_ops.h, one per file by family: memory in
 * cpu_backend.c, then cpu_elementwise, cpu_gelu, cpu_linear, cpu_layernorm,
 * cpu_attention, cpu_embed, cpu_pool, cpu_loss, cpu_optim, cpu_mask. the
 * optional ops are not implemented here (they stay NULL). */
#define TC_OP(ret, name, params) ret tc_cpu_##name params;
#define TC_OPTIONAL_OP(ret, name, params)
#include "backend_ops.h"
#undef TC_OPTIONAL_OP
#undef TC_OP

#endif
