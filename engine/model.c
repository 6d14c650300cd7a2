/* CLIP forward and backward over the backend table, as open_clip computes it
 * (docs/design.md §4): per tower, embeddings -> [ln_pre] -> pre-LN residual
 * blocks -> pool -> final LayerNorm -> projection -> L2 normalisation.
 *
 * pooling then LayerNorm equals LayerNorm then pooling for token/argmax
 * pooling (LayerNorm is per row), so the final LayerNorm runs on B rows only;
 * mean pooling with final_ln_after_pool = false normalises every token first,
 * as open_clip does. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_resnet.h"
#include "rng.h"

typedef struct {
    tc_act *ln1, *qkv, *atty, *res_att; /* (B,T,C) (B,T,3A) (B,T,A) (B,T,C) */
    tc_act *ln2, *fch, *fch_act, *res_mlp; /* (B,T,C) (B,T,M) (B,T,M) (B,T,C) */
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd; /* (B,T) */
    float *lse; /* (B,NH,T) */
    /* masked models only: inputs of each mask, kept for the mask gradients */
    tc_act *atty_m, *attn_out, *fch_m, *mlp_out; /* (B,T,A) (B,T,C) (B,T,M) (B,T,C) */
} layer_acts;

typedef struct {
    const tc_tower_config *cfg;
    const tc_block_offsets *blocks;
    int is_text;
    int T, C, B;            /* tokens, width, batch of the last forward */
    int ln_before_pool;     /* mean pooling without final_ln_after_pool */
    /* inputs */
    float *images;          /* vision (B,3,S,S) */
    int32_t *ids;           /* text (B,T) */
    int32_t *pool_idx;      /* text (B) argmax positions */
    /* activations */
    tc_act *patches;        /* vision (B*g*g, 3*P*P) */
    tc_act *patch_emb;      /* vision (B, T-1, C) */
    tc_act *embed;          /* (B,T,C) embeddings (+ positions) */
    tc_act *embed_m;        /* (B,T,C) embed * hidden mask (masked models) */
    tc_act *x0;             /* the residual stream entering layer 0 */
    const tc_tower_masks *mask; /* NULL when no masks are installed */
    tc_act *ln_pre;         /* vision (B,T,C) */
    float *ln_pre_mean, *ln_pre_rstd;
    layer_acts layer[TC_MAX_LAYERS];
    tc_act *fwd_tmp;        /* (B,T,C) sub-block output before the residual add */
    tc_act *lnf_all;        /* (B,T,C) only when ln_before_pool */
    float *lnf_all_mean, *lnf_all_rstd;
    tc_act *pooled;         /* (B,C) */
    tc_act *lnf;            /* (B,C) */
    float *lnf_mean, *lnf_rstd;
    tc_act *proj;           /* (B,E) */
    float *features, *norms;/* (B,E), (B) */
    /* backward */
    tc_act *dres;           /* (B,T,C) gradient of the residual stream */
    tc_act *dscratch1, *dscratch2; /* (B,T,max(C,3A,M)) */
    tc_act *dproj, *dlnf, *dpooled; /* (B,E) (B,C) (B,C) */
} tower;

struct tc_model {
    tc_backend *be;
    tc_model_config cfg;
    tc_param_layout layout;
    tc_model_options opt;
    float *params;
    tc_act *weights; /* compute copy; aliases params when the backend has none */
    float *grads;
    tower vis, txt;
    tc_rn_tower *rn;    /* the vision tower when it is a ResNet (vis unused) */
    tc_bn_mode bn_mode; /* BatchNorm statistics of the next image forward */
    tc_backward_hook hook;
    void *hook_ctx;
    /* every allocation, freed in reverse */
    void **allocs;
    int n_allocs, cap_allocs;
    size_t bytes;
};

/* ---- allocation ---- */

static tc_status model_alloc(tc_model *m, size_t bytes, void **out) {
    *out = NULL;
    if (bytes == 0) return TC_OK;
    if (m->n_allocs == m->cap_allocs) {
        int cap = m->cap_allocs ? 2 * m->cap_allocs : 64;
        void **a = realloc(m->allocs, (size_t)cap * sizeof *a);
        if (!a) return tc_fail(TC_ERR_OOM, "model: out of host memory");
        m->allocs = a;
        m->cap_allocs = cap;
    }
    TC_TRY(m->be->alloc(m->be, bytes, out));
    m->allocs[m->n_allocs++] = *out;
    m->bytes += bytes;
    return TC_OK;
}

#define ALLOC_ACT(ptr, n) TC_TRY(model_alloc(m, (size_t)(n) * m->be->act_bytes, (void **)&(ptr)))
#define ALLOC_F32(ptr, n) TC_TRY(model_alloc(m, (size_t)(n) * sizeof(float), (void **)&(ptr)))
#define ALLOC_I32(ptr, n) TC_TRY(model_alloc(m, (size_t)(n) * sizeof(int32_t), (void **)&(ptr)))

static int max_int(int a, int b) { return a > b ? a : b; }

/* the ResNet tower allocates through the model (tc_rn_env) */
static tc_status rn_alloc(void *ctx, size_t bytes, void **out) {
    return model_alloc((tc_model *)ctx, bytes, out);
}

