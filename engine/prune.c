#include "prune.h"

#include <stdlib.h>
#include <string.h>

/* one axis of a gather: output index k reads input index idx[k] and is
 * multiplied by mul[k]. a prune keeps only z != 0 units; a fold keeps every
 * index and multiplies the pruned ones by 0. */
typedef struct {
    int n;
    int *idx;
    float *mul;
} axis;

static void axis_free(axis *a) {
    free(a->idx);
    free(a->mul);
    memset(a, 0, sizeof *a);
}

/* units of a mask expanded to elements: element e of unit u (repeat r) is
 * input index (r*n_units + u)*group + e. z NULL: every unit, factor 1.
 * multiply 0: a kept unit's factor is 1 (slice only). */
static tc_status make_axis(axis *a, const float *z, int n_units, int group, int reps, int fold,
                           int multiply) {
    memset(a, 0, sizeof *a);
    int kept = 0;
    for (int u = 0; u < n_units; u++) kept += !z || z[u] != 0.0f;
    size_t n = (size_t)reps * (size_t)(fold ? n_units : kept) * (size_t)group;
    a->idx = malloc((n ? n : 1) * sizeof *a->idx);
    a->mul = malloc((n ? n : 1) * sizeof *a->mul);
    if (!a->idx || !a->mul) {
        axis_free(a);
        return tc_fail(TC_ERR_OOM, "prune: out of memory");
    }
    size_t k = 0;
    for (int r = 0; r < reps; r++)
        for (int u = 0; u < n_units; u++) {
            int on = !z || z[u] != 0.0f;
            if (!on && !fold) continue;
            float f = !z ? 1.0f : !on ? 0.0f : multiply ? z[u] : 1.0f;
            for (int e = 0; e < group; e++) {
                a->idx[k] = (r * n_units + u) * group + e;
                a->mul[k] = f;
                k++;
            }
        }
    a->n = (int)n;
    return TC_OK;
}

/* dst (rows.n, cols.n) from src (., src_cols); cols_first picks the order of
 * the two multiplications to match the original's expression */
static void gather2(float *dst, const float *src, int src_cols, const axis *rows, const axis *cols,
                    int cols_first) {
    for (int i = 0; i < rows->n; i++) {
        const float *s = src + (size_t)rows->idx[i] * src_cols;
        float *d = dst + (size_t)i * cols->n;
        float rm = rows->mul[i];
        if (cols_first)
            for (int j = 0; j < cols->n; j++) d[j] = s[cols->idx[j]] * cols->mul[j] * rm;
        else
            for (int j = 0; j < cols->n; j++) d[j] = s[cols->idx[j]] * rm * cols->mul[j];
    }
}

static void gather1(float *dst, const float *src, const axis *a) {
    for (int i = 0; i < a->n; i++) dst[i] = src[a->idx[i]] * a->mul[i];
}

/* the mask z of one tower split into its parts */
typedef struct {
    const float *hz, *headz, *intz;
    int L, C, NH, M;
} tower_z;

static tc_status check_tower(const tc_tower_config *t, const char *what) {
    if (t->layers < 1 || t->layers > TC_MAX_LAYERS || t->width < 1)
        return tc_fail(TC_ERR_CONFIG, "prune: %s tower has %d layers of width %d", what,
                       t->layers, t->width);
    for (int l = 0; l < t->layers; l++)
        if (t->heads[l] * t->head_width != t->width || t->mlp_width[l] != t->mlp_width[0] ||
            t->mlp_width[0] < 1)
            return tc_fail(TC_ERR_CONFIG,
                           "prune: %s tower layer %d is not teacher-shaped (%d heads, mlp %d); "
                           "masks need a uniform tower",
                           what, l, t->heads[l], t->mlp_width[l]);
    return TC_OK;
}

static tower_z split_z(const tc_tower_config *t, const float *z) {
    tower_z s = {0};
    s.L = t->layers;
    s.C = t->width;
    s.NH = t->heads[0];
    s.M = t->mlp_width[0];
    s.hz = z;
    s.headz = z + s.C;
    s.intz = s.headz + (size_t)s.L * s.NH;
    return s;
}

static int count_nonzero(const float *z, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += z[i] != 0.0f;
    return k;
}

