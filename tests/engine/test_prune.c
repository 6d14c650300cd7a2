/* pruning and re-expansion on a small random model with hand-built masks:
 *  - every element of the pruned model against the masked model's folded
 *    values, computed here from the formulas (both modes), including the
 *    biases of dropped sub-blocks and the irregular config and its layout;
 *  - fold then prune with 0/1 masks equals prune (the fold's contract);
 *  - expand -> masks (10 / -10) -> prune returns the compact model;
 *  - the forward of the pruned model equals the masked forward (CPU backend);
 *  - rounding kept units to multiples; errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "l0.h"
#include "model.h"
#include "model_config.h"
#include "params.h"
#include "prune.h"
#include "testutil.h"

enum { L = 3, C = 128, NH = 2, M = 256, E = 24, NZ = C + L * NH + L * M };

static void base_config(tc_model_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "prune-test");
    c->embed_dim = E;
    c->activation = TC_GELU;
    tc_tower_set_uniform(&c->vision, L, C, NH, M);
    c->vision.image_size = 16;
    c->vision.patch_size = 8;
    c->vision.pool = TC_POOL_TOKEN;
    tc_tower_set_uniform(&c->text, L, C, NH, M);
    c->text.context_length = 6;
    c->text.vocab_size = 20;
    c->text.pool = TC_POOL_ARGMAX;
}

static float *random_params(const tc_param_layout *l, uint64_t seed) {
    float *p = malloc(l->total * sizeof *p);
    assert_non_null(p);
    uint64_t s = seed;
    tc_fill_uniform(p, l->total, &s, 0.5f);
    tc_test_set_padding(l, p, 0.0f); /* as every buffer the engine fills */
    /* LayerNorm weights near 1 so that the forward stays well conditioned */
    for (int i = 0; i < l->count; i++)
        if (strstr(l->params[i].name, "ln") && strstr(l->params[i].name, "weight"))
            for (size_t e = 0; e < l->params[i].count; e++)
                p[l->params[i].offset + e] += 1.0f;
    p[l->logit_scale] = 2.5f;
    return p;
}

/* hand-built z. drops = 1:
 *   vision heads: layer 0 none, layers 1, 2 some; MLP: layer 1 none
 *   text heads: layer 0 none; MLP: layer 0 none (layer 0 vanishes)
 * drops = 0: every row keeps something */
static void make_z(float *z, int text, int drops) {
    float *hz = z, *head = z + C, *iz = z + C + L * NH;
    for (int d = 0; d < C; d++)
        hz[d] = (d % 5 == (text ? 3 : 2)) ? 0.0f : 0.55f + 0.4f * (float)((d * 37) % 101) / 101.0f;
    const float hv[2][L][NH] = {{{0.0f, 0.0f}, {0.9f, 0.95f}, {0.0f, 0.7f}},
                                {{0.0f, 0.0f}, {0.6f, 0.0f}, {1.0f, 0.99f}}};
    for (int l = 0; l < L; l++)
        for (int h = 0; h < NH; h++) {
            float v = hv[text][l][h];
            if (!drops && l == 0) v = h ? 0.8f : 0.0f;
            head[l * NH + h] = v;
        }
    for (int l = 0; l < L; l++)
        for (int i = 0; i < M; i++) {
            int empty = drops && ((text && l == 0) || (!text && l == 1));
            int off = (i * 7 + l) % 3 == 0;
            iz[l * M + i] = empty || off ? 0.0f : 0.3f + 0.7f * (float)((i * 13 + l) % 97) / 97.0f;
        }
}

/* kept index lists of one tower's z */
typedef struct {
    int nh, hk[C];
    int nheads[L], heads[L][NH];
    int nint[L], ints[L][M];
} kept;

static void kept_of(const float *z, kept *k) {
    memset(k, 0, sizeof *k);
    for (int d = 0; d < C; d++)
        if (z[d] != 0) k->hk[k->nh++] = d;
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < NH; h++)
            if (z[C + l * NH + h] != 0) k->heads[l][k->nheads[l]++] = h;
        for (int i = 0; i < M; i++)
            if (z[C + L * NH + l * M + i] != 0) k->ints[l][k->nint[l]++] = i;
    }
}

