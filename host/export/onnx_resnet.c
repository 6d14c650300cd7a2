#include "onnx_resnet.h"

#include <stdio.h>

#include "onnx_tower.h"

/* x (B, Cin, S, S) conv `name`.weight (Cout, Cin, K, K), padding K / 2, no bias */
static const char *conv(tc_ox_tower *t, const char *x, const char *name, int cout, int cin, int K,
                        int stride) {
    char wn[160];
    snprintf(wn, sizeof wn, "%s.weight", name);
    int64_t ws[4] = {cout, cin, K, K}, kk[2] = {K, K}, st[2] = {stride, stride};
    int64_t pads[4] = {K / 2, K / 2, K / 2, K / 2};
    const char *in[2] = {x, tc_ox_weight(t, wn, 4, ws, 0)};
    tc_onnx_attr at[3] = {{"kernel_shape", TC_ONNX_ATTR_INTS, 0, 0.0f, kk, 2},
                          {"strides", TC_ONNX_ATTR_INTS, 0, 0.0f, st, 2},
                          {"pads", TC_ONNX_ATTR_INTS, 0, 0.0f, pads, 4}};
    return tc_onnx_node(t->g, "Conv", name, 2, in, 3, at);
}

/* BatchNorm2d `name` (C channels) on its running statistics, then ReLU if asked */
static const char *batchnorm(tc_ox_tower *t, const char *x, const char *name, int C, int relu) {
    static const char *const parts[4] = {"weight", "bias", "running_mean", "running_var"};
    const char *in[5] = {x};
    int64_t cs[1] = {C};
    for (int i = 0; i < 4; i++) {
        char nm[160];
        snprintf(nm, sizeof nm, "%s.%s", name, parts[i]);
        in[i + 1] = tc_ox_weight(t, nm, 1, cs, 0);
    }
    /* training_mode (opset 14 on) defaults to 0: the running statistics */
    tc_onnx_attr eps = {"epsilon", TC_ONNX_ATTR_FLOAT, 0, 1e-5f, NULL, 0};
    const char *y = tc_onnx_node(t->g, "BatchNormalization", name, 5, in, 1, &eps);
    return relu ? tc_ox_op1(t, "Relu", "relu", y) : y;
}

/* AvgPool2d(k): kernel = stride = k, no padding */
static const char *avgpool(tc_ox_tower *t, const char *x, int k) {
    int64_t kk[2] = {k, k};
    const char *in[1] = {x};
    tc_onnx_attr at[2] = {{"kernel_shape", TC_ONNX_ATTR_INTS, 0, 0.0f, kk, 2},
                          {"strides", TC_ONNX_ATTR_INTS, 0, 0.0f, kk, 2}};
    return tc_onnx_node(t->g, "AveragePool", "avgpool", 1, in, 2, at);
}

/* conv `pre`.`cv` then BatchNorm `pre`.`bn` (+ ReLU) */
static const char *conv_bn(tc_ox_tower *t, const char *x, const char *pre, const char *cv,
                           const char *bn, int cout, int cin, int K, int stride, int relu) {
    char cn[96], bnn[96];
    snprintf(cn, sizeof cn, "%s.%s", pre, cv);
    snprintf(bnn, sizeof bnn, "%s.%s", pre, bn);
    return batchnorm(t, conv(t, x, cn, cout, cin, K, stride), bnn, cout, relu);
}

/* one bottleneck `pre` (e.g. "layer2.0"): x (B, cin, S, S) -> (B, 4P, S/stride, S/stride) */
static const char *bottleneck(tc_ox_tower *t, const char *x, const char *pre,
                              const tc_rn_block *b) {
    const int P = b->planes;
    const char *h = conv_bn(t, x, pre, "conv1", "bn1", P, b->cin, 1, 1, 1);
    h = conv_bn(t, h, pre, "conv2", "bn2", P, P, 3, 1, 1);
    /* anti-aliased: the stride is an average pool before conv3 */
    if (b->stride > 1) h = avgpool(t, h, b->stride);
    h = conv_bn(t, h, pre, "conv3", "bn3", 4 * P, P, 1, 1, 0);
    const char *identity = x;
    if (b->ds_conv != TC_ABSENT) {
        if (b->stride > 1) identity = avgpool(t, identity, b->stride);
        identity =
            conv_bn(t, identity, pre, "downsample.0", "downsample.1", 4 * P, b->cin, 1, 1, 0);
    }
    return tc_ox_op1(t, "Relu", "relu", tc_ox_op2(t, "Add", "residual", h, identity));
}

