#include "onnx_clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_resnet.h"
#include "onnx_tower.h"

static const char *activation(tc_ox_tower *t, const char *x, tc_activation act) {
    if (act == TC_QUICK_GELU)
        return tc_ox_op2(
            t, "Mul", "quick_gelu", x,
            tc_ox_op1(t, "Sigmoid", "quick_gelu",
                      tc_ox_op2(t, "Mul", "quick_gelu", x,
                                tc_ox_constant(t, &t->quick, "quick_gelu_k", 1.702f))));
    /* 0.5 x (1 + erf(x / sqrt 2)) */
    const char *k = tc_ox_constant(t, &t->inv_sqrt2, "inv_sqrt2", (float)(1.0 / sqrt(2.0)));
    const char *e = tc_ox_op1(t, "Erf", "gelu", tc_ox_op2(t, "Mul", "gelu", x, k));
    return tc_ox_op2(t, "Mul", "gelu",
                     tc_ox_op2(t, "Mul", "gelu", x, tc_ox_constant(t, &t->half, "half", 0.5f)),
                     tc_ox_op2(t, "Add", "gelu", e, tc_ox_constant(t, &t->one, "one", 1.0f)));
}

/* one residual block: x (B, T, C) */
static const char *block(tc_ox_tower *t, const char *x, const tc_tower_config *tc, int layer, int T,
                         const char *mask, tc_activation act) {
    int C = tc->width, NH = tc->heads[layer], M = tc->mlp_width[layer];
    char pre[96], nm[160];
    snprintf(pre, sizeof pre, "transformer.resblocks.%d.", layer);
    if (NH > 0) {
        snprintf(nm, sizeof nm, "%sattn.in_proj_weight", pre);
        int64_t any[2] = {-1, C};
        const tc_param_info *qi = tc_ox_param(t, nm, 2, any);
        if (!qi) return x;
        int64_t A = qi->shape[0] / 3, HS = A / NH;
        if (A * 3 != qi->shape[0] || HS * NH != A) {
            t->st = tc_fail(TC_ERR_CONFIG, "onnx export: %s%s has %lld rows for %d heads",
                            t->prefix, nm, (long long)qi->shape[0], NH);
            return x;
        }
        snprintf(nm, sizeof nm, "%sln_1", pre);
        const char *h = tc_ox_layernorm(t, x, nm, C);
        /* packed q, k, v: (B, T, 3A) */
        int64_t ws[2] = {3 * A, C}, bs[1] = {3 * A};
        snprintf(nm, sizeof nm, "%sattn.in_proj_weight", pre);
        const char *w = tc_ox_weight(t, nm, 2, ws, 1);
        snprintf(nm, sizeof nm, "%sattn.in_proj_bias", pre);
        const char *qkv = tc_ox_op2(t, "Add", "qkv", tc_ox_op2(t, "MatMul", "qkv", h, w),
                                    tc_ox_weight(t, nm, 1, bs, 0));
        /* q (B, NH, T, HS), k transposed (B, NH, HS, T), v (B, NH, T, HS) */
        const char *parts[3];
        int64_t axis[1] = {2};
        for (int k = 0; k < 3; k++) {
            int64_t s0[1] = {k * A}, s1[1] = {(k + 1) * A};
            const char *in[4] = {qkv, tc_onnx_ints(t->g, "start", s0, 1),
                                 tc_onnx_ints(t->g, "end", s1, 1),
                                 tc_onnx_ints(t->g, "axis", axis, 1)};
            parts[k] = tc_ox_split_heads(t, tc_onnx_node(t->g, "Slice", "qkv_part", 4, in, 0, NULL),
                                         T, NH, (int)HS, k == 1);
        }
        const char *o = tc_ox_attend(t, parts[0], parts[1], parts[2], T, NH, (int)HS, mask);
        snprintf(nm, sizeof nm, "%sattn.out_proj", pre);
        o = tc_ox_linear(t, o, nm, C, (int)A);
        x = tc_ox_op2(t, "Add", "residual", x, o);
    }
    if (M > 0) {
        snprintf(nm, sizeof nm, "%sln_2", pre);
        const char *h = tc_ox_layernorm(t, x, nm, C);
        snprintf(nm, sizeof nm, "%smlp.c_fc", pre);
        h = activation(t, tc_ox_linear(t, h, nm, M, C), act);
        snprintf(nm, sizeof nm, "%smlp.c_proj", pre);
        x = tc_ox_op2(t, "Add", "residual", x, tc_ox_linear(t, h, nm, C, M));
    }
    return x;
}

/* x (B, C) @ proj (C, E), L2-normalised */
static const char *project_normalise(tc_ox_tower *t, const char *x, const char *proj, int C,
                                     int E) {
    int64_t ps[2] = {C, E};
    return tc_ox_normalise(
        t, tc_ox_op2(t, "MatMul", "projection", x, tc_ox_weight(t, proj, 2, ps, 0)));
}