static const float *src_tensor(const tc_param_layout *l, const float *p, const char *name) {
    const tc_param_info *i = tc_param_find(l, name);
    if (!i) fail_msg("source has no %s", name);
    return p + i->offset;
}

/* the pruned value of element (r, c) of tensor `name`, from the formulas of
 * the method spec (before bias moves) */
static float expect(const char *name, size_t r, size_t c, const float *z, const kept *k,
                    const tc_param_layout *sl, const float *sp, tc_prune_mode mode) {
    const float *hz = z, *head = z + C, *iz = z + C + L * NH;
    const float *s = src_tensor(sl, sp, name);
    int layer;
    char suffix[64];
    const char *blk = strstr(name, "resblocks.");
    if (blk && sscanf(blk, "resblocks.%d.%63s", &layer, suffix) == 2) {
        if (!strcmp(suffix, "ln_1.weight") || !strcmp(suffix, "ln_1.bias") ||
            !strcmp(suffix, "ln_2.weight") || !strcmp(suffix, "ln_2.bias"))
            return s[k->hk[r]];
        if (!strcmp(suffix, "attn.in_proj_weight") || !strcmp(suffix, "attn.in_proj_bias")) {
            /* row r of the pruned (3, kept heads, 64) */
            int nk = k->nheads[layer];
            size_t q = r / (size_t)(nk * 64), hh = (r / 64) % (size_t)nk, e = r % 64;
            size_t row = q * NH * 64 + (size_t)k->heads[layer][hh] * 64 + e;
            if (!strcmp(suffix, "attn.in_proj_bias")) return s[row];
            return s[row * C + (size_t)k->hk[c]];
        }
        if (!strcmp(suffix, "attn.out_proj.weight")) {
            int h = k->heads[layer][c / 64];
            size_t col = (size_t)h * 64 + c % 64;
            int d = k->hk[r];
            return s[(size_t)d * NH * 64 + col] * hz[d] * head[layer * NH + h];
        }
        if (!strcmp(suffix, "attn.out_proj.bias") || !strcmp(suffix, "mlp.c_proj.bias"))
            return s[k->hk[r]] * hz[k->hk[r]];
        if (!strcmp(suffix, "mlp.c_fc.weight"))
            return s[(size_t)k->ints[layer][r] * C + (size_t)k->hk[c]];
        if (!strcmp(suffix, "mlp.c_fc.bias")) return s[k->ints[layer][r]];
        if (!strcmp(suffix, "mlp.c_proj.weight")) {
            int d = k->hk[r], i = k->ints[layer][c];
            return s[(size_t)d * M + (size_t)i] * iz[layer * M + i] * hz[d];
        }
        fail_msg("unexpected block tensor %s", name);
    }
    if (strstr(name, "ln_pre.") || strstr(name, "ln_post.") || strstr(name, "ln_final."))
        return s[k->hk[r]];
    if (!strcmp(name, "visual.class_embedding")) return s[k->hk[r]] * hz[k->hk[r]];
    if (!strcmp(name, "visual.positional_embedding") || !strcmp(name, "positional_embedding") ||
        !strcmp(name, "token_embedding.weight"))
        return s[r * C + (size_t)k->hk[c]] * hz[k->hk[c]];
    if (!strcmp(name, "visual.conv1.weight"))
        return s[(size_t)k->hk[r] * 3 * 8 * 8 + c] * hz[k->hk[r]];
    if (!strcmp(name, "visual.proj") || !strcmp(name, "text_projection")) {
        float f = mode == TC_PRUNE_ORIGINAL ? hz[k->hk[r]] : 1.0f;
        return s[(size_t)k->hk[r] * E + c] * f;
    }
    fail_msg("unexpected tensor %s", name);
    return 0;
}

/* the biases of dropped sub-blocks in the drops scenario, added where the
 * residual stream takes them (prune.h), in the order layer, attention, MLP */
