#include "onnx_clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* one tower being written */
typedef struct {
    tc_onnx_graph *g;
    const tc_param_layout *l;
    const float *p;
    const char *prefix; /* "visual." or "" (open_clip key prefix of the tower) */
    tc_status st;       /* a missing or misshapen tensor */
    const char *half, *one, *inv_sqrt2, *eps, *quick; /* shared constants */
} tower;

/* a shared constant, made on first use */
static const char *constant(tower *t, const char **slot, const char *name, float value) {
    if (!*slot) *slot = tc_onnx_scalar(t->g, name, value);
    return *slot;
}

static const char *op1(tower *t, const char *op, const char *name, const char *a) {
    const char *in[1] = {a};
    return tc_onnx_node(t->g, op, name, 1, in, 0, NULL);
}

static const char *op2(tower *t, const char *op, const char *name, const char *a, const char *b) {
    const char *in[2] = {a, b};
    return tc_onnx_node(t->g, op, name, 2, in, 0, NULL);
}

static const char *op_ints(tower *t, const char *op, const char *name, const char *a,
                           const char *attr, const int64_t *v, int n) {
    const char *in[1] = {a};
    tc_onnx_attr at = {attr, TC_ONNX_ATTR_INTS, 0, 0.0f, v, n};
    return tc_onnx_node(t->g, op, name, 1, in, 1, &at);
}

static const char *reshape(tower *t, const char *x, const int64_t *shape, int n) {
    return op2(t, "Reshape", "reshape", x, tc_onnx_ints(t->g, "shape", shape, n));
}

static const char *transpose(tower *t, const char *x, const int64_t *perm, int n) {
    return op_ints(t, "Transpose", "transpose", x, "perm", perm, n);
}

/* the layout tensor `name` (under the tower prefix), its shape checked */
static const tc_param_info *param(tower *t, const char *name, int ndim, const int64_t *shape) {
    char full[160];
    snprintf(full, sizeof full, "%s%s", t->prefix, name);
    const tc_param_info *i = tc_param_find(t->l, full);
    if (t->st != TC_OK) return NULL;
    if (!i) {
        t->st = tc_fail(TC_ERR_CONFIG, "onnx export: the model has no tensor %s", full);
        return NULL;
    }
    int ok = i->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = shape[d] < 0 || i->shape[d] == shape[d];
    if (!ok) {
        t->st = tc_fail(TC_ERR_CONFIG, "onnx export: tensor %s has an unexpected shape", full);
        return NULL;
    }
    return i;
}

/* an initializer from a layout tensor, named by its open_clip key */
static const char *weight(tower *t, const char *name, int ndim, const int64_t *shape,
                          int transpose_2d) {
    const tc_param_info *i = param(t, name, ndim, shape);
    if (!i) return "";
    char full[160];
    snprintf(full, sizeof full, "%s%s", t->prefix, name);
    return tc_onnx_weight(t->g, full, t->p + i->offset, i->ndim, i->shape, transpose_2d);
}

static const char *layernorm(tower *t, const char *x, const char *ln, int C) {
    char wn[160], bn[160];
    snprintf(wn, sizeof wn, "%s.weight", ln);
    snprintf(bn, sizeof bn, "%s.bias", ln);
    int64_t sh[1] = {C};
    const char *w = weight(t, wn, 1, sh, 0), *b = weight(t, bn, 1, sh, 0);
    if (tc_onnx_opset(t->g) >= 17) {
        const char *in[3] = {x, w, b};
        tc_onnx_attr at[2] = {{"axis", TC_ONNX_ATTR_INT, -1, 0.0f, NULL, 0},
                              {"epsilon", TC_ONNX_ATTR_FLOAT, 0, 1e-5f, NULL, 0}};
        return tc_onnx_node(t->g, "LayerNormalization", ln, 3, in, 2, at);
    }
    /* before opset 17: (x - mean) / sqrt(var + eps) * w + b over the last axis */
    int64_t axes[1] = {-1};
    const char *mean = op_ints(t, "ReduceMean", "ln_mean", x, "axes", axes, 1);
    const char *d = op2(t, "Sub", "ln_centre", x, mean);
    const char *var =
        op_ints(t, "ReduceMean", "ln_var", op2(t, "Mul", "ln_sq", d, d), "axes", axes, 1);
    const char *den = op1(t, "Sqrt", "ln_std",
                          op2(t, "Add", "ln_var_eps", var, constant(t, &t->eps, "ln_eps", 1e-5f)));
    const char *y = op2(t, "Mul", "ln_scale", op2(t, "Div", "ln_norm", d, den), w);
    return op2(t, "Add", ln, y, b);
}

