#include "params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    tc_param_layout *l;
    int cap;
    int oom;
    tc_tower_id tower;
} builder;

/* open_clip's no-decay rule: ndim < 2 or a name containing bn, ln, bias, logit_scale */
static int decays(const char *name, int ndim) {
    if (ndim < 2) return 0;
    return !(strstr(name, "bn") || strstr(name, "ln") || strstr(name, "bias") ||
             strstr(name, "logit_scale"));
}

static size_t add(builder *bd, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                  int64_t d3) {
    tc_param_layout *l = bd->l;
    if (l->count == bd->cap) {
        int cap = bd->cap ? bd->cap * 2 : 64;
        tc_param_info *p = realloc(l->params, (size_t)cap * sizeof *p);
        if (!p) {
            bd->oom = 1;
            return TC_ABSENT;
        }
        l->params = p;
        bd->cap = cap;
    }
    tc_param_info *p = &l->params[l->count++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = d[i];
        count *= (size_t)d[i];
    }
    p->offset = l->total;
    p->count = count;
    p->decay = decays(name, ndim);
    p->tower = bd->tower;
    l->total += count;
    return p->offset;
}

static void add_blocks(builder *bd, const char *prefix, const tc_tower_config *t,
                       tc_block_offsets *blocks) {
    char name[96];
    int C = t->width;
    for (int i = 0; i < t->layers; i++) {
        tc_block_offsets *o = &blocks[i];
        int A = t->heads[i] * t->head_width, M = t->mlp_width[i];
        *o = (tc_block_offsets){TC_ABSENT, TC_ABSENT, TC_ABSENT, TC_ABSENT, TC_ABSENT, TC_ABSENT,
                                TC_ABSENT, TC_ABSENT, TC_ABSENT, TC_ABSENT, TC_ABSENT, TC_ABSENT};
#define P(field, suffix, nd, a, b)                                                                 \
    snprintf(name, sizeof name, "%sresblocks.%d.%s", prefix, i, suffix);                           \
    o->field = add(bd, name, nd, a, b, 0, 0)
        if (A > 0) {
            P(ln1_w, "ln_1.weight", 1, C, 0);
            P(ln1_b, "ln_1.bias", 1, C, 0);
            P(qkv_w, "attn.in_proj_weight", 2, 3 * A, C);
            P(qkv_b, "attn.in_proj_bias", 1, 3 * A, 0);
            P(out_w, "attn.out_proj.weight", 2, C, A);
            P(out_b, "attn.out_proj.bias", 1, C, 0);
        }
        if (M > 0) {
            P(ln2_w, "ln_2.weight", 1, C, 0);
            P(ln2_b, "ln_2.bias", 1, C, 0);
            P(fc_w, "mlp.c_fc.weight", 2, M, C);
            P(fc_b, "mlp.c_fc.bias", 1, M, 0);
            P(proj_w, "mlp.c_proj.weight", 2, C, M);
            P(proj_b, "mlp.c_proj.bias", 1, C, 0);
        }
#undef P
    }
}

/* weight, bias and the three buffers of BatchNorm2d(C); returns the weight's offset */
static size_t add_bn(builder *bd, const char *prefix, int C) {
    char name[96];
    snprintf(name, sizeof name, "%s.weight", prefix);
    size_t w = add(bd, name, 1, C, 0, 0, 0);
    snprintf(name, sizeof name, "%s.bias", prefix);
    add(bd, name, 1, C, 0, 0, 0);
    static const char *const bufs[] = {"running_mean", "running_var", "num_batches_tracked"};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s.%s", prefix, bufs[i]);
        size_t o = add(bd, name, i < 2 ? 1 : 0, C, 0, 0, 0);
        if (o != TC_ABSENT) bd->l->params[bd->l->count - 1].buffer = 1;
    }
    return w;
}

static size_t add_conv(builder *bd, const char *name, int cout, int cin, int k) {
    return add(bd, name, 4, cout, cin, k, k);
}

/* open_clip ModifiedResNet: the three-conv stem, the bottleneck stages (the
 * first block of each has the downsample branch: stride 2 after stage 1, or
 * a change of channels), the attention pool */
