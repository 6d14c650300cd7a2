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
    /* the first failure of an op (ops return void): synchronize() and
     * download() report it, as on the CUDA backend. sticky. */
    tc_status err;
    char err_msg[256];
} tc_cpu_backend;

/* records the first failure of an op (later ones are dropped: the first is
 * the cause); safe to call from inside a parallel region */
void tc_cpu_record(tc_backend *b, tc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline int tc_cpu_threads(const tc_backend *b) {
    return ((const tc_cpu_backend *)b)->threads;
}

/* shape guard at the top of an op: a negative size is the caller's error
 * and is recorded (the run stops at the next synchronize); an empty tensor
 * is nothing to do. usage: TC_CPU_DIMS(b, "op", B, T, C); */
int tc_cpu_dims(tc_backend *b, const char *op, const int *dims, int n);
#define TC_CPU_DIMS(b, op, ...)                                                                    \
    do {                                                                                           \
        const int tc_dims_[] = {__VA_ARGS__};                                                      \
        if (!tc_cpu_dims((b), (op), tc_dims_, (int)(sizeof tc_dims_ / sizeof *tc_dims_))) return;  \
    } while (0)

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