static tc_status tower_alloc(tc_model *m, tower *t, const tc_tower_config *cfg,
                             const tc_block_offsets *blocks, int is_text) {
    int B = m->opt.max_batch, E = m->cfg.embed_dim;
    t->cfg = cfg;
    t->blocks = blocks;
    t->is_text = is_text;
    t->C = cfg->width;
    t->T = is_text ? cfg->context_length : tc_vision_tokens(cfg);
    t->ln_before_pool = (cfg->pool == TC_POOL_MEAN && !cfg->final_ln_after_pool);
    int T = t->T, C = t->C;
    size_t BTC = (size_t)B * T * C;
    int widest = C;
    for (int l = 0; l < cfg->layers; l++)
        widest = max_int(widest, max_int(3 * cfg->heads[l] * cfg->head_width, cfg->mlp_width[l]));

    if (is_text) {
        ALLOC_I32(t->ids, (size_t)B * T);
        ALLOC_I32(t->pool_idx, B);
    } else {
        int S = cfg->image_size, P = cfg->patch_size, g = tc_vision_grid(cfg);
        ALLOC_F32(t->images, (size_t)B * 3 * S * S);
        ALLOC_ACT(t->patches, (size_t)B * g * g * 3 * P * P);
        ALLOC_ACT(t->patch_emb, (size_t)B * g * g * C);
        if (!cfg->no_ln_pre) {
            ALLOC_ACT(t->ln_pre, BTC);
            ALLOC_F32(t->ln_pre_mean, (size_t)B * T);
            ALLOC_F32(t->ln_pre_rstd, (size_t)B * T);
        }
    }
    ALLOC_ACT(t->embed, BTC);
    ALLOC_ACT(t->fwd_tmp, BTC);

    /* an inference model shares one set of layer buffers across layers */
    int distinct = m->opt.train ? cfg->layers : 1;
    for (int l = 0; l < cfg->layers; l++) {
        layer_acts *a = &t->layer[l];
        if (l >= distinct) {
            /* same buffers as layer 0, sized for the widest layer below */
            *a = t->layer[0];
            continue;
        }
        int A = 0, M = 0, NH = 0;
        if (m->opt.train) {
            NH = cfg->heads[l];
            M = cfg->mlp_width[l];
        } else {
            for (int k = 0; k < cfg->layers; k++) {
                NH = max_int(NH, cfg->heads[k]);
                M = max_int(M, cfg->mlp_width[k]);
            }
        }
        A = NH * cfg->head_width;
        if (A > 0) {
            ALLOC_ACT(a->ln1, BTC);
            ALLOC_F32(a->ln1_mean, (size_t)B * T);
            ALLOC_F32(a->ln1_rstd, (size_t)B * T);
            ALLOC_ACT(a->qkv, (size_t)B * T * 3 * A);
            ALLOC_ACT(a->atty, (size_t)B * T * A);
            ALLOC_F32(a->lse, (size_t)B * NH * T);
        }
        ALLOC_ACT(a->res_att, BTC);
        if (M > 0) {
            ALLOC_ACT(a->ln2, BTC);
            ALLOC_F32(a->ln2_mean, (size_t)B * T);
            ALLOC_F32(a->ln2_rstd, (size_t)B * T);
            ALLOC_ACT(a->fch, (size_t)B * T * M);
            ALLOC_ACT(a->fch_act, (size_t)B * T * M);
        }
        ALLOC_ACT(a->res_mlp, BTC);
        if (m->opt.masked) {
            if (A > 0) {
                ALLOC_ACT(a->atty_m, (size_t)B * T * A);
                ALLOC_ACT(a->attn_out, BTC);
            }
            if (M > 0) {
                ALLOC_ACT(a->fch_m, (size_t)B * T * M);
                ALLOC_ACT(a->mlp_out, BTC);
            }
        }
    }
    if (m->opt.masked) ALLOC_ACT(t->embed_m, BTC);
    if (t->ln_before_pool) {
        ALLOC_ACT(t->lnf_all, BTC);
        ALLOC_F32(t->lnf_all_mean, (size_t)B * T);
        ALLOC_F32(t->lnf_all_rstd, (size_t)B * T);
    }
    ALLOC_ACT(t->pooled, (size_t)B * C);
    ALLOC_ACT(t->lnf, (size_t)B * C);
    ALLOC_F32(t->lnf_mean, B);
    ALLOC_F32(t->lnf_rstd, B);
    ALLOC_ACT(t->proj, (size_t)B * E);
    ALLOC_F32(t->features, (size_t)B * E);
    ALLOC_F32(t->norms, B);
    if (m->opt.train) {
        ALLOC_ACT(t->dres, BTC);
        ALLOC_ACT(t->dscratch1, (size_t)B * T * widest);
        ALLOC_ACT(t->dscratch2, (size_t)B * T * widest);
        ALLOC_ACT(t->dproj, (size_t)B * E);
        ALLOC_ACT(t->dlnf, (size_t)B * C);
        ALLOC_ACT(t->dpooled, (size_t)B * C);
    }
    return TC_OK;
}