static void add_resnet(builder *bd, const tc_tower_config *v, int E, tc_rn_layout *rn) {
    char name[96];
    int W = v->width, D = tc_resnet_pool_width(v), g = tc_vision_grid(v);
    int stem_out[3] = {W / 2, W / 2, W}, stem_in[3] = {3, W / 2, W / 2};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "visual.conv%d.weight", i + 1);
        rn->stem_conv[i] = add_conv(bd, name, stem_out[i], stem_in[i], 3);
        snprintf(name, sizeof name, "visual.bn%d", i + 1);
        rn->stem_bn[i] = add_bn(bd, name, stem_out[i]);
    }
    int inplanes = W, nb = 0;
    for (int s = 0; s < TC_RESNET_STAGES; s++) {
        int planes = W << s;
        for (int i = 0; i < v->stages[s] && nb < TC_MAX_LAYERS; i++, nb++) {
            tc_rn_block *b = &rn->blocks[nb];
            char pre[64];
            snprintf(pre, sizeof pre, "visual.layer%d.%d", s + 1, i);
            b->cin = inplanes;
            b->planes = planes;
            b->stride = (i == 0 && s > 0) ? 2 : 1;
#define CONV(field, suffix, co, ci, k)                                                             \
    snprintf(name, sizeof name, "%s.%s", pre, suffix);                                            \
    b->field = add_conv(bd, name, co, ci, k)
#define BN(field, suffix, c)                                                                       \
    snprintf(name, sizeof name, "%s.%s", pre, suffix);                                            \
    b->field = add_bn(bd, name, c)
            CONV(conv1, "conv1.weight", planes, inplanes, 1);
            BN(bn1, "bn1", planes);
            CONV(conv2, "conv2.weight", planes, planes, 3);
            BN(bn2, "bn2", planes);
            CONV(conv3, "conv3.weight", 4 * planes, planes, 1);
            BN(bn3, "bn3", 4 * planes);
            b->ds_conv = b->ds_bn = TC_ABSENT;
            if (b->stride > 1 || inplanes != 4 * planes) {
                CONV(ds_conv, "downsample.0.weight", 4 * planes, inplanes, 1);
                BN(ds_bn, "downsample.1", 4 * planes);
            }
#undef CONV
#undef BN
            inplanes = 4 * planes;
        }
    }
    rn->nblocks = nb;
    rn->pool_pos = add(bd, "visual.attnpool.positional_embedding", 2, g * g + 1, D, 0, 0);
    rn->k_w = add(bd, "visual.attnpool.k_proj.weight", 2, D, D, 0, 0);
    rn->k_b = add(bd, "visual.attnpool.k_proj.bias", 1, D, 0, 0, 0);
    rn->q_w = add(bd, "visual.attnpool.q_proj.weight", 2, D, D, 0, 0);
    rn->q_b = add(bd, "visual.attnpool.q_proj.bias", 1, D, 0, 0, 0);
    rn->v_w = add(bd, "visual.attnpool.v_proj.weight", 2, D, D, 0, 0);
    rn->v_b = add(bd, "visual.attnpool.v_proj.bias", 1, D, 0, 0, 0);
    rn->c_w = add(bd, "visual.attnpool.c_proj.weight", 2, E, D, 0, 0);
    rn->c_b = add(bd, "visual.attnpool.c_proj.bias", 1, E, 0, 0, 0);
}

/* the ViT image tower */
static void add_vit(builder *bd, const tc_tower_config *v, int E, tc_param_layout *l) {
    int Cv = v->width, P = v->patch_size, Tv = tc_vision_tokens(v);
    l->v_cls = add(bd, "visual.class_embedding", 1, Cv, 0, 0, 0);
    l->v_pos = add(bd, "visual.positional_embedding", 2, Tv, Cv, 0, 0);
    l->v_proj = add(bd, "visual.proj", 2, Cv, E, 0, 0);
    l->v_conv1 = add(bd, "visual.conv1.weight", 4, Cv, 3, P, P);
    if (!v->no_ln_pre) {
        l->v_ln_pre_w = add(bd, "visual.ln_pre.weight", 1, Cv, 0, 0, 0);
        l->v_ln_pre_b = add(bd, "visual.ln_pre.bias", 1, Cv, 0, 0, 0);
    }
    add_blocks(bd, "visual.transformer.", v, l->vblocks);
    l->v_ln_post_w = add(bd, "visual.ln_post.weight", 1, Cv, 0, 0, 0);
    l->v_ln_post_b = add(bd, "visual.ln_post.bias", 1, Cv, 0, 0, 0);
}