/* x (.., in) @ W^T + b for a Linear stored (out, in) */
static const char *linear(tower *t, const char *x, const char *name, int out, int in) {
    char wn[160], bn[160];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    int64_t ws[2] = {out, in}, bs[1] = {out};
    const char *w = weight(t, wn, 2, ws, 1), *b = weight(t, bn, 1, bs, 0);
    return op2(t, "Add", name, op2(t, "MatMul", name, x, w), b);
}

static const char *activation(tower *t, const char *x, tc_activation act) {
    if (act == TC_QUICK_GELU)
        return op2(
            t, "Mul", "quick_gelu", x,
            op1(t, "Sigmoid", "quick_gelu",
                op2(t, "Mul", "quick_gelu", x, constant(t, &t->quick, "quick_gelu_k", 1.702f))));
    /* 0.5 x (1 + erf(x / sqrt 2)) */
    const char *k = constant(t, &t->inv_sqrt2, "inv_sqrt2", (float)(1.0 / sqrt(2.0)));
    const char *e = op1(t, "Erf", "gelu", op2(t, "Mul", "gelu", x, k));
    return op2(t, "Mul", "gelu", op2(t, "Mul", "gelu", x, constant(t, &t->half, "half", 0.5f)),
               op2(t, "Add", "gelu", e, constant(t, &t->one, "one", 1.0f)));
}

/* one residual block: x (B, T, C) */
static const char *block(tower *t, const char *x, const tc_tower_config *tc, int layer, int T,
                         const char *mask, tc_activation act) {
    int C = tc->width, NH = tc->heads[layer], M = tc->mlp_width[layer];
    char pre[96], nm[160];
    snprintf(pre, sizeof pre, "transformer.resblocks.%d.", layer);
    if (NH > 0) {
        snprintf(nm, sizeof nm, "%sattn.in_proj_weight", pre);
        int64_t any[2] = {-1, C};
        const tc_param_info *qi = param(t, nm, 2, any);
        if (!qi) return x;
        int64_t A = qi->shape[0] / 3, HS = A / NH;
        if (A * 3 != qi->shape[0] || HS * NH != A) {
            t->st = tc_fail(TC_ERR_CONFIG, "onnx export: %s%s has %lld rows for %d heads",
                            t->prefix, nm, (long long)qi->shape[0], NH);
            return x;
        }
        snprintf(nm, sizeof nm, "%sln_1", pre);
        const char *h = layernorm(t, x, nm, C);
        /* packed q, k, v: (B, T, 3A) */
        int64_t ws[2] = {3 * A, C}, bs[1] = {3 * A};
        snprintf(nm, sizeof nm, "%sattn.in_proj_weight", pre);
        const char *w = weight(t, nm, 2, ws, 1);
        snprintf(nm, sizeof nm, "%sattn.in_proj_bias", pre);
        const char *qkv =
            op2(t, "Add", "qkv", op2(t, "MatMul", "qkv", h, w), weight(t, nm, 1, bs, 0));
        const char *parts[3];
        int64_t heads_shape[4] = {0, T, NH, HS}, axis[1] = {2};
        for (int k = 0; k < 3; k++) {
            int64_t s0[1] = {k * A}, s1[1] = {(k + 1) * A};
            const char *in[4] = {qkv, tc_onnx_ints(t->g, "start", s0, 1),
                                 tc_onnx_ints(t->g, "end", s1, 1),
                                 tc_onnx_ints(t->g, "axis", axis, 1)};
            parts[k] =
                reshape(t, tc_onnx_node(t->g, "Slice", "qkv_part", 4, in, 0, NULL), heads_shape, 4);
        }
        int64_t p_bhtd[4] = {0, 2, 1, 3}, p_bhdt[4] = {0, 2, 3, 1};
        const char *q = transpose(t, parts[0], p_bhtd, 4);  /* (B, NH, T, HS) */
        const char *kt = transpose(t, parts[1], p_bhdt, 4); /* (B, NH, HS, T) */
        const char *v = transpose(t, parts[2], p_bhtd, 4);  /* (B, NH, T, HS) */
        const char *scale = tc_onnx_scalar(t->g, "attn_scale", (float)(1.0 / sqrt((double)HS)));
        const char *s = op2(t, "Mul", "scores", op2(t, "MatMul", "scores", q, kt), scale);
        if (mask) s = op2(t, "Add", "scores_causal", s, mask);
        tc_onnx_attr ax = {"axis", TC_ONNX_ATTR_INT, -1, 0.0f, NULL, 0};
        const char *in1[1] = {s};
        const char *pr = tc_onnx_node(t->g, "Softmax", "attn_probs", 1, in1, 1, &ax);
        const char *o = transpose(t, op2(t, "MatMul", "attn", pr, v), p_bhtd, 4);
        int64_t merged[3] = {0, T, A};
        snprintf(nm, sizeof nm, "%sattn.out_proj", pre);
        o = linear(t, reshape(t, o, merged, 3), nm, C, (int)A);
        x = op2(t, "Add", "residual", x, o);
    }
    if (M > 0) {
        snprintf(nm, sizeof nm, "%sln_2", pre);
        const char *h = layernorm(t, x, nm, C);
        snprintf(nm, sizeof nm, "%smlp.c_fc", pre);
        h = activation(t, linear(t, h, nm, M, C), act);
        snprintf(nm, sizeof nm, "%smlp.c_proj", pre);
        x = op2(t, "Add", "residual", x, linear(t, h, nm, C, M));
    }
    return x;
}