/* destination tensors of one tower: offsets into dst, TC_ABSENT when absent */
typedef struct {
    size_t cls, pos, proj, conv1, ln_pre_w, ln_pre_b, ln_post_w, ln_post_b; /* vision */
    size_t tpos, tproj, tok, lnf_w, lnf_b;                                  /* text */
    const tc_block_offsets *blocks;
} tower_dst;

static tower_dst vision_dst(const tc_param_layout *l) {
    tower_dst d;
    memset(&d, 0xff, sizeof d);
    d.cls = l->v_cls;
    d.pos = l->v_pos;
    d.proj = l->v_proj;
    d.conv1 = l->v_conv1;
    d.ln_pre_w = l->v_ln_pre_w;
    d.ln_pre_b = l->v_ln_pre_b;
    d.ln_post_w = l->v_ln_post_w;
    d.ln_post_b = l->v_ln_post_b;
    d.blocks = l->vblocks;
    return d;
}

static tower_dst text_dst(const tc_param_layout *l) {
    tower_dst d;
    memset(&d, 0xff, sizeof d);
    d.tpos = l->text_pos;
    d.tproj = l->text_proj;
    d.tok = l->token_emb;
    d.lnf_w = l->ln_final_w;
    d.lnf_b = l->ln_final_b;
    d.blocks = l->tblocks;
    return d;
}

/* writes every tensor of one masked tower from src (full layout sl) to dst
 * (layout of d); fold: dst has the full shape */