static void add_moved(const char *name, size_t r, size_t c, float *v, const float *vz,
                      const float *tz, const kept *kv, const kept *kt, const tc_param_layout *sl,
                      const float *sp, tc_prune_mode mode) {
    (void)c;
    if (!strcmp(name, "visual.ln_pre.bias") && mode == TC_PRUNE_EXACT) {
        int d = kv->hk[r]; /* vision layer 0 has no heads: nothing earlier */
        *v += src_tensor(sl, sp, "visual.transformer.resblocks.0.attn.out_proj.bias")[d] * vz[d];
    }
    if (!strcmp(name, "visual.transformer.resblocks.1.attn.out_proj.bias")) {
        int d = kv->hk[r]; /* vision layer 1 has no MLP */
        *v += src_tensor(sl, sp, "visual.transformer.resblocks.1.mlp.c_proj.bias")[d] * vz[d];
    }
    if (!strcmp(name, "positional_embedding")) {
        int d = kt->hk[c]; /* text layer 0 is empty: both biases go to every position */
        if (mode == TC_PRUNE_EXACT)
            *v += src_tensor(sl, sp, "transformer.resblocks.0.attn.out_proj.bias")[d] * tz[d];
        *v += src_tensor(sl, sp, "transformer.resblocks.0.mlp.c_proj.bias")[d] * tz[d];
    }
}

static void check_pruned(const tc_model_config *cfg, const tc_param_layout *sl, const float *sp,
                         const float *vz, const float *tz, int drops, tc_prune_mode mode,
                         const tc_model_config *oc, const tc_param_layout *ol, const float *op) {
    kept kv, kt;
    kept_of(vz, &kv);
    kept_of(tz, &kt);
    /* the irregular config */
    assert_int_equal(oc->vision.width, kv.nh);
    assert_int_equal(oc->text.width, kt.nh);
    for (int l = 0; l < L; l++) {
        assert_int_equal(oc->vision.heads[l], kv.nheads[l]);
        assert_int_equal(oc->vision.mlp_width[l], kv.nint[l]);
        assert_int_equal(oc->text.heads[l], kt.nheads[l]);
        assert_int_equal(oc->text.mlp_width[l], kt.nint[l]);
    }
    assert_true(oc->irregular);
    assert_int_equal(oc->embed_dim, cfg->embed_dim);
    assert_int_equal(tc_model_config_validate(oc, "pruned"), TC_OK);
    /* its layout, rebuilt, has the shapes of the returned one */
    tc_param_layout rl;
    assert_int_equal(tc_param_layout_build(&rl, oc), TC_OK);
    assert_int_equal(rl.count, ol->count);
    assert_int_equal(rl.total, ol->total);
    for (int i = 0; i < rl.count; i++) {
        assert_string_equal(rl.params[i].name, ol->params[i].name);
        assert_int_equal(rl.params[i].ndim, ol->params[i].ndim);
        for (int d = 0; d < rl.params[i].ndim; d++)
            assert_int_equal(rl.params[i].shape[d], ol->params[i].shape[d]);
    }
    tc_param_layout_free(&rl);
    if (drops) {
        /* layer 0 of the text tower is gone entirely */
        assert_null(tc_param_find(ol, "transformer.resblocks.0.ln_1.weight"));
        assert_null(tc_param_find(ol, "transformer.resblocks.0.mlp.c_fc.weight"));
        assert_null(tc_param_find(ol, "visual.transformer.resblocks.1.mlp.c_fc.weight"));
    }
    size_t n = 0;
    for (int i = 0; i < ol->count; i++) {
        const tc_param_info *p = &ol->params[i];
        if (p->ndim == 0) {
            assert_true(op[p->offset] == sp[sl->logit_scale]);
            continue;
        }
        int vis = p->tower == TC_TOWER_VISION;
        const float *z = vis ? vz : tz;
        const kept *k = vis ? &kv : &kt;
        size_t cols = p->count / (size_t)p->shape[0];
        for (size_t e = 0; e < p->count; e++) {
            size_t r = e / cols, c = e % cols;
            float want = expect(p->name, r, c, z, k, sl, sp, mode);
            if (drops) add_moved(p->name, r, c, &want, vz, tz, &kv, &kt, sl, sp, mode);
            if (op[p->offset + e] != want)
                fail_msg("%s[%zu,%zu]: %.9g, want %.9g", p->name, r, c, (double)op[p->offset + e],
                         (double)want);
            n++;
        }
    }
    print_message("mode %d drops %d: %zu pruned elements equal the folded values\n", mode, drops,
                  n);
}