/* x (B, C) @ proj (C, E), divided by max(|x|, 1e-12) as F.normalize */
static const char *project_normalise(tower *t, const char *x, const char *proj, int C, int E) {
    int64_t ps[2] = {C, E}, axes[1] = {-1};
    const char *y = op2(t, "MatMul", "projection", x, weight(t, proj, 2, ps, 0));
    const char *in[2] = {op2(t, "Mul", "squares", y, y), tc_onnx_ints(t->g, "axes", axes, 1)};
    tc_onnx_attr keep = {"keepdims", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0};
    const char *ss = tc_onnx_node(t->g, "ReduceSum", "sum_squares", 2, in, 1, &keep);
    const char *n =
        op2(t, "Max", "norm", op1(t, "Sqrt", "norm", ss), tc_onnx_scalar(t->g, "norm_eps", 1e-12f));
    return op2(t, "Div", "normalised", y, n);
}

static void tower_init(tower *t, tc_onnx_graph *g, const tc_param_layout *l, const float *p,
                       const char *prefix) {
    memset(t, 0, sizeof *t);
    t->g = g;
    t->l = l;
    t->p = p;
    t->prefix = prefix;
}

static tc_status tower_done(tower *t) {
    if (t->st != TC_OK) return t->st;
    return tc_onnx_status(t->g);
}

tc_status tc_onnx_clip_image(tc_onnx_graph *g, const tc_model_config *cfg, const tc_param_layout *l,
                             const float *params) {
    const tc_tower_config *v = &cfg->vision;
    int S = v->image_size, P = v->patch_size, G = tc_vision_grid(v), T = tc_vision_tokens(v);
    int C = v->width, E = cfg->embed_dim;
    if (v->pool != TC_POOL_TOKEN && v->pool != TC_POOL_MEAN)
        return tc_fail(TC_ERR_UNSUPPORTED, "onnx export: vision pooling %d", (int)v->pool);
    tower t;
    tower_init(&t, g, l, params, "visual.");
    int64_t in_dims[4] = {-1, 3, S, S}, out_dims[2] = {-1, E};
    const char *x = tc_onnx_input(g, "pixel_values", TC_ONNX_FLOAT, 4, in_dims);
    /* patches: (B, C, G, G) -> (B, G*G, C) */
    int64_t cs[4] = {C, 3, P, P}, kp[2] = {P, P};
    const char *cin[2] = {x, weight(&t, "conv1.weight", 4, cs, 0)};
    tc_onnx_attr ca[2] = {{"kernel_shape", TC_ONNX_ATTR_INTS, 0, 0.0f, kp, 2},
                          {"strides", TC_ONNX_ATTR_INTS, 0, 0.0f, kp, 2}};
    x = tc_onnx_node(g, "Conv", "patch_embed", 2, cin, 2, ca);
    int64_t flat[3] = {0, C, (int64_t)G * G}, perm[3] = {0, 2, 1};
    x = transpose(&t, reshape(&t, x, flat, 3), perm, 3);
    /* a zero row in front for the class token; the positions carry it:
     * row 0 of the constant is class_embedding + positional_embedding[0] */
    int64_t pads[6] = {0, 1, 0, 0, 0, 0};
    x = op2(&t, "Pad", "cls_slot", x, tc_onnx_ints(g, "pads", pads, 6));
    int64_t ps[2] = {T, C}, cls_s[1] = {C};
    const tc_param_info *pi = param(&t, "positional_embedding", 2, ps);
    const tc_param_info *ci = param(&t, "class_embedding", 1, cls_s);
    if (pi && ci) {
        float *pos = malloc((size_t)T * C * sizeof *pos);
        if (!pos) return tc_fail(TC_ERR_OOM, "onnx export: out of memory");
        memcpy(pos, params + pi->offset, (size_t)T * C * sizeof *pos);
        for (int c = 0; c < C; c++)
            pos[c] = params[ci->offset + c] + pos[c];
        x = op2(&t, "Add", "embeddings", x,
                tc_onnx_weight(g, "visual.positional_embedding_with_class", pos, 2, ps, 0));
        free(pos);
    }
    if (!v->no_ln_pre) x = layernorm(&t, x, "ln_pre", C);
    for (int i = 0; i < v->layers; i++)
        x = block(&t, x, v, i, T, NULL, cfg->activation);
    int ln_first = v->pool == TC_POOL_MEAN && !v->final_ln_after_pool;
    if (ln_first) x = layernorm(&t, x, "ln_post", C);
    if (v->pool == TC_POOL_MEAN) {
        /* the mean of the patch tokens, CLS excluded */
        int64_t s0[1] = {1}, s1[1] = {T}, ax[1] = {1};
        const char *sin[4] = {x, tc_onnx_ints(g, "start", s0, 1), tc_onnx_ints(g, "end", s1, 1),
                              tc_onnx_ints(g, "axis", ax, 1)};
        const char *rin[2] = {tc_onnx_node(g, "Slice", "patch_tokens", 4, sin, 0, NULL),
                              tc_onnx_ints(g, "axes", ax, 1)};
        tc_onnx_attr keep = {"keepdims", TC_ONNX_ATTR_INT, 0, 0.0f, NULL, 0};
        x = tc_onnx_node(g, "ReduceSum", "pool_sum", 2, rin, 1, &keep);
        x = op2(&t, "Mul", "pool_mean", x,
                tc_onnx_scalar(g, "inv_patches", T > 1 ? (float)(1.0 / (T - 1)) : 0.0f));
    } else {
        const char *gin[2] = {x, tc_onnx_ints(g, "cls_index", (const int64_t[]){0}, 1)};
        tc_onnx_attr ax = {"axis", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0};
        x = tc_onnx_node(g, "Gather", "pool_cls", 2, gin, 1, &ax); /* (B, 1, C) */
        int64_t bc[2] = {0, C};
        x = reshape(&t, x, bc, 2);
    }
    if (!ln_first) x = layernorm(&t, x, "ln_post", C);
    x = project_normalise(&t, x, "proj", C, E);
    tc_onnx_output(g, x, "image_embeds", TC_ONNX_FLOAT, 2, out_dims);
    return tower_done(&t);
}

