/* a small builder for one ONNX graph on the protobuf-c message types
 * generated from Debian's onnx.proto, and its writer.
 *
 * the builder owns every string, tensor and message it makes; a failed
 * allocation is remembered (tc_onnx_status) and every later call does
 * nothing, so a graph is written as a straight list of calls and checked
 * once at the end. names of values are made unique by the builder: every
 * call returns the name its result got.
 *
 * floating tensors (weights, constants, the graph's float inputs and
 * outputs) are stored in the graph's precision: fp32, or fp16 rounded to
 * nearest even. */
#ifndef TC_ONNX_GRAPH_H
#define TC_ONNX_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum { TC_ONNX_FP32 = 0, TC_ONNX_FP16 = 1 } tc_onnx_precision;

/* opsets the exporter writes (LayerNormalization is native from 17 on) */
#define TC_ONNX_OPSET_MIN 13
#define TC_ONNX_OPSET_MAX 21
#define TC_ONNX_OPSET_DEFAULT 17

typedef struct tc_onnx_graph tc_onnx_graph;

typedef enum { TC_ONNX_ATTR_INT, TC_ONNX_ATTR_FLOAT, TC_ONNX_ATTR_INTS } tc_onnx_attr_kind;
typedef struct {
    const char *name;
    tc_onnx_attr_kind kind;
    int64_t i;
    float f;
    const int64_t *ints;
    int n_ints;
} tc_onnx_attr;

/* element types of inputs and outputs */
typedef enum { TC_ONNX_FLOAT = 0, TC_ONNX_INT64 = 1 } tc_onnx_elem;

tc_status tc_onnx_graph_create(tc_onnx_graph **out, const char *name, tc_onnx_precision precision,
                               int opset);
void tc_onnx_graph_free(tc_onnx_graph *g);
tc_onnx_precision tc_onnx_precision_of(const tc_onnx_graph *g);
int tc_onnx_opset(const tc_onnx_graph *g);
/* the first error of any call so far, TC_OK if none */
tc_status tc_onnx_status(const tc_onnx_graph *g);

/* a graph input / output; dims < 0 are the dynamic "batch" dimension.
 * TC_ONNX_FLOAT is the graph's precision. the output `name` is the value
 * `value` (through an Identity node that gives it that name) */
const char *tc_onnx_input(tc_onnx_graph *g, const char *name, tc_onnx_elem elem, int ndim,
                          const int64_t *dims);
void tc_onnx_output(tc_onnx_graph *g, const char *value, const char *name, tc_onnx_elem elem,
                    int ndim, const int64_t *dims);

/* an initializer from fp32 host data (copied, converted to the graph's
 * precision); rows x cols data stored transposed when transpose is set
 * (ndim 2 only) */
const char *tc_onnx_weight(tc_onnx_graph *g, const char *name, const float *data, int ndim,
                           const int64_t *dims, int transpose);
const char *tc_onnx_scalar(tc_onnx_graph *g, const char *name, float value);
const char *tc_onnx_ints(tc_onnx_graph *g, const char *name, const int64_t *values, int n);

/* one node with n_in inputs and one output named after `name` */
const char *tc_onnx_node(tc_onnx_graph *g, const char *op, const char *name, int n_in,
                         const char *const *in, int n_attr, const tc_onnx_attr *attr);

/* metadata_props entries of the model */
void tc_onnx_metadata(tc_onnx_graph *g, const char *key, const char *value);

/* serialised size in bytes, and the bytes of the initializers alone */
size_t tc_onnx_packed_size(tc_onnx_graph *g);
size_t tc_onnx_weight_bytes(const tc_onnx_graph *g);

/* writes the model to path through a temporary file renamed over it. with
 * external set, the initializers of TC_ONNX_EXTERNAL_MIN_BYTES and more go
 * to path + ".data" (written the same way, before the graph) and the graph
 * refers to them by that file's base name, as ONNX external data; needed
 * above 2 GiB, the protobuf limit of readers. small tensors (shapes, axes)
 * stay inline, where shape inference reads them. */
#define TC_ONNX_EXTERNAL_MIN_BYTES 1024
tc_status tc_onnx_write(tc_onnx_graph *g, const char *path, int external);

#endif