static tc_status emit_tower(int vision, const tc_model_config *cfg, const tower_z *z,
                            const float *src, const tc_param_layout *sl, float *dst,
                            const tower_dst *d, int fold, tc_prune_mode mode) {
    const tc_tower_config *t = vision ? &cfg->vision : &cfg->text;
    int C = z->C, NH = z->NH, M = z->M, E = cfg->embed_dim;
    tc_status st = TC_OK;
    axis hid_mul = {0}, hid_cut = {0}, hid_proj = {0}, all = {0}, rows_all = {0};
    axis qkv_rows = {0}, head_cols = {0}, int_rows = {0}, int_cols = {0};
    if ((st = make_axis(&hid_mul, z->hz, C, 1, 1, fold, 1)) != TC_OK) goto done;
    if ((st = make_axis(&hid_cut, z->hz, C, 1, 1, fold, 0)) != TC_OK) goto done;
    if ((st = make_axis(&hid_proj, z->hz, C, 1, 1, fold, mode == TC_PRUNE_ORIGINAL)) != TC_OK)
        goto done;
    if ((st = make_axis(&all, NULL, 1, E, 1, fold, 0)) != TC_OK) goto done;

    if (vision) {
        const tc_tower_config *v = &cfg->vision;
        int P = v->patch_size, T = tc_vision_tokens(v);
        gather1(dst + d->cls, src + sl->v_cls, &hid_mul);
        if ((st = make_axis(&rows_all, NULL, 1, T, 1, fold, 0)) != TC_OK) goto done;
        gather2(dst + d->pos, src + sl->v_pos, C, &rows_all, &hid_mul, 0);
        gather2(dst + d->proj, src + sl->v_proj, E, &hid_proj, &all, 0);
        axis_free(&rows_all);
        if ((st = make_axis(&rows_all, NULL, 1, 3 * P * P, 1, fold, 0)) != TC_OK) goto done;
        gather2(dst + d->conv1, src + sl->v_conv1, 3 * P * P, &hid_mul, &rows_all, 0);
        if (sl->v_ln_pre_w != TC_ABSENT) {
            gather1(dst + d->ln_pre_w, src + sl->v_ln_pre_w, &hid_cut);
            gather1(dst + d->ln_pre_b, src + sl->v_ln_pre_b, &hid_cut);
        }
        gather1(dst + d->ln_post_w, src + sl->v_ln_post_w, &hid_cut);
        gather1(dst + d->ln_post_b, src + sl->v_ln_post_b, &hid_cut);
    } else {
        int T = t->context_length, V = t->vocab_size;
        if ((st = make_axis(&rows_all, NULL, 1, T, 1, fold, 0)) != TC_OK) goto done;
        gather2(dst + d->tpos, src + sl->text_pos, C, &rows_all, &hid_mul, 0);
        axis_free(&rows_all);
        if ((st = make_axis(&rows_all, NULL, 1, V, 1, fold, 0)) != TC_OK) goto done;
        gather2(dst + d->tok, src + sl->token_emb, C, &rows_all, &hid_mul, 0);
        gather2(dst + d->tproj, src + sl->text_proj, E, &hid_proj, &all, 0);
        gather1(dst + d->lnf_w, src + sl->ln_final_w, &hid_cut);
        gather1(dst + d->lnf_b, src + sl->ln_final_b, &hid_cut);
    }

    const tc_block_offsets *sb = vision ? sl->vblocks : sl->tblocks;
    for (int l = 0; l < z->L; l++) {
        const tc_block_offsets *s = &sb[l], *o = &d->blocks[l];
        const float *hz_l = z->headz + (size_t)l * NH, *iz_l = z->intz + (size_t)l * M;
        int heads_kept = count_nonzero(hz_l, NH), int_kept = count_nonzero(iz_l, M);
        if (heads_kept > 0 || fold) {
            if ((st = make_axis(&qkv_rows, hz_l, NH, t->head_width, 3, fold, 0)) != TC_OK) goto done;
            if ((st = make_axis(&head_cols, hz_l, NH, t->head_width, 1, fold, 1)) != TC_OK)
                goto done;
            gather1(dst + o->ln1_w, src + s->ln1_w, &hid_cut);
            gather1(dst + o->ln1_b, src + s->ln1_b, &hid_cut);
            gather2(dst + o->qkv_w, src + s->qkv_w, C, &qkv_rows, &hid_cut, 0);
            gather1(dst + o->qkv_b, src + s->qkv_b, &qkv_rows);
            /* (out_proj.weight * hidden_z rows) * head_z column blocks */
            gather2(dst + o->out_w, src + s->out_w, NH * t->head_width, &hid_mul, &head_cols, 0);
            gather1(dst + o->out_b, src + s->out_b, &hid_mul);
            if (fold && heads_kept == 0 && mode == TC_PRUNE_ORIGINAL)
                memset(dst + o->out_b, 0, (size_t)C * sizeof *dst);
            axis_free(&qkv_rows);
            axis_free(&head_cols);
        }
        if (int_kept > 0 || fold) {
            if ((st = make_axis(&int_rows, iz_l, M, 1, 1, fold, 0)) != TC_OK) goto done;
            if ((st = make_axis(&int_cols, iz_l, M, 1, 1, fold, 1)) != TC_OK) goto done;
            gather1(dst + o->ln2_w, src + s->ln2_w, &hid_cut);
            gather1(dst + o->ln2_b, src + s->ln2_b, &hid_cut);
            gather2(dst + o->fc_w, src + s->fc_w, C, &int_rows, &hid_cut, 0);
            gather1(dst + o->fc_b, src + s->fc_b, &int_rows);
            /* (c_proj.weight * intermediate_z columns) * hidden_z rows */
            gather2(dst + o->proj_w, src + s->proj_w, M, &hid_mul, &int_cols, 1);
            gather1(dst + o->proj_b, src + s->proj_b, &hid_mul);
            axis_free(&int_rows);
            axis_free(&int_cols);
        }
    }
done:
    axis_free(&hid_mul);
    axis_free(&hid_cut);
    axis_free(&hid_proj);
    axis_free(&all);
    axis_free(&rows_all);
    axis_free(&qkv_rows);
    axis_free(&head_cols);
    axis_free(&int_rows);
    axis_free(&int_cols);
    return st;
}

/* the output bias of a dropped sub-block (layer l, sub 0 attention / 1 MLP),
 * already in the pruned space, is added where the residual stream can take
 * it without a LayerNorm seeing the difference (see prune.h) */
