#include "onnx_tower.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void tc_ox_init(tc_ox_tower *t, tc_onnx_graph *g, const tc_param_layout *l, const float *p,
                const char *prefix) {
    memset(t, 0, sizeof *t);
    t->g = g;
    t->l = l;
    t->p = p;
    t->prefix = prefix;
}

tc_status tc_ox_done(const tc_ox_tower *t) {
    if (t->st != TC_OK) return t->st;
    return tc_onnx_status(t->g);
}

const char *tc_ox_constant(tc_ox_tower *t, const char **slot, const char *name, float value) {
    if (!*slot) *slot = tc_onnx_scalar(t->g, name, value);
    return *slot;
}

const char *tc_ox_op1(tc_ox_tower *t, const char *op, const char *name, const char *a) {
    const char *in[1] = {a};
    return tc_onnx_node(t->g, op, name, 1, in, 0, NULL);
}

const char *tc_ox_op2(tc_ox_tower *t, const char *op, const char *name, const char *a,
                      const char *b) {
    const char *in[2] = {a, b};
    return tc_onnx_node(t->g, op, name, 2, in, 0, NULL);
}

const char *tc_ox_op_ints(tc_ox_tower *t, const char *op, const char *name, const char *a,
                          const char *attr, const int64_t *v, int n) {
    const char *in[1] = {a};
    tc_onnx_attr at = {attr, TC_ONNX_ATTR_INTS, 0, 0.0f, v, n};
    return tc_onnx_node(t->g, op, name, 1, in, 1, &at);
}

const char *tc_ox_reshape(tc_ox_tower *t, const char *x, const int64_t *shape, int n) {
    return tc_ox_op2(t, "Reshape", "reshape", x, tc_onnx_ints(t->g, "shape", shape, n));
}

const char *tc_ox_transpose(tc_ox_tower *t, const char *x, const int64_t *perm, int n) {
    return tc_ox_op_ints(t, "Transpose", "transpose", x, "perm", perm, n);
}

const tc_param_info *tc_ox_param(tc_ox_tower *t, const char *name, int ndim, const int64_t *shape) {
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

const char *tc_ox_weight(tc_ox_tower *t, const char *name, int ndim, const int64_t *shape,
                         int transpose_2d) {
    const tc_param_info *i = tc_ox_param(t, name, ndim, shape);
    if (!i) return "";
    char full[160];
    snprintf(full, sizeof full, "%s%s", t->prefix, name);
    return tc_onnx_weight(t->g, full, t->p + i->offset, i->ndim, i->shape, transpose_2d);
}

const char *tc_ox_layernorm(tc_ox_tower *t, const char *x, const char *ln, int C) {
    char wn[160], bn[160];
    snprintf(wn, sizeof wn, "%s.weight", ln);
    snprintf(bn, sizeof bn, "%s.bias", ln);
    int64_t sh[1] = {C};
    const char *w = tc_ox_weight(t, wn, 1, sh, 0), *b = tc_ox_weight(t, bn, 1, sh, 0);
    if (tc_onnx_opset(t->g) >= 17) {
        const char *in[3] = {x, w, b};
        tc_onnx_attr at[2] = {{"axis", TC_ONNX_ATTR_INT, -1, 0.0f, NULL, 0},
                              {"epsilon", TC_ONNX_ATTR_FLOAT, 0, 1e-5f, NULL, 0}};
        return tc_onnx_node(t->g, "LayerNormalization", ln, 3, in, 2, at);
    }
    /* before opset 17: (x - mean) / sqrt(var + eps) * w + b over the last axis */
    int64_t axes[1] = {-1};
    const char *mean = tc_ox_op_ints(t, "ReduceMean", "ln_mean", x, "axes", axes, 1);
    const char *d = tc_ox_op2(t, "Sub", "ln_centre", x, mean);
    const char *var = tc_ox_op_ints(t, "ReduceMean", "ln_var", tc_ox_op2(t, "Mul", "ln_sq", d, d),
                                    "axes", axes, 1);
    const char *den = tc_ox_op1(
        t, "Sqrt", "ln_std",
        tc_ox_op2(t, "Add", "ln_var_eps", var, tc_ox_constant(t, &t->eps, "ln_eps", 1e-5f)));
    const char *y = tc_ox_op2(t, "Mul", "ln_scale", tc_ox_op2(t, "Div", "ln_norm", d, den), w);
    return tc_ox_op2(t, "Add", ln, y, b);
}

const char *tc_ox_linear(tc_ox_tower *t, const char *x, const char *name, int out, int in) {
    char wn[160], bn[160];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    int64_t ws[2] = {out, in}, bs[1] = {out};
    const char *w = tc_ox_weight(t, wn, 2, ws, 1), *b = tc_ox_weight(t, bn, 1, bs, 0);
    return tc_ox_op2(t, "Add", name, tc_ox_op2(t, "MatMul", name, x, w), b);
}

const char *tc_ox_split_heads(tc_ox_tower *t, const char *x, int T, int NH, int HS, int keys) {
    int64_t heads_shape[4] = {0, T, NH, HS};
    static const int64_t p_bhtd[4] = {0, 2, 1, 3}, p_bhdt[4] = {0, 2, 3, 1};
    return tc_ox_transpose(t, tc_ox_reshape(t, x, heads_shape, 4), keys ? p_bhdt : p_bhtd, 4);
}

const char *tc_ox_attend(tc_ox_tower *t, const char *q, const char *kt, const char *v, int Tq,
                         int NH, int HS, const char *mask) {
    const char *scale = tc_onnx_scalar(t->g, "attn_scale", (float)(1.0 / sqrt((double)HS)));
    const char *s = tc_ox_op2(t, "Mul", "scores", tc_ox_op2(t, "MatMul", "scores", q, kt), scale);
    if (mask) s = tc_ox_op2(t, "Add", "scores_causal", s, mask);
    tc_onnx_attr ax = {"axis", TC_ONNX_ATTR_INT, -1, 0.0f, NULL, 0};
    const char *in1[1] = {s};
    const char *pr = tc_onnx_node(t->g, "Softmax", "attn_probs", 1, in1, 1, &ax);
    static const int64_t p_bthd[4] = {0, 2, 1, 3};
    const char *o = tc_ox_transpose(t, tc_ox_op2(t, "MatMul", "attn", pr, v), p_bthd, 4);
    int64_t merged[3] = {0, Tq, (int64_t)NH * HS};
    return tc_ox_reshape(t, o, merged, 3);
}

const char *tc_ox_normalise(tc_ox_tower *t, const char *y) {
    int64_t axes[1] = {-1};
    const char *in[2] = {tc_ox_op2(t, "Mul", "squares", y, y), tc_onnx_ints(t->g, "axes", axes, 1)};
    tc_onnx_attr keep = {"keepdims", TC_ONNX_ATTR_INT, 1, 0.0f, NULL, 0};
    const char *ss = tc_onnx_node(t->g, "ReduceSum", "sum_squares", 2, in, 1, &keep);
    const char *n = tc_ox_op2(t, "Max", "norm", tc_ox_op1(t, "Sqrt", "norm", ss),
                              tc_onnx_scalar(t->g, "norm_eps", 1e-12f));
    return tc_ox_op2(t, "Div", "normalised", y, n);
}