/* AttentionPool2d: feat (B, D, g, g) -> (B, E) */
static const char *attention_pool(tc_ox_tower *t, const tc_tower_config *v, const char *feat,
                                  int E) {
    const int g = tc_vision_grid(v), HW = g * g, T = HW + 1, D = tc_resnet_pool_width(v);
    const int NH = tc_resnet_pool_heads(v), HS = v->head_width;
    tc_onnx_graph *G = t->g;
    int64_t flat[3] = {0, D, HW}, perm[3] = {0, 2, 1};
    const char *pix = tc_ox_transpose(t, tc_ox_reshape(t, feat, flat, 3), perm, 3); /* (B,HW,D) */
    /* the mean token: the sum over the pixels divided by their count, as the engine */
    int64_t ax[1] = {1};
    const char *rin[2] = {pix, tc_onnx_ints(G, "axes", ax, 1)};
    tc_onnx_attr keep = {"keepdims", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0};
    const char *mean = tc_ox_op2(t, "Div", "mean_token",
                                 tc_onnx_node(G, "ReduceSum", "pixel_sum", 2, rin, 1, &keep),
                                 tc_onnx_scalar(G, "pixels", (float)HW)); /* (B,1,D) */
    const char *cin[2] = {mean, pix};
    tc_onnx_attr cat = {"axis", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0};
    const char *tok = tc_onnx_node(G, "Concat", "tokens", 2, cin, 1, &cat); /* (B,T,D) */
    int64_t ps[2] = {T, D};
    tok = tc_ox_op2(t, "Add", "tokens_pos", tok,
                    tc_ox_weight(t, "attnpool.positional_embedding", 2, ps, 0));
    /* one query per sample: the mean token's */
    int64_t s0[1] = {0}, s1[1] = {1};
    const char *sin[4] = {tok, tc_onnx_ints(G, "start", s0, 1), tc_onnx_ints(G, "end", s1, 1),
                          tc_onnx_ints(G, "axis", ax, 1)};
    const char *x0 = tc_onnx_node(G, "Slice", "query_token", 4, sin, 0, NULL); /* (B,1,D) */
    const char *q =
        tc_ox_split_heads(t, tc_ox_linear(t, x0, "attnpool.q_proj", D, D), 1, NH, HS, 0);
    const char *k =
        tc_ox_split_heads(t, tc_ox_linear(t, tok, "attnpool.k_proj", D, D), T, NH, HS, 1);
    const char *val =
        tc_ox_split_heads(t, tc_ox_linear(t, tok, "attnpool.v_proj", D, D), T, NH, HS, 0);
    const char *o = tc_ox_attend(t, q, k, val, 1, NH, HS, NULL); /* (B,1,D) */
    int64_t bd[2] = {0, D};
    return tc_ox_linear(t, tc_ox_reshape(t, o, bd, 2), "attnpool.c_proj", E, D);
}

tc_status tc_onnx_resnet_image(tc_onnx_graph *g, const tc_model_config *cfg,
                               const tc_param_layout *l, const float *params) {
    const tc_tower_config *v = &cfg->vision;
    const int S = v->image_size, W = v->width, E = cfg->embed_dim;
    if (!v->resnet || l->rn.nblocks <= 0)
        return tc_fail(TC_ERR_ARG, "onnx export: the vision tower is not a ResNet");
    tc_ox_tower t;
    tc_ox_init(&t, g, l, params, "visual.");
    int64_t in_dims[4] = {-1, 3, S, S}, out_dims[2] = {-1, E};
    const char *x = tc_onnx_input(g, "pixel_values", TC_ONNX_FLOAT, 4, in_dims);
    /* stem: (B,3,S,S) -> (B,W,S/4,S/4) */
    const int ins[3] = {3, W / 2, W / 2}, outs[3] = {W / 2, W / 2, W};
    static const char *const convs[3] = {"conv1", "conv2", "conv3"}, *const bns[3] = {"bn1", "bn2",
                                                                                      "bn3"};
    for (int i = 0; i < 3; i++)
        x = batchnorm(&t, conv(&t, x, convs[i], outs[i], ins[i], 3, i ? 1 : 2), bns[i], outs[i], 1);
    x = avgpool(&t, x, 2);
    /* stages: the layout lists every block in order */
    int nb = 0;
    for (int s = 0; s < TC_RESNET_STAGES; s++)
        for (int i = 0; i < v->stages[s] && nb < l->rn.nblocks; i++, nb++) {
            char pre[32];
            snprintf(pre, sizeof pre, "layer%d.%d", s + 1, i);
            x = bottleneck(&t, x, pre, &l->rn.blocks[nb]);
        }
    x = tc_ox_normalise(&t, attention_pool(&t, v, x, E));
    tc_onnx_output(g, x, "image_embeds", TC_ONNX_FLOAT, 2, out_dims);
    return tc_ox_done(&t);
}