tc_status tc_model_create(tc_model **out, tc_backend *be, const tc_model_config *cfg,
                          tc_model_options opt) {
    *out = NULL;
    if (opt.max_batch < 1) return tc_fail(TC_ERR_ARG, "model: batch size must be at least 1");
    TC_TRY(tc_model_config_validate(cfg, cfg->name));
    tc_model *m = calloc(1, sizeof *m);
    if (!m) return tc_fail(TC_ERR_OOM, "model: out of host memory");
    m->be = be;
    m->cfg = *cfg;
    m->opt = opt;
    tc_status s = tc_param_layout_build(&m->layout, cfg);
    if (s != TC_OK) goto fail;
    size_t P = m->layout.total;
    if ((s = model_alloc(m, P * sizeof(float), (void **)&m->params)) != TC_OK) goto fail;
    if (be->caps.separate_compute_weights) {
        if ((s = model_alloc(m, P * be->act_bytes, (void **)&m->weights)) != TC_OK) goto fail;
    } else {
        m->weights = (tc_act *)m->params;
    }
    if (opt.train && (s = model_alloc(m, P * sizeof(float), (void **)&m->grads)) != TC_OK)
        goto fail;
    if (cfg->vision.resnet) {
        if (!be->caps.conv2d) {
            s = tc_fail(TC_ERR_UNSUPPORTED,
                        "the %s backend has no convolutions here (cuDNN could not be loaded), so "
                        "it cannot run a ResNet image tower",
                        be->name);
            goto fail;
        }
        tc_rn_env env = {be, &m->layout, m->params, m->weights, m->grads, rn_alloc, m};
        if ((s = tc_rn_create(&m->rn, &env, &m->cfg, opt.max_batch, opt.train)) != TC_OK)
            goto fail;
    } else if ((s = tower_alloc(m, &m->vis, &m->cfg.vision, m->layout.vblocks, 0)) != TC_OK) {
        goto fail;
    }
    if ((s = tower_alloc(m, &m->txt, &m->cfg.text, m->layout.tblocks, 1)) != TC_OK) goto fail;
    *out = m;
    return TC_OK;
fail:
    tc_model_destroy(m);
    return tc_fail_context(s, "model %s", cfg->name[0] ? cfg->name : "(unnamed)");
}

void tc_model_destroy(tc_model *m) {
    if (!m) return;
    for (int i = m->n_allocs - 1; i >= 0; i--) m->be->free(m->be, m->allocs[i]);
    free(m->allocs);
    tc_rn_destroy(m->rn);
    tc_param_layout_free(&m->layout);
    free(m);
}

const tc_model_config *tc_model_cfg(const tc_model *m) { return &m->cfg; }
const tc_param_layout *tc_model_layout(const tc_model *m) { return &m->layout; }
tc_backend *tc_model_backend(const tc_model *m) { return m->be; }
int tc_model_max_batch(const tc_model *m) { return m->opt.max_batch; }
float *tc_model_params(tc_model *m) { return m->params; }
float *tc_model_grads(tc_model *m) { return m->grads; }
tc_act *tc_model_compute_weights(tc_model *m) { return m->weights; }
float *tc_model_image_features(tc_model *m) {
    return m->rn ? tc_rn_features(m->rn) : m->vis.features;
}
float *tc_model_text_features(tc_model *m) { return m->txt.features; }
float *tc_model_image_input(tc_model *m) { return m->rn ? tc_rn_images(m->rn) : m->vis.images; }
void tc_model_set_bn_mode(tc_model *m, tc_bn_mode mode) { m->bn_mode = mode; }
int32_t *tc_model_text_input(tc_model *m) { return m->txt.ids; }
size_t tc_model_device_bytes(const tc_model *m) { return m->bytes; }

void tc_model_refresh_compute(tc_model *m) {
    if (m->be->caps.separate_compute_weights)
        m->be->f32_to_act(m->be, m->weights, m->params, m->layout.total);
}

tc_status tc_model_set_params(tc_model *m, const float *host) {
    TC_TRY(m->be->upload(m->be, m->params, host, m->layout.total * sizeof(float)));
    tc_model_refresh_compute(m);
    return TC_OK;
}

tc_status tc_model_get_params(tc_model *m, float *host) {
    return m->be->download(m->be, host, m->params, m->layout.total * sizeof(float));
}

void tc_model_zero_grads(tc_model *m) {
    if (m->grads) m->be->zero(m->be, m->grads, m->layout.total * sizeof(float));
}

/* weight / gradient views; TC_ABSENT never reaches these (sub-blocks are skipped) */
static inline const tc_act *W(const tc_model *m, size_t off) {
    return tc_act_offset(m->be, m->weights, off);
}
static inline float *G(const tc_model *m, size_t off) { return m->grads + off; }

/* ---- forward ---- */

/* the residual stream entering layer l */
static tc_act *layer_input(const tower *t, int l) {
    return l > 0 ? t->layer[l - 1].res_mlp : t->x0;
}