static void test_prune_elements(void **state) {
    (void)state;
    tc_model_config cfg;
    base_config(&cfg);
    tc_param_layout l;
    assert_int_equal(tc_param_layout_build(&l, &cfg), TC_OK);
    float *p = random_params(&l, 11);
    float vz[NZ], tz[NZ];
    for (int drops = 0; drops < 2; drops++)
        for (int mode = 0; mode < 2; mode++) {
            make_z(vz, 0, drops);
            make_z(tz, 1, drops);
            tc_model_config oc;
            tc_param_layout ol;
            float *op;
            tc_status st = tc_prune_z(&cfg, &l, p, vz, tz, (tc_prune_mode)mode, &oc, &ol, &op);
            if (st != TC_OK) fail_msg("%s", tc_last_error());
            check_pruned(&cfg, &l, p, vz, tz, drops, (tc_prune_mode)mode, &oc, &ol, op);

            /* fold, then prune with 0/1 masks: the same model */
            float *f = malloc(l.total * sizeof *f);
            memcpy(f, p, l.total * sizeof *f);
            assert_int_equal(tc_prune_fold(&cfg, &l, f, vz, tz, (tc_prune_mode)mode), TC_OK);
            float bv[NZ], bt[NZ];
            for (int i = 0; i < NZ; i++) {
                bv[i] = vz[i] != 0;
                bt[i] = tz[i] != 0;
            }
            tc_model_config oc2;
            tc_param_layout ol2;
            float *op2;
            assert_int_equal(tc_prune_z(&cfg, &l, f, bv, bt, (tc_prune_mode)mode, &oc2, &ol2, &op2),
                             TC_OK);
            assert_int_equal(ol2.total, ol.total);
            for (size_t i = 0; i < ol.total; i++)
                if (!(op2[i] == op[i])) fail_msg("fold+prune differs at %zu", i);
            if (!drops) {
                /* every entry a prune removes is 0 in the fold, every kept one is not */
                size_t nf = 0, np = 0;
                for (size_t i = 0; i < l.total; i++)
                    nf += f[i] != 0;
                for (size_t i = 0; i < ol.total; i++)
                    np += op[i] != 0;
                assert_int_equal(nf, np);
            }
            free(op2);
            tc_param_layout_free(&ol2);
            free(f);
            free(op);
            tc_param_layout_free(&ol);
        }
    free(p);
    tc_param_layout_free(&l);
}