static void move_bias(int vision, const tc_model_config *ocfg, const tc_param_layout *ol,
                      float *out, int l, int sub, const float *bias) {
    const tc_tower_config *t = vision ? &ocfg->vision : &ocfg->text;
    const tc_block_offsets *ob = vision ? ol->vblocks : ol->tblocks;
    int C = t->width;
    for (int pos = 2 * l + sub - 1; pos >= 0; pos--) {
        const tc_block_offsets *b = &ob[pos / 2];
        size_t sink = pos % 2 ? b->proj_b : b->out_b;
        if (sink != TC_ABSENT) {
            for (int j = 0; j < C; j++) out[sink + j] += bias[j];
            return;
        }
    }
    if (vision && ol->v_ln_pre_b != TC_ABSENT) {
        for (int j = 0; j < C; j++) out[ol->v_ln_pre_b + j] += bias[j];
        return;
    }
    /* every token receives the positional embedding once */
    size_t pos_off = vision ? ol->v_pos : ol->text_pos;
    int T = vision ? tc_vision_tokens(t) : t->context_length;
    for (int r = 0; r < T; r++)
        for (int j = 0; j < C; j++) out[pos_off + (size_t)r * C + j] += bias[j];
}

static tc_status move_dropped_biases(int vision, const tc_model_config *cfg, const tower_z *z,
                                     const float *src, const tc_param_layout *sl,
                                     const tc_model_config *ocfg, const tc_param_layout *ol,
                                     float *out, tc_prune_mode mode) {
    const tc_block_offsets *sb = vision ? sl->vblocks : sl->tblocks;
    int C = z->C;
    axis hid_mul;
    TC_TRY(make_axis(&hid_mul, z->hz, C, 1, 1, 0, 1));
    float *b = malloc((size_t)(hid_mul.n ? hid_mul.n : 1) * sizeof *b);
    if (!b) {
        axis_free(&hid_mul);
        return tc_fail(TC_ERR_OOM, "prune: out of memory");
    }
    for (int l = 0; l < z->L; l++) {
        int heads_kept = count_nonzero(z->headz + (size_t)l * z->NH, z->NH);
        int int_kept = count_nonzero(z->intz + (size_t)l * z->M, z->M);
        if (heads_kept == 0 && mode == TC_PRUNE_EXACT) {
            gather1(b, src + sb[l].out_b, &hid_mul);
            move_bias(vision, ocfg, ol, out, l, 0, b);
        }
        if (int_kept == 0) {
            gather1(b, src + sb[l].proj_b, &hid_mul);
            move_bias(vision, ocfg, ol, out, l, 1, b);
        }
    }
    free(b);
    axis_free(&hid_mul);
    return TC_OK;
}

static void copy_tower_verbatim(int vision, const tc_param_layout *sl, const float *src,
                                const tc_param_layout *ol, float *out) {
    tc_tower_id want = vision ? TC_TOWER_VISION : TC_TOWER_TEXT;
    for (int i = 0; i < sl->count; i++) {
        const tc_param_info *p = &sl->params[i];
        if (p->tower != want) continue;
        const tc_param_info *q = tc_param_find(ol, p->name);
        if (q && q->count == p->count)
            memcpy(out + q->offset, src + p->offset, p->count * sizeof *out);
    }
}