/* LayerNorm over all columns, or over the kept ones of a masked tower */
static void ln_forward(tc_model *m, const tower *t, tc_act *out, float *mean, float *rstd,
                       const tc_act *inp, size_t w, size_t b, int N, int C) {
    tc_backend *be = m->be;
    if (t->mask)
        be->layernorm_masked_forward(be, out, mean, rstd, inp, W(m, w), W(m, b), t->mask->hidden,
                                     N, C);
    else
        be->layernorm_forward(be, out, mean, rstd, inp, W(m, w), W(m, b), N, C);
}

static void ln_backward(tc_model *m, const tower *t, tc_act *dinp, const tc_act *dout,
                        const tc_act *inp, size_t w, size_t b, const float *mean,
                        const float *rstd, int N, int C) {
    tc_backend *be = m->be;
    if (t->mask)
        be->layernorm_masked_backward(be, dinp, G(m, w), G(m, b), dout, inp, W(m, w), mean, rstd,
                                      t->mask->hidden, N, C);
    else
        be->layernorm_backward(be, dinp, G(m, w), G(m, b), dout, inp, W(m, w), mean, rstd, N, C);
}

static const float *heads_mask(const tower *t, int l) {
    return t->mask->heads + (size_t)l * t->mask->heads_stride;
}
static const float *inter_mask(const tower *t, int l) {
    return t->mask->inter + (size_t)l * t->mask->inter_stride;
}
static float *dheads_mask(const tower *t, int l) {
    return t->mask->dheads ? t->mask->dheads + (size_t)l * t->mask->heads_stride : NULL;
}
static float *dinter_mask(const tower *t, int l) {
    return t->mask->dinter ? t->mask->dinter + (size_t)l * t->mask->inter_stride : NULL;
}

static void blocks_forward(tc_model *m, tower *t, int B) {
    tc_backend *be = m->be;
    const tc_tower_config *cfg = t->cfg;
    const tc_tower_masks *mk = t->mask;
    int T = t->T, C = t->C, N = B * T;
    for (int l = 0; l < cfg->layers; l++) {
        const tc_block_offsets *o = &t->blocks[l];
        layer_acts *a = &t->layer[l];
        tc_act *x = layer_input(t, l);
        int NH = cfg->heads[l], A = NH * cfg->head_width, M = cfg->mlp_width[l];
        if (A > 0) {
            ln_forward(m, t, a->ln1, a->ln1_mean, a->ln1_rstd, x, o->ln1_w, o->ln1_b, N, C);
            be->linear_forward(be, a->qkv, a->ln1, W(m, o->qkv_w), W(m, o->qkv_b), N, C, 3 * A,
                               0);
            be->attention_forward(be, a->atty, a->lse, a->qkv, B, T, NH, cfg->head_width,
                                  t->is_text);
            if (mk) {
                be->mask_cols_forward(be, a->atty_m, a->atty, heads_mask(t, l), N, A, cfg->head_width);
                be->linear_forward(be, a->attn_out, a->atty_m, W(m, o->out_w), W(m, o->out_b), N,
                                   A, C, 0);
                be->mask_cols_forward(be, t->fwd_tmp, a->attn_out, mk->hidden, N, C, 1);
            } else {
                be->linear_forward(be, t->fwd_tmp, a->atty, W(m, o->out_w), W(m, o->out_b), N, A,
                                   C, 0);
            }
            be->add(be, a->res_att, x, t->fwd_tmp, (size_t)N * C);
        } else {
            be->copy(be, a->res_att, x, (size_t)N * C * be->act_bytes);
        }
        if (M > 0) {
            ln_forward(m, t, a->ln2, a->ln2_mean, a->ln2_rstd, a->res_att, o->ln2_w, o->ln2_b, N,
                       C);
            be->linear_forward(be, a->fch, a->ln2, W(m, o->fc_w), W(m, o->fc_b), N, C, M, 0);
            be->gelu_forward(be, a->fch_act, a->fch, (size_t)N * M, m->cfg.activation);
            if (mk) {
                be->mask_cols_forward(be, a->fch_m, a->fch_act, inter_mask(t, l), N, M, 1);
                be->linear_forward(be, a->mlp_out, a->fch_m, W(m, o->proj_w), W(m, o->proj_b), N,
                                   M, C, 0);
                be->mask_cols_forward(be, t->fwd_tmp, a->mlp_out, mk->hidden, N, C, 1);
            } else {
                be->linear_forward(be, t->fwd_tmp, a->fch_act, W(m, o->proj_w), W(m, o->proj_b),
                                   N, M, C, 0);
            }
            be->add(be, a->res_mlp, a->res_att, t->fwd_tmp, (size_t)N * C);
        } else {
            be->copy(be, a->res_mlp, a->res_att, (size_t)N * C * be->act_bytes);
        }
    }
}

