/* the matmul plan cache of cuda/gemm.cu (gemm_plan.h): keys, a linear scan
 * with a hash compared first, least-recently-used replacement */
#include "gemm_plan.h"

#include <string.h>

const char *tc_gemm_epilogue_name(tc_gemm_epilogue e) {
    static const char *const names[TC_EPI_COUNT] = {"none",  "bias",   "gelu_aux_bias",
                                                    "dgelu", "bgrada", "bgradb"};
    return e >= 0 && e < TC_EPI_COUNT ? names[e] : "?";
}

tc_gemm_key tc_gemm_key_make(const tc_gemm_shape *s) {
    tc_gemm_key k;
    memset(&k, 0, sizeof k); /* the padding too: keys compare with memcmp */
    k.m = s->m;
    k.n = s->n;
    k.k = s->k;
    k.lda = s->lda;
    k.ldb = s->ldb;
    k.ldc = s->ldc;
    k.ldd = s->ldd;
    k.ld_aux = s->ld_aux;
    k.trans_a = (int8_t)(s->trans_a != 0);
    k.trans_b = (int8_t)(s->trans_b != 0);
    k.ab_type = (int8_t)s->ab_type;
    k.cd_type = (int8_t)s->cd_type;
    k.epilogue = (int8_t)s->epilogue;
    k.bias_type = (int8_t)(s->epilogue == TC_EPI_NONE ? 0 : s->bias_type);
    k.c_is_d = (int8_t)(s->c_is_d != 0);
    k.align_a = (uint16_t)s->align_a;
    k.align_b = (uint16_t)s->align_b;
    k.align_c = (uint16_t)s->align_c;
    k.align_d = (uint16_t)s->align_d;
    k.align_bias = (uint16_t)(s->epilogue == TC_EPI_NONE ? 0 : s->align_bias);
    k.align_aux = (uint16_t)(s->ld_aux ? s->align_aux : 0);
    return k;
}

/* FNV-1a over the key's bytes */
static uint64_t key_hash(const tc_gemm_key *k) {
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

void tc_gemm_plan_cache_init(tc_gemm_plan_cache *c) {
    memset(c, 0, sizeof *c);
}

void *tc_gemm_plan_lookup(tc_gemm_plan_cache *c, const tc_gemm_key *key, int *slot,
                          void **evicted) {
    const uint64_t h = key_hash(key);
    int free_slot = -1, oldest = -1;
    *evicted = NULL;
    c->clock++;
    for (int i = 0; i < TC_GEMM_PLAN_SLOTS; i++) {
        if (!c->plans[i]) {
            if (free_slot < 0) free_slot = i;
            continue;
        }
        if (c->hash[i] == h && memcmp(&c->keys[i], key, sizeof *key) == 0) {
            c->last_use[i] = c->clock;
            c->hits++;
            *slot = i;
            return c->plans[i];
        }
        if (oldest < 0 || c->last_use[i] < c->last_use[oldest]) oldest = i;
    }
    c->misses++;
    if (free_slot >= 0) {
        *slot = free_slot;
        return NULL;
    }
    /* full: the least recently used plan makes room */
    *evicted = c->plans[oldest];
    c->plans[oldest] = NULL;
    c->used--;
    c->evictions++;
    *slot = oldest;
    return NULL;
}

void tc_gemm_plan_store(tc_gemm_plan_cache *c, int slot, const tc_gemm_key *key, void *plan) {
    if (slot < 0 || slot >= TC_GEMM_PLAN_SLOTS || !plan || c->plans[slot]) return;
    c->keys[slot] = *key;
    c->hash[slot] = key_hash(key);
    c->last_use[slot] = c->clock;
    c->plans[slot] = plan;
    c->used++;
}

void tc_gemm_plan_cache_clear(tc_gemm_plan_cache *c, void (*destroy)(void *plan, void *ctx),
                              void *ctx) {
    for (int i = 0; i < TC_GEMM_PLAN_SLOTS; i++)
        if (c->plans[i]) {
            if (destroy) destroy(c->plans[i], ctx);
            c->plans[i] = NULL;
        }
    c->used = 0;
}
