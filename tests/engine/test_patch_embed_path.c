/* the model's choice of patch-embedding path (engine/model.c): with a
 * backend that offers patch_embed_forward / patch_embed_backward_weight and
 * sets caps.patch_embed_conv, the vision tower runs those two ops instead of
 * patchify + GEMM, with the shapes and buffers backend.h promises; otherwise
 * it never calls them. runs on the CPU backend, whose table is given test
 * twins of the two ops built from its own patchify and linear ops: the two
 * paths then do the same arithmetic, so features and every gradient must be
 * the same bits. (the CUDA/cuDNN ops themselves: tests/cuda/test_cuda_ops.c.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "testutil.h"

/* what the twins saw */
static struct {
    int fwd_calls, bwd_calls;
    int B, H, W, P, C;
    const tc_act *image_act; /* the forward's, which the backward must get back */
    int mismatch;            /* an argument differed from what the model must pass */
} seen;

static const tc_model_config *g_cfg;

static void check_shape(int B, int H, int W, int P, int C) {
    const tc_tower_config *v = &g_cfg->vision;
    if (H != v->image_size || W != v->image_size || P != v->patch_size || C != v->width || B < 1)
        seen.mismatch = 1;
    seen.B = B, seen.H = H, seen.W = W, seen.P = P, seen.C = C;
}

/* the forward twin keeps the patches themselves in image_act: the contract
 * gives it B*3*H*W elements, exactly patchify's output */
static void twin_forward(tc_backend *b, tc_act *out, tc_act *image_act, const float *image,
                         const tc_act *w, int B, int H, int W, int P, int C) {
    seen.fwd_calls++;
    check_shape(B, H, W, P, C);
    seen.image_act = image_act;
    const int N = B * (H / P) * (W / P), K = 3 * P * P;
    b->patchify(b, image_act, image, B, H, W, P);
    b->linear_forward(b, out, image_act, w, NULL, N, K, C, 0);
}

static void twin_backward_weight(tc_backend *b, float *dw, const tc_act *dout,
                                 const tc_act *image_act, int B, int H, int W, int P, int C) {
    seen.bwd_calls++;
    if (image_act != seen.image_act || B != seen.B) seen.mismatch = 1;
    check_shape(B, H, W, P, C);
    const int N = B * (H / P) * (W / P), K = 3 * P * P;
    /* linear_backward reads w only for dinp */
    b->linear_backward(b, NULL, dw, NULL, dout, image_act, NULL, N, K, C, 0);
}

static void tiny(tc_model_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "patch-embed-path");
    c->embed_dim = 32;
    c->activation = TC_GELU;
    tc_tower_config *v = &c->vision, *t = &c->text;
    v->layers = 1;
    v->width = 64;
    v->head_width = t->head_width = 64;
    v->image_size = 40;
    v->patch_size = 8;
    v->pool = TC_POOL_TOKEN;
    v->heads[0] = 1;
    v->mlp_width[0] = 96;
    t->layers = 1;
    t->width = 64;
    t->context_length = 8;
    t->vocab_size = 50;
    t->pool = TC_POOL_ARGMAX;
    t->heads[0] = 1;
    t->mlp_width[0] = 128;
}

typedef struct {
    float *features, *grads;
    size_t nfeat, nparams;
} run_result;

/* one image forward and backward with the same weights and inputs; the
 * backend's table is set as asked (twins on or off, prefer flag) */