/* pooling, final LayerNorm, projection, L2 normalisation */
static void head_forward(tc_model *m, tower *t, int B, size_t lnf_w, size_t lnf_b,
                         size_t proj_w) {
    tc_backend *be = m->be;
    int T = t->T, C = t->C, E = m->cfg.embed_dim;
    tc_act *x = layer_input(t, t->cfg->layers);
    if (t->ln_before_pool) {
        ln_forward(m, t, t->lnf_all, t->lnf_all_mean, t->lnf_all_rstd, x, lnf_w, lnf_b, B * T, C);
        be->pool_mean_forward(be, t->lnf, t->lnf_all, B, T, C);
    } else {
        if (t->cfg->pool == TC_POOL_MEAN)
            be->pool_mean_forward(be, t->pooled, x, B, T, C);
        else
            be->pool_gather_forward(be, t->pooled, x, t->is_text ? t->pool_idx : NULL, B, T, C);
        ln_forward(m, t, t->lnf, t->lnf_mean, t->lnf_rstd, t->pooled, lnf_w, lnf_b, B, C);
    }
    /* as the original's masked forward, the final LayerNorm output is not
     * scaled by the hidden mask (it is zero outside the kept dims) */
    be->linear_forward(be, t->proj, t->lnf, W(m, proj_w), NULL, B, C, E, 1);
    be->l2norm_forward(be, t->features, t->norms, t->proj, B, E);
}

static tc_status check_batch(const tc_model *m, int B) {
    if (B < 1 || B > m->opt.max_batch)
        return tc_fail(TC_ERR_ARG, "model %s: batch %d outside 1..%d", m->cfg.name, B,
                       m->opt.max_batch);
    return TC_OK;
}

/* embeddings (times the hidden mask) become the stream entering layer 0 */
static void embed_to_stream(tc_model *m, tower *t, int B) {
    tc_act *e = t->embed;
    if (t->mask) {
        m->be->mask_cols_forward(m->be, t->embed_m, t->embed, t->mask->hidden, B * t->T, t->C, 1);
        e = t->embed_m;
    }
    t->x0 = e;
    if (t->ln_pre) {
        const tc_param_layout *L = &m->layout;
        ln_forward(m, t, t->ln_pre, t->ln_pre_mean, t->ln_pre_rstd, e, L->v_ln_pre_w,
                   L->v_ln_pre_b, B * t->T, t->C);
        t->x0 = t->ln_pre;
    }
}

/* the patch embedding as the backend's convolution (t->patches then holds its
 * copy of the image) instead of patchify + GEMM; fixed for the backend's life */
static int patch_conv(const tc_backend *be) {
    return be->caps.patch_embed_conv && be->patch_embed_forward && be->patch_embed_backward_weight;
}

tc_status tc_model_encode_image_device(tc_model *m, const float *images, int B) {
    TC_TRY(check_batch(m, B));
    if (m->rn) {
        tc_rn_forward(m->rn, images, B, m->bn_mode);
        return TC_OK;
    }
    tc_backend *be = m->be;
    tower *t = &m->vis;
    const tc_param_layout *L = &m->layout;
    int S = t->cfg->image_size, P = t->cfg->patch_size, g = tc_vision_grid(t->cfg);
    int T = t->T, C = t->C;
    t->B = B;
    if (images != t->images)
        be->copy(be, t->images, images, (size_t)B * 3 * S * S * sizeof(float));
    if (patch_conv(be)) {
        be->patch_embed_forward(be, t->patch_emb, t->patches, t->images, W(m, L->v_conv1), B, S,
                                S, P, C);
    } else {
        be->patchify(be, t->patches, t->images, B, S, S, P);
        be->linear_forward(be, t->patch_emb, t->patches, W(m, L->v_conv1), NULL, B * g * g,
                           3 * P * P, C, 0);
    }
    be->vision_embed_forward(be, t->embed, t->patch_emb, W(m, L->v_cls), W(m, L->v_pos), B, T, C);
    embed_to_stream(m, t, B);
    blocks_forward(m, t, B);
    head_forward(m, t, B, L->v_ln_post_w, L->v_ln_post_b, L->v_proj);
    return TC_OK;
}

tc_status tc_model_encode_text_device(tc_model *m, const int32_t *ids, int B) {
    TC_TRY(check_batch(m, B));
    tc_backend *be = m->be;
    tower *t = &m->txt;
    const tc_param_layout *L = &m->layout;
    int T = t->T, C = t->C;
    t->B = B;
    if (ids != t->ids) be->copy(be, t->ids, ids, (size_t)B * T * sizeof(int32_t));
    be->token_embed_forward(be, t->embed, t->ids, W(m, L->token_emb), W(m, L->text_pos), B, T,
                            C);
    be->argmax_rows(be, t->pool_idx, t->ids, B, T);
    embed_to_stream(m, t, B);
    blocks_forward(m, t, B);
    head_forward(m, t, B, L->ln_final_w, L->ln_final_b, L->text_proj);
    return TC_OK;
}

tc_status tc_model_encode_image(tc_model *m, const float *host_images, int B) {
    TC_TRY(check_batch(m, B));
    int S = m->cfg.vision.image_size;
    float *in = tc_model_image_input(m);
    TC_TRY(m->be->upload(m->be, in, host_images, (size_t)B * 3 * S * S * sizeof(float)));
    return tc_model_encode_image_device(m, in, B);
}