static void test_expand_round_trip(void **state) {
    (void)state;
    tc_model_config cfg;
    base_config(&cfg);
    tc_param_layout l;
    assert_int_equal(tc_param_layout_build(&l, &cfg), TC_OK);
    float *p = random_params(&l, 12);
    float vz[NZ], tz[NZ];
    make_z(vz, 0, 1);
    make_z(tz, 1, 1);
    tc_model_config cc;
    tc_param_layout cl;
    float *compact;
    assert_int_equal(tc_prune_z(&cfg, &l, p, vz, tz, TC_PRUNE_EXACT, &cc, &cl, &compact), TC_OK);

    float *full = malloc(l.total * sizeof *full);
    for (size_t i = 0; i < l.total; i++)
        full[i] = 77.0f; /* expand must zero it */
    tc_l0_masks mv, mt;
    tc_status st = tc_expand(&cc, &cl, compact, &cfg, &l, full, &mv, &mt);
    if (st != TC_OK) fail_msg("%s", tc_last_error());
    /* masks: kept 10, pruned -10, lambda 10 */
    tc_l0_masks *ms[2] = {&mv, &mt};
    const tc_tower_config *ct[2] = {&cc.vision, &cc.text};
    for (int k = 0; k < 2; k++) {
        const tc_l0_masks *m = ms[k];
        assert_true(m->lambda[0] == 10.0f && m->lambda[1] == 10.0f);
        for (int d = 0; d < C; d++)
            assert_true(m->hidden_loga[d] == (d < ct[k]->width ? 10.0f : -10.0f));
        for (int ll = 0; ll < L; ll++) {
            for (int h = 0; h < NH; h++)
                assert_true(m->heads_loga[ll * NH + h] == (h < ct[k]->heads[ll] ? 10.0f : -10.0f));
            for (int i = 0; i < M; i++)
                assert_true(m->intermediate_loga[ll * M + i] ==
                            (i < ct[k]->mlp_width[ll] ? 10.0f : -10.0f));
        }
    }
    /* leading slices: the full model holds exactly the compact values, the rest is 0 */
    double sf = 0, sc = 0;
    for (size_t i = 0; i < l.total; i++)
        sf += fabs(full[i]);
    for (size_t i = 0; i < cl.total; i++)
        sc += fabs(compact[i]);
    assert_true(fabs(sf - sc) <= 1e-9 * sc);
    /* in_proj in its (3, heads, 64, C) view: vision layer 2 keeps 1 head of 2 */
    const tc_param_info *fq =
        tc_param_find(&l, "visual.transformer.resblocks.2.attn.in_proj_weight");
    const tc_param_info *cq =
        tc_param_find(&cl, "visual.transformer.resblocks.2.attn.in_proj_weight");
    int cw = cc.vision.width;
    for (int q = 0; q < 3; q++)
        for (int r = 0; r < 64; r++)
            for (int c = 0; c < cw; c++)
                assert_true(full[fq->offset + (size_t)(q * 128 + r) * C + c] ==
                            compact[cq->offset + (size_t)(q * 64 + r) * cw + c]);

    /* exact 0/1 masks of the kept sets: prune gives back the compact model */
    float bv[NZ], bt[NZ];
    for (int i = 0; i < NZ; i++) {
        bv[i] = mv.data[i] > 0;
        bt[i] = mt.data[i] > 0;
    }
    tc_model_config rc;
    tc_param_layout rl;
    float *rp;
    assert_int_equal(tc_prune_z(&cfg, &l, full, bv, bt, TC_PRUNE_ORIGINAL, &rc, &rl, &rp), TC_OK);
    assert_int_equal(rl.total, cl.total);
    assert_int_equal(rc.vision.width, cc.vision.width);
    assert_int_equal(rc.text.width, cc.text.width);
    for (int ll = 0; ll < L; ll++) {
        assert_int_equal(rc.vision.heads[ll], cc.vision.heads[ll]);
        assert_int_equal(rc.vision.mlp_width[ll], cc.vision.mlp_width[ll]);
        assert_int_equal(rc.text.heads[ll], cc.text.heads[ll]);
        assert_int_equal(rc.text.mlp_width[ll], cc.text.mlp_width[ll]);
    }
    for (size_t i = 0; i < cl.total; i++)
        if (!(rp[i] == compact[i])) fail_msg("round trip differs at %zu", i);
    free(rp);
    tc_param_layout_free(&rl);

    /* the masks themselves (deterministic: kept at their soft value
     * sigmoid(12) = 0.999994) give the compact model up to that factor */
    assert_int_equal(tc_prune(&cfg, &l, full, &mv, &mt, 0, &rc, &rl, &rp), TC_OK);
    assert_int_equal(rl.total, cl.total);
    assert_int_equal(rc.vision.width, cc.vision.width);
    double worst = 0;
    for (size_t i = 0; i < cl.total; i++) {
        double e = fabs((double)rp[i] - compact[i]) / (fabs(compact[i]) + 1e-3);
        if (e > worst) worst = e;
    }
    print_message("round trip through the masks: largest relative change %.3g\n", worst);
    assert_true(worst < 3e-5);
    free(rp);
    tc_param_layout_free(&rl);

    tc_l0_masks_free(&mv);
    tc_l0_masks_free(&mt);
    free(full);
    free(compact);
    tc_param_layout_free(&cl);
    free(p);
    tc_param_layout_free(&l);
}

static void features(tc_model *m, tc_backend *be, const float *images, const int32_t *ids, int B,
                     float *fi, float *ft) {
    assert_int_equal(tc_model_encode_image(m, images, B), TC_OK);
    assert_int_equal(tc_model_encode_text(m, ids, B), TC_OK);
    assert_int_equal(be->download(be, fi, tc_model_image_features(m), (size_t)B * E * sizeof *fi),
                     TC_OK);
    assert_int_equal(be->download(be, ft, tc_model_text_features(m), (size_t)B * E * sizeof *ft),
                     TC_OK);
}