static void run(run_result *r, int twins, int prefer, int only_forward) {
    tc_backend *be = NULL;
    assert_int_equal(tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 1}), TC_OK);
    assert_null(be->patch_embed_forward); /* the CPU backend has no convolution of its own */
    if (twins) {
        be->patch_embed_forward = twin_forward;
        be->patch_embed_backward_weight = only_forward ? NULL : twin_backward_weight;
    }
    be->caps.patch_embed_conv = prefer;

    static tc_model_config c;
    tiny(&c);
    g_cfg = &c;
    const int B = 3, S = c.vision.image_size, E = c.embed_dim;
    tc_model *m = NULL;
    tc_model_options o = {.max_batch = 4, .train = 1};
    assert_int_equal(tc_model_create(&m, be, &c, o), TC_OK);
    assert_int_equal(tc_model_init_random(m, 7), TC_OK);

    uint64_t rng = 99;
    float *img = malloc((size_t)B * 3 * S * S * sizeof *img);
    float *dfeat_h = malloc((size_t)B * E * sizeof *dfeat_h);
    assert_non_null(img);
    assert_non_null(dfeat_h);
    tc_fill_uniform(img, (size_t)B * 3 * S * S, &rng, 2.0f);
    tc_fill_uniform(dfeat_h, (size_t)B * E, &rng, 1.0f);
    float *dfeat = NULL;
    assert_int_equal(be->alloc(be, (size_t)B * E * sizeof(float), (void **)&dfeat), TC_OK);
    assert_int_equal(be->upload(be, dfeat, dfeat_h, (size_t)B * E * sizeof(float)), TC_OK);

    tc_model_zero_grads(m);
    assert_int_equal(tc_model_encode_image(m, img, B), TC_OK);
    assert_int_equal(tc_model_backward_image(m, dfeat), TC_OK);
    assert_int_equal(be->synchronize(be), TC_OK);

    r->nfeat = (size_t)B * E;
    r->nparams = tc_model_layout(m)->total;
    r->features = malloc(r->nfeat * sizeof(float));
    r->grads = malloc(r->nparams * sizeof(float));
    assert_non_null(r->features);
    assert_non_null(r->grads);
    assert_int_equal(
        be->download(be, r->features, tc_model_image_features(m), r->nfeat * sizeof(float)), TC_OK);
    assert_int_equal(be->download(be, r->grads, tc_model_grads(m), r->nparams * sizeof(float)),
                     TC_OK);
    be->free(be, dfeat);
    tc_model_destroy(m);
    be->destroy(be);
    free(dfeat_h);
    free(img);
}

static void expect_same(const run_result *a, const run_result *b) {
    assert_int_equal(a->nfeat, b->nfeat);
    assert_int_equal(a->nparams, b->nparams);
    assert_memory_equal(a->features, b->features, a->nfeat * sizeof(float));
    assert_memory_equal(a->grads, b->grads, a->nparams * sizeof(float));
}

static void release(run_result *r) {
    free(r->features);
    free(r->grads);
}

/* the twins are used, with the promised arguments, and give the GEMM path's bits */
static void test_preferred_ops_are_used(void **state) {
    (void)state;
    run_result gemm, conv;
    memset(&seen, 0, sizeof seen);
    run(&gemm, 0, 0, 0);
    assert_int_equal(seen.fwd_calls + seen.bwd_calls, 0);
    run(&conv, 1, 1, 0);
    printf("patch_embed ops: %d forward, %d weight-gradient calls, B=%d H=%d W=%d P=%d C=%d\n",
           seen.fwd_calls, seen.bwd_calls, seen.B, seen.H, seen.W, seen.P, seen.C);
    assert_int_equal(seen.fwd_calls, 1);
    assert_int_equal(seen.bwd_calls, 1);
    assert_int_equal(seen.mismatch, 0);
    assert_int_equal(seen.B, 3);
    expect_same(&gemm, &conv);
    release(&gemm);
    release(&conv);
}

/* present but not preferred, or only half present: the GEMM path, untouched ops */
static void test_gemm_path_otherwise(void **state) {
    (void)state;
    run_result gemm, r;
    run(&gemm, 0, 0, 0);
    memset(&seen, 0, sizeof seen);
    run(&r, 1, 0, 0);
    assert_int_equal(seen.fwd_calls + seen.bwd_calls, 0);
    expect_same(&gemm, &r);
    release(&r);
    run(&r, 1, 1, 1);
    assert_int_equal(seen.fwd_calls + seen.bwd_calls, 0);
    expect_same(&gemm, &r);
    release(&r);
    release(&gemm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preferred_ops_are_used),
        cmocka_unit_test(test_gemm_path_otherwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