tc_status tc_onnx_clip_text(tc_onnx_graph *g, const tc_model_config *cfg, const tc_param_layout *l,
                            const float *params) {
    const tc_tower_config *tx = &cfg->text;
    int T = tx->context_length, V = tx->vocab_size, C = tx->width, E = cfg->embed_dim;
    tower t;
    tower_init(&t, g, l, params, "");
    int64_t in_dims[2] = {-1, T}, out_dims[2] = {-1, E};
    const char *ids = tc_onnx_input(g, "input_ids", TC_ONNX_INT64, 2, in_dims);
    int64_t es[2] = {V, C}, ps[2] = {T, C};
    const char *gin[2] = {weight(&t, "token_embedding.weight", 2, es, 0), ids};
    const char *x = tc_onnx_node(g, "Gather", "token_embed", 2, gin, 0, NULL);
    x = op2(&t, "Add", "embeddings", x, weight(&t, "positional_embedding", 2, ps, 0));
    /* causal: -inf above the diagonal, added to every head's scores */
    float *mask = malloc((size_t)T * T * sizeof *mask);
    if (!mask) return tc_fail(TC_ERR_OOM, "onnx export: out of memory");
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++)
            mask[(size_t)i * T + j] = j > i ? -INFINITY : 0.0f;
    int64_t ms[2] = {T, T};
    const char *causal = tc_onnx_weight(g, "causal_mask", mask, 2, ms, 0);
    free(mask);
    for (int i = 0; i < tx->layers; i++)
        x = block(&t, x, tx, i, T, causal, cfg->activation);
    /* the row at the first largest id: ArgMax keeps the first of equal
     * maxima, so 0-padded (open_clip) and EOT-padded (Hugging Face) rows
     * both pool at their first EOT. ln_final is per row: pool first */
    tc_onnx_attr am[3] = {{"axis", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0},
                          {"keepdims", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0},
                          {"select_last_index", TC_ONNX_ATTR_INT, 0, 0.0f, NULL, 0}};
    const char *ain[1] = {ids};
    const char *eot = tc_onnx_node(g, "ArgMax", "eot_position", 1, ain, 3, am); /* (B, 1) */
    const char *gnd[2] = {x, eot};
    tc_onnx_attr bd = {"batch_dims", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0};
    x = tc_onnx_node(g, "GatherND", "pool_eot", 2, gnd, 1, &bd); /* (B, C) */
    x = layernorm(&t, x, "ln_final", C);
    x = project_normalise(&t, x, "text_projection", C, E);
    tc_onnx_output(g, x, "text_embeds", TC_ONNX_FLOAT, 2, out_dims);
    return tower_done(&t);
}