/* the masked forward (deterministic z) against the forward of the pruned model */
static void test_forward_equivalence(void **state) {
    (void)state;
    tc_model_config cfg;
    base_config(&cfg);
    tc_param_layout l;
    assert_int_equal(tc_param_layout_build(&l, &cfg), TC_OK);
    float *p = random_params(&l, 13);
    tc_backend *be;
    assert_int_equal(tc_backend_cpu_create(&be, &(tc_backend_options){.threads = 1}), TC_OK);
    enum { B = 3 };
    float images[B * 3 * 16 * 16];
    int32_t ids[B * 6] = {3, 5, 19, 0, 0, 0, 7, 7, 7, 7, 19, 0, 2, 19, 0, 0, 0, 0};
    uint64_t s = 5;
    tc_fill_uniform(images, sizeof images / sizeof *images, &s, 1.0f);

    tc_model *mm;
    tc_model_options mo = {B, 0, 1};
    assert_int_equal(tc_model_create(&mm, be, &cfg, mo), TC_OK);
    assert_int_equal(tc_model_set_params(mm, p), TC_OK);
    float *dz[2];
    float zs[2][NZ];
    tc_tower_masks tm[2];
    for (int k = 0; k < 2; k++) {
        make_z(zs[k], k, 1);
        assert_int_equal(be->alloc(be, NZ * sizeof(float), (void **)&dz[k]), TC_OK);
        assert_int_equal(be->upload(be, dz[k], zs[k], NZ * sizeof(float)), TC_OK);
        tm[k] = (tc_tower_masks){dz[k], dz[k] + C, dz[k] + C + L * NH, NULL, NULL, NULL, NH, M};
    }
    assert_int_equal(tc_model_set_masks(mm, &tm[0], &tm[1]), TC_OK);
    float fi[B * E], ft[B * E];
    features(mm, be, images, ids, B, fi, ft);

    for (int mode = 0; mode < 2; mode++) {
        tc_model_config oc;
        tc_param_layout ol;
        float *op;
        assert_int_equal(tc_prune_z(&cfg, &l, p, zs[0], zs[1], (tc_prune_mode)mode, &oc, &ol, &op),
                         TC_OK);
        tc_model *pm;
        tc_model_options po = {B, 0, 0};
        tc_status st = tc_model_create(&pm, be, &oc, po);
        if (st != TC_OK) fail_msg("%s", tc_last_error());
        assert_int_equal(tc_model_set_params(pm, op), TC_OK);
        float gi[B * E], gt[B * E];
        features(pm, be, images, ids, B, gi, gt);
        double ei = tc_rel_err(gi, fi, B * E), et = tc_rel_err(gt, ft, B * E);
        print_message("%s prune vs masked forward: image features rel err %.3g, text %.3g\n",
                      mode ? "exact" : "original", ei, et);
        if (mode == TC_PRUNE_EXACT) {
            assert_true(ei <= 1e-5);
            assert_true(et <= 1e-5);
        } else {
            /* the original scales proj by hz and drops a head-less layer's bias */
            assert_true(ei > 1e-4 && et > 1e-4);
        }
        tc_model_destroy(pm);
        free(op);
        tc_param_layout_free(&ol);
    }
    tc_model_destroy(mm);
    for (int k = 0; k < 2; k++)
        be->free(be, dz[k]);
    be->destroy(be);
    free(p);
    tc_param_layout_free(&l);
}