tc_status tc_prune_z(const tc_model_config *cfg, const tc_param_layout *l, const float *params,
                     const float *vision_z, const float *text_z, tc_prune_mode mode,
                     tc_model_config *out_cfg, tc_param_layout *out_l, float **out_params) {
    *out_params = NULL;
    memset(out_l, 0, sizeof *out_l);
    TC_TRY(tc_model_config_validate(cfg, "prune"));
    TC_TRY(tc_param_layout_check(cfg, l, "prune"));
    tower_z vz = {0}, tz = {0};
    tc_model_config oc = *cfg;
    const float *zs[2] = {vision_z, text_z};
    tower_z *tzs[2] = {&vz, &tz};
    for (int k = 0; k < 2; k++) {
        if (!zs[k]) continue;
        const tc_tower_config *t = k == 0 ? &cfg->vision : &cfg->text;
        tc_tower_config *ot = k == 0 ? &oc.vision : &oc.text;
        const char *what = k == 0 ? "vision" : "text";
        TC_TRY(check_tower(t, what));
        *tzs[k] = split_z(t, zs[k]);
        const tower_z *z = tzs[k];
        int ck = count_nonzero(z->hz, z->C);
        if (ck == 0)
            return tc_fail(TC_ERR_CONFIG, "prune: every hidden dim of the %s tower is pruned", what);
        ot->width = ck;
        for (int i = 0; i < TC_MAX_LAYERS; i++) ot->heads[i] = ot->mlp_width[i] = 0;
        for (int i = 0; i < z->L; i++) {
            ot->heads[i] = count_nonzero(z->headz + (size_t)i * z->NH, z->NH);
            ot->mlp_width[i] = count_nonzero(z->intz + (size_t)i * z->M, z->M);
        }
    }
    oc.irregular = !tc_tower_is_uniform(&oc.vision) || !tc_tower_is_uniform(&oc.text);
    TC_TRY(tc_model_config_validate(&oc, "pruned model"));
    TC_TRY(tc_param_layout_build(out_l, &oc));
    float *out = calloc(out_l->total ? out_l->total : 1, sizeof *out);
    if (!out) {
        tc_param_layout_free(out_l);
        return tc_fail(TC_ERR_OOM, "prune: out of memory (%zu floats)", out_l->total);
    }
    tc_status st = TC_OK;
    out[out_l->logit_scale] = params[l->logit_scale];
    for (int k = 0; k < 2 && st == TC_OK; k++) {
        int vision = k == 0;
        if (!zs[k]) {
            copy_tower_verbatim(vision, l, params, out_l, out);
            continue;
        }
        tower_dst d = vision ? vision_dst(out_l) : text_dst(out_l);
        st = emit_tower(vision, cfg, tzs[k], params, l, out, &d, 0, mode);
        if (st == TC_OK)
            st = move_dropped_biases(vision, cfg, tzs[k], params, l, &oc, out_l, out, mode);
    }
    if (st != TC_OK) {
        free(out);
        tc_param_layout_free(out_l);
        return st;
    }
    *out_cfg = oc;
    *out_params = out;
    return TC_OK;
}

tc_status tc_prune(const tc_model_config *cfg, const tc_param_layout *l, const float *params,
                   const tc_l0_masks *vision, const tc_l0_masks *text, int round_to,
                   tc_model_config *out_cfg, tc_param_layout *out_l, float **out_params) {
    *out_params = NULL;
    const tc_l0_masks *ms[2] = {vision, text};
    float *zs[2] = {NULL, NULL};
    tc_status st = TC_OK;
    for (int k = 0; k < 2 && st == TC_OK; k++) {
        if (!ms[k]) continue;
        const tc_tower_config *t = k == 0 ? &cfg->vision : &cfg->text;
        if (!tc_l0_masks_match(ms[k], t)) {
            st = tc_fail(TC_ERR_CONFIG,
                         "prune: the %s masks (%d layers, hidden %d, %d heads, mlp %d) do not "
                         "match the tower",
                         k == 0 ? "vision" : "text", ms[k]->layers, ms[k]->hidden, ms[k]->heads,
                         ms[k]->inter);
            break;
        }
        zs[k] = malloc(ms[k]->n_z * sizeof *zs[k]);
        if (!zs[k]) {
            st = tc_fail(TC_ERR_OOM, "prune: out of memory");
            break;
        }
        st = tc_l0_deterministic(ms[k], round_to, zs[k]);
    }
    if (st == TC_OK)
        st = tc_prune_z(cfg, l, params, zs[0], zs[1], TC_PRUNE_ORIGINAL, out_cfg, out_l,
                        out_params);
    free(zs[0]);
    free(zs[1]);
    return st;
}

tc_status tc_prune_fold(const tc_model_config *cfg, const tc_param_layout *l, float *params,
                        const float *vision_z, const float *text_z, tc_prune_mode mode) {
    TC_TRY(tc_model_config_validate(cfg, "fold"));
    TC_TRY(tc_param_layout_check(cfg, l, "prune"));
    const float *zs[2] = {vision_z, text_z};
    for (int k = 0; k < 2; k++) {
        if (!zs[k]) continue;
        int vision = k == 0;
        const tc_tower_config *t = vision ? &cfg->vision : &cfg->text;
        TC_TRY(check_tower(t, vision ? "vision" : "text"));
        tower_z z = split_z(t, zs[k]);
        tower_dst d = vision ? vision_dst(l) : text_dst(l);
        /* identity indices: every element reads only itself, so in place is safe */
        TC_TRY(emit_tower(vision, cfg, &z, params, l, params, &d, 1, mode));
    }
    return TC_OK;
}