tc_status tc_model_check_ids(const tc_model *m, const int32_t *host_ids, int B) {
    int T = m->cfg.text.context_length, V = m->cfg.text.vocab_size;
    /* the gather trusts its indices: check them here, on the host */
    for (size_t i = 0; i < (size_t)B * T; i++)
        if (host_ids[i] < 0 || host_ids[i] >= V)
            return tc_fail(TC_ERR_ARG,
                           "model %s: token id %d at sample %zu position %zu is outside the vocabulary (%d)",
                           m->cfg.name, host_ids[i], i / (size_t)T, i % (size_t)T, V);
    return TC_OK;
}

tc_status tc_model_encode_text(tc_model *m, const int32_t *host_ids, int B) {
    TC_TRY(check_batch(m, B));
    int T = m->cfg.text.context_length;
    TC_TRY(tc_model_check_ids(m, host_ids, B));
    TC_TRY(m->be->upload(m->be, m->txt.ids, host_ids, (size_t)B * T * sizeof(int32_t)));
    return tc_model_encode_text_device(m, m->txt.ids, B);
}

tc_status tc_model_set_masks(tc_model *m, const tc_tower_masks *vision, const tc_tower_masks *text) {
    if ((vision || text) && !m->opt.masked)
        return tc_fail(TC_ERR_ARG, "model %s: created without mask buffers", m->cfg.name);
    if (vision && m->rn)
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "model %s: structured masks (automatic inheritance) are for transformer "
                       "towers; a ResNet image tower has none",
                       m->cfg.name);
    m->vis.mask = vision;
    m->txt.mask = text;
    return TC_OK;
}

/* ---- backward ---- */

static void backward_done(tc_model *m, const tower *t, int layer) {
    if (m->hook) m->hook(m->hook_ctx, t->is_text ? TC_TOWER_TEXT : TC_TOWER_VISION, layer);
}

void tc_model_set_backward_hook(tc_model *m, tc_backward_hook fn, void *ctx) {
    m->hook = fn;
    m->hook_ctx = ctx;
}

static void blocks_backward(tc_model *m, tower *t, int B) {
    tc_backend *be = m->be;
    const tc_tower_config *cfg = t->cfg;
    const tc_tower_masks *mk = t->mask;
    int T = t->T, C = t->C, N = B * T;
    tc_act *d1 = t->dscratch1, *d2 = t->dscratch2, *dres = t->dres;
    for (int l = cfg->layers - 1; l >= 0; l--) {
        const tc_block_offsets *o = &t->blocks[l];
        layer_acts *a = &t->layer[l];
        int NH = cfg->heads[l], A = NH * cfg->head_width, M = cfg->mlp_width[l];
        /* dres holds d(res_mlp); the residual passes it through unchanged and
         * each sub-block adds its input gradient into it */
        if (M > 0) {
            const tc_act *dmlp = dres, *mlp_in = a->fch_act;
            if (mk) {
                be->mask_cols_backward(be, d2, mk->dhidden, dres, a->mlp_out, mk->hidden, N, C, 1);
                dmlp = d2;
                mlp_in = a->fch_m;
            }
            be->linear_backward(be, d1, G(m, o->proj_w), G(m, o->proj_b), dmlp, mlp_in,
                                W(m, o->proj_w), N, M, C, 0);
            if (mk)
                be->mask_cols_backward(be, d1, dinter_mask(t, l), d1, a->fch_act, inter_mask(t, l),
                                       N, M, 1);
            be->gelu_backward(be, d2, a->fch, d1, (size_t)N * M, m->cfg.activation);
            be->linear_backward(be, d1, G(m, o->fc_w), G(m, o->fc_b), d2, a->ln2, W(m, o->fc_w),
                                N, C, M, 0);
            ln_backward(m, t, dres, d1, a->res_att, o->ln2_w, o->ln2_b, a->ln2_mean, a->ln2_rstd,
                        N, C);
        }
        if (A > 0) {
            const tc_act *datt = dres, *att_in = a->atty;
            if (mk) {
                be->mask_cols_backward(be, d2, mk->dhidden, dres, a->attn_out, mk->hidden, N, C, 1);
                datt = d2;
                att_in = a->atty_m;
            }
            be->linear_backward(be, d1, G(m, o->out_w), G(m, o->out_b), datt, att_in,
                                W(m, o->out_w), N, A, C, 0);
            if (mk)
                be->mask_cols_backward(be, d1, dheads_mask(t, l), d1, a->atty, heads_mask(t, l), N,
                                       A, cfg->head_width);
            be->attention_backward(be, d2, d1, a->qkv, a->atty, a->lse, B, T, NH, cfg->head_width,
                                   t->is_text);
            be->linear_backward(be, d1, G(m, o->qkv_w), G(m, o->qkv_b), d2, a->ln1,
                                W(m, o->qkv_w), N, C, 3 * A, 0);
            ln_backward(m, t, dres, d1, layer_input(t, l), o->ln1_w, o->ln1_b, a->ln1_mean,
                        a->ln1_rstd, N, C);
        }
        backward_done(m, t, l);
    }
}