tc_status tc_onnx_clip_image(tc_onnx_graph *g, const tc_model_config *cfg, const tc_param_layout *l,
                             const float *params) {
    const tc_tower_config *v = &cfg->vision;
    if (v->resnet) return tc_onnx_resnet_image(g, cfg, l, params);
    int S = v->image_size, P = v->patch_size, G = tc_vision_grid(v), T = tc_vision_tokens(v);
    int C = v->width, E = cfg->embed_dim;
    if (v->pool != TC_POOL_TOKEN && v->pool != TC_POOL_MEAN)
        return tc_fail(TC_ERR_UNSUPPORTED, "onnx export: vision pooling %d", (int)v->pool);
    tc_ox_tower t;
    tc_ox_init(&t, g, l, params, "visual.");
    int64_t in_dims[4] = {-1, 3, S, S}, out_dims[2] = {-1, E};
    const char *x = tc_onnx_input(g, "pixel_values", TC_ONNX_FLOAT, 4, in_dims);
    /* patches: (B, C, G, G) -> (B, G*G, C) */
    int64_t cs[4] = {C, 3, P, P}, kp[2] = {P, P};
    const char *cin[2] = {x, tc_ox_weight(&t, "conv1.weight", 4, cs, 0)};
    tc_onnx_attr ca[2] = {{"kernel_shape", TC_ONNX_ATTR_INTS, 0, 0.0f, kp, 2},
                          {"strides", TC_ONNX_ATTR_INTS, 0, 0.0f, kp, 2}};
    x = tc_onnx_node(g, "Conv", "patch_embed", 2, cin, 2, ca);
    int64_t flat[3] = {0, C, (int64_t)G * G}, perm[3] = {0, 2, 1};
    x = tc_ox_transpose(&t, tc_ox_reshape(&t, x, flat, 3), perm, 3);
    /* a zero row in front for the class token; the positions carry it:
     * row 0 of the constant is class_embedding + positional_embedding[0] */
    int64_t pads[6] = {0, 1, 0, 0, 0, 0};
    x = tc_ox_op2(&t, "Pad", "cls_slot", x, tc_onnx_ints(g, "pads", pads, 6));
    int64_t ps[2] = {T, C}, cls_s[1] = {C};
    const tc_param_info *pi = tc_ox_param(&t, "positional_embedding", 2, ps);
    const tc_param_info *ci = tc_ox_param(&t, "class_embedding", 1, cls_s);
    if (pi && ci) {
        float *pos = malloc((size_t)T * C * sizeof *pos);
        if (!pos) return tc_fail(TC_ERR_OOM, "onnx export: out of memory");
        memcpy(pos, params + pi->offset, (size_t)T * C * sizeof *pos);
        for (int c = 0; c < C; c++)
            pos[c] = params[ci->offset + c] + pos[c];
        x = tc_ox_op2(&t, "Add", "embeddings", x,
                      tc_onnx_weight(g, "visual.positional_embedding_with_class", pos, 2, ps, 0));
        free(pos);
    }
    if (!v->no_ln_pre) x = tc_ox_layernorm(&t, x, "ln_pre", C);
    for (int i = 0; i < v->layers; i++)
        x = block(&t, x, v, i, T, NULL, cfg->activation);
    int ln_first = v->pool == TC_POOL_MEAN && !v->final_ln_after_pool;
    if (ln_first) x = tc_ox_layernorm(&t, x, "ln_post", C);
    if (v->pool == TC_POOL_MEAN) {
        /* the mean of the patch tokens, CLS excluded */
        int64_t s0[1] = {1}, s1[1] = {T}, ax[1] = {1};
        const char *sin[4] = {x, tc_onnx_ints(g, "start", s0, 1), tc_onnx_ints(g, "end", s1, 1),
                              tc_onnx_ints(g, "axis", ax, 1)};
        const char *rin[2] = {tc_onnx_node(g, "Slice", "patch_tokens", 4, sin, 0, NULL),
                              tc_onnx_ints(g, "axes", ax, 1)};
        tc_onnx_attr keep = {"keepdims", TC_ONNX_ATTR_INT, 0, 0.0f, NULL, 0};
        x = tc_onnx_node(g, "ReduceSum", "pool_sum", 2, rin, 1, &keep);
        x = tc_ox_op2(&t, "Mul", "pool_mean", x,
                      tc_onnx_scalar(g, "inv_patches", T > 1 ? (float)(1.0 / (T - 1)) : 0.0f));
    } else {
        const char *gin[2] = {x, tc_onnx_ints(g, "cls_index", (const int64_t[]){0}, 1)};
        tc_onnx_attr ax = {"axis", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0};
        x = tc_onnx_node(g, "Gather", "pool_cls", 2, gin, 1, &ax); /* (B, 1, C) */
        int64_t bc[2] = {0, C};
        x = tc_ox_reshape(&t, x, bc, 2);
    }
    if (!ln_first) x = tc_ox_layernorm(&t, x, "ln_post", C);
    x = project_normalise(&t, x, "proj", C, E);
    tc_onnx_output(g, x, "image_embeds", TC_ONNX_FLOAT, 2, out_dims);
    return tc_ox_done(&t);
}

tc_status tc_onnx_clip_text(tc_onnx_graph *g, const tc_model_config *cfg, const tc_param_layout *l,
                            const float *params) {
    const tc_tower_config *tx = &cfg->text;
    int T = tx->context_length, V = tx->vocab_size, C = tx->width, E = cfg->embed_dim;
    tc_ox_tower t;
    tc_ox_init(&t, g, l, params, "");
    int64_t in_dims[2] = {-1, T}, out_dims[2] = {-1, E};
    const char *ids = tc_onnx_input(g, "input_ids", TC_ONNX_INT64, 2, in_dims);
    int64_t es[2] = {V, C}, ps[2] = {T, C};
    const char *gin[2] = {tc_ox_weight(&t, "token_embedding.weight", 2, es, 0), ids};
    const char *x = tc_onnx_node(g, "Gather", "token_embed", 2, gin, 0, NULL);
    x = tc_ox_op2(&t, "Add", "embeddings", x, tc_ox_weight(&t, "positional_embedding", 2, ps, 0));
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
    x = tc_ox_layernorm(&t, x, "ln_final", C);
    x = project_normalise(&t, x, "text_projection", C, E);
    tc_onnx_output(g, x, "text_embeds", TC_ONNX_FLOAT, 2, out_dims);
    return tc_ox_done(&t);
}
