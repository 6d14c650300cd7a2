#include "onnx_graph.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "onnx/onnx.pb-c.h"
#include "safetensors.h"

typedef struct {
    void **v;
    size_t n, cap;
} ptr_vec;

struct tc_onnx_graph {
    tc_onnx_precision precision;
    int opset;
    tc_status st;
    char *name;
    ptr_vec owned; /* every allocation, freed together */
    ptr_vec nodes, inits, inputs, outputs, meta;
    unsigned long counter;
    size_t weight_bytes;
};

/* ---- memory ---- */

static int vec_push(ptr_vec *v, void *p) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        void **nv = realloc(v->v, cap * sizeof *nv);
        if (!nv) return 0;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = p;
    return 1;
}

static void oom(tc_onnx_graph *g) {
    if (g->st == TC_OK) g->st = tc_fail(TC_ERR_OOM, "onnx export: out of memory");
}

/* p becomes the graph's; NULL (and the graph failed) when p is NULL */
static void *own(tc_onnx_graph *g, void *p) {
    if (!p || !vec_push(&g->owned, p)) {
        free(p);
        oom(g);
        return NULL;
    }
    return p;
}

static void *zalloc(tc_onnx_graph *g, size_t size) {
    return own(g, calloc(1, size ? size : 1));
}

static char *sdup(tc_onnx_graph *g, const char *s) {
    return own(g, strdup(s));
}

