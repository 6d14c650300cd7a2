/* the key and the cache of matmul plans (cuda/gemm.cu), in plain C so that
 * a test checks keys, hits and evictions without a device.
 *
 * a plan is what cuBLASLt needs beyond the pointers: the matmul descriptor
 * (transposes, epilogue), the layouts of A, B, C and D, and the algorithm
 * its heuristic chose. it depends on the shape, the transposes, the leading
 * dimensions, the types, the epilogue and the alignment of each pointer (the
 * heuristic picks narrower loads for less aligned operands), never on the
 * pointers themselves: those are set on every call. a linear layer needs up
 * to 3 keys (forward, input gradient, weight gradient), a block 12; a tower
 * of identical blocks shares them, a pruned tower whose blocks all differ
 * has 12 per block: a pruned 24-layer pair of towers with its teacher stays
 * under 400. the cache holds TC_GEMM_PLAN_SLOTS plans and, when full,
 * replaces the one used least recently (a step needing more keys than slots
 * would evict on every call: the eviction count shows it); a plan replaced
 * is destroyed by the caller. a key whose heuristic found no algorithm is cached too (the plan
 * says so), so the fallback is decided without asking again. */
#ifndef TC_GEMM_PLAN_H
#define TC_GEMM_PLAN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TC_GEMM_PLAN_SLOTS 1024

/* element types of the operands */
typedef enum { TC_GEMM_F32 = 0, TC_GEMM_BF16 = 1 } tc_gemm_type;

/* what the GEMM does after the product (cublasLtEpilogue_t of gemm.cu):
 *   NONE          D = alpha op(A) op(B) + beta C
 *   BIAS          + bias (m), per row of D
 *   GELU_AUX_BIAS D = GELU(... + bias), the pre-activation to aux
 *   DGELU         D = (...) * GELU'(aux)
 *   BGRADA        bias gradient (m) = sums of op(A) over k
 *   BGRADB        bias gradient (n) = sums of op(B) over k
 * (GELU is the library's tanh form.) */
typedef enum {
    TC_EPI_NONE = 0,
    TC_EPI_BIAS,
    TC_EPI_GELU_AUX_BIAS,
    TC_EPI_DGELU,
    TC_EPI_BGRADA,
    TC_EPI_BGRADB,
    TC_EPI_COUNT
} tc_gemm_epilogue;

const char *tc_gemm_epilogue_name(tc_gemm_epilogue e);

/* every field that changes the plan; made by tc_gemm_key_make only (its
 * padding is zero, so keys compare with memcmp) */
typedef struct {
    int32_t m, n, k;
    int32_t lda, ldb, ldc, ldd, ld_aux; /* ld_aux 0 without an aux matrix */
    int8_t trans_a, trans_b;
    int8_t ab_type, cd_type; /* tc_gemm_type */
    int8_t epilogue;         /* tc_gemm_epilogue */
    int8_t bias_type;        /* tc_gemm_type of the bias / bias gradient */
    int8_t c_is_d;           /* C and D the same matrix */
    int8_t pad_;             /* zero */
    /* bytes, powers of two up to 256 (the heuristic reads the bias and aux
     * pointers for their alignment too; 0 where there is none) */
    uint16_t align_a, align_b, align_c, align_d, align_bias, align_aux;
} tc_gemm_key;

typedef struct {
    int m, n, k, trans_a, trans_b, lda, ldb, ldc, ldd, ld_aux;
    tc_gemm_type ab_type, cd_type, bias_type;
    tc_gemm_epilogue epilogue;
    int c_is_d;
    unsigned align_a, align_b, align_c, align_d, align_bias, align_aux;
} tc_gemm_shape;

/* alignments are tc_cuda_alignment's (launch_math.h) */
tc_gemm_key tc_gemm_key_make(const tc_gemm_shape *s);

typedef struct {
    tc_gemm_key keys[TC_GEMM_PLAN_SLOTS];
    uint64_t hash[TC_GEMM_PLAN_SLOTS];
    uint64_t last_use[TC_GEMM_PLAN_SLOTS];
    void *plans[TC_GEMM_PLAN_SLOTS]; /* NULL: the slot is free */
    uint64_t clock;
    int used;
    long long hits, misses, evictions;
} tc_gemm_plan_cache;

void tc_gemm_plan_cache_init(tc_gemm_plan_cache *c);

/* the plan of key: returns it (a hit) or NULL (a miss), and *slot, the slot
 * that holds it or that the caller fills with tc_gemm_plan_store. on a miss
 * with every slot in use, *evicted is the plan of the least recently used
 * slot, which the caller destroys before storing (else NULL) */
void *tc_gemm_plan_lookup(tc_gemm_plan_cache *c, const tc_gemm_key *key, int *slot, void **evicted);
void tc_gemm_plan_store(tc_gemm_plan_cache *c, int slot, const tc_gemm_key *key, void *plan);
/* empties every slot; destroy(plan, ctx) for each plan held */
void tc_gemm_plan_cache_clear(tc_gemm_plan_cache *c, void (*destroy)(void *plan, void *ctx),
                              void *ctx);

#ifdef __cplusplus
}
#endif

#endif