static void test_round_to(void **state) {
    (void)state;
    tc_model_config cfg;
    base_config(&cfg);
    tc_param_layout l;
    assert_int_equal(tc_param_layout_build(&l, &cfg), TC_OK);
    float *p = random_params(&l, 14);
    tc_l0_masks mv, mt;
    assert_int_equal(tc_l0_masks_for_tower(&mv, &cfg.vision, "vision"), TC_OK);
    assert_int_equal(tc_l0_masks_for_tower(&mt, &cfg.text, "text"), TC_OK);
    uint64_t s = 3;
    for (int k = 0; k < 2; k++) {
        tc_l0_masks *m = k ? &mt : &mv;
        for (size_t i = 0; i < m->n_loga; i++)
            m->data[i] = (float)((tc_test_rand(&s) % 1000) / 1000.0 * 9.2 - 4.6);
    }
    const int rounds[3] = {0, 8, 64};
    int widths[3];
    for (int r = 0; r < 3; r++) {
        tc_model_config oc;
        tc_param_layout ol;
        float *op;
        tc_status st = tc_prune(&cfg, &l, p, &mv, &mt, rounds[r], &oc, &ol, &op);
        if (st != TC_OK) fail_msg("%s", tc_last_error());
        widths[r] = oc.vision.width;
        print_message("round_to %2d: vision width %d, mlp %d %d %d; text width %d, mlp %d %d %d; "
                      "heads %d %d %d\n",
                      rounds[r], oc.vision.width, oc.vision.mlp_width[0], oc.vision.mlp_width[1],
                      oc.vision.mlp_width[2], oc.text.width, oc.text.mlp_width[0],
                      oc.text.mlp_width[1], oc.text.mlp_width[2], oc.vision.heads[0],
                      oc.vision.heads[1], oc.vision.heads[2]);
        if (rounds[r]) {
            assert_int_equal(oc.vision.width % rounds[r], 0);
            assert_int_equal(oc.text.width % rounds[r], 0);
            for (int ll = 0; ll < L; ll++) {
                assert_int_equal(oc.vision.mlp_width[ll] % rounds[r], 0);
                assert_int_equal(oc.text.mlp_width[ll] % rounds[r], 0);
            }
        }
        free(op);
        tc_param_layout_free(&ol);
    }
    assert_true(widths[0] <= widths[1] && widths[1] <= widths[2]);
    tc_l0_masks_free(&mv);
    tc_l0_masks_free(&mt);
    free(p);
    tc_param_layout_free(&l);
}

static void test_errors(void **state) {
    (void)state;
    tc_model_config cfg, oc;
    base_config(&cfg);
    tc_param_layout l, ol;
    assert_int_equal(tc_param_layout_build(&l, &cfg), TC_OK);
    float *p = random_params(&l, 15), *op = NULL;
    /* masks of another shape */
    tc_l0_masks m;
    assert_int_equal(tc_l0_masks_create(&m, L, 192, 3, M), TC_OK);
    assert_int_equal(tc_prune(&cfg, &l, p, &m, NULL, 0, &oc, &ol, &op), TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "vision"));
    assert_null(op);
    tc_l0_masks_free(&m);
    /* every hidden dim pruned */
    float z[NZ];
    make_z(z, 0, 0);
    for (int d = 0; d < C; d++)
        z[d] = 0;
    assert_int_equal(tc_prune_z(&cfg, &l, p, NULL, z, TC_PRUNE_ORIGINAL, &oc, &ol, &op),
                     TC_ERR_CONFIG);
    assert_non_null(strstr(tc_last_error(), "text"));
    /* a masked tower must be teacher-shaped */
    tc_model_config irr = cfg;
    irr.vision.heads[1] = 1;
    irr.irregular = 1;
    tc_param_layout il;
    assert_int_equal(tc_param_layout_build(&il, &irr), TC_OK);
    float *ip = random_params(&il, 16);
    make_z(z, 0, 0);
    assert_int_equal(tc_prune_z(&irr, &il, ip, z, NULL, TC_PRUNE_ORIGINAL, &oc, &ol, &op),
                     TC_ERR_CONFIG);
    /* a layout that is not the config's */
    assert_int_equal(tc_prune_z(&cfg, &il, ip, z, NULL, TC_PRUNE_ORIGINAL, &oc, &ol, &op),
                     TC_ERR_ARG);
    /* expand: a compact model wider than the full one */
    tc_model_config small = cfg;
    tc_tower_set_uniform(&small.vision, L, 64, 1, 128);
    tc_param_layout sl;
    assert_int_equal(tc_param_layout_build(&sl, &small), TC_OK);
    float *full = malloc(sl.total * sizeof *full);
    assert_int_equal(tc_expand(&cfg, &l, p, &small, &sl, full, NULL, NULL), TC_ERR_CONFIG);
    free(full);
    tc_param_layout_free(&sl);
    free(ip);
    tc_param_layout_free(&il);
    free(p);
    tc_param_layout_free(&l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prune_elements),
        cmocka_unit_test(test_expand_round_trip),
        cmocka_unit_test(test_forward_equivalence),
        cmocka_unit_test(test_round_to),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