/* from d(features) to d(residual stream after the last block), in t->dres */
static void head_backward(tc_model *m, tower *t, int B, const float *dfeatures, size_t lnf_w,
                          size_t lnf_b, size_t proj_w) {
    tc_backend *be = m->be;
    int T = t->T, C = t->C, E = m->cfg.embed_dim;
    tc_act *x = layer_input(t, t->cfg->layers);
    be->l2norm_backward(be, t->dproj, dfeatures, t->features, t->norms, B, E);
    be->linear_backward(be, t->dlnf, G(m, proj_w), NULL, t->dproj, t->lnf, W(m, proj_w), B, C,
                        E, 1);
    be->zero(be, t->dres, (size_t)B * T * C * be->act_bytes);
    if (t->ln_before_pool) {
        /* d(lnf_all) goes through the mean pool, then the LayerNorm of every token */
        be->zero(be, t->dscratch1, (size_t)B * T * C * be->act_bytes);
        be->pool_mean_backward(be, t->dscratch1, t->dlnf, B, T, C);
        ln_backward(m, t, t->dres, t->dscratch1, x, lnf_w, lnf_b, t->lnf_all_mean,
                    t->lnf_all_rstd, B * T, C);
        backward_done(m, t, t->cfg->layers);
        return;
    }
    be->zero(be, t->dpooled, (size_t)B * C * be->act_bytes);
    ln_backward(m, t, t->dpooled, t->dlnf, t->pooled, lnf_w, lnf_b, t->lnf_mean, t->lnf_rstd, B,
                C);
    if (t->cfg->pool == TC_POOL_MEAN)
        be->pool_mean_backward(be, t->dres, t->dpooled, B, T, C);
    else
        be->pool_gather_backward(be, t->dres, t->dpooled, t->is_text ? t->pool_idx : NULL, B, T,
                                 C);
    backward_done(m, t, t->cfg->layers);
}

/* from d(stream entering layer 0) to d(embeddings), in the returned buffer */
static tc_act *stream_to_embed_backward(tc_model *m, tower *t, int B) {
    tc_backend *be = m->be;
    int T = t->T, C = t->C;
    tc_act *d = t->dres;
    if (t->ln_pre) {
        const tc_param_layout *L = &m->layout;
        d = t->dscratch1;
        be->zero(be, d, (size_t)B * T * C * be->act_bytes);
        ln_backward(m, t, d, t->dres, t->mask ? t->embed_m : t->embed, L->v_ln_pre_w,
                    L->v_ln_pre_b, t->ln_pre_mean, t->ln_pre_rstd, B * T, C);
    }
    if (t->mask)
        be->mask_cols_backward(be, d, t->mask->dhidden, d, t->embed, t->mask->hidden, B * T, C, 1);
    return d;
}

static tc_status check_backward(const tc_model *m, const tower *t) {
    if (!m->grads) return tc_fail(TC_ERR_ARG, "model %s: created without training buffers", m->cfg.name);
    if (t->B < 1) return tc_fail(TC_ERR_ARG, "model %s: backward before forward", m->cfg.name);
    return TC_OK;
}

tc_status tc_model_backward_image(tc_model *m, const float *dfeatures) {
    if (m->rn) {
        if (!m->grads)
            return tc_fail(TC_ERR_ARG, "model %s: created without training buffers", m->cfg.name);
        tc_status st = tc_rn_backward(m->rn, dfeatures);
        return st == TC_OK ? TC_OK : tc_fail_context(st, "model %s", m->cfg.name);
    }
    tower *t = &m->vis;
    TC_TRY(check_backward(m, t));
    tc_backend *be = m->be;
    const tc_param_layout *L = &m->layout;
    int B = t->B, T = t->T, C = t->C, P = t->cfg->patch_size, g = tc_vision_grid(t->cfg);
    head_backward(m, t, B, dfeatures, L->v_ln_post_w, L->v_ln_post_b, L->v_proj);
    blocks_backward(m, t, B);
    tc_act *dembed = stream_to_embed_backward(m, t, B);
    tc_act *dpatch = (dembed == t->dscratch1) ? t->dscratch2 : t->dscratch1;
    be->vision_embed_backward(be, dpatch, G(m, L->v_cls), G(m, L->v_pos), dembed, B, T, C);
    if (patch_conv(be))
        be->patch_embed_backward_weight(be, G(m, L->v_conv1), dpatch, t->patches, B,
                                        t->cfg->image_size, t->cfg->image_size, P, C);
    else
        be->linear_backward(be, NULL, G(m, L->v_conv1), NULL, dpatch, t->patches,
                            W(m, L->v_conv1), B * g * g, 3 * P * P, C, 0);
    return TC_OK;
}

tc_status tc_model_backward_text(tc_model *m, const float *dfeatures) {
    tower *t = &m->txt;
    TC_TRY(check_backward(m, t));
    tc_backend *be = m->be;
    const tc_param_layout *L = &m->layout;
    int B = t->B;
    head_backward(m, t, B, dfeatures, L->ln_final_w, L->ln_final_b, L->text_proj);
    blocks_backward(m, t, B);
    tc_act *dembed = stream_to_embed_backward(m, t, B);
    be->token_embed_backward(be, G(m, L->token_emb), G(m, L->text_pos), dembed, t->ids, B, t->T,
                             t->C, t->cfg->vocab_size);
    return TC_OK;
}

/* ---- initialisation (open_clip, for training from scratch) ---- */

