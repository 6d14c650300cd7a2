/* the matmul plan cache of the CUDA backend (cuda/gemm_plan.c), checked on
 * the host: it is plain C, so it runs in every build, GPU or not. a key must
 * tell apart every product cuBLASLt would plan differently (shape,
 * transposes, leading dimensions, types, epilogue, alignments) and nothing
 * else; a training step's products must hit the cache after their first
 * use; a full cache must replace its least recently used plan and hand it
 * back to be destroyed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "gemm_plan.h"
#include "launch_math.h"

/* a linear layer's forward, input-gradient and weight-gradient products as
 * cuda/linear.cu writes them (column-major, w (OC, C)), bf16, aligned */
static tc_gemm_shape linear_shape(int which, int N, int C, int OC, tc_gemm_epilogue epi) {
    tc_gemm_shape s;
    memset(&s, 0, sizeof s);
    s.ab_type = TC_GEMM_BF16;
    s.cd_type = which == 2 ? TC_GEMM_F32 : TC_GEMM_BF16;
    s.bias_type = s.cd_type;
    s.epilogue = epi;
    s.c_is_d = 1;
    s.align_a = s.align_b = s.align_c = s.align_d = 256;
    s.align_bias = epi == TC_EPI_NONE ? 0 : 256;
    if (which == 0) { /* out^T = w^T' inp^T */
        s.m = OC, s.n = N, s.k = C, s.trans_a = 1, s.lda = C, s.ldb = C, s.ldc = s.ldd = OC;
    } else if (which == 1) { /* dinp^T = w dout^T */
        s.m = C, s.n = N, s.k = OC, s.lda = C, s.ldb = OC, s.ldc = s.ldd = C;
    } else { /* dw^T += inp^T dout */
        s.m = C, s.n = OC, s.k = N, s.trans_b = 1, s.lda = C, s.ldb = OC, s.ldc = s.ldd = C;
    }
    return s;
}

static void test_key_fields(void **state) {
    (void)state;
    const tc_gemm_shape base = linear_shape(0, 1600, 768, 2304, TC_EPI_BIAS);
    const tc_gemm_key kb = tc_gemm_key_make(&base);
    /* the same shape made twice: the same bytes (padding included) */
    tc_gemm_key again = tc_gemm_key_make(&base);
    assert_memory_equal(&kb, &again, sizeof kb);
    /* every field that changes the plan changes the key */
    for (int f = 0; f < 19; f++) {
        tc_gemm_shape s = base;
        switch (f) {
        case 0: s.m++; break;
        case 1: s.n++; break;
        case 2: s.k++; break;
        case 3: s.trans_a = 0; break;
        case 4: s.trans_b = 1; break;
        case 5: s.lda += 8; break;
        case 6: s.ldb += 8; break;
        case 7: s.ldc += 8, s.c_is_d = 0; break;
        case 8: s.ldd += 8; break;
        case 9: s.ab_type = TC_GEMM_F32; break;
        case 10: s.cd_type = TC_GEMM_F32; break;
        case 11: s.epilogue = TC_EPI_GELU_AUX_BIAS, s.ld_aux = s.m, s.align_aux = 256; break;
        case 12: s.c_is_d = 0; break;
        case 13: s.align_a = 2; break;
        case 14: s.align_b = 16; break;
        case 15: s.align_c = 4; break;
        case 16: s.align_d = 8; break;
        case 17: s.align_bias = 16; break;
        case 18: s.bias_type = TC_GEMM_F32; break;
        }
        tc_gemm_key k = tc_gemm_key_make(&s);
        if (memcmp(&k, &kb, sizeof k) == 0) fail_msg("field %d does not reach the key", f);
    }
    /* what does not change the plan does not change the key: a bias type,
     * bias alignment or aux leading dimension without their epilogue */
    tc_gemm_shape plain = linear_shape(1, 1600, 768, 2304, TC_EPI_NONE);
    tc_gemm_key kp = tc_gemm_key_make(&plain);
    plain.bias_type = TC_GEMM_F32;
    plain.align_bias = 16;
    plain.align_aux = 64;
    tc_gemm_key kp2 = tc_gemm_key_make(&plain);
    assert_memory_equal(&kp, &kp2, sizeof kp);
    /* the alignments a pruned view gives, as the backend computes them */
    assert_int_equal(tc_cuda_alignment(0x7f0000001000u + 2), 2);
    assert_int_equal(tc_cuda_alignment(0x7f0000001000u + 2 * 768), 256);
    assert_string_equal(tc_gemm_epilogue_name(TC_EPI_BGRADB), "bgradb");
    assert_string_equal(tc_gemm_epilogue_name(TC_EPI_GELU_AUX_BIAS), "gelu_aux_bias");
}