tc_status tc_param_layout_build(tc_param_layout *l, const tc_model_config *cfg) {
    memset(l, 0, sizeof *l);
    /* a config made in code without a head size would silently lose its attention */
    const tc_tower_config *towers[2] = {&cfg->vision, &cfg->text};
    for (int k = 0; k < 2; k++)
        for (int i = 0; !towers[k]->resnet && i < towers[k]->layers && i < TC_MAX_LAYERS; i++)
            if (towers[k]->heads[i] > 0 && towers[k]->head_width < 1)
                return tc_fail(TC_ERR_CONFIG, "%s tower: %d heads of size %d",
                               k ? "text" : "vision", towers[k]->heads[i], towers[k]->head_width);
    builder bd = {l, 0, 0, TC_TOWER_TEXT};
    const tc_tower_config *v = &cfg->vision, *t = &cfg->text;
    int E = cfg->embed_dim, Ct = t->width;

    /* CLIP's own parameters first, then its children, as nn.Module.state_dict */
    l->text_pos = add(&bd, "positional_embedding", 2, t->context_length, Ct, 0, 0);
    l->text_proj = add(&bd, "text_projection", 2, Ct, E, 0, 0);
    bd.tower = TC_TOWER_SHARED;
    l->logit_scale = add(&bd, "logit_scale", 0, 0, 0, 0, 0);

    bd.tower = TC_TOWER_VISION;
    l->vision_begin = l->total;
    l->v_cls = l->v_pos = l->v_proj = l->v_conv1 = TC_ABSENT;
    l->v_ln_pre_w = l->v_ln_pre_b = l->v_ln_post_w = l->v_ln_post_b = TC_ABSENT;
    if (v->resnet)
        add_resnet(&bd, v, E, &l->rn);
    else
        add_vit(&bd, v, E, l);
    l->vision_end = l->total;

    bd.tower = TC_TOWER_TEXT;
    add_blocks(&bd, "transformer.", t, l->tblocks);
    l->token_emb = add(&bd, "token_embedding.weight", 2, t->vocab_size, Ct, 0, 0);
    l->ln_final_w = add(&bd, "ln_final.weight", 1, Ct, 0, 0, 0);
    l->ln_final_b = add(&bd, "ln_final.bias", 1, Ct, 0, 0, 0);

    if (bd.oom) {
        tc_param_layout_free(l);
        return tc_fail(TC_ERR_OOM, "parameter table: out of memory");
    }
    return TC_OK;
}

void tc_param_layout_free(tc_param_layout *l) {
    free(l->params);
    memset(l, 0, sizeof *l);
}

const tc_param_info *tc_param_find(const tc_param_layout *l, const char *name) {
    for (int i = 0; i < l->count; i++)
        if (strcmp(l->params[i].name, name) == 0) return &l->params[i];
    return NULL;
}

tc_param_counts tc_param_count(const tc_param_layout *l) {
    tc_param_counts c = {0};
    for (int i = 0; i < l->count; i++) {
        const tc_param_info *p = &l->params[i];
        if (p->buffer) {
            c.buffers += p->count;
            continue;
        }
        if (p->tower == TC_TOWER_VISION) c.vision += p->count;
        else if (p->tower == TC_TOWER_TEXT) c.text += p->count;
        else c.shared += p->count;
        if (strcmp(p->name, "token_embedding.weight") == 0) c.token_embedding = p->count;
    }
    c.total = c.vision + c.text + c.shared;
    return c;
}

tc_status tc_param_layout_check(const tc_model_config *cfg, const tc_param_layout *layout,
                                const char *what) {
    tc_param_layout ref;
    TC_TRY(tc_param_layout_build(&ref, cfg));
    int same = ref.total == layout->total && ref.count == layout->count;
    for (int i = 0; same && i < ref.count; i++)
        same = strcmp(ref.params[i].name, layout->params[i].name) == 0 &&
               ref.params[i].offset == layout->params[i].offset;
    tc_param_layout_free(&ref);
    if (!same)
        return tc_fail(TC_ERR_ARG, "%s: the parameter layout does not match the model config",
                       what);
    return TC_OK;
}
