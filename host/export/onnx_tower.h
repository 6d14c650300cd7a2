/* the pieces every tower graph of the ONNX export is written with (internal
 * to host/export): one tower being written, its weights read from the
 * parameter layout by open_clip key (shape checked: a missing or misshapen
 * tensor is remembered and named), and the operator patterns the ViT, text
 * and ResNet towers share. every call returns the name of its result and
 * does nothing after a failure, as the graph builder does. */
#ifndef TC_ONNX_TOWER_H
#define TC_ONNX_TOWER_H

#include "onnx_graph.h"
#include "params.h"

typedef struct {
    tc_onnx_graph *g;
    const tc_param_layout *l;
    const float *p;
    const char *prefix; /* "visual." or "" (open_clip key prefix of the tower) */
    tc_status st;       /* a missing or misshapen tensor */
    const char *half, *one, *inv_sqrt2, *eps, *quick; /* shared constants, made on first use */
} tc_ox_tower;

void tc_ox_init(tc_ox_tower *t, tc_onnx_graph *g, const tc_param_layout *l, const float *p,
                const char *prefix);
/* the first failure of the tower or of its graph, TC_OK if none */
tc_status tc_ox_done(const tc_ox_tower *t);

/* a shared scalar constant in *slot, made on first use */
const char *tc_ox_constant(tc_ox_tower *t, const char **slot, const char *name, float value);

const char *tc_ox_op1(tc_ox_tower *t, const char *op, const char *name, const char *a);
const char *tc_ox_op2(tc_ox_tower *t, const char *op, const char *name, const char *a,
                      const char *b);
/* a one-input node with one ints attribute */
const char *tc_ox_op_ints(tc_ox_tower *t, const char *op, const char *name, const char *a,
                          const char *attr, const int64_t *v, int n);
const char *tc_ox_reshape(tc_ox_tower *t, const char *x, const int64_t *shape, int n);
const char *tc_ox_transpose(tc_ox_tower *t, const char *x, const int64_t *perm, int n);

/* the layout tensor prefix + name, its shape checked (a dim < 0 matches any) */
const tc_param_info *tc_ox_param(tc_ox_tower *t, const char *name, int ndim, const int64_t *shape);
/* an initializer from that tensor, named by its open_clip key */
const char *tc_ox_weight(tc_ox_tower *t, const char *name, int ndim, const int64_t *shape,
                         int transpose_2d);

/* LayerNorm over the last axis (C), eps 1e-5, weights `ln`.weight / .bias */
const char *tc_ox_layernorm(tc_ox_tower *t, const char *x, const char *ln, int C);
/* x (.., in) @ W^T + b for a Linear `name` stored (out, in) */
const char *tc_ox_linear(tc_ox_tower *t, const char *x, const char *name, int out, int in);

/* heads of x (B, T, NH*HS): (B, NH, T, HS), or (B, NH, HS, T) for keys */
const char *tc_ox_split_heads(tc_ox_tower *t, const char *x, int T, int NH, int HS, int keys);
/* softmax(q kt / sqrt(HS) [+ mask]) v per head: q (B, NH, Tq, HS), kt
 * (B, NH, HS, T), v (B, NH, T, HS) -> (B, Tq, NH*HS) */
const char *tc_ox_attend(tc_ox_tower *t, const char *q, const char *kt, const char *v, int Tq,
                         int NH, int HS, const char *mask);

/* x (B, E) divided by max(|x|, 1e-12), as F.normalize */
const char *tc_ox_normalise(tc_ox_tower *t, const char *x);

#endif