/* ---- re-expansion ---- */

/* compact into the leading slice of full (same rank); in_proj by heads */
static tc_status expand_tensor(const tc_param_info *cp, const float *src, const tc_param_info *fp,
                               float *dst) {
    if (cp->ndim != fp->ndim)
        return tc_fail(TC_ERR_CONFIG, "expand: %s has rank %d, the full model's %d", cp->name,
                       cp->ndim, fp->ndim);
    for (int i = 0; i < cp->ndim; i++)
        if (cp->shape[i] > fp->shape[i])
            return tc_fail(TC_ERR_CONFIG, "expand: %s dim %d is %lld, larger than the full %lld",
                           cp->name, i, (long long)cp->shape[i], (long long)fp->shape[i]);
    int qkv = strstr(cp->name, "attn.in_proj_weight") || strstr(cp->name, "attn.in_proj_bias");
    if (qkv) {
        /* (3, NH_c, 64, C_c) -> [:, :NH_c, :, :C_c] of (3, NH_f, 64, C_f) */
        int64_t ac = cp->shape[0] / 3, af = fp->shape[0] / 3;
        int64_t cc = cp->ndim == 2 ? cp->shape[1] : 1, cf = fp->ndim == 2 ? fp->shape[1] : 1;
        for (int q = 0; q < 3; q++)
            for (int64_t r = 0; r < ac; r++)
                memcpy(dst + (size_t)((q * af + r) * cf), src + (size_t)((q * ac + r) * cc),
                       (size_t)cc * sizeof *dst);
        return TC_OK;
    }
    int64_t cs[4] = {1, 1, 1, 1}, fs[4] = {1, 1, 1, 1};
    for (int i = 0; i < cp->ndim; i++) cs[4 - cp->ndim + i] = cp->shape[i];
    for (int i = 0; i < fp->ndim; i++) fs[4 - fp->ndim + i] = fp->shape[i];
    for (int64_t a = 0; a < cs[0]; a++)
        for (int64_t b = 0; b < cs[1]; b++)
            for (int64_t c = 0; c < cs[2]; c++)
                memcpy(dst + (size_t)(((a * fs[1] + b) * fs[2] + c) * fs[3]),
                       src + (size_t)(((a * cs[1] + b) * cs[2] + c) * cs[3]),
                       (size_t)cs[3] * sizeof *dst);
    return TC_OK;
}

static tc_status expand_check(const tc_tower_config *c, const tc_tower_config *f, const char *what) {
    if (!tc_tower_is_uniform(f))
        return tc_fail(TC_ERR_CONFIG, "expand: the full %s tower is not uniform", what);
    if (c->layers != f->layers)
        return tc_fail(TC_ERR_CONFIG, "expand: the %s tower has %d layers, the full model %d",
                       what, c->layers, f->layers);
    if (c->width > f->width)
        return tc_fail(TC_ERR_CONFIG, "expand: %s width %d exceeds the full %d", what, c->width,
                       f->width);
    for (int l = 0; l < c->layers; l++)
        if (c->heads[l] > f->heads[l] || c->mlp_width[l] > f->mlp_width[l])
            return tc_fail(TC_ERR_CONFIG,
                           "expand: %s layer %d has %d heads / mlp %d, the full model %d / %d",
                           what, l, c->heads[l], c->mlp_width[l], f->heads[l], f->mlp_width[l]);
    return TC_OK;
}