static char *sfmt(tc_onnx_graph *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *sfmt(tc_onnx_graph *g, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = zalloc(g, (size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void push(tc_onnx_graph *g, ptr_vec *v, void *p) {
    if (p && !vec_push(v, p)) oom(g);
}

tc_status tc_onnx_graph_create(tc_onnx_graph **out, const char *name, tc_onnx_precision precision,
                               int opset) {
    *out = NULL;
    if (opset < TC_ONNX_OPSET_MIN || opset > TC_ONNX_OPSET_MAX)
        return tc_fail(TC_ERR_ARG, "onnx export: opset %d is outside the supported %d..%d", opset,
                       TC_ONNX_OPSET_MIN, TC_ONNX_OPSET_MAX);
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    if (first != 1)
        return tc_fail(TC_ERR_UNSUPPORTED,
                       "onnx export: raw tensor data needs a little-endian host");
    tc_onnx_graph *g = calloc(1, sizeof *g);
    if (!g) return tc_fail(TC_ERR_OOM, "onnx export: out of memory");
    g->precision = precision;
    g->opset = opset;
    g->name = sdup(g, name);
    if (g->st != TC_OK) {
        tc_status st = g->st;
        tc_onnx_graph_free(g);
        return st;
    }
    *out = g;
    return TC_OK;
}

void tc_onnx_graph_free(tc_onnx_graph *g) {
    if (!g) return;
    for (size_t i = 0; i < g->owned.n; i++)
        free(g->owned.v[i]);
    free(g->owned.v);
    free(g->nodes.v);
    free(g->inits.v);
    free(g->inputs.v);
    free(g->outputs.v);
    free(g->meta.v);
    free(g);
}

tc_onnx_precision tc_onnx_precision_of(const tc_onnx_graph *g) {
    return g->precision;
}
int tc_onnx_opset(const tc_onnx_graph *g) {
    return g->opset;
}
tc_status tc_onnx_status(const tc_onnx_graph *g) {
    return g->st;
}
size_t tc_onnx_weight_bytes(const tc_onnx_graph *g) {
    return g->weight_bytes;
}

/* ---- values ---- */

static int32_t float_type(const tc_onnx_graph *g) {
    return g->precision == TC_ONNX_FP16 ? ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16
                                        : ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
}

static Onnx__ValueInfoProto *value_info(tc_onnx_graph *g, const char *name, tc_onnx_elem elem,
                                        int ndim, const int64_t *dims) {
    Onnx__ValueInfoProto *vi = zalloc(g, sizeof *vi);
    Onnx__TypeProto *tp = zalloc(g, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = zalloc(g, sizeof *tt);
    Onnx__TensorShapeProto *sh = zalloc(g, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dv = zalloc(g, (size_t)ndim * sizeof *dv);
    if (g->st != TC_OK) return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (int i = 0; i < ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = zalloc(g, sizeof *d);
        if (!d) return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] < 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = sdup(g, "batch");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        dv[i] = d;
    }
    sh->n_dim = (size_t)ndim;
    sh->dim = dv;
    tt->has_elem_type = 1;
    tt->elem_type = elem == TC_ONNX_INT64 ? ONNX__TENSOR_PROTO__DATA_TYPE__INT64 : float_type(g);
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = sdup(g, name);
    vi->type = tp;
    return g->st == TC_OK ? vi : NULL;
}

const char *tc_onnx_input(tc_onnx_graph *g, const char *name, tc_onnx_elem elem, int ndim,
                          const int64_t *dims) {
    if (g->st != TC_OK) return "";
    Onnx__ValueInfoProto *vi = value_info(g, name, elem, ndim, dims);
    push(g, &g->inputs, vi);
    return vi ? vi->name : "";
}

static const char *node_out(tc_onnx_graph *g, const char *op, char *out, int n_in,
                            const char *const *in, int n_attr, const tc_onnx_attr *attr);

void tc_onnx_output(tc_onnx_graph *g, const char *value, const char *name, tc_onnx_elem elem,
                    int ndim, const int64_t *dims) {
    if (g->st != TC_OK) return;
    const char *in[1] = {value};
    node_out(g, "Identity", sdup(g, name), 1, in, 0, NULL);
    push(g, &g->outputs, value_info(g, name, elem, ndim, dims));
}

/* an initializer of raw little-endian bytes (owned by the graph) */
static const char *initializer(tc_onnx_graph *g, char *name, int32_t type, int ndim,
                               const int64_t *dims, void *bytes, size_t len) {
    Onnx__TensorProto *t = zalloc(g, sizeof *t);
    int64_t *d = zalloc(g, (size_t)(ndim ? ndim : 1) * sizeof *d);
    if (g->st != TC_OK || !name || !bytes) return "";
    onnx__tensor_proto__init(t);
    if (ndim > 0) memcpy(d, dims, (size_t)ndim * sizeof *d);
    t->n_dims = (size_t)ndim;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = type;
    t->name = name;
    t->has_raw_data = 1;
    t->raw_data.len = len;
    t->raw_data.data = bytes;
    push(g, &g->inits, t);
    g->weight_bytes += len;
    return g->st == TC_OK ? name : "";
}

const char *tc_onnx_weight(tc_onnx_graph *g, const char *name, const float *data, int ndim,
                           const int64_t *dims, int transpose) {
    if (g->st != TC_OK) return "";
    if (ndim < 0 || ndim > 4) {
        g->st = tc_fail(TC_ERR_ARG, "onnx export: %s has %d dimensions (at most 4)", name, ndim);
        return "";
    }
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)dims[i];
    int64_t td[4];
    if (ndim > 0) memcpy(td, dims, (size_t)ndim * sizeof *td);
    size_t R = ndim == 2 ? (size_t)dims[0] : n, Cc = ndim == 2 ? (size_t)dims[1] : 1;
    if (transpose && ndim == 2) {
        td[0] = dims[1];
        td[1] = dims[0];
    } else {
        transpose = 0;
    }
    int half = g->precision == TC_ONNX_FP16;
    void *buf = zalloc(g, n * (half ? 2 : 4));
    if (!buf) return "";
    for (size_t r = 0; r < R; r++)
        for (size_t c = 0; c < Cc; c++) {
            size_t src = r * Cc + c, dst = transpose ? c * R + r : src;
            if (half)
                ((uint16_t *)buf)[dst] = tc_float_to_half(data[src]);
            else
                ((float *)buf)[dst] = data[src];
        }
    return initializer(g, sdup(g, name), float_type(g), ndim, td, buf, n * (half ? 2 : 4));
}

const char *tc_onnx_scalar(tc_onnx_graph *g, const char *name, float value) {
    if (g->st != TC_OK) return "";
    int half = g->precision == TC_ONNX_FP16;
    void *buf = zalloc(g, 4);
    if (!buf) return "";
    if (half)
        *(uint16_t *)buf = tc_float_to_half(value);
    else
        memcpy(buf, &value, 4);
    return initializer(g, sfmt(g, "%s_%lu", name, g->counter++), float_type(g), 0, NULL, buf,
                       half ? 2 : 4);
}

const char *tc_onnx_ints(tc_onnx_graph *g, const char *name, const int64_t *values, int n) {
    if (g->st != TC_OK) return "";
    void *buf = zalloc(g, (size_t)n * sizeof(int64_t));
    if (!buf) return "";
    memcpy(buf, values, (size_t)n * sizeof(int64_t));
    int64_t dims[1] = {n};
    return initializer(g, sfmt(g, "%s_%lu", name, g->counter++),
                       ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, dims, buf,
                       (size_t)n * sizeof(int64_t));
}

static Onnx__AttributeProto *attribute(tc_onnx_graph *g, const tc_onnx_attr *a) {
    Onnx__AttributeProto *p = zalloc(g, sizeof *p);
    if (!p) return NULL;
    onnx__attribute_proto__init(p);
    p->name = sdup(g, a->name);
    p->has_type = 1;
    switch (a->kind) {
    case TC_ONNX_ATTR_INT:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        p->has_i = 1;
        p->i = a->i;
        break;
    case TC_ONNX_ATTR_FLOAT:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        p->has_f = 1;
        p->f = a->f;
        break;
    case TC_ONNX_ATTR_INTS:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        p->ints = zalloc(g, (size_t)(a->n_ints ? a->n_ints : 1) * sizeof *p->ints);
        if (!p->ints) return NULL;
        if (a->n_ints > 0) memcpy(p->ints, a->ints, (size_t)a->n_ints * sizeof *p->ints);
        p->n_ints = (size_t)a->n_ints;
        break;
    }
    return g->st == TC_OK ? p : NULL;
}

const char *tc_onnx_node(tc_onnx_graph *g, const char *op, const char *name, int n_in,
                         const char *const *in, int n_attr, const tc_onnx_attr *attr) {
    if (g->st != TC_OK) return "";
    return node_out(g, op, sfmt(g, "%s_%lu", name, g->counter++), n_in, in, n_attr, attr);
}

/* a node whose output is named out (owned by the graph) */
static const char *node_out(tc_onnx_graph *g, const char *op, char *out, int n_in,
                            const char *const *in, int n_attr, const tc_onnx_attr *attr) {
    if (g->st != TC_OK || !out) return "";
    Onnx__NodeProto *nd = zalloc(g, sizeof *nd);
    char **ins = zalloc(g, (size_t)(n_in ? n_in : 1) * sizeof *ins);
    char **outs = zalloc(g, sizeof *outs);
    Onnx__AttributeProto **at = zalloc(g, (size_t)(n_attr ? n_attr : 1) * sizeof *at);
    if (g->st != TC_OK) return "";
    onnx__node_proto__init(nd);
    for (int i = 0; i < n_in; i++)
        ins[i] = sdup(g, in[i]);
    for (int i = 0; i < n_attr; i++)
        at[i] = attribute(g, &attr[i]);
    outs[0] = out;
    nd->name = out;
    nd->op_type = sdup(g, op);
    nd->n_input = (size_t)n_in;
    nd->input = ins;
    nd->n_output = 1;
    nd->output = outs;
    nd->n_attribute = (size_t)n_attr;
    nd->attribute = at;
    push(g, &g->nodes, nd);
    return g->st == TC_OK ? outs[0] : "";
}

void tc_onnx_metadata(tc_onnx_graph *g, const char *key, const char *value) {
    if (g->st != TC_OK) return;
    Onnx__StringStringEntryProto *e = zalloc(g, sizeof *e);
    if (!e) return;
    onnx__string_string_entry_proto__init(e);
    e->key = sdup(g, key);
    e->value = sdup(g, value);
    push(g, &g->meta, e);
}

/* ---- the model message and its writer ---- */

/* the IR version that goes with an opset (the ONNX release that added it) */
static int64_t ir_version(int opset) {
    if (opset <= 14) return 7;
    if (opset <= 18) return 8;
    if (opset <= 20) return 9;
    return 10;
}

typedef struct {
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1];
} model_msg;

static void assemble(tc_onnx_graph *g, model_msg *m) {
    onnx__model_proto__init(&m->model);
    onnx__graph_proto__init(&m->graph);
    onnx__operator_set_id_proto__init(&m->opset);
    m->opset.domain = "";
    m->opset.has_version = 1;
    m->opset.version = g->opset;
    m->opsets[0] = &m->opset;
    m->graph.name = g->name;
    m->graph.n_node = g->nodes.n;
    m->graph.node = (Onnx__NodeProto **)g->nodes.v;
    m->graph.n_initializer = g->inits.n;
    m->graph.initializer = (Onnx__TensorProto **)g->inits.v;
    m->graph.n_input = g->inputs.n;
    m->graph.input = (Onnx__ValueInfoProto **)g->inputs.v;
    m->graph.n_output = g->outputs.n;
    m->graph.output = (Onnx__ValueInfoProto **)g->outputs.v;
    m->model.has_ir_version = 1;
    m->model.ir_version = ir_version(g->opset);
    m->model.n_opset_import = 1;
    m->model.opset_import = m->opsets;
    m->model.producer_name = "tinyclip";
    m->model.producer_version = TC_VERSION;
    m->model.graph = &m->graph;
    m->model.n_metadata_props = g->meta.n;
    m->model.metadata_props = (Onnx__StringStringEntryProto **)g->meta.v;
}

size_t tc_onnx_packed_size(tc_onnx_graph *g) {
    model_msg m;
    assemble(g, &m);
    return onnx__model_proto__get_packed_size(&m.model);
}

/* protobuf-c hands the packed bytes to a buffer piece by piece (large
 * tensors by pointer, uncopied): straight into the temporary file */
typedef struct {
    ProtobufCBuffer base;
    tc_atomic_file *f;
    tc_status st;
} file_sink;

static void sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
    file_sink *s = (file_sink *)b;
    if (s->st == TC_OK && len) s->st = tc_atomic_write(s->f, data, len);
}

/* the bytes of every large initializer to path (16-byte aligned offsets),
 * the tensors pointed at them */
static tc_status write_external(tc_onnx_graph *g, const char *path, const char *location) {
    tc_atomic_file *f;
    TC_TRY(tc_atomic_open(&f, path));
    static const uint8_t pad[16] = {0};
    size_t off = 0;
    tc_status st = TC_OK;
    for (size_t i = 0; i < g->inits.n && st == TC_OK; i++) {
        Onnx__TensorProto *t = g->inits.v[i];
        size_t len = t->raw_data.len;
        if (len < TC_ONNX_EXTERNAL_MIN_BYTES) continue;
        if (off % 16) {
            size_t p = 16 - off % 16;
            st = tc_atomic_write(f, pad, p);
            off += p;
        }
        if (st == TC_OK) st = tc_atomic_write(f, t->raw_data.data, len);
        Onnx__StringStringEntryProto **e = zalloc(g, 3 * sizeof *e);
        for (int k = 0; k < 3 && g->st == TC_OK; k++) {
            e[k] = zalloc(g, sizeof **e);
            if (e[k]) onnx__string_string_entry_proto__init(e[k]);
        }
        if (g->st != TC_OK) {
            st = g->st;
            break;
        }
        e[0]->key = "location";
        e[0]->value = sdup(g, location);
        e[1]->key = "offset";
        e[1]->value = sfmt(g, "%zu", off);
        e[2]->key = "length";
        e[2]->value = sfmt(g, "%zu", len);
        if (g->st != TC_OK) {
            st = g->st;
            break;
        }
        t->has_raw_data = 0;
        t->raw_data.len = 0;
        t->raw_data.data = NULL;
        t->has_data_location = 1;
        t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        t->n_external_data = 3;
        t->external_data = e;
        off += len;
    }
    if (st != TC_OK) {
        tc_atomic_abort(f);
        return st;
    }
    return tc_atomic_commit(f);
}

tc_status tc_onnx_write(tc_onnx_graph *g, const char *path, int external) {
    TC_TRY(g->st);
    if (external) {
        char *data_path = sfmt(g, "%s.data", path);
        TC_TRY(g->st);
        const char *base = strrchr(data_path, '/');
        TC_TRY(write_external(g, data_path, base ? base + 1 : data_path));
    }
    model_msg m;
    assemble(g, &m);
    tc_atomic_file *f;
    TC_TRY(tc_atomic_open(&f, path));
    file_sink sink = {{sink_append}, f, TC_OK};
    onnx__model_proto__pack_to_buffer(&m.model, &sink.base);
    if (sink.st != TC_OK) {
        tc_atomic_abort(f);
        return tc_fail_context(sink.st, "writing %s", path);
    }
    return tc_atomic_commit(f);
}