static void init_normal(float *x, size_t n, float std, tc_prng *r) {
    for (size_t i = 0; i < n; i++) x[i] = std * tc_prng_normal(r);
}
static void init_uniform(float *x, size_t n, float bound, tc_prng *r) {
    for (size_t i = 0; i < n; i++) x[i] = bound * (2.0f * tc_prng_uniform(r) - 1.0f);
}
static void init_fill(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

/* torch defaults: nn.Linear weight and bias U(+-1/sqrt(fan_in)); MHA
 * in_proj xavier_uniform, biases 0; LayerNorm 1/0. the text tower then
 * re-draws its weights with CLIP's normal init (TextTransformer.init_parameters),
 * the vision tower keeps torch's defaults (VisionTransformer.init_parameters is
 * a no-op in open_clip). */
static void init_blocks(float *p, const tc_tower_config *cfg, const tc_block_offsets *blocks,
                        int clip_init, tc_prng *r) {
    int C = cfg->width;
    float attn_std = powf((float)C, -0.5f);
    float proj_std = attn_std * powf(2.0f * cfg->layers, -0.5f);
    float fc_std = powf(2.0f * C, -0.5f);
    for (int l = 0; l < cfg->layers; l++) {
        const tc_block_offsets *o = &blocks[l];
        int A = cfg->heads[l] * cfg->head_width, M = cfg->mlp_width[l];
        if (A > 0) {
            init_fill(p + o->ln1_w, C, 1.0f);
            init_fill(p + o->ln1_b, C, 0.0f);
            if (clip_init) init_normal(p + o->qkv_w, (size_t)3 * A * C, attn_std, r);
            else init_uniform(p + o->qkv_w, (size_t)3 * A * C, sqrtf(6.0f / (float)(C + 3 * A)), r);
            init_fill(p + o->qkv_b, 3 * A, 0.0f);
            if (clip_init) init_normal(p + o->out_w, (size_t)C * A, proj_std, r);
            else init_uniform(p + o->out_w, (size_t)C * A, 1.0f / sqrtf((float)A), r);
            init_fill(p + o->out_b, C, 0.0f);
        }
        if (M > 0) {
            init_fill(p + o->ln2_w, C, 1.0f);
            init_fill(p + o->ln2_b, C, 0.0f);
            if (clip_init) init_normal(p + o->fc_w, (size_t)M * C, fc_std, r);
            else init_uniform(p + o->fc_w, (size_t)M * C, 1.0f / sqrtf((float)C), r);
            init_uniform(p + o->fc_b, M, 1.0f / sqrtf((float)C), r);
            if (clip_init) init_normal(p + o->proj_w, (size_t)C * M, proj_std, r);
            else init_uniform(p + o->proj_w, (size_t)C * M, 1.0f / sqrtf((float)M), r);
            init_uniform(p + o->proj_b, C, 1.0f / sqrtf((float)M), r);
        }
    }
}

tc_status tc_model_init_random(tc_model *m, uint64_t seed) {
    const tc_param_layout *L = &m->layout;
    const tc_tower_config *v = &m->cfg.vision, *t = &m->cfg.text;
    float *p = calloc(L->total, sizeof *p);
    if (!p) return tc_fail(TC_ERR_OOM, "model %s: out of host memory for initialisation", m->cfg.name);
    tc_prng r;
    tc_prng_seed(&r, seed, 0);
    int Cv = v->width, Ct = t->width, E = m->cfg.embed_dim, P = v->patch_size;
    float vscale = powf((float)Cv, -0.5f);
    /* text */
    init_normal(p + L->token_emb, (size_t)t->vocab_size * Ct, 0.02f, &r);
    init_normal(p + L->text_pos, (size_t)t->context_length * Ct, 0.01f, &r);
    init_blocks(p, t, L->tblocks, 1, &r);
    init_normal(p + L->text_proj, (size_t)Ct * E, powf((float)Ct, -0.5f), &r);
    init_fill(p + L->ln_final_w, Ct, 1.0f);
    init_fill(p + L->ln_final_b, Ct, 0.0f);
    /* vision */
    if (v->resnet) {
        tc_rn_init(p, L, &m->cfg, &r);
        goto done;
    }
    init_uniform(p + L->v_conv1, (size_t)Cv * 3 * P * P, 1.0f / sqrtf(3.0f * P * P), &r);
    init_normal(p + L->v_cls, Cv, vscale, &r);
    init_normal(p + L->v_pos, (size_t)tc_vision_tokens(v) * Cv, vscale, &r);
    init_normal(p + L->v_proj, (size_t)Cv * E, vscale, &r);
    if (L->v_ln_pre_w != TC_ABSENT) {
        init_fill(p + L->v_ln_pre_w, Cv, 1.0f);
        init_fill(p + L->v_ln_pre_b, Cv, 0.0f);
    }
    init_blocks(p, v, L->vblocks, 0, &r);
    init_fill(p + L->v_ln_post_w, Cv, 1.0f);
    init_fill(p + L->v_ln_post_b, Cv, 0.0f);
done:
    p[L->logit_scale] = logf(1.0f / 0.07f);
    tc_status s = tc_model_set_params(m, p);
    free(p);
    return s;
}