/* a fake plan: a heap cell holding its serial number */
static int g_destroyed;
static void destroy_plan(void *plan, void *ctx) {
    (void)ctx;
    g_destroyed++;
    free(plan);
}

static void *new_plan(int serial) {
    int *p = malloc(sizeof *p);
    assert_non_null(p);
    *p = serial;
    return p;
}

/* one product through the cache as cuda/gemm.cu does it: returns 1 on a hit */
static int use(tc_gemm_plan_cache *c, const tc_gemm_shape *s, int *made) {
    const tc_gemm_key k = tc_gemm_key_make(s);
    int slot = -1;
    void *evicted = NULL;
    void *p = tc_gemm_plan_lookup(c, &k, &slot, &evicted);
    if (p) return 1;
    if (evicted) destroy_plan(evicted, NULL);
    assert_true(slot >= 0 && slot < TC_GEMM_PLAN_SLOTS);
    tc_gemm_plan_store(c, slot, &k, new_plan((*made)++));
    return 0;
}

/* the products of one training step of a tower of L blocks, each block's
 * widths (A, M) given, with the fused epilogues of the GELU model */
static int tower_step(tc_gemm_plan_cache *c, int N, int C, int L, const int *A, const int *M,
                      int *made) {
    int hits = 0;
    for (int l = 0; l < L; l++) {
        const int oc[4] = {3 * A[l], C, M[l], C}, ic[4] = {C, A[l], C, M[l]};
        for (int j = 0; j < 4; j++) {
            tc_gemm_epilogue fwd = j == 2 ? TC_EPI_GELU_AUX_BIAS : TC_EPI_BIAS;
            tc_gemm_shape f = linear_shape(0, N, ic[j], oc[j], fwd);
            if (j == 2) f.ld_aux = oc[j], f.align_aux = 256;
            if (j == 1 || j == 3) f.c_is_d = 0; /* the residual through beta = 1 */
            tc_gemm_shape d = linear_shape(1, N, ic[j], oc[j], TC_EPI_NONE);
            if (j == 3) d.epilogue = TC_EPI_DGELU, d.ld_aux = ic[j], d.align_aux = 256;
            tc_gemm_shape w = linear_shape(2, N, ic[j], oc[j], TC_EPI_BGRADB);
            w.bias_type = TC_GEMM_F32;
            hits += use(c, &f, made) + use(c, &d, made) + use(c, &w, made);
        }
    }
    return hits;
}