tc_status tc_expand_masks(tc_l0_masks *m, const tc_tower_config *c, const tc_tower_config *f,
                          tc_l0_shape shape, const char *what) {
    TC_TRY(tc_l0_masks_for_tower_shaped(m, f, shape, what));
    if (shape == TC_L0_REGULAR) {
        /* a unit per HS leading dims of the compact width, the MLP units of
         * the widest layer: exact for a regular compact tower */
        int units = (c->width + m->head_size - 1) / m->head_size, mlp = 0;
        for (int l = 0; l < c->layers; l++)
            if (c->mlp_width[l] > mlp) mlp = c->mlp_width[l];
        for (int u = 0; u < m->heads; u++)
            m->heads_loga[u] = u < units ? TC_L0_INIT_LOGA : TC_L0_PRUNED_LOGA;
        for (int i = 0; i < m->inter; i++)
            m->intermediate_loga[i] = i < mlp ? TC_L0_INIT_LOGA : TC_L0_PRUNED_LOGA;
        m->lambda[0] = m->lambda[1] = TC_L0_LAMBDA_INIT;
        return TC_OK;
    }
    for (int d = 0; d < m->hidden; d++)
        m->hidden_loga[d] = d < c->width ? TC_L0_INIT_LOGA : TC_L0_PRUNED_LOGA;
    for (int l = 0; l < m->layers; l++) {
        for (int h = 0; h < m->heads; h++)
            m->heads_loga[(size_t)l * m->heads + h] =
                h < c->heads[l] ? TC_L0_INIT_LOGA : TC_L0_PRUNED_LOGA;
        for (int i = 0; i < m->inter; i++)
            m->intermediate_loga[(size_t)l * m->inter + i] =
                i < c->mlp_width[l] ? TC_L0_INIT_LOGA : TC_L0_PRUNED_LOGA;
    }
    m->lambda[0] = m->lambda[1] = TC_L0_LAMBDA_INIT;
    return TC_OK;
}

tc_status tc_expand(const tc_model_config *compact_cfg, const tc_param_layout *cl,
                    const float *compact, const tc_model_config *full_cfg,
                    const tc_param_layout *fl, float *full, tc_l0_masks *vision_masks,
                    tc_l0_masks *text_masks) {
    if (vision_masks) memset(vision_masks, 0, sizeof *vision_masks);
    if (text_masks) memset(text_masks, 0, sizeof *text_masks);
    TC_TRY(tc_model_config_validate(compact_cfg, "expand (compact model)"));
    TC_TRY(tc_model_config_validate(full_cfg, "expand (full model)"));
    TC_TRY(tc_param_layout_check(compact_cfg, cl, "expand (compact model)"));
    TC_TRY(tc_param_layout_check(full_cfg, fl, "expand (full model)"));
    const tc_tower_config *cv = &compact_cfg->vision, *fv = &full_cfg->vision;
    const tc_tower_config *ct = &compact_cfg->text, *ft = &full_cfg->text;
    if (compact_cfg->embed_dim != full_cfg->embed_dim)
        return tc_fail(TC_ERR_CONFIG, "expand: embed_dim %d differs from the full model's %d",
                       compact_cfg->embed_dim, full_cfg->embed_dim);
    if (cv->image_size != fv->image_size || cv->patch_size != fv->patch_size ||
        cv->no_ln_pre != fv->no_ln_pre)
        return tc_fail(TC_ERR_CONFIG, "expand: the image size, patch size or ln_pre differs");
    if (ct->context_length != ft->context_length || ct->vocab_size != ft->vocab_size)
        return tc_fail(TC_ERR_CONFIG, "expand: the context length or vocabulary differs");
    TC_TRY(expand_check(cv, fv, "vision"));
    TC_TRY(expand_check(ct, ft, "text"));

    memset(full, 0, fl->total * sizeof *full);
    for (int i = 0; i < cl->count; i++) {
        const tc_param_info *cp = &cl->params[i];
        const tc_param_info *fp = tc_param_find(fl, cp->name);
        if (!fp)
            return tc_fail(TC_ERR_CONFIG, "expand: the full model has no tensor %s", cp->name);
        if (cp->offset > cl->total || cp->count > cl->total - cp->offset ||
            fp->offset > fl->total || fp->count > fl->total - fp->offset)
            return tc_fail(TC_ERR_ARG, "expand: %s lies outside its buffer", cp->name);
        if (cp->ndim == 0) {
            full[fp->offset] = compact[cp->offset];
            continue;
        }
        TC_TRY(expand_tensor(cp, compact + cp->offset, fp, full + fp->offset));
    }
    if (vision_masks) TC_TRY(tc_expand_masks(vision_masks, cv, fv, TC_L0_IRREGULAR, "vision"));
    if (text_masks) {
        tc_status st = tc_expand_masks(text_masks, ct, ft, TC_L0_IRREGULAR, "text");
        if (st != TC_OK) {
            if (vision_masks) tc_l0_masks_free(vision_masks);
            return st;
        }
    }
    return TC_OK;
}