static void test_reuse_counts(void **state) {
    (void)state;
    tc_gemm_plan_cache *c = malloc(sizeof *c);
    assert_non_null(c);
    tc_gemm_plan_cache_init(c);
    int made = 0, A[12], M[12];
    for (int l = 0; l < 12; l++)
        A[l] = 768, M[l] = 3072;
    /* ViT-B/32 at batch 32 (N = 32 * 50): 12 identical blocks, 12 keys */
    int hits = tower_step(c, 1600, 768, 12, A, M, &made);
    assert_int_equal(made, 12);
    assert_int_equal(hits, 12 * 12 - 12);
    assert_int_equal(c->misses, 12);
    /* the next step: every product a hit, nothing made */
    hits = tower_step(c, 1600, 768, 12, A, M, &made);
    assert_int_equal(hits, 144);
    assert_int_equal(made, 12);
    assert_int_equal(c->hits, 132 + 144);
    assert_int_equal(c->used, 12);
    /* a smaller last batch is another shape: 12 more plans, the first ones kept */
    tower_step(c, 800, 768, 12, A, M, &made);
    assert_int_equal(made, 24);
    assert_int_equal(tower_step(c, 1600, 768, 12, A, M, &made), 144);
    /* a pruned tower whose 12 blocks all differ: 144 keys, all kept */
    for (int l = 0; l < 12; l++)
        A[l] = 32 + 64 * l, M[l] = 1004 + 8 * l; /* no 3A equals an M */
    tower_step(c, 1600, 768, 12, A, M, &made);
    assert_int_equal(made, 24 + 144);
    assert_int_equal(tower_step(c, 1600, 768, 12, A, M, &made), 144);
    assert_int_equal(c->evictions, 0);
    g_destroyed = 0;
    tc_gemm_plan_cache_clear(c, destroy_plan, NULL);
    assert_int_equal(g_destroyed, 24 + 144);
    assert_int_equal(c->used, 0);
    free(c);
}

static void test_lru_eviction(void **state) {
    (void)state;
    tc_gemm_plan_cache *c = malloc(sizeof *c);
    assert_non_null(c);
    tc_gemm_plan_cache_init(c);
    int made = 0;
    /* fill every slot with distinct shapes (m = 1 .. SLOTS) */
    for (int i = 0; i < TC_GEMM_PLAN_SLOTS; i++) {
        tc_gemm_shape s = linear_shape(0, 64, 64, i + 1, TC_EPI_NONE);
        assert_int_equal(use(c, &s, &made), 0);
    }
    assert_int_equal(c->used, TC_GEMM_PLAN_SLOTS);
    /* touch every shape but the second: the second is now least recent */
    for (int i = 0; i < TC_GEMM_PLAN_SLOTS; i++) {
        if (i == 1) continue;
        tc_gemm_shape s = linear_shape(0, 64, 64, i + 1, TC_EPI_NONE);
        assert_int_equal(use(c, &s, &made), 1);
    }
    /* a new shape evicts exactly that one, and hands its plan back */
    g_destroyed = 0;
    tc_gemm_shape fresh = linear_shape(0, 64, 64, 100000, TC_EPI_NONE);
    assert_int_equal(use(c, &fresh, &made), 0);
    assert_int_equal(g_destroyed, 1);
    assert_int_equal(c->evictions, 1);
    assert_int_equal(c->used, TC_GEMM_PLAN_SLOTS);
    tc_gemm_shape second = linear_shape(0, 64, 64, 2, TC_EPI_NONE);
    tc_gemm_shape first = linear_shape(0, 64, 64, 1, TC_EPI_NONE);
    assert_int_equal(use(c, &fresh, &made), 1);
    assert_int_equal(use(c, &first, &made), 1);
    assert_int_equal(use(c, &second, &made), 0); /* gone: made again */
    assert_int_equal(c->evictions, 2);
    /* a plan that could not be made is not stored: the slot stays free */
    tc_gemm_plan_cache_clear(c, destroy_plan, NULL);
    tc_gemm_key k = tc_gemm_key_make(&first);
    int slot = -1;
    void *ev = NULL;
    assert_null(tc_gemm_plan_lookup(c, &k, &slot, &ev));
    assert_null(ev);
    assert_null(tc_gemm_plan_lookup(c, &k, &slot, &ev)); /* still a miss, nothing cached */
    assert_int_equal(c->used, 0);
    free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_fields),
        cmocka_unit_test(test_reuse_counts),
        cmocka_unit_test(test_lru_eviction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
